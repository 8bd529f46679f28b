"""OGC API – Features at /ogc/: the documents through Flask's test client, then GDAL's
OAPIF driver (``ogrinfo``, what QGIS uses) against the app served on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import shapely
from shapely.geometry import box
from werkzeug.serving import make_server

from gis.cases import NewCase

CORE = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"
GEOJSON_CLASS = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson"
OAS30 = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
LEVELS = ("street", "community", "compound", "grid")
SECRET_FIELDS = ("reporter_name", "reporter_phone", "tracking_code", "assignee_user")


@pytest.fixture(scope="module")
def ogc_app(seeded_template, tmp_path_factory):
    """One app over its own copy of the demo instance, for the read-only tests."""
    from tests.conftest import _copy_instance
    from webapp import create_app

    inst = _copy_instance(seeded_template, tmp_path_factory.mktemp("ogc") / "instance")
    return create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none"})


@pytest.fixture(scope="module")
def ogc(ogc_app):
    return ogc_app.test_client()


@pytest.fixture(scope="module")
def layers(ogc_app):
    return ogc_app.extensions["hemei"].layers


@pytest.fixture(scope="module")
def all_cases(ogc_app):
    rows, _ = ogc_app.extensions["hemei"].store.list_cases(limit=None)
    return rows


def get(client, url: str, status: int = 200):
    r = client.get(url)
    assert r.status_code == status, (url, r.status_code, r.get_data(as_text=True)[:300])
    return r


def path_of(href: str) -> str:
    """A link as the test client wants it (absolute links point at http://localhost)."""
    parts = urlsplit(href)
    assert parts.scheme == "http" and parts.netloc == "localhost", href
    return parts.path + (f"?{parts.query}" if parts.query else "")


def links_by_rel(doc: dict) -> dict[str, dict]:
    return {link["rel"]: link for link in doc["links"]}


def all_pages(client, url: str) -> list[dict]:
    """Every page of an items query, following next links until there is none."""
    pages = []
    while url:
        page = get(client, url).get_json()
        pages.append(page)
        nxt = links_by_rel(page).get("next")
        url = path_of(nxt["href"]) if nxt else None
        assert len(pages) < 1000, "next links never end"
    return pages


def ids_of(client, url: str) -> list:
    return [f["id"] for page in all_pages(client, url) for f in page["features"]]


# -- landing page, conformance, API definition ------------------------------------------
@pytest.mark.parametrize("url", ["/ogc/", "/ogc"])
def test_landing_page_links_to_the_api_conformance_and_data(ogc, url):
    r = get(ogc, url)  # with or without the slash: no redirect (GDAL asks for /ogc)
    assert r.mimetype == "application/json"
    links = links_by_rel(r.get_json())
    assert {"self", "service-desc", "conformance", "data"} <= set(links)
    assert links["self"]["type"] == "application/json"
    assert links["service-desc"]["type"] == "application/vnd.oai.openapi+json;version=3.0"
    assert links["data"]["href"] == "http://localhost/ogc/collections"
    assert links["conformance"]["href"] == "http://localhost/ogc/conformance"
    for link in links.values():  # every link resolves, in the media type it announces
        target = get(ogc, path_of(link["href"]))
        assert target.content_type.split(";")[0] == link["type"].split(";")[0]


def test_conformance_declares_core_geojson_and_oas30(ogc):
    body = get(ogc, "/ogc/conformance").get_json()
    assert {CORE, GEOJSON_CLASS, OAS30} <= set(body["conformsTo"])


def test_api_definition_is_a_small_openapi_3_document(ogc):
    r = get(ogc, "/ogc/api")
    assert r.content_type == "application/vnd.oai.openapi+json;version=3.0"
    doc = r.get_json()
    assert doc["openapi"].startswith("3.0.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["servers"][0]["url"] == "http://localhost/ogc"
    assert set(doc["paths"]) == {
        "/", "/conformance", "/collections", "/collections/{collectionId}",
        "/collections/{collectionId}/items", "/collections/{collectionId}/items/{featureId}"}

    def resolve(obj):
        while "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), ref
            obj = doc
            for part in ref[2:].split("/"):
                obj = obj[part]
        return obj

    for path, ops in doc["paths"].items():
        op = ops["get"]
        assert op["operationId"] and "200" in op["responses"]
        for resp in op["responses"].values():
            assert resolve(resp)["description"]
        params = [resolve(p) for p in op["parameters"]]
        for p in params:
            assert p["in"] in ("query", "path") and "schema" in p
            assert p["required"] is (p["in"] == "path")
        # Every {name} in the path is declared as a path parameter.
        assert set(re.findall(r"{(\w+)}", path)) == {p["name"] for p in params
                                                     if p["in"] == "path"}
    items = [resolve(p)["name"] for p in
             doc["paths"]["/collections/{collectionId}/items"]["get"]["parameters"]]
    assert {"bbox", "limit", "offset", "datetime", "f"} <= set(items)
    limit = resolve({"$ref": "#/components/parameters/limit"})["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 10_000, 100)
    assert resolve({"$ref": "#/components/parameters/collectionId"})["schema"]["enum"] == [
        *LEVELS, "cases"]


# -- collections --------------------------------------------------------------------------
def test_collections_list_the_four_layers_and_the_cases(ogc, layers, all_cases):
    body = get(ogc, "/ogc/collections").get_json()
    assert links_by_rel(body)["self"]["href"] == "http://localhost/ogc/collections"
    colls = {c["id"]: c for c in body["collections"]}
    assert list(colls) == [*LEVELS, "cases"]
    for cid, c in colls.items():
        assert c["itemType"] == "feature"
        assert c["crs"] == [CRS84]
        assert c["title"]
        links = links_by_rel(c)
        assert links["items"]["type"] == "application/geo+json"
        assert links["items"]["href"] == f"http://localhost/ogc/collections/{cid}/items"
        assert links["self"]["type"] == "application/json"
        assert all("rel" in lk and "type" in lk for lk in c["links"])
        # /collections/{id} is the same document.
        assert get(ogc, f"/ogc/collections/{cid}").get_json() == c
        [[minx, miny, maxx, maxy]] = c["extent"]["spatial"]["bbox"]
        if cid == "cases":
            lons = [x.lon for x in all_cases]
            lats = [x.lat for x in all_cases]
            bounds = (min(lons), min(lats), max(lons), max(lats))
        else:
            bounds = tuple(layers[cid].total_bounds)
        # The extent contains every geometry, and not much more.
        assert minx <= bounds[0] and miny <= bounds[1]
        assert maxx >= bounds[2] and maxy >= bounds[3]
        assert max(abs(a - b) for a, b in zip((minx, miny, maxx, maxy), bounds,
                                              strict=True)) < 1e-6
    created = sorted(x.created_at for x in all_cases)
    [[start, end]] = colls["cases"]["extent"]["temporal"]["interval"]
    assert start == created[0].replace(microsecond=0).isoformat() + "Z"
    assert end == created[-1].replace(microsecond=0).isoformat() + "Z"
    assert "temporal" not in colls["grid"]["extent"]


@pytest.mark.parametrize("url", ["/ogc/collections/nope", "/ogc/collections/nope/items",
                                 "/ogc/collections/nope/items/1", "/ogc/nothing/here",
                                 "/ogc/collections/grid/items/999",
                                 "/ogc/collections/cases/items/999999",
                                 "/ogc/collections/cases/items/abc",
                                 "/ogc/collections/cases/items/007",
                                 "/ogc/collections/cases/items/%D9%A3"])
def test_unknown_collections_features_and_paths_are_404_json(ogc, url):
    r = get(ogc, url, 404)
    assert r.mimetype == "application/json"
    body = r.get_json()
    assert body["code"] == "NotFound" and body["description"]


# -- items: paging --------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [7, 10, 43, 100])
def test_paging_with_next_links_returns_every_grid_exactly_once(ogc, layers, limit):
    pages = all_pages(ogc, f"/ogc/collections/grid/items?limit={limit}")
    ids = [f["id"] for p in pages for f in p["features"]]
    assert ids == sorted(layers["grid"]["code"])  # all, once each, in code order
    assert len(pages) == -(-43 // limit)
    for i, page in enumerate(pages):
        assert page["type"] == "FeatureCollection"
        assert page["numberMatched"] == 43
        assert page["numberReturned"] == len(page["features"]) <= limit
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", page["timeStamp"])
        links = links_by_rel(page)
        assert all(lk["type"] == "application/geo+json"
                   for rel, lk in links.items() if rel != "collection")
        assert links["collection"]["href"] == "http://localhost/ogc/collections/grid"
        assert ("prev" in links) is (i > 0)
        assert ("next" in links) is (i < len(pages) - 1)
        # self is this page: following it gives the same features.
        again = get(ogc, path_of(links["self"]["href"])).get_json()
        assert [f["id"] for f in again["features"]] == [f["id"] for f in page["features"]]
    # prev of the second page is the first page.
    if len(pages) > 1:
        prev = get(ogc, path_of(links_by_rel(pages[1])["prev"]["href"])).get_json()
        assert prev["features"] == pages[0]["features"]


def test_cases_page_through_every_case_newest_first(ogc, all_cases):
    pages = all_pages(ogc, "/ogc/collections/cases/items?limit=150")
    ids = [f["id"] for p in pages for f in p["features"]]
    assert ids == [c.id for c in all_cases]  # the store's order: newest first
    assert len(set(ids)) == len(ids) == pages[0]["numberMatched"] == len(all_cases)


def test_default_limit_is_100_and_large_limits_are_lowered_not_refused(ogc):
    page = get(ogc, "/ogc/collections/cases/items").get_json()
    assert page["numberReturned"] == 100
    assert parse_qs(urlsplit(links_by_rel(page)["next"]["href"]).query)["limit"] == ["100"]
    big = get(ogc, "/ogc/collections/cases/items?limit=50000").get_json()
    assert big["numberReturned"] == big["numberMatched"]
    assert parse_qs(urlsplit(links_by_rel(big)["self"]["href"]).query)["limit"] == ["10000"]


def test_an_offset_past_the_end_is_an_empty_page_with_a_prev_link(ogc):
    page = get(ogc, "/ogc/collections/grid/items?limit=10&offset=100").get_json()
    assert page["numberReturned"] == 0 and page["features"] == []
    assert page["numberMatched"] == 43
    links = links_by_rel(page)
    assert "next" not in links and "offset=90" in links["prev"]["href"]


# -- items: bbox ----------------------------------------------------------------------------
def _boxes(layers):
    minx, miny, maxx, maxy = (float(v) for v in layers["street"].total_bounds)
    w, h = maxx - minx, maxy - miny
    return [
        (minx + 0.4 * w, miny + 0.4 * h, minx + 0.6 * w, miny + 0.6 * h),  # the middle
        (minx - 0.1 * w, miny - 0.1 * h, minx + 0.2 * w, miny + 0.25 * h),  # a corner
        (minx + 0.5 * w, miny + 0.5 * h, minx + 0.5 * w, miny + 0.5 * h),  # a point
        (minx - 1, miny - 1, minx - 0.5, miny - 0.5),  # nothing there
        (-180, -90, 180, 90),  # everything
    ]


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("which", range(5))
def test_bbox_on_boundaries_matches_shapely_intersects(ogc, layers, level, which):
    b = _boxes(layers)[which]
    gdf = layers[level]
    expected = sorted(gdf.loc[gdf.geometry.intersects(box(*b)), "code"])
    bbox = ",".join(repr(v) for v in b)
    pages = all_pages(ogc, f"/ogc/collections/{level}/items?bbox={bbox}&limit=5")
    assert [f["id"] for p in pages for f in p["features"]] == expected
    assert pages[0]["numberMatched"] == len(expected)
    # The bbox stays on the next links.
    for p in pages:
        for lk in p["links"]:
            if lk["rel"] in ("self", "next", "prev"):
                assert parse_qs(urlsplit(lk["href"]).query)["bbox"] == [bbox]


@pytest.mark.parametrize("which", range(5))
def test_bbox_on_cases_matches_the_points_and_the_store(ogc_app, ogc, all_cases, layers,
                                                         which):
    minx, miny, maxx, maxy = b = _boxes(layers)[which]
    expected = [c.id for c in all_cases if minx <= c.lon <= maxx and miny <= c.lat <= maxy]
    rows, total = ogc_app.extensions["hemei"].store.list_cases(bbox=b, limit=None)
    assert [c.id for c in rows] == expected and total == len(expected)
    bbox = ",".join(repr(v) for v in b)
    assert ids_of(ogc, f"/ogc/collections/cases/items?bbox={bbox}&limit=1000") == expected
    # A point's geometry intersects the box exactly when it is in it.
    pts = shapely.points([[c.lon, c.lat] for c in all_cases])
    assert sum(shapely.intersects(pts, box(*b))) == len(expected)


def test_bbox_across_the_antimeridian_and_with_heights(ogc, layers):
    # West edge at 100°E, east edge at 170°W: the box wraps round through 180°.
    wrapped = ids_of(ogc, "/ogc/collections/grid/items?bbox=100,20,-170,30")
    assert wrapped == sorted(layers["grid"]["code"])
    assert ids_of(ogc, "/ogc/collections/grid/items?bbox=170,20,-170,30") == []
    six = ids_of(ogc, "/ogc/collections/grid/items?bbox=100,20,-10,120,30,500")
    assert six == sorted(layers["grid"]["code"])


# -- items: datetime ------------------------------------------------------------------------
def _sec(dt):
    return dt.replace(microsecond=0)


def _z(dt) -> str:
    return _sec(dt).isoformat() + "Z"


def test_datetime_on_cases_instant_interval_and_open_intervals(ogc, all_cases):
    by_time = sorted(all_cases, key=lambda c: c.created_at)
    early, mid, late = by_time[40].created_at, by_time[200].created_at, by_time[350].created_at

    def expect(lo=None, hi=None):  # created within [lo, hi] at second precision
        return sorted(c.id for c in all_cases
                      if (lo is None or _sec(c.created_at) >= _sec(lo))
                      and (hi is None or _sec(c.created_at) <= _sec(hi)))

    def got(dt: str):
        return sorted(ids_of(ogc, f"/ogc/collections/cases/items?limit=10000&datetime={dt}"))

    instant = got(_z(mid))
    assert by_time[200].id in instant
    assert instant == expect(mid, mid)
    assert got(f"{_z(early)}/{_z(late)}") == expect(early, late)
    assert len(expect(early, late)) >= 300
    assert got(f"../{_z(mid)}") == expect(hi=mid)
    assert got(f"/{_z(mid)}") == expect(hi=mid)  # an empty start is open too
    assert got(f"{_z(mid)}/..") == expect(lo=mid)
    assert got(f"{_z(mid)}/") == expect(lo=mid)
    assert set(got(f"../{_z(mid)}")) | set(got(f"{_z(mid)}/..")) == {c.id for c in all_cases}
    # The same instant with an offset (Beijing time) and with fractional seconds.
    cst = (_sec(mid) + timedelta(hours=8)).isoformat() + "+08:00"
    assert got(cst.replace("+", "%2B")) == instant
    exact = mid.isoformat(timespec="microseconds") + "Z"
    assert got(exact) == sorted(c.id for c in all_cases if c.created_at == mid)
    # A date is that whole UTC day; GDAL sends "2026-01-02T" for a date.
    day = mid.date()
    on_day = sorted(c.id for c in all_cases if c.created_at.date() == day)
    assert got(day.isoformat()) == on_day and on_day
    assert got(f"{day.isoformat()}T/{day.isoformat()}T") == on_day
    # Paging keeps the filter.
    page = get(ogc, f"/ogc/collections/cases/items?limit=5&datetime={_z(early)}/..").get_json()
    assert page["numberMatched"] == len(expect(lo=early))
    nxt = parse_qs(urlsplit(links_by_rel(page)["next"]["href"]).query)
    assert nxt["datetime"] == [f"{_z(early)}/.."]


def test_datetime_is_ignored_by_boundaries_which_have_no_time(ogc):
    # /req/core/fc-time-response C: features without a temporal geometry match.
    page = get(ogc, "/ogc/collections/grid/items?datetime=1999-01-01T00:00:00Z").get_json()
    assert page["numberMatched"] == 43
    get(ogc, "/ogc/collections/grid/items?datetime=yesterday", 400)


# -- single features --------------------------------------------------------------------------
def test_a_boundary_feature_by_its_code(ogc, layers):
    row = layers["community"].set_index("code").loc["451102003001"]
    r = get(ogc, "/ogc/collections/community/items/451102003001")
    assert r.mimetype == "application/geo+json"
    assert r.headers["Content-Crs"] == f"<{CRS84}>"
    feat = r.get_json()
    assert feat["type"] == "Feature" and feat["id"] == "451102003001"
    assert feat["properties"]["name"] == "厦良社区" == row["name"]
    assert shapely.geometry.shape(feat["geometry"]).equals_exact(row.geometry, 1e-6)
    links = links_by_rel(feat)
    assert links["self"]["href"].endswith("/ogc/collections/community/items/451102003001")
    assert links["collection"]["href"] == "http://localhost/ogc/collections/community"
    assert all("type" in lk for lk in feat["links"])


def test_a_case_by_its_id_equals_its_feature_in_the_items(ogc, all_cases):
    case = all_cases[17]
    feat = get(ogc, f"/ogc/collections/cases/items/{case.id}").get_json()
    assert feat["id"] == case.id
    assert feat["geometry"] == {"type": "Point", "coordinates": [case.lon, case.lat]}
    page = get(ogc, "/ogc/collections/cases/items?limit=1&offset=17").get_json()
    assert {k: v for k, v in feat.items() if k != "links"} == page["features"][0]


# -- public fields, consistent schema -----------------------------------------------------------
def test_cases_show_public_fields_only_with_the_same_keys_and_types(public_client, hemei):
    chain = hemei.locator.locate(111.57, 24.40)
    secret = hemei.store.create_case(
        NewCase(category="sanitation", title="楼道堆放杂物", description="三楼楼道堆满纸箱",
                lon=111.57, lat=24.40, source="resident"), chain, None,
        extra={"reporter_name": "李秘密", "reporter_phone": "13912345678",
               "tracking_code": "TRK-SECRET-42"})
    r = get(public_client, "/ogc/collections/cases/items?limit=200")
    text = r.get_data(as_text=True)
    for s in ("李秘密", "13912345678", "TRK-SECRET-42"):
        assert s not in text
    feats = r.get_json()["features"]
    assert feats[0]["id"] == secret.id  # newest first
    one = get(public_client, f"/ogc/collections/cases/items/{secret.id}")
    assert "13912345678" not in one.get_data(as_text=True)

    keys = set(feats[0]["properties"])
    assert {"category", "status", "grid_code", "created_at", "title",
            "category_name_zh", "status_name_en"} <= keys
    assert not keys & set(SECRET_FIELDS)
    types: dict[str, set] = {}
    for f in feats:
        assert set(f["properties"]) == keys  # every feature, the same keys
        for k, v in f["properties"].items():
            assert not isinstance(v, dict | list), k  # flat scalars for GIS clients
            if v is not None:
                types.setdefault(k, set()).add(type(v).__name__)
    assert all(len(t) == 1 for t in types.values()), types  # one JSON type per key
    assert feats[0]["properties"]["category_name_zh"] == "环境卫生"


def test_boundary_features_have_the_same_keys_nulls_included(ogc):
    for level in LEVELS:
        feats = get(ogc, f"/ogc/collections/{level}/items?limit=100").get_json()["features"]
        assert all(list(f["properties"]) == ["code", "name", "parent_code", "households"]
                   for f in feats)


# -- bad parameters -------------------------------------------------------------------------------
@pytest.mark.parametrize("query", [
    "bbox=1,2,3", "bbox=a,b,c,d", "bbox=1,2,3,4,5", "bbox=0,10,1,5", "bbox=0,0,200,1",
    "bbox=0,-91,1,1", "bbox=nan,0,1,1", "limit=0", "limit=-5", "limit=abc", "limit=1.5",
    "offset=-1", "offset=x", "limit=%D9%A3", "limit=1_0",
    "datetime=yesterday", "datetime=../..", "datetime=/",
    "datetime=2025-02-30T00:00:00Z", "datetime=2025-03-02T00:00:00Z/2025-03-01T00:00:00Z",
    "datetime=2025-01-01/2025-02-01/2025-03-01", "datetime=2025-01-01T25:00:00Z",
    "datetime=2025-01-01T10:00:00%2B24:00", "datetime=%EF%BC%92025-01-01",
    "foo=1", "bbox-crs=x", "f=html", "f=xml", "limit=5&limit=6",
])
@pytest.mark.parametrize("collection", ["grid", "cases"])
def test_bad_parameters_are_400_json_with_code_and_description(ogc, collection, query):
    r = get(ogc, f"/ogc/collections/{collection}/items?{query}", 400)
    assert r.mimetype == "application/json"
    body = r.get_json()
    assert body["code"] == "InvalidParameterValue"
    assert isinstance(body["description"], str) and body["description"]


def _refused(ogc, url: str, param: str) -> None:
    body = get(ogc, url, 400).get_json()
    assert body["code"] == "InvalidParameterValue"
    assert param in body["description"], body


# Past datetime's own range (years 1–9999) once shifted by the offset or the precision:
# each was an OverflowError (a 500).
@pytest.mark.parametrize("value", [
    "9999-12-31", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00%2B01:00",
    "9999-12-31T23:59:59-01:00", "1899-12-31T23:59:59Z", "3000-01-01",
    "0001-01-01/..", "../9999-12-31", "2025-01-01/9999-12-31T23:59:59.999999Z",
])
@pytest.mark.parametrize("collection", ["grid", "cases"])
def test_datetimes_out_of_range_are_400_naming_datetime(ogc, collection, value):
    _refused(ogc, f"/ogc/collections/{collection}/items?datetime={value}", "datetime")


@pytest.mark.parametrize("value", [
    "2999-12-31", "2999-12-31T23:59:59.999999-23:59", "1900-01-01T00:00:00%2B23:59",
    "1900-01-01", "2999-12-31/..", "../1900-01-01",
])
def test_extreme_datetimes_in_range_match_no_case(ogc, value):
    page = get(ogc, f"/ogc/collections/cases/items?datetime={value}").get_json()
    assert page["numberMatched"] == 0 and page["features"] == []


# offset had no upper bound: past 64 bits SQLite raised OverflowError, past 4,300 digits
# int() a ValueError. It stops at 1,000,000,000, like /api/v1's.
@pytest.mark.parametrize("value", ["9223372036854775808", "1000000001", "1" * 5000,
                                   "-9223372036854775809", "%D9%A3"])
@pytest.mark.parametrize("collection", ["grid", "cases"])
def test_offsets_out_of_range_are_400_naming_offset(ogc, collection, value):
    _refused(ogc, f"/ogc/collections/{collection}/items?offset={value}", "offset")


def test_the_largest_offset_and_huge_limits_still_work(ogc):
    page = get(ogc, "/ogc/collections/cases/items?offset=1000000000").get_json()
    assert page["numberReturned"] == 0 and page["numberMatched"] > 0
    for limit in ("9223372036854775808", "1" * 5000):  # lowered to the maximum
        page = get(ogc, f"/ogc/collections/cases/items?limit={limit}").get_json()
        assert page["numberReturned"] == page["numberMatched"]
    _refused(ogc, "/ogc/collections/cases/items?limit=-" + "1" * 5000, "limit")


# A case id no case can have (other scripts' digits, past the store's 32-bit ids).
@pytest.mark.parametrize("fid", ["%C2%B2", "%D9%A3", "2147483648", "9223372036854775808",
                                 "1" * 5000])
def test_case_ids_that_cannot_exist_are_404(ogc, fid):
    assert get(ogc, f"/ogc/collections/cases/items/{fid}", 404).get_json()["code"] == \
        "NotFound"


@pytest.mark.parametrize("url", ["/ogc/?foo=1", "/ogc/conformance?limit=5",
                                 "/ogc/collections?f=html", "/ogc/collections/grid?bbox=1",
                                 "/ogc/collections/grid/items/451102003001001?limit=1"])
def test_unknown_parameters_are_400_everywhere(ogc, url):
    assert get(ogc, url, 400).get_json()["code"] == "InvalidParameterValue"


def test_f_json_and_an_html_accept_header_get_json(ogc):
    assert get(ogc, "/ogc/collections?f=json").mimetype == "application/json"
    r = ogc.get("/ogc/collections/grid/items?limit=1", headers={"Accept": "text/html"})
    assert r.status_code == 200 and r.mimetype == "application/geo+json"


def test_items_carry_the_crs_header_an_etag_and_cors(ogc):
    r = get(ogc, "/ogc/collections/street/items")
    assert r.headers["Content-Crs"] == f"<{CRS84}>"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    etag = r.headers["ETag"]
    assert ogc.get("/ogc/collections/street/items",
                   headers={"If-None-Match": etag}).status_code == 304


# -- GDAL's OGC API – Features driver, for real --------------------------------------------------
def _require_ogrinfo() -> str:
    exe = shutil.which("ogrinfo")
    reason = None
    if exe is None:
        reason = "GDAL's ogrinfo is not installed (scripts/system-deps.sh installs gdal-bin)"
    else:
        formats = subprocess.run([exe, "--formats"], capture_output=True, text=True,
                                 timeout=60).stdout
        if "OAPIF" not in formats:
            reason = "this GDAL has no OAPIF (OGC API – Features) driver"
    if reason:
        if os.environ.get("HEMEI_REQUIRE_SYSTEM_DEPS"):
            pytest.fail(f"ogrinfo with the OAPIF driver is required here: {reason}")
        pytest.skip(reason)
    return exe


@pytest.fixture(scope="module")
def ogr(seeded_template, tmp_path_factory):
    """``ogr(*args)`` runs ``ogrinfo -ro <args>`` against the app served on a free
    loopback port (over its own copy of the demo instance); ``OAPIF`` in the args is
    replaced by the dataset name. Yields (run, app)."""
    exe = _require_ogrinfo()
    from tests.conftest import _copy_instance
    from webapp import create_app

    inst = _copy_instance(seeded_template, tmp_path_factory.mktemp("ogr") / "instance")
    app = create_app({"INSTANCE": str(inst), "TILES": "none"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dataset = f"OAPIF:http://127.0.0.1:{server.server_port}/ogc"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(LC_ALL="C.UTF-8", NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost", GDAL_HTTP_TIMEOUT="60")

    def run(*args: str) -> str:
        cmd = [exe, "-ro", *(dataset if a == "OAPIF" else a for a in args)]
        p = subprocess.run(cmd, capture_output=True, env=env, timeout=180)
        out = p.stdout.decode("utf-8")
        assert p.returncode == 0, (cmd, out[-2000:], p.stderr.decode("utf-8", "replace"))
        assert "ERROR" not in p.stderr.decode("utf-8", "replace"), p.stderr
        return out

    yield run, app
    server.shutdown()
    thread.join(5)


def _fields(summary: str) -> dict[str, str]:
    """``name: Type (w.p)`` lines of ``ogrinfo -so`` → {name: Type}."""
    return dict(re.findall(r"^(\w+): ([\w()]+) \(\d+\.\d+\)$", summary, re.MULTILINE))


def test_ogrinfo_lists_every_collection(ogr):
    run, _ = ogr
    out = run("OAPIF")
    for i, cid in enumerate([*LEVELS, "cases"], start=1):
        assert re.search(rf"^{i}: {cid} \(title: .+\) \((Polygon|Point)\)$", out, re.M), out


@pytest.mark.parametrize("collection", [*LEVELS, "cases"])
def test_ogrinfo_reads_each_collection_count_and_fields(ogr, collection):
    run, app = ogr
    h = app.extensions["hemei"]
    out = run("-so", "OAPIF", collection)
    expected = (h.store.list_cases(limit=1)[1] if collection == "cases"
                else len(h.layers[collection]))
    assert int(re.search(r"^Feature Count: (\d+)$", out, re.M)[1]) == expected
    fields = _fields(out)
    if collection == "cases":
        assert re.search(r"^Geometry: Point$", out, re.M)
        assert {"category", "title", "status", "grid_code", "community_code",
                "category_name_zh", "status_name_zh", "overdue"} <= set(fields)
        assert fields["created_at"] == "DateTime"
        assert fields["id"] == "Integer"
        assert not set(fields) & set(SECRET_FIELDS)
    else:
        assert re.search(r"^Geometry: Polygon$", out, re.M)
        assert {"code", "name", "parent_code", "households"} <= set(fields)
        assert fields["code"] == fields["name"] == "String"
    if collection in ("compound", "grid"):
        assert fields["households"] == "Integer"
    extent = re.search(r"^Extent: \(([\d.]+), ([\d.]+)\) - \(([\d.]+), ([\d.]+)\)$", out, re.M)
    assert 111 < float(extent[1]) < float(extent[3]) < 112
    assert 24 < float(extent[2]) < float(extent[4]) < 25


def test_ogrinfo_keeps_chinese_names_intact(ogr):
    run, _ = ogr
    street = run("-al", "-q", "OAPIF", "street")
    assert "name (String) = 江南街道" in street
    community = run("-al", "-q", "OAPIF", "community")
    for name in ("厦良社区", "点灯社区", "江南社区"):
        assert f"name (String) = {name}" in community
    assert community.count("OGRFeature(community):") == 5


def test_ogrinfo_pages_through_every_grid_and_filters(ogr):
    run, app = ogr
    grids = app.extensions["hemei"].layers["grid"]
    out = run("-al", "-q", "OAPIF", "grid")  # GDAL 3.6 pages 10 at a time: next links
    assert out.count("OGRFeature(grid):") == len(grids) == 43
    codes = re.findall(r"^  code \(String\) = (\d+)$", out, re.M)
    assert codes == sorted(grids["code"])
    one = run("-al", "-q", "-where", "name = '厦良社区第1网格'", "OAPIF", "grid")
    assert one.count("OGRFeature(grid):") == 1 and "451102003001001" in one
    # A spatial filter becomes a bbox request.
    minx, miny, maxx, maxy = (111.57, 24.39, 111.58, 24.40)
    spat = run("-al", "-q", "-spat", str(minx), str(miny), str(maxx), str(maxy), "OAPIF", "grid")
    expected = grids[grids.geometry.intersects(box(minx, miny, maxx, maxy))]
    assert spat.count("OGRFeature(grid):") == len(expected) > 0


def test_ogrinfo_date_filter_on_cases_is_sent_as_datetime(ogr):
    run, app = ogr
    rows, _ = app.extensions["hemei"].store.list_cases(limit=None)
    day = sorted(c.created_at for c in rows)[len(rows) // 2].date()
    expected = sum(c.created_at.date() >= day for c in rows)
    # GDAL turns this into ?datetime=<day>T/.. and trusts the server with it.
    out = run("-al", "-q", "-where", f"created_at >= '{day:%Y/%m/%d}'", "OAPIF", "cases")
    assert out.count("OGRFeature(cases):") == expected > 0
