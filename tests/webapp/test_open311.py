"""Open311 GeoReport v2 at /open311/v2/, driven as an Open311 client would drive it.

Every call an Open311 client makes goes through ``public_client`` (no session, no bearer
token: the api_key is a form field); the app's own REST API (``client``, the
administrator's token) checks what landed in the workflow.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from PIL import Image

from gis.catalogue import load_catalogue
from tests.conftest import INSIDE, OUTSIDE

BASE = "/open311/v2"
WITH_ATTRIBUTES = {"street_light", "road_damage"}
REQUEST_FIELDS = ["service_request_id", "status", "status_notes", "service_name",
                  "service_code", "description", "agency_responsible", "service_notice",
                  "requested_datetime", "updated_datetime", "expected_datetime", "address",
                  "lat", "long"]
# Resident details that must never leave through Open311.
RESIDENT = {"reporter_name": "王大妈", "reporter_phone": "13800000000",
            "tracking_code": "abcdefghijklmnop"}


def xml_root(resp) -> ET.Element:
    assert resp.content_type == "text/xml; charset=utf-8"
    body = resp.get_data()
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(body)


def json_body(resp):
    assert resp.content_type == "application/json; charset=utf-8"
    return resp.get_json()


def spec_error(resp, status: int, fmt: str = "json") -> str:
    """The spec's error array; returns the (first) description."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    if fmt == "json":
        body = json_body(resp)
        assert isinstance(body, list) and body
        assert set(body[0]) == {"code", "description"}
        assert body[0]["code"] == status
        return body[0]["description"]
    root = xml_root(resp)
    assert root.tag == "errors"
    error = root.find("error")
    assert [c.tag for c in error] == ["code", "description"]
    assert error.findtext("code") == str(status)
    return error.findtext("description")


def iso(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1])


@pytest.fixture
def key(people):
    """The api_key of a grid worker (any role that may report)."""
    return people["tokens"]["gw"]


def post(public_client, key, fmt="json", **fields):
    data = {"api_key": key, "service_code": "street_light", "lat": str(INSIDE[1]),
            "long": str(INSIDE[0]), "description": "路灯不亮"}
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    return public_client.post(f"{BASE}/requests.{fmt}", data=data)


def new_id(public_client, key, **fields) -> str:
    r = post(public_client, key, **fields)
    assert r.status_code == 201, r.get_data(as_text=True)
    return json_body(r)[0]["service_request_id"]


def count_cases(client) -> int:
    return client.get("/api/v1/issues?limit=1").get_json()["numberMatched"]


# -------------------------------------------------------------------------- discovery

def test_discovery_json(public_client):
    d = json_body(public_client.get(f"{BASE}/discovery.json"))
    assert list(d) == ["changeset", "contact", "key_service", "endpoints"]
    (ep,) = d["endpoints"]
    assert ep["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert ep["url"].endswith("/open311/v2") and ep["url"].startswith("http")
    assert ep["type"] == "production"
    assert ep["formats"] == ["text/xml", "application/json"]
    assert ep["changeset"] == d["changeset"]


def test_discovery_xml(public_client):
    root = xml_root(public_client.get(f"{BASE}/discovery.xml"))
    assert root.tag == "discovery"
    assert [c.tag for c in root] == ["changeset", "contact", "key_service", "endpoints"]
    ep = root.find("endpoints/endpoint")
    assert [c.tag for c in ep] == ["specification", "url", "changeset", "type", "formats"]
    assert [f.text for f in ep.findall("formats/format")] == ["text/xml", "application/json"]


def test_discovery_page_documents_the_extensions(public_client):
    for path in (f"{BASE}/discovery", f"{BASE}/"):
        r = public_client.get(path)
        assert r.status_code == 200 and r.mimetype == "text/html"
        page = r.get_data(as_text=True)
        for word in ("grid_code", "bbox=minLon,minLat,maxLon,maxLat", "page_size",
                     "X-Total-Count", "discovery.xml"):
            assert word in page


# --------------------------------------------------------------------------- services

def test_services_json_lists_the_whole_catalogue(public_client):
    services = json_body(public_client.get(f"{BASE}/services.json?jurisdiction_id=x.gov"))
    cats = load_catalogue()
    assert [s["service_code"] for s in services] == list(cats)
    for s in services:
        cat = cats[s["service_code"]]
        assert list(s) == ["service_code", "service_name", "description", "metadata", "type",
                           "keywords", "group"]
        assert s["service_name"] == cat.zh
        assert s["group"] == cat.major_zh
        assert s["keywords"] == ", ".join(cat.keywords) and s["keywords"]
        assert s["type"] == "realtime"
        assert s["metadata"] is (cat.code in WITH_ATTRIBUTES)


def test_services_xml_keeps_chinese_and_the_element_names(public_client):
    root = xml_root(public_client.get(f"{BASE}/services.xml"))
    assert root.tag == "services"
    items = root.findall("service")
    assert len(items) == len(load_catalogue()) == len(root)
    by_code = {s.findtext("service_code"): s for s in items}
    light = by_code["street_light"]
    assert [c.tag for c in light] == ["service_code", "service_name", "description",
                                      "metadata", "type", "keywords", "group"]
    assert light.findtext("service_name") == "路灯不亮"
    assert light.findtext("group") == "公用设施"
    assert "路灯" in light.findtext("keywords")
    assert {c for c, s in by_code.items() if s.findtext("metadata") == "true"} \
        == WITH_ATTRIBUTES
    assert {s.findtext("metadata") for s in items} == {"true", "false"}


def test_services_in_english(public_client):
    services = json_body(public_client.get(f"{BASE}/services.json?lang=en"))
    light = next(s for s in services if s["service_code"] == "street_light")
    assert light["service_name"] == "Street light out"
    assert light["group"] == "Public facilities"


def test_metadata_is_true_exactly_where_the_definition_has_attributes(public_client):
    for s in json_body(public_client.get(f"{BASE}/services.json")):
        d = json_body(public_client.get(f"{BASE}/services/{s['service_code']}.json"))
        assert d["service_code"] == s["service_code"]
        assert bool(d["attributes"]) is s["metadata"]


def test_service_definition_json(public_client):
    d = json_body(public_client.get(f"{BASE}/services/road_damage.json"))
    (size,) = d["attributes"]
    assert list(size) == ["variable", "code", "datatype", "required", "datatype_description",
                          "order", "description", "values"]
    assert size["code"] == "size" and size["datatype"] == "singlevaluelist"
    assert size["variable"] is True and size["required"] is True and size["order"] == 1
    assert [v["key"] for v in size["values"]] == ["small", "medium", "large"]
    assert all(set(v) == {"key", "name"} for v in size["values"])
    light = json_body(public_client.get(f"{BASE}/services/street_light.json"))
    (pole,) = light["attributes"]
    assert pole["code"] == "pole_number" and pole["datatype"] == "string"
    assert pole["required"] is False and "values" not in pole
    assert "灯杆" in pole["description"]


def test_service_definition_xml(public_client):
    root = xml_root(public_client.get(f"{BASE}/services/road_damage.xml"))
    assert root.tag == "service_definition"
    assert [c.tag for c in root] == ["service_code", "attributes"]
    attr = root.find("attributes/attribute")
    assert [c.tag for c in attr] == ["variable", "code", "datatype", "required",
                                     "datatype_description", "order", "description",
                                     "values"]
    assert attr.findtext("required") == "true"
    values = attr.findall("values/value")
    assert [v.findtext("key") for v in values] == ["small", "medium", "large"]
    assert [c.tag for c in values[0]] == ["key", "name"]
    assert "平方米" in values[0].findtext("name")
    empty = xml_root(public_client.get(f"{BASE}/services/parking.xml"))
    assert empty.findtext("service_code") == "parking"
    assert list(empty.find("attributes")) == []


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_unknown_service_is_404_in_the_spec_format(public_client, fmt):
    desc = spec_error(public_client.get(f"{BASE}/services/potholes.{fmt}"), 404, fmt)
    assert "potholes" in desc


@pytest.mark.parametrize("path", ["/nothing.json", "/services.csv", "/requests/abc.json",
                                  "/requests/999999.xml", "/tokens/999999.json"])
def test_unknown_resources_are_404_in_the_spec_format(public_client, path):
    fmt = "json" if path.endswith(".json") else "xml"
    spec_error(public_client.get(BASE + path), 404, fmt)


def test_a_wrong_method_is_400_in_the_spec_format(public_client):
    assert "GET" in spec_error(public_client.post(f"{BASE}/services.json"), 400)


# ----------------------------------------------------------------------- POST requests

def test_post_creates_a_located_case_in_the_workflow(public_client, client, key):
    before = count_cases(client)
    r = post(public_client, key,
             description="<p>新兴南路 12 号门口<b>路灯不亮</b></p><script>alert(1)</script>",
             **{"attribute[pole_number]": "JN-0123",
                "media_url": "https://img.example.org/a.jpg"})
    assert r.status_code == 201
    (body,) = json_body(r)
    assert list(body) == ["service_request_id", "service_notice"]  # realtime: no token
    rid = body["service_request_id"]
    assert isinstance(rid, str) and rid.isdigit()
    assert "3个工作日" in body["service_notice"]
    assert r.headers["Location"].endswith(f"{BASE}/requests/{rid}.json")
    assert count_cases(client) == before + 1

    case = client.get(f"/api/v1/issues/{rid}").get_json()["properties"]
    chain = client.get(f"/api/v1/locate?lon={INSIDE[0]}&lat={INSIDE[1]}").get_json()["chain"]
    assert case["grid_code"] == chain["grid"]["code"]
    assert case["community_code"] == chain["community"]["code"]
    assert case["status"] == "reported" and case["source"] == "hotline"
    assert case["category"] == "street_light"
    assert case["description"] == "新兴南路 12 号门口路灯不亮"  # HTML stripped, script gone
    assert case["due_at"] > case["created_at"]
    details = [h for h in case["history"] if h["kind"] == "comment"]
    assert details[0]["data"]["open311"] == {
        "attributes": {"pole_number": "JN-0123"},
        "media_url": "https://img.example.org/a.jpg"}
    assert "JN-0123" in details[0]["note"]

    # …and an Open311 client sees it.
    (req,) = json_body(public_client.get(f"{BASE}/requests/{rid}.json"))
    assert req["status"] == "open" and req["service_code"] == "street_light"
    assert req["description"] == case["description"]
    assert (req["lat"], req["long"]) == (INSIDE[1], INSIDE[0])
    assert req["media_url"] == "https://img.example.org/a.jpg"
    assert req["expected_datetime"] == case["due_at"]
    assert req["requested_datetime"] == case["created_at"]


def test_post_xml_response(public_client, key):
    r = post(public_client, key, fmt="xml")
    assert r.status_code == 201
    root = xml_root(r)
    assert root.tag == "service_requests"
    (req,) = root.findall("request")
    assert [c.tag for c in req] == ["service_request_id", "service_notice"]
    assert req.findtext("service_request_id").isdigit()
    assert "办理时限" in req.findtext("service_notice")


def test_the_posted_case_moves_through_the_workflow(public_client, client, key):
    rid = new_id(public_client, key)
    r = client.post(f"/api/v1/issues/{rid}/transitions", json={"to": "filed"})
    assert r.status_code == 200
    assert client.get(f"/api/v1/issues/{rid}").get_json()["properties"]["status"] == "filed"


def test_a_required_attribute_and_its_values(public_client, client, key):
    cid = new_id(public_client, key, service_code="road_damage",
                 address_string="新兴南路 12 号", **{"attribute[size]": "medium"})
    case = client.get(f"/api/v1/issues/{cid}").get_json()["properties"]
    assert case["category"] == "road_damage"
    (event,) = [h for h in case["history"] if h["kind"] == "comment"]
    assert event["data"]["open311"] == {"attributes": {"size": "medium"},
                                        "address_string": "新兴南路 12 号"}
    assert "中" in event["note"] and "新兴南路 12 号" in event["note"]


def test_a_description_of_4000_characters_is_accepted(public_client, client, key):
    rid = new_id(public_client, key, description="灯" * 4000)
    assert len(client.get(f"/api/v1/issues/{rid}").get_json()["properties"]
               ["description"]) == 4000


def test_a_post_without_description_gets_the_service_name(public_client, client, key):
    rid = new_id(public_client, key, description=None)
    assert client.get(f"/api/v1/issues/{rid}").get_json()["properties"]["description"] \
        == "路灯不亮"


BAD_POSTS = [
    # (what changes, status, words in the description)
    ({"api_key": None}, 403, "api_key"),
    ({"api_key": ""}, 403, "api_key"),
    ({"api_key": "hm_not-a-real-token"}, 403, "api_key"),
    ({"service_code": None}, 400, "service_code"),
    ({"service_code": "potholes"}, 404, "potholes"),
    ({"lat": None, "long": None}, 400, "lat and long"),
    ({"long": None}, 400, "lat and long"),
    ({"lat": None, "long": None, "address_string": "新兴南路 12 号"}, 400, "address_string"),
    ({"lat": "north"}, 400, "lat"),
    ({"long": "200"}, 400, "long"),
    ({"lat": str(OUTSIDE[1]), "long": str(OUTSIDE[0])}, 400, "outside"),
    ({"description": "灯" * 4001}, 400, "4,000"),
    ({"service_code": "road_damage"}, 400, "attribute[size]"),
    ({"service_code": "road_damage", "attribute[size]": "huge"}, 400, "small, medium, large"),
    ({"attribute[colour]": "red"}, 400, "attribute[colour]"),
    ({"attribute[pole_number]": "a\nb"}, 400, "attribute[pole_number]"),
    ({"media_url": "javascript:alert(1)"}, 400, "media_url"),
]


@pytest.mark.parametrize(("change", "status", "words"), BAD_POSTS)
def test_bad_posts_are_refused_in_the_spec_format_and_write_nothing(
        public_client, client, key, change, status, words):
    before = count_cases(client)
    r = post(public_client, key, **change)
    assert words in spec_error(r, status)
    assert count_cases(client) == before


def test_an_outside_point_is_explained_in_xml_too(public_client, client, key):
    r = post(public_client, key, fmt="xml", lat=str(OUTSIDE[1]), long=str(OUTSIDE[0]))
    assert "outside the jurisdiction" in spec_error(r, 400, "xml")


def test_a_json_body_is_refused_and_a_key_in_the_url_is_not_read(public_client, client, key):
    before = count_cases(client)
    r = public_client.post(f"{BASE}/requests.json", json={
        "api_key": key, "service_code": "street_light", "lat": INSIDE[1], "long": INSIDE[0]})
    assert "form-encoded" in spec_error(r, 400)
    r = public_client.post(f"{BASE}/requests.json?api_key={key}", data={
        "service_code": "street_light", "lat": str(INSIDE[1]), "long": str(INSIDE[0])})
    spec_error(r, 403)
    assert count_cases(client) == before


def test_a_role_that_may_not_report_is_403(public_client, people):
    r = post(public_client, people["tokens"]["planner"])
    assert "planner" in spec_error(r, 403)


def test_a_revoked_key_is_403(public_client, hemei, key):
    hemei.accounts.revoke_token(key)
    spec_error(post(public_client, key), 403)


def test_reporter_fields_are_kept_for_staff_only(public_client, client, key):
    rid = new_id(public_client, key, first_name="大妈", last_name="王",
                 phone="13800000000", email="wang@example.org")
    case = client.get(f"/api/v1/issues/{rid}").get_json()["properties"]
    assert (case["reporter_name"], case["reporter_phone"]) == ("王大妈", "13800000000")
    for fmt in ("json", "xml"):
        text = public_client.get(f"{BASE}/requests/{rid}.{fmt}").get_data(as_text=True)
        assert "王大妈" not in text and "13800000000" not in text


# ------------------------------------------------------------------------ GET requests

def test_requests_default_to_the_last_90_days_newest_first(public_client):
    r = public_client.get(f"{BASE}/requests.json")
    reqs = json_body(r)
    assert 0 < len(reqs) <= 1000
    assert int(r.headers["X-Total-Count"]) == len(reqs)
    oldest = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=90, minutes=5)
    times = [iso(q["requested_datetime"]) for q in reqs]
    assert min(times) >= oldest
    assert times == sorted(times, reverse=True)
    assert all(list(q)[:len(REQUEST_FIELDS)] == REQUEST_FIELDS for q in reqs)
    assert {q["status"] for q in reqs} == {"open", "closed"}
    # The demo street has cases older than 90 days: a window reaches them.
    end = (datetime.now(UTC) - timedelta(days=91)).strftime("%Y-%m-%dT%H:%M:%SZ")
    older = json_body(public_client.get(f"{BASE}/requests.json?end_date={end}"))
    assert older and all(iso(q["requested_datetime"]) < iso(end) for q in older)


def test_requests_xml(public_client):
    root = xml_root(public_client.get(f"{BASE}/requests.xml?page_size=3"))
    assert root.tag == "service_requests"
    reqs = root.findall("request")
    assert len(reqs) == 3 == len(root)
    for req in reqs:
        assert [c.tag for c in req][:len(REQUEST_FIELDS)] == REQUEST_FIELDS
        assert req.findtext("status") in ("open", "closed")
        iso(req.findtext("requested_datetime"))


def test_filter_by_service_request_id_overrides_everything_else(public_client, key):
    a, b = new_id(public_client, key), new_id(public_client, key)
    for fmt in ("json", "xml"):
        r = public_client.get(f"{BASE}/requests.{fmt}?service_request_id={a},{b}"
                              "&status=closed&service_code=parking&start_date=2001-01-01")
        ids = ([q["service_request_id"] for q in json_body(r)] if fmt == "json"
               else [e.text for e in xml_root(r).iter("service_request_id")])
        assert sorted(ids) == sorted([a, b])


def test_filter_by_service_code(public_client):
    reqs = json_body(public_client.get(f"{BASE}/requests.json?service_code=parking,drainage"))
    assert reqs and {q["service_code"] for q in reqs} == {"parking", "drainage"}
    root = xml_root(public_client.get(f"{BASE}/requests.xml?service_code=parking"))
    assert {e.text for e in root.iter("service_code")} == {"parking"}


def test_filter_by_dates(public_client, key):
    start = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rid = new_id(public_client, key)
    reqs = json_body(public_client.get(f"{BASE}/requests.json?start_date={start}"))
    assert rid in [q["service_request_id"] for q in reqs]
    assert all(iso(q["requested_datetime"]) >= iso(start) for q in reqs)
    # An offset instead of Z, and a window that ends before the request was made.
    beijing = (datetime.now(UTC) + timedelta(hours=8) - timedelta(days=2)).strftime(
        "%Y-%m-%dT%H:%M:%S%%2B08:00")
    end = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    root = xml_root(public_client.get(
        f"{BASE}/requests.xml?start_date={beijing}&end_date={end}"))
    ids = [e.text for e in root.iter("service_request_id")]
    assert ids and rid not in ids
    # "+08:00" sent unencoded arrives as " 08:00" and still means Beijing time.
    plus = beijing.replace("%2B", "+")
    unencoded = json_body(public_client.get(f"{BASE}/requests.json?start_date={plus}"
                                            f"&end_date={end}"))
    assert [q["service_request_id"] for q in unencoded] == ids


def test_filter_by_status(public_client, client, key):
    rid = new_id(public_client, key)
    r = client.post(f"/api/v1/issues/{rid}/transitions", json={"to": "rejected",
                                                                "note": "重复上报"})
    assert r.status_code == 200
    closed = json_body(public_client.get(f"{BASE}/requests.json?status=closed"))
    assert closed and {q["status"] for q in closed} == {"closed"}
    mine = next(q for q in closed if q["service_request_id"] == rid)
    assert mine["status_notes"] == "重复上报"
    assert iso(mine["updated_datetime"]) >= iso(mine["requested_datetime"])
    opened = xml_root(public_client.get(f"{BASE}/requests.xml?status=open"))
    assert {e.text for e in opened.iter("status")} == {"open"}
    both = json_body(public_client.get(f"{BASE}/requests.json?status=open,closed"))
    assert len(both) == len(closed) + len(opened)


@pytest.mark.parametrize("query", [
    "status=pending", "start_date=yesterday", "start_date=2026-01-01T00:00:00",
    "start_date=2026-01-01T00:00:00Z&end_date=2026-06-01T00:00:00Z",
    "start_date=2026-02-01T00:00:00Z&end_date=2026-01-01T00:00:00Z",
    "service_code=potholes", "service_request_id=abc", "page_size=0", "page_size=1001",
    "page=0", "bbox=1,2,3", "bbox=111.6,24.4,111.5,24.5",
])
def test_bad_filters_are_400(public_client, query):
    spec_error(public_client.get(f"{BASE}/requests.json?{query}"), 400)


# Past datetime's own range (years 1–9999) once shifted to UTC or by the 90-day window:
# each was an OverflowError (a 500).
@pytest.mark.parametrize(("query", "param"), [
    ("start_date=9999-12-31", "start_date"), ("end_date=0001-01-01", "end_date"),
    ("start_date=0001-01-01T00:00:00%2B01:00", "start_date"),
    ("end_date=9999-12-31T23:59:59-01:00", "end_date"),
    ("start_date=1899-12-31T23:59:59Z", "start_date"), ("end_date=3000-01-01", "end_date"),
])
def test_dates_out_of_range_are_400_naming_the_parameter(public_client, query, param):
    description = spec_error(public_client.get(f"{BASE}/requests.json?{query}"), 400)
    assert param in description and "1900" in description and "2999" in description


@pytest.mark.parametrize("query", [
    "start_date=2999-12-31", "start_date=2999-12-31T23:59:59-12:00", "end_date=1900-01-01",
    "start_date=1900-01-01T00:00:00%2B01:00",
    "start_date=2999-10-03T00:00:00Z&end_date=2999-12-31T23:59:59Z",
])
def test_extreme_dates_in_range_are_an_empty_list(public_client, query):
    r = public_client.get(f"{BASE}/requests.json?{query}")
    assert r.status_code == 200 and json_body(r) == []


# An id no case can have (past the store's 32-bit ids; over 64 bits SQLite raised
# OverflowError, over 4,300 digits int() a ValueError) is simply not found.
HUGE_IDS = ["99999999999999999999999", "9223372036854775808", "2147483648", "1" * 5000]


@pytest.mark.parametrize("rid", HUGE_IDS)
def test_ids_no_case_can_have_are_not_found(public_client, rid):
    assert json_body(public_client.get(f"{BASE}/requests.json?service_request_id={rid}")) == []
    description = spec_error(public_client.get(f"{BASE}/requests/{rid}.json"), 404)
    assert "service_request_id" in description
    description = spec_error(public_client.get(f"{BASE}/tokens/{rid}.xml"), 404, "xml")
    assert "token" in description


def test_a_huge_id_beside_a_real_one_still_finds_the_real_one(public_client, key):
    rid = new_id(public_client, key)
    reqs = json_body(public_client.get(
        f"{BASE}/requests.json?service_request_id={rid},99999999999999999999999"))
    assert [q["service_request_id"] for q in reqs] == [rid]


# Digits of other scripts: "²" passes str.isdigit() but int() refuses it (a 500); "٣" int()
# reads as 3. Only 0-9 are digits here.
@pytest.mark.parametrize(("url", "status", "param"), [
    ("/requests.json?service_request_id=%C2%B2", 400, "service_request_id"),
    ("/requests.json?service_request_id=1,%D9%A3", 400, "service_request_id"),
    ("/requests/%C2%B2.json", 404, "service_request_id"),
    ("/requests/%D9%A3.json", 404, "service_request_id"),
    ("/tokens/%C2%B2.json", 404, "token"),
    ("/requests.json?page=%D9%A3", 400, "page"),
    ("/requests.json?page_size=%C2%B2", 400, "page_size"),
    ("/requests.json?page=1_0", 400, "page"),
    ("/requests.json?page=" + "9" * 5000, 400, "page"),
    ("/requests.json?start_date=%D9%A2%D9%A0%D9%A2%D9%A5-01-01", 400, "start_date"),
])
def test_only_ascii_digits_are_numbers(public_client, url, status, param):
    assert param in spec_error(public_client.get(BASE + url), status)


def test_one_request_json_and_xml(public_client, key):
    rid = new_id(public_client, key)
    (req,) = json_body(public_client.get(f"{BASE}/requests/{rid}.json"))
    assert list(req) == REQUEST_FIELDS  # no photo, no posted media_url: no media_url
    assert req["service_request_id"] == rid
    assert req["status_notes"] is None and req["agency_responsible"] is None
    assert req["address"].endswith("江南街道")
    assert "zipcode" not in req and "address_id" not in req
    root = xml_root(public_client.get(f"{BASE}/requests/{rid}.xml"))
    assert root.tag == "service_requests"
    (el,) = root.findall("request")
    assert [c.tag for c in el] == REQUEST_FIELDS
    assert el.findtext("service_request_id") == rid
    assert el.findtext("service_name") == "路灯不亮"
    assert el.findtext("address") == req["address"]
    assert float(el.findtext("lat")) == INSIDE[1]
    assert el.find("agency_responsible").text is None


def test_agency_responsible_after_dispatch(public_client, client, key, people):
    rid = new_id(public_client, key)
    for step in ({"to": "filed"}, {"to": "dispatched", "note": "派城管维修队处理",
                                   "assignee_org": people["orgs"]["crew"]}):
        r = client.post(f"/api/v1/issues/{rid}/transitions", json=step)
        assert r.status_code == 200, r.get_json()
    case = client.get(f"/api/v1/issues/{rid}").get_json()["properties"]
    (req,) = json_body(public_client.get(f"{BASE}/requests/{rid}.json"))
    assert req["agency_responsible"] == "城管维修队"
    assert req["status"] == "open" and req["status_notes"] == "派城管维修队处理"
    assert req["expected_datetime"] == case["due_at"]
    assert req["updated_datetime"] == case["updated_at"]
    root = xml_root(public_client.get(f"{BASE}/requests/{rid}.xml"))
    assert root.findtext("request/agency_responsible") == "城管维修队"
    text = public_client.get(f"{BASE}/requests/{rid}.json").get_data(as_text=True)
    assert "管理员" not in text  # who moved it stays inside


def test_media_url_of_a_photo(public_client, hemei):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    case = hemei.report({"category": "drainage", "lon": INSIDE[0], "lat": INSIDE[1],
                         "description": "积水"}, photos=[buf.getvalue()])
    key = hemei.store.case_photos(case.id)[0]["key"]
    (req,) = json_body(public_client.get(f"{BASE}/requests/{case.id}.json"))
    assert req["media_url"] == f"http://localhost/m/photos/{key}"


def test_tokens_resolve_to_the_request_id(public_client, key):
    rid = new_id(public_client, key)
    assert json_body(public_client.get(f"{BASE}/tokens/{rid}.json")) == [
        {"service_request_id": rid, "token": rid}]
    root = xml_root(public_client.get(f"{BASE}/tokens/{rid}.xml"))
    assert [c.tag for c in root.find("request")] == ["service_request_id", "token"]


# ------------------------------------------------------------------------- extensions

def test_extension_grid_code(public_client, client, key):
    rid = new_id(public_client, key)
    grid = client.get(f"/api/v1/issues/{rid}").get_json()["properties"]["grid_code"]
    reqs = json_body(public_client.get(f"{BASE}/requests.json?grid_code={grid}"))
    assert rid in [q["service_request_id"] for q in reqs]
    expected = {f["id"] for f in client.get(f"/api/v1/issues?grid={grid}&limit=10000")
                .get_json()["features"]}
    assert {int(q["service_request_id"]) for q in reqs} <= expected
    assert json_body(public_client.get(f"{BASE}/requests.json?grid_code=nowhere")) == []


def test_extension_bbox(public_client, key):
    rid = new_id(public_client, key)
    box = (INSIDE[0] - 0.002, INSIDE[1] - 0.002, INSIDE[0] + 0.002, INSIDE[1] + 0.002)
    reqs = json_body(public_client.get(f"{BASE}/requests.json?bbox={','.join(map(str, box))}"))
    assert rid in [q["service_request_id"] for q in reqs]
    assert all(box[0] <= q["long"] <= box[2] and box[1] <= q["lat"] <= box[3] for q in reqs)
    everything = json_body(public_client.get(f"{BASE}/requests.json"))
    assert len(reqs) < len(everything)


def test_extension_paging(public_client):
    first = public_client.get(f"{BASE}/requests.json?page_size=5")
    second = public_client.get(f"{BASE}/requests.json?page_size=5&page=2")
    a, b = json_body(first), json_body(second)
    assert len(a) == len(b) == 5
    assert not {q["service_request_id"] for q in a} & {q["service_request_id"] for q in b}
    assert first.headers["X-Total-Count"] == second.headers["X-Total-Count"]
    assert int(first.headers["X-Total-Count"]) > 10
    whole = json_body(public_client.get(f"{BASE}/requests.json?page_size=10"))
    assert whole == a + b


# ---------------------------------------------------------------------------- privacy

def test_no_resident_name_or_phone_in_any_response(public_client, hemei, people):
    case = hemei.report({"category": "sanitation", "lon": INSIDE[0], "lat": INSIDE[1],
                         "description": "垃圾桶满了"}, extra=RESIDENT)
    grid = case.grid_code
    paths = [f"/requests/{case.id}.json", f"/requests/{case.id}.xml",
             "/requests.json", "/requests.xml", f"/requests.json?grid_code={grid}",
             f"/requests.xml?service_request_id={case.id}", f"/tokens/{case.id}.json",
             f"/tokens/{case.id}.xml", "/requests.json?status=open&service_code=sanitation"]
    for path in paths:
        r = public_client.get(BASE + path)
        assert r.status_code == 200, path
        text = r.get_data(as_text=True)
        assert str(case.id) in text, path
        for secret in RESIDENT.values():
            assert secret not in text, (path, secret)
    # A tracking code is not a token.
    spec_error(public_client.get(f"{BASE}/tokens/{RESIDENT['tracking_code']}.json"), 404)
