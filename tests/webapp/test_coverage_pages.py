"""Coverage metrics through the API and the map page; caching; tile sources; search."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest

from gis.coverage import METRICS
from gis.gcj02 import gcj02_to_wgs84, wgs84_to_gcj02
from tests.conftest import INSIDE


def test_coverage_api_has_every_grid_and_every_metric(client, hemei):
    r = client.get("/api/v1/coverage?period=30d")
    assert r.status_code == 200
    body = r.get_json()
    assert len(body["features"]) == len(hemei.layers["grid"])
    assert [m["key"] for m in body["metrics"]] == list(METRICS)
    for f in body["features"]:
        for key in METRICS:
            assert key in f["properties"]
    opens = {f["properties"]["code"]: f["properties"]["open"] for f in body["features"]}
    summary = hemei.grid_summary().set_index("code")
    # "open at the end of a period that ends now" is the current open count.
    assert all(opens[c] == summary.loc[c, "open"] for c in opens)


def test_coverage_api_no_data_is_null_not_zero(client):
    body = client.get("/api/v1/coverage?period=7d").get_json()
    rates = [f["properties"]["resolution_rate"] for f in body["features"]]
    news = [f["properties"]["new"] for f in body["features"]]
    # Grids with no case reported in the week have no resolution rate (null), but 0 new.
    assert any(r is None for r in rates)
    assert all(n is not None for n in news)
    for r, n in zip(rates, news, strict=True):
        assert (r is None) == (n == 0)


@pytest.mark.parametrize("query, field", [("period=lastweek", "period"),
                                          ("period=0d", "period")])
def test_coverage_bad_period_is_400(client, query, field):
    r = client.get(f"/api/v1/coverage?{query}")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == field


@pytest.mark.parametrize("query, field", [("metric=happiness", "metric"),
                                          ("period=yesterday", "period"),
                                          ("scheme=random", "scheme")])
def test_overview_bad_parameters_are_400_pages(client, query, field):
    r = client.get(f"/?{query}")
    assert r.status_code == 400
    assert field in r.get_data(as_text=True)


def test_every_metric_renders_with_its_legend(client):
    for key, metric in METRICS.items():
        html = client.get(f"/?metric={key}&period=90d").get_data(as_text=True)
        assert f'data-metric="{key}"' in html
        assert metric.zh in html
        direction = "越少越好" if metric.better == "lower" else "越高越好"
        assert direction in html


def test_overview_embeds_no_case_markers_and_points_api_serves_them(client):
    html = client.get("/").get_data(as_text=True)
    assert "HemeiMap.attach(" in html
    assert '"popup"' not in html  # no per-case data in the page
    r = client.get("/api/v1/issues/points?bbox=111.5,24.3,111.7,24.5&limit=50")
    body = r.get_json()
    assert body["fields"][:3] == ["id", "lon", "lat"]
    assert len(body["rows"]) == 50 and body["truncated"] is True
    assert body["numberMatched"] == client.get("/api/v1/issues?limit=1").get_json()[
        "numberMatched"]


def test_overview_is_cached_with_etag_and_gzip(client, app):
    r1 = client.get("/", headers={"Accept-Encoding": "gzip"})
    assert r1.headers["Content-Encoding"] == "gzip"
    html = gzip.decompress(r1.data).decode("utf-8")
    assert "<html" in html
    etag = r1.headers["ETag"]
    r2 = client.get("/", headers={"If-None-Match": etag})
    assert r2.status_code == 304
    cache = app.extensions["hemei_pages"]
    hits = cache.hits
    client.get("/")
    assert cache.hits == hits + 1
    # A new case changes the data version, so the next page is fresh.
    client.post("/api/v1/issues", json={"category": "parking", "lon": INSIDE[0],
                                         "lat": INSIDE[1], "description": "占道停车"})
    r3 = client.get("/", headers={"If-None-Match": etag})
    assert r3.status_code == 200 and r3.headers["ETag"] != etag


def test_search_goes_to_the_grid_or_compound(client, hemei):
    grid = hemei.layers["grid"].iloc[3]
    r = client.get(f"/search?q={grid['code']}")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/grids/{grid['code']}")
    r = client.get("/search?q=秀峰苑小区")
    assert r.status_code == 302 and "/compounds/" in r.headers["Location"]
    many = client.get("/search?q=网格").get_data(as_text=True)
    assert many.count("/grids/") >= 10
    assert "没有找到" in client.get("/search?q=不存在的地方").get_data(as_text=True)


def test_compound_page_lists_open_cases_and_grids(client, hemei):
    comp = hemei.layers["compound"].set_index("name").loc["大修厂小区"]
    html = client.get(f"/compounds/{comp['code']}").get_data(as_text=True)
    cases = client.get(f"/api/v1/issues?compound={comp['code']}&status=open&limit=500"
                       ).get_json()["features"]
    assert len(cases) > 0
    for f in cases:
        assert f'data-case-id="{f["id"]}"' in html
    assert "/grids/" in html
    assert client.get("/compounds/nope").status_code == 404


def test_case_page_outlines_the_cases_grid_and_compound(client, hemei):
    """The small map shows where the case is without base tiles: its grid and compound
    outlined (and no other grid)."""
    [case] = [c for c in hemei.store.list_cases(limit=500)[0] if c.compound_code][:1]
    html = client.get(f"/cases/{case.id}").get_data(as_text=True)
    grid_codes = set(re.findall(r'"id":\s*"(\d{15})"', html))
    assert grid_codes == {case.grid_code}
    assert re.search(rf'"id":\s*"{case.compound_code}"', html)
    assert hemei.locator.name("grid", case.grid_code) in html


def test_grid_page_sorts_open_cases_most_overdue_first(client, hemei):
    code = hemei.grid_summary().sort_values("open").iloc[-1]["code"]
    html = client.get(f"/grids/{code}").get_data(as_text=True)
    ids = [int(i) for i in re.findall(r'data-case-id="(\d+)"', html)]
    dues = {f["id"]: f["properties"]["due_at"] for f in client.get(
        f"/api/v1/issues?grid={code}&status=open&limit=500").get_json()["features"]}
    assert set(ids) == set(dues)
    assert [dues[i] for i in ids] == sorted(dues[i] for i in ids)


@pytest.fixture
def amap_client(instance):
    from webapp import create_app

    return create_app({"TESTING": True, "INSTANCE": str(instance), "TILES": "amap"}
                      ).test_client()


def test_gcj02_tiles_shift_every_geometry_for_display(amap_client, hemei):
    html = amap_client.get("/").get_data(as_text=True)
    assert "autonavi.com" in html and '"datum": "gcj02"' in html.replace('":"', '": "')
    geo = amap_client.get("/layers/grid/display.geojson").get_data(as_text=True)
    m = re.search(r'"coordinates": ?\[\[\[(\d+\.\d+), ?(\d+\.\d+)\]', geo)
    lon, lat = float(m.group(1)), float(m.group(2))
    # The drawn vertex converts back to a WGS-84 vertex of a stored grid (≈ 1 m).
    wlon, wlat = gcj02_to_wgs84(lon, lat)
    import shapely

    # In degrees, on purpose: 2e-5° is about 2 m here.
    d = shapely.distance(hemei.layers["grid"].boundary.values,
                         shapely.Point(float(wlon), float(wlat))).min()
    assert d < 2e-5
    # … and is hundreds of metres from where the WGS-84 vertex itself is.
    glon, glat = wgs84_to_gcj02(float(wlon), float(wlat))
    assert abs(glon - lon) < 1e-5 and np.hypot(glon - wlon, glat - wlat) > 0.002


def test_a_point_picked_on_a_gcj02_map_is_stored_in_wgs84(client):
    glon, glat = wgs84_to_gcj02(INSIDE[0], INSIDE[1])
    r = client.post("/api/v1/issues", json={"category": "drainage", "lon": float(glon),
                                             "lat": float(glat), "datum": "gcj02",
                                             "description": "积水"})
    assert r.status_code == 201
    lon, lat = r.get_json()["geometry"]["coordinates"]
    assert abs(lon - INSIDE[0]) < 1e-7 and abs(lat - INSIDE[1]) < 1e-7
    bad = client.post("/api/v1/issues", json={"category": "drainage", "lon": 111.57,
                                               "lat": 24.4, "datum": "bd09",
                                               "description": "积水"})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "datum"


def test_unknown_tile_setting_fails_at_startup_with_a_clear_message(instance):
    from gis.errors import HemeiError
    from webapp import create_app

    with pytest.raises(HemeiError, match="none") as e:
        create_app({"INSTANCE": str(instance), "TILES": "googlemaps"})
    assert e.value.field == "HEMEI_TILES"


def test_points_are_compact_json(client):
    body = json.loads(client.get("/api/v1/issues/points?limit=3").data)
    assert all(len(row) == 7 for row in body["rows"])


@pytest.mark.parametrize("url", ["/?period=2999-01", "/api/v1/coverage?period=2999-01"])
def test_a_period_that_has_not_begun_is_refused(client, url):
    """Nothing has happened in it yet: counting it would show made-up zeros."""
    r = client.get(url)
    assert r.status_code == 400
    assert "period" in r.get_data(as_text=True)
