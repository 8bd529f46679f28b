"""The JSON API, end to end through Flask's test client over a real database
(SQLite, and PostGIS when configured)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import INSIDE, OUTSIDE

# The same tests on every storage backend (tests/conftest.py: PostGIS when configured).
pytestmark = pytest.mark.backends("sqlite", "postgis")


def count_cases(client) -> int:
    return client.get("/api/v1/issues?limit=1").get_json()["numberMatched"]


def test_locate_inside_returns_the_full_chain(client, hemei):
    r = client.get(f"/api/v1/locate?lon={INSIDE[0]}&lat={INSIDE[1]}")
    assert r.status_code == 200
    body = r.get_json()
    assert body["inside"] is True
    chain = body["chain"]
    grid = hemei.layers["grid"].set_index("code").loc[chain["grid"]["code"]]
    # The grid's parent is the community, the community's parent is the street.
    assert chain["community"]["code"] == grid["parent_code"]
    assert chain["street"] == {"code": "451102003", "name": "江南街道"}
    assert len(chain["grid"]["code"]) == 15


def test_locate_in_a_compound_names_it(client, hemei):
    comp = hemei.layers["compound"].set_index("name").loc["香槟城小区"]
    p = comp.geometry.representative_point()
    body = client.get(f"/api/v1/locate?lon={p.x}&lat={p.y}").get_json()
    assert body["chain"]["compound"] == {"code": comp["code"], "name": "香槟城小区"}


def test_locate_outside_is_reported_not_raised(client):
    r = client.get(f"/api/v1/locate?lon={OUTSIDE[0]}&lat={OUTSIDE[1]}")
    assert r.status_code == 200
    assert r.get_json() == {"lon": OUTSIDE[0], "lat": OUTSIDE[1], "inside": False,
                            "chain": None}


@pytest.mark.parametrize("query, field", [
    ("lat=24.4", "lon"), ("lon=111.57", "lat"), ("lon=abc&lat=24.4", "lon"),
    ("lon=111.57&lat=95", "lat"), ("lon=181&lat=24.4", "lon"), ("lon=nan&lat=24.4", "lon"),
    ("lon=111.57&lat=inf", "lat"),
])
def test_locate_bad_coordinates_are_400_naming_the_field(client, query, field):
    r = client.get(f"/api/v1/locate?{query}")
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] == field


@pytest.mark.parametrize("layer, n", [("street", 1), ("community", 5), ("compound", 27)])
def test_layers_as_geojson(client, layer, n):
    r = client.get(f"/api/v1/layers/{layer}")
    assert r.status_code == 200
    assert r.mimetype == "application/geo+json"
    fc = r.get_json()
    assert len(fc["features"]) == n
    assert {"code", "name", "parent_code", "households"} <= set(fc["features"][0]["properties"])


def test_grid_layer_has_every_grid_with_chinese_names(client, hemei):
    fc = client.get("/api/v1/layers/grid").get_json()
    assert len(fc["features"]) == len(hemei.layers["grid"])
    assert all("网格" in f["properties"]["name"] for f in fc["features"])


def test_unknown_layer_is_404(client):
    r = client.get("/api/v1/layers/province")
    assert r.status_code == 404
    assert r.get_json()["error"]["field"] == "layer"


def test_issue_filters(client):
    fc = client.get("/api/v1/issues?status=closed&category=roof_leak&limit=500").get_json()
    assert fc["numberReturned"] > 0
    assert all(f["properties"]["status"] == "closed" and
               f["properties"]["category"] == "roof_leak" for f in fc["features"])
    one = fc["features"][0]["properties"]["grid_code"]
    by_grid = client.get(f"/api/v1/issues?grid={one}&limit=500").get_json()
    assert by_grid["numberMatched"] >= 1
    assert all(f["properties"]["grid_code"] == one for f in by_grid["features"])


def test_issue_bbox_filter_returns_only_points_inside(client):
    bbox = (111.56, 24.39, 111.575, 24.405)
    fc = client.get("/api/v1/issues?limit=1000&bbox=" + ",".join(map(str, bbox))).get_json()
    everything = client.get("/api/v1/issues?limit=10000").get_json()["features"]
    expected = [f for f in everything
                if bbox[0] <= f["geometry"]["coordinates"][0] <= bbox[2]
                and bbox[1] <= f["geometry"]["coordinates"][1] <= bbox[3]]
    assert fc["numberMatched"] == len(expected) > 0
    assert {f["id"] for f in fc["features"]} == {f["id"] for f in expected}


def test_issue_paging(client):
    a = client.get("/api/v1/issues?limit=5&offset=0").get_json()
    b = client.get("/api/v1/issues?limit=5&offset=5").get_json()
    assert a["numberReturned"] == b["numberReturned"] == 5
    assert not {f["id"] for f in a["features"]} & {f["id"] for f in b["features"]}


@pytest.mark.parametrize("query, field", [
    ("bbox=1,2,3", "bbox"), ("bbox=a,b,c,d", "bbox"), ("bbox=5,5,1,1", "bbox"),
    ("status=lost", "status"), ("category=ufo", "category"), ("limit=0", "limit"),
    ("limit=x", "limit"), ("offset=-1", "offset"),
])
def test_issue_list_bad_filters_are_400(client, query, field):
    r = client.get(f"/api/v1/issues?{query}")
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] == field


def test_report_a_case_locates_it_and_stores_it(client):
    before = count_cases(client)
    r = client.post("/api/v1/issues", json={
        "category": "street_light", "lon": INSIDE[0], "lat": INSIDE[1],
        "description": "新兴南路 12 号门口路灯不亮", "title": "路灯不亮"})
    assert r.status_code == 201
    feat = r.get_json()
    chain = client.get(f"/api/v1/locate?lon={INSIDE[0]}&lat={INSIDE[1]}").get_json()["chain"]
    assert feat["properties"]["grid_code"] == chain["grid"]["code"]
    assert feat["properties"]["community_code"] == chain["community"]["code"]
    assert feat["properties"]["status"] == "reported"
    assert feat["properties"]["due_at"] > feat["properties"]["created_at"]
    assert r.headers["Location"].endswith(f"/api/v1/issues/{feat['id']}")
    again = client.get(r.headers["Location"]).get_json()
    assert again["properties"]["title"] == "路灯不亮"
    assert [h["to"] for h in again["properties"]["history"]] == ["reported"]
    assert count_cases(client) == before + 1


def test_title_defaults_to_the_description(client):
    r = client.post("/api/v1/issues", json={"category": "parking", "lon": INSIDE[0],
                                             "lat": INSIDE[1], "description": "乱停车堵住消防通道"})
    assert r.status_code == 201
    assert r.get_json()["properties"]["title"] == "乱停车堵住消防通道"


GOOD = {"category": "drainage", "lon": INSIDE[0], "lat": INSIDE[1], "description": "积水"}


@pytest.mark.parametrize("change, status, field", [
    ({"lon": None}, 400, "lon"),
    ({"lat": None}, 400, "lat"),
    ({"lon": "east"}, 400, "lon"),
    ({"lat": 91}, 400, "lat"),
    ({"lat": -90.5}, 400, "lat"),
    ({"lon": 180.01}, 400, "lon"),
    ({"lon": -181}, 400, "lon"),
    ({"lon": True}, 400, "lon"),
    ({"lon": OUTSIDE[0], "lat": OUTSIDE[1]}, 422, "lon"),
    ({"category": "ufo"}, 400, "category"),
    ({"category": None}, 400, "category"),
    ({"description": "x" * 4001}, 400, "description"),
    ({"description": ""}, 400, "description"),
    ({"description": 5}, 400, "description"),
    ({"title": "t" * 201}, 400, "title"),
    ({"source": "carrier pigeon"}, 400, "source"),
])
def test_bad_reports_are_4xx_naming_the_field_and_write_nothing(client, change, status, field):
    before = count_cases(client)
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = client.post("/api/v1/issues", json=body)
    assert r.status_code == status, r.get_json()
    assert r.get_json()["error"]["field"] == field
    assert count_cases(client) == before


@pytest.mark.parametrize("data", ["", "   ", "not json", "[1, 2]", '"a string"', "null",
                                  '{"category": "drainage", "lon": NaN, "lat": 24.4}'])
def test_empty_or_non_json_bodies_are_400(client, data):
    before = count_cases(client)
    r = client.post("/api/v1/issues", data=data, content_type="application/json")
    assert r.status_code == 400
    assert r.get_json()["error"]["field"] in ("body", "lon")
    assert count_cases(client) == before


@pytest.mark.parametrize("content_type", ["application/xml", "text/plain",
                                          "application/x-www-form-urlencoded"])
def test_a_body_declared_as_something_else_is_415(client, content_type):
    before = count_cases(client)
    r = client.post("/api/v1/issues", data=json.dumps(GOOD), content_type=content_type)
    assert r.status_code == 415
    assert r.get_json()["error"]["field"] == "Content-Type"
    assert count_cases(client) == before


def test_json_under_a_json_media_type_or_none_is_read(client):
    r = client.post("/api/v1/issues", data=json.dumps(GOOD),
                    content_type="application/merge-patch+json")
    assert r.status_code == 201
    r = client.post("/api/v1/issues", data=json.dumps(GOOD).encode())
    assert r.status_code == 201


def test_a_deeply_nested_body_is_400_not_a_crash(client):
    before = count_cases(client)
    r = client.post("/api/v1/issues", data="[" * 100_000 + "]" * 100_000,
                    content_type="application/json")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "body"
    assert count_cases(client) == before


@pytest.mark.parametrize("raw, field", [
    ('"description": "bad \\ud800 half"', "description"),
    ('"description": "ok", "title": "\\udfff"', "title"),
    ('"description": "ok", "extra": {"deep": ["\\udc00"]}', "extra"),
])
def test_half_a_surrogate_pair_is_400_naming_the_field(client, raw, field):
    """JSON may escape half a UTF-16 pair; no database stores it (it was a 500)."""
    before = count_cases(client)
    body = f'{{"category": "drainage", "lon": {INSIDE[0]}, "lat": {INSIDE[1]}, {raw}}}'
    r = client.post("/api/v1/issues", data=body, content_type="application/json")
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["error"]["field"] == field
    assert count_cases(client) == before


def test_a_whole_surrogate_pair_is_an_emoji_and_accepted(client):
    body = (f'{{"category": "drainage", "lon": {INSIDE[0]}, "lat": {INSIDE[1]}, '
            '"description": "\\ud83d\\udca7 积水"}')
    r = client.post("/api/v1/issues", data=body, content_type="application/json")
    assert r.status_code == 201
    assert r.get_json()["properties"]["description"] == "\U0001f4a7 积水"


@pytest.mark.parametrize("path", ["/api/v1/issues", "/api/v1/issues/1/transitions"])
def test_a_multipart_part_without_a_name_is_400(client, path):
    """A part whose Content-Disposition names no field came through as a None key and
    failed the Idempotency-Key's fingerprint (a 500 the API fuzzing found)."""
    before = count_cases(client)
    parts = [("", "{}"), ("category", "drainage"), ("lon", str(INSIDE[0])),
             ("lat", str(INSIDE[1])), ("description", "no name"), ("to", "verified")]
    body = "".join(
        f'--B\r\nContent-Disposition: form-data{f"; name={name}" if name else ""}'
        f'\r\n\r\n{value}\r\n' for name, value in parts) + "--B--\r\n"
    r = client.post(path, data=body.encode(), content_type="multipart/form-data; boundary=B",
                    headers={"Idempotency-Key": "no-name-1"})
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.get_json()["error"]["field"] == "body"
    assert "name" in r.get_json()["error"]["message"]
    assert count_cases(client) == before


def test_at_most_three_photos_a_report(client):
    import io

    from PIL import Image

    def jpeg(i):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 40, 10, 10)).save(buf, "JPEG")
        return (io.BytesIO(buf.getvalue()), f"p{i}.jpg")

    before = count_cases(client)
    r = client.post("/api/v1/issues", content_type="multipart/form-data", data={
        **{k: str(v) for k, v in GOOD.items()}, "photos": [jpeg(i) for i in range(4)]})
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "photos"
    assert count_cases(client) == before


def test_a_request_over_the_size_limit_is_413_naming_the_body(client, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    r = client.post("/api/v1/issues", data=b"x" * (limit + 1),
                    content_type="application/json")
    assert r.status_code == 413
    err = r.get_json()["error"]
    assert err["field"] == "body" and "photos" in err["message"]


def test_the_layer_list_names_files_not_server_paths(client):
    layers = client.get("/api/v1/layers").get_json()["layers"]
    assert layers and all("/" not in (v.get("source") or "") for v in layers)
    assert {v["source"] for v in layers} == {"jiangnan.gpkg"}


def test_nan_longitude_is_refused(client):
    r = client.post("/api/v1/issues", data='{"category":"drainage","lon":NaN,"lat":24.4,'
                    '"description":"x"}', content_type="application/json")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "lon"


def test_description_of_exactly_4000_characters_is_accepted(client):
    r = client.post("/api/v1/issues", json={**GOOD, "description": "水" * 4000})
    assert r.status_code == 201


def test_unknown_case_is_404_json(client):
    r = client.get("/api/v1/issues/999999")
    assert r.status_code == 404
    assert r.get_json()["error"]["code"] == "not_found"


def test_unknown_api_route_is_json_404(client):
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404
    assert "error" in r.get_json()


def test_a_reports_location_is_the_cases_url_under_a_mount_point_too(app, client):
    """Behind a proxy that mounts the app under a path (SCRIPT_NAME), the Location of a
    new case is still its URL, as url_for builds it."""
    from flask import url_for

    r = client.post("/api/v1/issues", base_url="http://localhost/hemei", json={
        "category": "street_light", "lon": INSIDE[0], "lat": INSIDE[1],
        "description": "挂载路径"})
    assert r.status_code == 201, r.get_json()
    case_id = r.get_json()["id"]
    with app.test_request_context("/", base_url="http://localhost/hemei"):
        assert r.headers["Location"] == url_for("api.get_issue", case_id=case_id)
    assert r.headers["Location"] == f"/hemei/api/v1/issues/{case_id}"


@pytest.mark.backends("sqlite")
def test_a_full_database_is_503_with_retry_after_and_stores_nothing(app, client, backend):
    """SQLite's own 'database or disk is full' (max_page_count pinned to the file's size,
    so the next page cannot be added): a 503 saying nothing was stored, not a 500."""
    import sqlalchemy as sa

    store = app.extensions["hemei"].store
    before = count_cases(client)
    with store._read() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

    def full(dbapi_conn, _record):
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")

    sa.event.listen(store.engine, "connect", full)
    store.dispose()  # every connection is made again, with the limit
    try:
        r = client.post("/api/v1/issues", json={**GOOD, "description": "漏" * 4000})
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "5"
        assert r.get_json()["error"]["code"] == "service_unavailable"
    finally:
        sa.event.remove(store.engine, "connect", full)
        store.dispose()
    assert count_cases(client) == before
