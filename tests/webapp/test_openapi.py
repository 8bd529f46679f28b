"""The API's OpenAPI description: valid, complete (every /api/v1 rule, whatever its
blueprint), served with an ETag, browsable offline, and honoured by the running app
(Schemathesis: no 500s, every response matches its schema and status codes)."""

from __future__ import annotations

import os
import re

import pytest
import schemathesis
from flask import Blueprint
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from gis.assets import page_is_offline, page_resources
from webapp.apidoc import GENERIC_SUMMARY, PAGING_FIELDS, build_openapi, document, undocumented

PREFIX = "/api/v1/"


def api_rules(app) -> list[tuple[str, str, str]]:
    """(METHOD, OpenAPI path, endpoint) of every rule of the app under /api/v1/."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(PREFIX):
            continue
        oa_path = re.sub(r"<(?:[^<>:]+:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, oa_path, rule.endpoint))
    return out


@pytest.fixture
def spec(public_client) -> dict:
    r = public_client.get("/api/v1/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    return r.get_json()


# ---------------------------------------------------------------------------- the document
def test_description_is_valid_openapi_3_1(spec):
    from openapi_spec_validator import validate

    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_api_rule_is_documented(app, spec):
    rules = api_rules(app)
    assert len(rules) >= 16
    missing, generic = [], []
    for method, oa_path, endpoint in rules:
        op = spec["paths"].get(oa_path, {}).get(method.lower())
        if op is None:
            missing.append(f"{method} {oa_path} ({endpoint})")
        elif op.get("x-undocumented") or op["summary"] in ("", GENERIC_SUMMARY):
            generic.append(f"{method} {oa_path} ({endpoint}): add @document (webapp/apidoc.py)")
        else:
            assert op["responses"], (method, oa_path)
    assert missing == []
    assert generic == []
    # …and nothing in the document that the app does not serve.
    documented = {(m.upper(), p) for p, item in spec["paths"].items() for m in item}
    assert documented == {(m, p) for m, p, _ in rules}


def test_path_parameters_come_from_the_converters(spec):
    case_id = next(p for p in spec["paths"]["/api/v1/issues/{case_id}"]["get"]["parameters"]
                   if p["name"] == "case_id")
    assert case_id["in"] == "path" and case_id["required"] is True
    assert case_id["schema"]["type"] == "integer"
    assert case_id["schema"]["minimum"] == 0 and case_id["schema"]["maximum"] == 2**31 - 1
    layer = spec["paths"]["/api/v1/layers/{layer}"]["get"]["parameters"][0]
    assert layer["schema"]["enum"] == ["street", "community", "compound", "grid"]


def test_writes_need_a_bearer_token(spec):
    scheme = spec["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for p, item in spec["paths"].items():
        for method, op in item.items():
            if method != "get":
                assert op["security"] == [{"bearerAuth": []}], (method, p)
                assert {"401", "403"} <= set(op["responses"]), (method, p)
    # The case list and a case are public; a token shows a case's staff fields.
    assert "security" not in spec["paths"]["/api/v1/issues"]["get"]
    assert spec["paths"]["/api/v1/issues/{case_id}"]["get"]["security"] == [
        {}, {"bearerAuth": []}]


def test_every_error_response_is_the_one_error_body(spec):
    for p, item in spec["paths"].items():
        for method, op in item.items():
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert resp["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}, (method, p, status)


def test_list_endpoints_share_paging(client, spec):
    paged = [(p, op) for p, item in spec["paths"].items() for m, op in item.items()
             if any(q["name"] == "limit" for q in op.get("parameters", []))]
    assert {p for p, _ in paged} >= {"/api/v1/issues", "/api/v1/issues/points",
                                     "/api/v1/needs"}
    for p, op in paged:
        names = {q["name"] for q in op["parameters"] if q["in"] == "query"}
        assert {"limit", "offset"} <= names, p
        body = client.get(f"{p}?limit=2&offset=1").get_json()
        assert {k: body[k] for k in ("limit", "offset")} == {"limit": 2, "offset": 1}, p
        assert set(PAGING_FIELDS) <= set(body), p
        assert body["numberReturned"] <= 2 and body["numberMatched"] >= body["numberReturned"]
        bad = client.get(f"{p}?limit=0")
        assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "limit", p


def test_points_page_like_the_case_list(client):
    first = client.get("/api/v1/issues/points?limit=4").get_json()
    second = client.get("/api/v1/issues/points?limit=2&offset=2").get_json()
    assert second["rows"] == first["rows"][2:4]
    assert second["truncated"] is True and second["numberReturned"] == 2


def _example_url(p: str, op: dict) -> str | None:
    """``p`` with its path parameters and required query parameters filled in from the
    documented examples; None if one has no example."""
    query = []
    for q in op.get("parameters", []):
        if q["in"] == "path":
            if "example" not in q:
                return None
            p = p.replace("{" + q["name"] + "}", str(q["example"]))
        elif q["in"] == "query" and q.get("required"):
            if "example" not in q:
                return None
            query.append(f"{q['name']}={q['example']}")
    return p + ("?" + "&".join(query) if query else "")


def test_every_read_has_an_etag_and_answers_304(client, spec):
    checked = []
    for p, item in spec["paths"].items():
        if "get" not in item or p.startswith("/api/v1/exports/"):
            # Exports are streamed downloads and job states: not cacheable by design.
            continue
        url = _example_url(p, item["get"])
        assert url is not None, f"GET {p}: give its required parameters an example"
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code)
        etag = r.headers.get("ETag")
        assert etag, f"GET {url} has no ETag"
        again = client.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.data == b"", url
        checked.append(p)
    assert len(checked) >= 11


def test_etags_survive_gzip(client):
    """The ETag is the identity body's, set before webapp.cache.compress_json gzips it,
    so a gzip client revalidates like any other."""
    r = client.get("/api/v1/issues?limit=50", headers={"Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip"
    plain = client.get("/api/v1/issues?limit=50")
    assert r.headers["ETag"].removeprefix("W/") == plain.headers["ETag"].removeprefix("W/")
    again = client.get("/api/v1/issues?limit=50", headers={
        "Accept-Encoding": "gzip", "If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


def test_openapi_json_is_built_once_per_app(app, public_client):
    a = public_client.get("/api/v1/openapi.json")
    b = public_client.get("/api/v1/openapi.json")
    assert a.data == b.data and a.headers["ETag"] == b.headers["ETag"]
    assert len(app.extensions["hemei_openapi"]) == 1


def test_api_errors_are_the_one_json_body(client):
    for r, status in ((client.get("/api/v1/no-such-thing"), 404),
                      (client.delete("/api/v1/issues"), 405),
                      (client.get("/api/v1/issues/99999999999999999999999"), 404),
                      (client.get("/api/v1/issues?limit=x"), 400),
                      (client.post("/api/v1/issues", data="{", content_type="application/json"),
                       400)):
        assert r.status_code == status
        body = r.get_json()
        assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])


HUGE = "1" + "0" * 400  # a JSON integer no float can hold


@pytest.mark.parametrize("path, raw, field", [
    ("/api/v1/issues/{filed}/needs", '{"kind": {}, "publish": false}', "kind"),
    ("/api/v1/issues", '{"category": "parking", "lon": HUGE, "lat": 24.4, "description": "x"}',
     "lon"),
    ("/api/v1/issues/{filed}/transitions",
     '{"to": "dispatched", "assignee_org": 999999999999999999999999}', "assignee_org"),
    ("/api/v1/issues/{filed}/transitions", '{"to": "dispatched", "assignee_user": 1e400}',
     "assignee_user"),
    ("/api/v1/issues/{filed}/transitions", '{"to": "verified", "version": Infinity}',
     "version"),
    ("/api/v1/issues/{filed}/transitions", '{"to": "verified", "line": [[1, 2], [HUGE, 3]]}',
     "line"),
    ("/api/v1/issues/{filed}/transitions", '{"to": "verified", "lon": HUGE, "lat": 1}', "lon"),
])
def test_inputs_that_were_500s_are_400s_naming_the_field(client, hemei, path, raw, field):
    """Found while running the contract test: each of these was an unhandled TypeError or
    OverflowError (a 500)."""
    filed = hemei.store.list_cases(status="filed", limit=1)[0][0].id
    r = client.post(path.format(filed=filed), data=raw.replace("HUGE", HUGE),
                    content_type="application/json")
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.get_json()["error"]["field"] == field


def test_a_huge_id_in_a_form_is_a_400(client, hemei):
    filed = hemei.store.list_cases(status="filed", limit=1)[0][0].id
    r = client.post(f"/api/v1/issues/{filed}/transitions",
                    data={"to": "dispatched", "assignee_org": "9" * 30},
                    content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "assignee_org"


# ---------------------------------------------------------------------------- the mechanism
def test_another_blueprint_is_documented_the_same_way(app):
    """What webapp/analytics.py (or any blueprint) does: its routes under /api/v1 are in
    the document; one without @document shows up as undocumented."""
    other = Blueprint("other_for_test", __name__, url_prefix="/api/v1/other")

    @other.get("/<int:thing_id>/stats")
    @document("Stats of a thing", params=[], responses={200: {"type": "object"}},
              errors=(404,))
    def stats(thing_id):
        return {}

    @other.route("/forgotten", methods=["GET", "POST"])
    def forgotten():
        return {}

    app.register_blueprint(other)
    spec = build_openapi(app)
    op = spec["paths"]["/api/v1/other/{thing_id}/stats"]["get"]
    assert op["summary"] == "Stats of a thing" and op["tags"] == ["other_for_test"]
    assert op["parameters"][0]["schema"] == {"type": "integer", "minimum": 0}
    assert "ETag" in op["responses"]["200"]["headers"] and "304" in op["responses"]
    assert undocumented(spec) == ["GET /api/v1/other/forgotten",
                                  "POST /api/v1/other/forgotten"]
    assert spec["paths"]["/api/v1/other/forgotten"]["get"]["summary"] == GENERIC_SUMMARY
    # A blueprint's GET gets the ETag convention without code of its own.
    c = app.test_client()
    r = c.get("/api/v1/other/7/stats")
    assert r.headers["ETag"]
    assert c.get("/api/v1/other/7/stats",
                 headers={"If-None-Match": r.headers["ETag"]}).status_code == 304


# ---------------------------------------------------------------------------- the page
def test_docs_page_loads_only_local_assets(public_client):
    r = public_client.get("/api/v1/docs")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert page_is_offline(html) == []
    assert "validatorUrl: null" in html
    resources = page_resources(html)
    assert any(u.endswith("/swagger-ui-bundle.js") for u in resources)
    for url in resources:
        assert url.startswith("/"), url
        asset = public_client.get(url)
        assert asset.status_code == 200, url
        asset.close()


# ---------------------------------------------------------------------------- the contract
@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


@pytest.fixture
def _nodeid_for_schemathesis(request):
    """Schemathesis 4.32's lazy schemas read and write ``item._nodeid``, which pytest 9.2
    no longer has (it keeps ``item.nodeid``): give this one item the attribute. Harmless
    once Schemathesis catches up."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


contract = schemathesis.pytest.from_fixture("api_schema")

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
#: Generated cases per operation and phase; CI keeps the default (a minute or so), a
#: deeper run locally: HEMEI_SCHEMATHESIS_EXAMPLES=500 pytest -k honours
EXAMPLES = int(os.environ.get("HEMEI_SCHEMATHESIS_EXAMPLES") or 25)


@pytest.mark.usefixtures("_nodeid_for_schemathesis")
@contract.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_honours_its_description(case, people):
    """Every operation, reads and writes, with generated valid and invalid input.

    Writes run with the administrator's token (the role allowed the most, so the calls
    get past authorisation into validation and the domain); they change this test's
    own copy of the demo database only. A 4xx is fine when documented; a 500, an
    undocumented status or a body that does not match its schema is not. Reads run
    without a token: what the public sees must match the schema too."""
    security = case.operation.definition.raw.get("security") or [{}]
    needs_token = {} not in security  # required, not optional
    # The in-process WSGI client does not undo Content-Encoding: ask for the plain body
    # (webapp.cache.compress_json gzips JSON for clients that accept it).
    headers = {"Accept-Encoding": "identity"}
    if needs_token:
        headers["Authorization"] = f"Bearer {people['tokens']['admin']}"
    case.call_and_validate(headers=headers, checks=CHECKS)
