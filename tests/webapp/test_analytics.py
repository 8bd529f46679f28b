"""The analytics API (clusters, hot spots, indicators, hexagons, recurring problems), the
planner's page and its drill-down lists, the charts and the planner's map."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import geopandas as gpd
import numpy as np
import pytest
import shapely

from gis import analysis, charts
from gis.indicators import INDICATORS, LEVELS
from tests.conftest import PASSWORDS

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
DRILL = re.compile(r'<a class="drill( count)?[^"]*" data-count="(\d+)" href="([^"]+)">([^<]*)</a>')
OLD_COMPOUNDS = {"大修厂小区", "厦良新村小区", "粮食局宿舍小区", "点灯新村小区", "供电局宿舍小区",
                 "江南小区", "农机厂宿舍小区", "新兴小区", "建安小区"}


def login(app, username: str, password: str | None = None):
    c = app.test_client()
    token = TOKEN.search(c.get("/login").get_data(as_text=True)).group(1)
    r = c.post("/login", data={"username": username,
                               "password": password or PASSWORDS[username],
                               "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    return c


@pytest.fixture
def planner(app):
    return login(app, "planner")


def error_field(r) -> str:
    assert r.status_code == 400, (r.status_code, r.get_data(as_text=True)[:300])
    return r.get_json()["error"]["field"]


def etag_roundtrip(client, url: str):
    r = client.get(url)
    assert r.status_code == 200 and r.headers.get("ETag"), url
    assert client.get(url, headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    return r


# -- the API ---------------------------------------------------------------------------------
def test_clusters_over_the_demo_data(public_client, hemei):
    body = etag_roundtrip(public_client, "/api/v1/clusters?period=365d").get_json()
    assert body["type"] == "FeatureCollection" and body["min_cases"] == 5
    feats = body["features"]
    assert len(feats) >= 5
    counts = [f["properties"]["count"] for f in feats]
    assert counts == sorted(counts, reverse=True)
    frame = analysis.load_cases_frame(hemei.store).set_index("id")
    for f in feats:
        p = f["properties"]
        assert p["count"] >= 5 and len(p["case_ids"]) == p["count"]
        assert sum(p["categories"].values()) == p["count"]
        hull = shapely.geometry.shape(f["geometry"])
        assert f["geometry"]["type"] == "Polygon" and hull.is_valid
        pts = frame.loc[p["case_ids"], ["lon", "lat"]].to_numpy()
        assert shapely.contains_xy(hull, pts[:, 0], pts[:, 1]).all()
    # A larger minimum: fewer, bigger clusters; the old compounds' roof leaks among them.
    big = public_client.get("/api/v1/clusters?period=365d&min_cases=8&radius_m=80").get_json()
    assert all(f["properties"]["count"] >= 8 for f in big["features"])
    leaks = public_client.get("/api/v1/clusters?period=365d&category=roof_leak").get_json()
    assert leaks["features"] and all(set(f["properties"]["categories"]) == {"roof_leak"}
                                     for f in leaks["features"])
    names = {n for f in leaks["features"] for n in f["properties"]["compound_names"]}
    assert names & OLD_COMPOUNDS
    # A month with no cases: no clusters, not an error.
    assert public_client.get("/api/v1/clusters?period=2020-01").get_json()["features"] == []


@pytest.mark.parametrize("query, field", [
    ("radius_m=0", "radius_m"), ("radius_m=abc", "radius_m"), ("radius_m=5001", "radius_m"),
    ("radius_m=nan", "radius_m"), ("min_cases=1", "min_cases"), ("min_cases=2.5", "min_cases"),
    ("min_cases=x", "min_cases"), ("category=ufo", "category"), ("period=soon", "period"),
    ("period=2026-13", "period"), ("grid=000", "grid"), ("community=nowhere", "community"),
])
def test_clusters_refuse_bad_parameters(public_client, query, field):
    r = public_client.get(f"/api/v1/clusters?{query}")
    assert error_field(r) == field
    assert set(r.get_json()) == {"error"}


def test_hotspots_give_every_grid_its_z_p_and_class(public_client, hemei):
    body = etag_roundtrip(public_client, "/api/v1/hotspots?metric=new&period=90d").get_json()
    grids = hemei.layers["grid"]
    assert sorted(f["properties"]["code"] for f in body["features"]) == sorted(grids["code"])
    for f in body["features"]:
        p = f["properties"]
        assert {"z", "p", "q", "cls", "value", "neighbours"} <= set(p)
        assert p["cls"] in analysis.HOTSPOT_CLASSES
        if p["cls"] in ("hot", "cold", "none"):
            assert isinstance(p["z"], float) and 0 < p["p"] <= 1
    assert body["confidence"] == 0.95 and body["alpha"] == 0.05
    assert body["correction"] == "benjamini_hochberg" and body["tested"] == len(grids)
    assert body["metric"]["key"] == "new"
    assert public_client.get("/api/v1/hotspots?confidence=0.99").get_json()["alpha"] == 0.01
    # The same answer twice (seeded permutations), so the ETag holds; a month is fixed.
    month = public_client.get("/api/v1/hotspots?metric=new&period=2026-10").get_json()
    assert public_client.get("/api/v1/hotspots?metric=new&period=2026-10").get_json() == month


@pytest.mark.parametrize("query, field", [
    ("confidence=0.5", "confidence"), ("confidence=high", "confidence"),
    ("confidence=95", "confidence"), ("metric=happiness", "metric"),
    ("period=0d", "period"), ("category=ufo", "category"),
])
def test_hotspots_refuse_bad_parameters(public_client, query, field):
    assert error_field(public_client.get(f"/api/v1/hotspots?{query}")) == field


@pytest.mark.parametrize("level", LEVELS)
def test_indicators_at_every_level(public_client, hemei, level):
    body = etag_roundtrip(public_client, f"/api/v1/indicators?level={level}&period=90d"
                          ).get_json()
    assert body["level"] == level and body["rows"]
    assert {d["key"] for d in body["definitions"]} == set(INDICATORS)
    assert body["previous"]["end"] == body["period"]["start"]
    for row in body["rows"]:
        for key in INDICATORS:
            for suffix in ("", "_prev", "_yoy", "_mom_change", "_yoy_change"):
                assert key + suffix in row, (level, key + suffix)
    if level in ("grid", "community", "street"):
        assert len(body["rows"]) == len(hemei.layers[level])
    if level == "street":
        reported = len(analysis.load_cases_frame(hemei.store, period="90d", status=None))
        assert body["rows"][0]["reported"] >= reported  # rejected ones are reported too


def test_indicators_refuse_bad_parameters(public_client):
    assert error_field(public_client.get("/api/v1/indicators?level=planet")) == "level"
    assert error_field(public_client.get("/api/v1/indicators?period=forever")) == "period"
    # Too early to have a year before: a 400, not a crash.
    assert error_field(public_client.get("/api/v1/indicators?period=0001-01")) == "period"


def test_hexbins_hold_every_case(public_client, hemei):
    body = etag_roundtrip(public_client, "/api/v1/hexbins?resolution=9").get_json()
    loaded = len(analysis.load_cases_frame(hemei.store))  # every case not rejected
    assert sum(f["properties"]["cases"] for f in body["features"]) == loaded == body["cases"]
    assert all(f["geometry"]["type"] == "Polygon" for f in body["features"])
    cells = [f["properties"]["cell"] for f in body["features"]]
    assert len(set(cells)) == len(cells)
    coarse = public_client.get("/api/v1/hexbins?resolution=7").get_json()
    assert len(coarse["features"]) < len(cells) and coarse["cases"] == loaded
    assert error_field(public_client.get("/api/v1/hexbins?resolution=4")) == "resolution"
    assert error_field(public_client.get("/api/v1/hexbins?resolution=nine")) == "resolution"


def test_recurring_lists_the_old_compounds_roof_leaks(public_client, hemei):
    body = etag_roundtrip(public_client, "/api/v1/recurring").get_json()
    leaks = [f["properties"] for f in body["features"]
             if f["properties"]["category"] == "roof_leak"]
    assert {p["compound_name"] for p in leaks} >= {"大修厂小区", "供电局宿舍小区"}
    assert {p["compound_name"] for p in leaks} <= OLD_COMPOUNDS
    for p in leaks:
        assert p["count"] >= 3 and len(p["case_ids"]) == p["count"]
        assert p["max_in_window"] <= p["count"]
    comps = hemei.layers["compound"].set_index("code")
    for f in body["features"]:  # the point is the mean position of cases in the compound
        code = f["properties"]["compound_code"]
        assert comps.geometry[code].buffer(1e-3).contains(shapely.geometry.shape(f["geometry"]))
    strict = public_client.get("/api/v1/recurring?window_days=30&min_repeats=5").get_json()
    assert len(strict["features"]) < len(body["features"])
    assert error_field(public_client.get("/api/v1/recurring?min_repeats=1")) == "min_repeats"
    assert error_field(public_client.get("/api/v1/recurring?window_days=0")) == "window_days"
    assert error_field(public_client.get("/api/v1/recurring?radius_m=-3")) == "radius_m"


# -- the page ----------------------------------------------------------------------------------
@pytest.mark.parametrize("username", ["planner", "admin", "gw"])
def test_the_planner_page_is_for_planners_admins_and_grid_workers(app, username):
    r = login(app, username).get("/planner")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    for section in ("planner-filters", "headline", "map-section", "charts", "indicator-table",
                    "definitions", "grid-ranking", "oldest-table", "recurring-table"):
        assert f'id="{section}"' in html, section
    assert "规划分析" in html and "反复出现的问题" in html


def test_the_planner_page_refuses_field_staff_and_sends_the_public_to_login(app, public_client):
    assert login(app, "crew").get("/planner").status_code == 403
    r = public_client.get("/planner?period=30d")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    assert public_client.get("/planner/cases").status_code == 302


def test_charts_are_inline_svg_without_external_references(planner):
    html = planner.get("/planner").get_data(as_text=True)
    for chart in ("chart-trend", "chart-categories", "chart-close"):
        m = re.search(rf'<svg id="{chart}".*?</svg>', html, re.S)
        assert m, chart
        svg = m.group(0)
        assert "http" not in svg and "<image" not in svg and "<?xml" not in svg
        assert "DOCTYPE" not in svg and "<script" not in svg
        assert re.search(r"<text[^>]*>[^<]*[\u4e00-\u9fff]", svg), chart  # text, not paths
        hrefs = re.findall(r'href="([^"]*)"', svg)
        assert all(h.startswith(("/planner/cases?", f"#{chart}-")) for h in hrefs), hrefs
        ids = re.findall(r'\bid="([^"]+)"', svg)
        assert all(i.startswith(chart) for i in ids) and len(ids) == len(set(ids))
    assert len(re.findall(r'<svg id="chart-', html)) == 3


def _drills(html: str, section: str | None = None) -> list[tuple[bool, int, str, str]]:
    if section is not None:
        start = html.index(f'id="{section}"')
        end = html.find("<section", start)
        html = html[start:end if end > 0 else None]
    return [(bool(c), int(n), unescape(href), text) for c, n, href, text in DRILL.findall(html)]


def _listed(client, href: str) -> tuple[int, set[int]]:
    r = client.get(href)
    assert r.status_code == 200, (href, r.get_data(as_text=True)[:300])
    html = r.get_data(as_text=True)
    ids = [int(x) for x in re.findall(r'<tr[^>]*data-case-id="(\d+)"', html)]
    total = int(re.search(r'id="drill-count">(\d+)<', html).group(1))
    assert total == len(ids) and len(set(ids)) == len(ids)
    return total, set(ids)


def test_drill_down_lists_exactly_the_cases_behind_each_number(planner, hemei):
    html = planner.get("/planner?level=community").get_data(as_text=True)
    checked = 0
    links = (_drills(html, "headline") + _drills(html, "map-section")
             + _drills(html, "recurring"))
    table = _drills(html, "indicators")
    assert len(table) >= 5 * 20
    links += table[:40] + [d for d in table if "indicator=closed&" in d[2]]
    for is_count, n, href, text in links:
        total, _ids = _listed(planner, href)
        assert total == n, (href, total, n)
        if is_count:
            assert text.strip() == str(n), (href, text)
        checked += 1
    assert checked >= 60

    # One indicator against the table's number and the API's.
    api = planner.get("/api/v1/indicators?level=community&period=90d").get_json()
    row = next(r for r in api["rows"] if r["name"] == "点灯社区")
    cell = next(d for d in table if f"code={row['code']}" in d[2] and "indicator=closed&" in d[2])
    assert cell[1] == row["closed"] == _listed(planner, cell[2])[0]


def test_chart_links_add_up_to_the_headline(planner):
    html = planner.get("/planner").get_data(as_text=True)
    head = {parse_qs(urlsplit(href).query)["indicator"][0]: n
            for _c, n, href, _t in _drills(html, "headline") if "indicator=" in href}
    in_period = next(n for _c, n, href, _t in _drills(html, "map-section"))
    svg = re.search(r'<svg id="chart-categories".*?</svg>', html, re.S).group(0)
    bars = [unescape(h) for h in re.findall(r'href="(/planner/cases[^"]*)"', svg)]
    assert len(bars) >= 5
    assert sum(_listed(planner, h)[0] for h in bars) == in_period
    svg = re.search(r'<svg id="chart-close".*?</svg>', html, re.S).group(0)
    bins = [unescape(h) for h in re.findall(r'href="(/planner/cases[^"]*)"', svg)]
    closed = [_listed(planner, h) for h in bins]
    assert sum(n for n, _ in closed) == head["closed"]  # every case closed in the period
    assert not set.intersection(*[ids for _, ids in closed[:2]])
    svg = re.search(r'<svg id="chart-trend".*?</svg>', html, re.S).group(0)
    weeks = [unescape(h) for h in re.findall(r'href="(/planner/cases[^"]*what=reported[^"]*)"',
                                                svg)]
    assert len(weeks) >= 12
    assert sum(_listed(planner, h)[0] for h in weeks) >= in_period


def test_cluster_and_recurring_drill_downs_match_the_api(planner):
    clusters = planner.get("/api/v1/clusters?period=90d&radius_m=60&min_cases=4").get_json()
    first = clusters["features"][0]["properties"]
    total, ids = _listed(planner, "/planner/cases?what=cluster&cluster=1&period=90d"
                                  "&radius_m=60&min_cases=4")
    assert total == first["count"] and ids == set(first["case_ids"])
    rec = planner.get("/api/v1/recurring?period=90d").get_json()["features"][0]["properties"]
    total, ids = _listed(planner, f"/planner/cases?what=recurring&period=90d&compound="
                                  f"{rec['compound_code']}&category={rec['category']}")
    assert ids == set(rec["case_ids"])
    assert planner.get("/planner/cases?what=cluster&cluster=999&period=90d").status_code == 400
    assert planner.get("/planner/cases?what=everything").status_code == 400
    assert planner.get("/planner/cases?what=indicator&indicator=luck&code=1").status_code == 400


def test_filters_narrow_the_page_to_an_area_and_a_category(planner, hemei):
    grids = hemei.layers["grid"]
    community = "451102003002"
    html = planner.get(f"/planner?community={community}&category=roof_leak&period=90d"
                       "&level=grid").get_data(as_text=True)
    rows = re.findall(r'<tr data-code="(\d+)"><th>', html)
    assert set(rows) == set(grids.loc[grids["parent_code"] == community, "code"])
    assert "点灯社区" in html.split("</h1>")[0]
    for _c, n, href, _t in _drills(html, "map-section"):
        q = parse_qs(urlsplit(href).query)
        assert q["community"] == [community] and q["category"] == ["roof_leak"]
        assert n == len(analysis.load_cases_frame(hemei.store, period="90d", category="roof_leak")
                        .query("grid_code in @grids.code[@grids.parent_code == @community]"))
    # A grid brings its community; an unknown one is refused.
    grid = grids.loc[grids["parent_code"] == "451102003001", "code"].iloc[0]
    html = planner.get(f"/planner?grid={grid}&community={community}").get_data(as_text=True)
    assert '<option value="451102003001" selected>' in html
    assert planner.get("/planner?grid=nowhere").status_code == 400
    assert planner.get("/planner?period=2026-99").status_code == 400
    assert planner.get("/planner?confidence=0.5").status_code == 400


def test_a_community_planner_starts_on_their_community(app, hemei):
    hemei.accounts.add_user("cplan", "planner", password="cplan-pass-1",
                            area_code="451102003003", display_name="社区规划")
    c = login(app, "cplan", "cplan-pass-1")
    html = c.get("/planner").get_data(as_text=True)
    assert '<option value="451102003003" selected>' in html
    assert '<option value="451102003003" selected>' not in c.get(
        "/planner?community=").get_data(as_text=True)


def test_the_page_is_cached_per_data_version_with_an_etag(app, planner, hemei):
    r = planner.get("/planner?period=30d")
    again = planner.get("/planner?period=30d", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304
    cache = app.extensions["hemei_planner"]
    assert cache.hits >= 1


def test_the_page_in_english(planner):
    html = planner.get("/planner?lang=en").get_data(as_text=True)
    for s in ("Planner", "Clusters and hot spots", "Grids ranked by closure rate",
              "Oldest open cases", "Recurring problems", "Definitions", "MoM", "YoY",
              "Closure rate", "Benjamini"):
        assert s in html, s
    for s in ("规划分析", "反复出现的问题", "最久未结的案件", "网格结案率排名", "指标定义"):
        assert s not in html, s
    # The definitions name each indicator in the other language too.
    assert re.search(r'Closure rate <small class="meta" lang="zh-CN">结案率</small>', html)


def test_every_indicator_has_its_definition_next_to_it(planner):
    html = planner.get("/planner").get_data(as_text=True)
    for key, ind in INDICATORS.items():
        assert f'id="def-{key}"' in html and ind.formula_zh in html
        assert re.search(rf'<th title="{re.escape(ind.formula_zh)}" data-indicator="{key}">',
                         html), key


# -- the map and the charts as functions -----------------------------------------------------
def test_planner_map_outlines_hot_and_cold_grids_and_escapes_names(hemei):
    from gis import maps
    from gis.coverage import parse_period
    from gis.tiles import tile_config

    grids = hemei.coverage(parse_period("90d"))
    grids.loc[grids.index[0], "name"] = "<script>alert(1)</script>`${x}`"
    spots = analysis.hotspots(grids, "new")
    spots.loc[spots.index[0], "cls"] = "hot"
    spots.loc[spots.index[-1], "cls"] = "cold"
    found = analysis.clusters(analysis.load_cases_frame(hemei.store, period="90d"))
    ch = maps.Choropleth(column="new", title="新增案件")
    m = maps.planner_map(grids, spots, found, hemei.layers, tiles=tile_config("none"),
                         choropleth=ch, cluster_url="/planner/cases?what=cluster&cluster="
                                                    "{cluster_id}&period=90d",
                         category_names={"roof_leak": "<b>漏水</b>"})
    html = maps.render_parts(m)
    page = html["html"] + html["script"]
    assert maps.HOT in page and maps.COLD in page and maps.CLUSTER in page
    # Folium writes the GeoJSON as ASCII JSON: "&" is \u0026 there.
    assert "<script>alert" not in page and "\\u003cscript" not in page
    assert "\\u0026lt;script\\u0026gt;alert(1)\\u0026lt;/script\\u0026gt;" in page
    assert "\\u0026lt;b\\u0026gt;" in page and "\\u003cb\\u003e" not in page
    assert "cluster=1\\u0026amp;period=90d" in page  # the popup link, escaped for its href
    legend = html["html"]
    assert "95% 置信度" in legend and "Benjamini–Hochberg" in legend and "DBSCAN" in legend
    en = maps.render_parts(maps.planner_map(grids, spots, found, hemei.layers,
                                            tiles=tile_config("none"), locale="en",
                                            choropleth=ch))["html"]
    assert "95% confidence" in en and "false-discovery-rate" in en


def test_planner_map_says_when_nothing_is_significant(hemei):
    from gis import maps
    from gis.coverage import parse_period
    from gis.tiles import tile_config

    grids = hemei.coverage(parse_period("90d"))
    spots = analysis.hotspots(grids, "new")
    spots["cls"] = "none"
    m = maps.planner_map(grids, spots, None, hemei.layers, tiles=tile_config("none"),
                         choropleth=maps.Choropleth(column="new", title="x"))
    assert 'id="no-spots"' in maps.render_parts(m)["html"]


def test_charts_are_text_not_glyph_outlines_and_work_without_a_cjk_font(monkeypatch):
    weeks = charts.weekly_counts(
        gpd.pd.DataFrame({"created_at": gpd.pd.to_datetime(["2026-10-01", "2026-10-09"]),
                          "closed_at": gpd.pd.to_datetime(["2026-10-05", None]),
                          "status": ["closed", "reported"], "id": [1, 2]}),
        np.datetime64("2026-10-01"), np.datetime64("2026-10-31"))
    assert weeks["reported"].sum() == 2 and weeks["closed"].sum() == 1
    svg = charts.weekly_trend(weeks, title="每周案件", reported_label="上报",
                              closed_label="结案", links=lambda k, w: f"/x?{k}={w:%Y%m%d}")
    assert "<text" in svg and "每周案件" in svg and "http" not in svg
    assert 'href="/x?reported=' in svg and "font-family: 'Noto Sans CJK SC'" in svg
    assert svg == charts.weekly_trend(weeks, title="每周案件", reported_label="上报",
                                      closed_label="结案",
                                      links=lambda k, w: f"/x?{k}={w:%Y%m%d}")  # stable
    monkeypatch.setattr(charts, "cjk_font", lambda: None)
    bare = charts.category_breakdown([("房屋漏水", 3, "/a"), ("路灯不亮", 1, None)],
                                     title="类别", highlight=0)
    assert "房屋漏水" in bare and charts.HIGHLIGHT in bare and 'href="/a"' in bare
    empty = charts.time_to_close([], title="用时", xlabel="天", ylabel="件",
                                 median_label="中位数 {days}", empty_label="没有结案")
    assert "没有结案" in empty
    assert list(charts.day_bins([0.5, 3.2])) == [0, 1, 2, 3, 4]
    assert charts.day_bins([100])[1] == 7  # at most 16 bins


def test_drill_down_links_pin_a_relative_period_to_when_the_number_was_computed(planner):
    html = planner.get("/planner?period=30d").get_data(as_text=True)
    links = _drills(html, "headline")
    assert links and all("&at=" in href for _c, _n, href, _t in links)
    at = int(parse_qs(urlsplit(links[0][2]).query)["at"][0])
    # Asked again later, the list still ends where the page's period did.
    _c, n, href, _t = next(d for d in links if "indicator=reported&" in d[2])
    assert _listed(planner, href)[0] == n
    earlier = href.replace(f"at={at}", f"at={at - 20 * 86400}")
    assert _listed(planner, earlier)[0] != n
    assert "&at=" not in "".join(h for _c, _n, h, _t in _drills(
        planner.get("/planner?period=2026-10").get_data(as_text=True), "headline"))
    assert planner.get("/planner/cases?what=reported&at=soon").status_code == 400


# -- the filters reach every number; periods and areas are checked ----------------------------
def _past_days(days: int = 200) -> str:
    """A date range of whole past days ending yesterday (Beijing days, as periods are):
    fixed, complete, and holding the demo cases (the last 120 days)."""
    from datetime import timedelta

    from gis.cases import utcnow
    from gis.localtime import beijing_date

    today = beijing_date(utcnow())
    return f"{today - timedelta(days=days)}..{today - timedelta(days=1)}"


def _count_cases(hemei, period: str, **where) -> int:
    """Cases reported in ``period`` (rejected ones included, as 上报数), by SQL."""
    import sqlalchemy as sa

    from gis.coverage import parse_period
    from gis.storage import cases

    p = parse_period(period)
    conds = [cases.c.created_at >= p.start, cases.c.created_at < p.end]
    conds += [cases.c[k] == v for k, v in where.items()]
    with hemei.store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(cases)
                            .where(*conds)).scalar()


def _reported_cells(html: str, section: str) -> list[tuple[int, str]]:
    return [(n, href) for _c, n, href, _t in _drills(html, section)
            if "indicator=reported&" in href]


def test_the_category_filter_reaches_the_headline_the_tables_and_the_ranking(planner, hemei):
    # Was: the heading changed but 上报数, 结案数, … and the tables stayed the street's.
    period = _past_days()
    want = _count_cases(hemei, period, category="roof_leak")
    every = _count_cases(hemei, period)
    assert 0 < want < every
    html = planner.get(f"/planner?period={period}&category=roof_leak&level=community"
                       ).get_data(as_text=True)
    (n, href), = _reported_cells(html, "headline")
    assert n == want
    total, ids = _listed(planner, href)
    assert total == want
    cats = {r["category_label"] for r in _case_rows(planner, href)}
    assert cats == {"房屋漏水"}
    assert sum(n for n, _h in _reported_cells(html, "indicators")) == want
    assert sum(n for n, _h in _reported_cells(html, "ranking")) == want
    for section in ("headline", "indicators", "ranking"):
        for _c, _n, href, _t in _drills(html, section):
            assert parse_qs(urlsplit(href).query)["category"] == ["roof_leak"], href
    unfiltered = planner.get(f"/planner?period={period}").get_data(as_text=True)
    assert _reported_cells(unfiltered, "headline")[0][0] == every
    # The API takes the category too.
    api = planner.get(f"/api/v1/indicators?level=street&period={period}&category=roof_leak"
                      ).get_json()
    assert api["rows"][0]["reported"] == want and api["category"] == "roof_leak"
    assert error_field(planner.get("/api/v1/indicators?category=nothing")) == "category"


def _case_rows(client, href: str) -> list[dict]:
    html = client.get(href).get_data(as_text=True)
    return [{"id": int(i), "category_label": c} for i, c in re.findall(
        r'<tr[^>]*data-case-id="(\d+)">.*?</td>\s*<td>.*?</td>\s*<td>([^<]*)</td>', html, re.S)]


def test_compound_rows_count_only_the_cases_inside_the_chosen_grid(planner, hemei):
    # Was: compounds overlapping the grid, each counted whole (6 cases of a compound, 5 of
    # them in the next grid, under a grid with 4).
    period = _past_days()
    frame = analysis.load_cases_frame(hemei.store, period=period)
    spread = frame.dropna(subset=["compound_code"]).groupby("compound_code")["grid_code"]
    straddling = spread.nunique()
    comp = straddling[straddling > 1].index[0]
    grid = frame.loc[frame["compound_code"] == comp, "grid_code"].value_counts().index[0]
    inside = _count_cases(hemei, period, compound_code=comp, grid_code=grid)
    assert inside < _count_cases(hemei, period, compound_code=comp)
    html = planner.get(f"/planner?period={period}&grid={grid}&level=compound"
                       ).get_data(as_text=True)
    cells = {parse_qs(urlsplit(h).query)["code"][0]: (n, h)
             for n, h in _reported_cells(html, "indicators")}
    n, href = cells[comp]
    assert n == inside
    rows = _listed(planner, href)
    assert rows[0] == inside
    page = planner.get(href).get_data(as_text=True)
    assert 'id="drill-within"' in page  # the list says it is only the grid's part
    headline = _reported_cells(html, "headline")[0][0]
    assert sum(n for n, _h in cells.values()) <= headline
    assert 'id="within-note"' in html


def test_drill_pages_name_the_period_and_the_organisation(planner, people):
    html = planner.get("/planner/cases?what=reported&period=90d").get_data(as_text=True)
    period = re.search(r'id="drill-period">([^<]*)<', html).group(1)
    assert period.startswith("近90天 (") and "90d" not in period  # was "90d (…)"
    en = planner.get("/planner/cases?what=reported&period=90d&lang=en").get_data(as_text=True)
    assert re.search(r'id="drill-period">Last 90 days \(', en)
    org = people["orgs"]["crew"]
    html = planner.get(f"/planner/cases?what=indicator&indicator=reported&level=org"
                       f"&code={org}&period=90d").get_data(as_text=True)
    assert re.search(r'id="drill-area">城管维修队<', html)  # was the id: "区域 1"


@pytest.mark.parametrize("query", [
    "what=indicator&indicator=reported&level=grid&code=999",
    "what=indicator&indicator=reported&level=community&code=abc",
    "what=indicator&indicator=reported&level=org&code=99999",
])
def test_an_unknown_area_on_a_drill_page_is_refused(planner, query):
    r = planner.get(f"/planner/cases?{query}")
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert '<span class="error-field">code</span>' in html and "unknown" in html


@pytest.mark.parametrize("url, field", [
    ("/planner/cases?what=reported&week=9999-12-31", "week"),  # was a 500: + 7 days
    ("/planner/cases?what=reported&week=0001-01-01", "week"),
    ("/planner?period=0001-01", "period"),
    ("/planner?period=0001-01-01..0001-01-31", "period"),
    ("/planner?period=2030-01", "period"),
    ("/planner/cases?what=reported&period=90d&at=32503680000", "at"),  # 3000-01-01
])
def test_extreme_and_future_periods_on_the_pages_are_400(planner, url, field):
    r = planner.get(url)
    assert r.status_code == 400, (url, r.status_code)
    assert f'<span class="error-field">{field}</span>' in r.get_data(as_text=True)


@pytest.mark.parametrize("period", ["0001-01", "0001-01-01..0001-01-31", "2030-01",
                                    "2999-12-01..2999-12-31"])
@pytest.mark.parametrize("path", ["/api/v1/indicators", "/api/v1/clusters",
                                  "/api/v1/hotspots", "/api/v1/hexbins"])
def test_extreme_and_future_periods_in_the_api_are_400(public_client, path, period):
    assert error_field(public_client.get(f"{path}?period={period}")) == "period"


def test_the_current_month_is_counted_to_date_and_marked_partial(planner, hemei):
    from gis.cases import utcnow
    from gis.localtime import to_beijing

    month = f"{to_beijing(utcnow()):%Y-%m}"  # the street office's (Beijing) month
    body = planner.get(f"/api/v1/indicators?level=street&period={month}").get_json()
    assert body["period"]["partial"] is True
    end = datetime.fromisoformat(body["period"]["end"].rstrip("Z"))
    assert abs(end - utcnow()) < timedelta(minutes=5)
    html = planner.get(f"/planner?period={month}").get_data(as_text=True)
    heading = html.split("</h1>")[0]
    assert 'class="partial"' in heading and "（北京时间）" in heading
    spans = re.search(r'id="spans">(.*?)</p>', html, re.S).group(1)
    assert 'class="partial"' in spans
    # Its drill-downs are pinned where the month was cut, and list the number's cases.
    (n, href), = _reported_cells(html, "headline")
    assert "&at=" in href and _listed(planner, href)[0] == n
    assert 'class="partial"' in planner.get(href).get_data(as_text=True)
    # A past month is not marked.
    last = (to_beijing(utcnow()).replace(day=1) - timedelta(days=1))
    html = planner.get(f"/planner?period={last:%Y-%m}").get_data(as_text=True)
    assert 'class="partial"' not in html
    assert "partial" not in planner.get(f"/api/v1/indicators?period={last:%Y-%m}"
                                        ).get_json()["period"]


def test_reported_counts_say_whether_rejected_cases_are_in(planner):
    html = planner.get("/planner").get_data(as_text=True)
    summary = re.search(r'id="map-summary">(.*?)</p>', html, re.S).group(1)
    assert "不含" in summary or "excluding rejected" in summary
    for fig in ("fig-trend", "fig-categories"):
        caption = re.search(rf'id="{fig}">.*?<figcaption>(.*?)</figcaption>', html, re.S)
        assert "Rejected" in caption.group(1) or "不予立案" in caption.group(1), fig
    drill = planner.get("/planner/cases?what=reported").get_data(as_text=True)
    title = re.search(r'<h1 id="drill-title">(.*?)</h1>', drill, re.S).group(1)
    assert "不含" in title or "excluding rejected" in title
