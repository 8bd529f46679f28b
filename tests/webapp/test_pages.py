"""HTML pages: the overview map, the grid page, the case page; escaping and language."""

from __future__ import annotations

import json
import re

from tests.conftest import INSIDE

XSS_TITLE = "<img src=x onerror=alert(1)>`${alert(2)}`</script><script>alert(3)</script>\\"
XSS_DESC = "<svg onload=alert(4)> ${document.cookie} `backtick` \\u003c"


def _embedded(html: str, prop: str) -> dict:
    """The embedded GeoJSON object whose features carry property ``prop``."""
    for m in re.finditer(r"geo_json_[0-9a-f]+_add\((\{.*?\})\);", html, re.S):
        data = json.loads(m.group(1))
        feats = data.get("features", [])
        if feats and prop in feats[0]["properties"]:
            return data
    raise AssertionError(f"no GeoJSON with {prop!r} in the page")


def _remote_layers(html: str) -> list[dict]:
    """The options of every boundary layer the page fetches (url, values table …)."""
    return [json.loads(m.group(1)) for m in
            re.finditer(r"HemeiMap\.remoteGeoJson\([^,]+,\s*[^,]+,\s*(\{.*?\})\);", html, re.S)]


def test_overview_has_one_shape_per_grid_with_counts_and_a_legend(client, hemei):
    r = client.get("/")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    layers = {o["marker"]: o for o in _remote_layers(html)}
    assert set(layers) == {"grids", "street", "community", "compound"}
    grids = hemei.grid_summary().set_index("code")
    table = layers["grids"]["values"]
    assert set(table) == set(grids.index)
    for code, (_colour, _value, open_, total) in table.items():
        assert open_ == grids.loc[code, "open"] and total == grids.loc[code, "total"]
    # The geometry is one file per layer, with one feature per grid.
    fc = client.get(layers["grids"]["url"]).get_json()
    assert sorted(f["id"] for f in fc["features"]) == sorted(grids.index)
    assert all(f["properties"]["name"] == grids.loc[f["id"], "name"] for f in fc["features"])
    assert 'id="map-legend"' in html and "无数据" in html and "越少越好" in html
    # Grids with the most open cases get the darkest class.
    top = grids["open"].idxmax()
    assert table[top][0] == "#bd0026"
    # No geometry is embedded in the page itself.
    assert '"coordinates"' not in html


def test_display_geometry_is_versioned_cached_and_compressed(client):
    html = client.get("/").get_data(as_text=True)
    url = {o["marker"]: o for o in _remote_layers(html)}["grids"]["url"]
    r = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    assert "max-age=86400" in r.headers["Cache-Control"]
    assert client.get(url, headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    assert client.get("/layers/province/display.geojson").status_code == 404


def test_overview_in_english(client):
    html = client.get("/?lang=en").get_data(as_text=True)
    assert "Open cases" in html and "No data" in html and 'lang="en"' in html
    assert "lower is better" in html
    # The choice is remembered in a cookie.
    html2 = client.get("/").get_data(as_text=True)
    assert 'lang="en"' in html2


def test_grid_page_lists_its_cases_and_compounds(client, hemei):
    counts = hemei.grid_summary().sort_values("open", ascending=False)
    code = counts.iloc[0]["code"]
    html = client.get(f"/grids/{code}").get_data(as_text=True)
    cases = client.get(f"/api/v1/issues?grid={code}&status=open&limit=1000"
                       ).get_json()["features"]
    assert len(cases) == counts.iloc[0]["open"] > 0
    for f in cases:
        assert f'href="/cases/{f["id"]}"' in html
    closed = client.get(f"/api/v1/issues?grid={code}&status=closed&limit=1"
                        ).get_json()["features"]
    if closed:
        assert f'data-case-id="{closed[0]["id"]}"' not in html
    assert counts.iloc[0]["name"] in html


def test_unknown_grid_and_case_pages_are_404_html(client):
    r = client.get("/grids/000")
    assert r.status_code == 404 and "<html" in r.get_data(as_text=True)
    assert client.get("/cases/424242").status_code == 404


def test_user_text_is_escaped_everywhere(client):
    r = client.post("/api/v1/issues", json={"category": "sanitation", "lon": INSIDE[0],
                                             "lat": INSIDE[1], "title": XSS_TITLE,
                                             "description": XSS_DESC})
    assert r.status_code == 201
    cid = r.get_json()["id"]
    grid = r.get_json()["properties"]["grid_code"]
    for url in ("/", f"/grids/{grid}", f"/cases/{cid}"):
        html = client.get(url).get_data(as_text=True)
        assert "<img src=x" not in html, url
        assert "<svg onload" not in html, url
        scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, re.S)
        assert "alert(3)" not in scripts, url
        # Inside scripts (template literals) no live ${...} or backtick from the user.
        for js in scripts:
            assert "${alert(2)}" not in js and "${document.cookie}" not in js, url
            assert "`backtick`" not in js, url
    grid_page = client.get(f"/grids/{grid}").get_data(as_text=True)
    # The popup text is HTML-escaped and the template-literal characters neutralised.
    popups = {f["id"]: f["properties"]["popup"]
              for f in _embedded(grid_page, "popup")["features"]}
    assert ("&lt;img src=x onerror=alert(1)&gt;&#96;&#36;&#123;alert(2)&#125;&#96;"
            "&lt;/script&gt;") in popups[cid]


def test_the_api_returns_user_text_unescaped(client):
    r = client.post("/api/v1/issues", json={"category": "sanitation", "lon": INSIDE[0],
                                             "lat": INSIDE[1], "title": XSS_TITLE,
                                             "description": XSS_DESC})
    got = client.get(r.headers["Location"]).get_json()["properties"]
    # JSON is data, not HTML: the client escapes when it renders.
    assert got["title"] == XSS_TITLE and got["description"] == XSS_DESC


def test_case_page_shows_history(client):
    html = client.get("/cases/1").get_data(as_text=True)
    assert 'id="case-title"' in html and "已上报" in html


def test_pages_show_times_on_the_beijing_clock(public_client, hemei):
    """Times are stored as naive UTC and shown in Beijing time (UTC+8) on the pages, as
    the field app always did: a report at 20:30 UTC on 1 March was made at 04:30 on
    2 March in Hezhou, and its case page, its tracking page and its grid's case table
    must say so (they showed the UTC clock, eight hours and here a day apart from the
    phone's)."""
    from datetime import datetime

    from gis.cases import NewCase
    from webapp.field import when

    locator, version = hemei._located()
    chain = locator.locate(*INSIDE)
    case = hemei.store.create_case(
        NewCase(category="street_light", title="夜里报的", description="凌晨四点半",
                lon=INSIDE[0], lat=INSIDE[1], created_at=datetime(2026, 3, 1, 20, 30)),
        chain, datetime(2026, 3, 3, 20, 30), actor="巡查员",
        extra={"tracking_code": "tz-beijing-clock"}, grid_version=version)
    for url in (f"/cases/{case.id}", "/t/tz-beijing-clock"):
        html = public_client.get(url).get_data(as_text=True)
        assert "2026-03-02 04:30" in html, url
        assert "20:30" not in html, url
    grid = public_client.get(f"/grids/{case.grid_code}").get_data(as_text=True)
    row = next(r for r in re.findall(r"<tr.*?</tr>", grid, re.S) if "夜里报的" in r)
    assert "2026-03-02" in row and "03-04" in row  # reported, due (Beijing dates)
    assert "2026-03-01" not in row and "03-03" not in row
    assert when(case.created_at) == "03-02 04:30"  # the field app's clock, the same


def test_error_pages_speak_the_pages_language(public_client):
    """An error page leads with a sentence in the page's language; the detail (which
    field, and why) follows. A CSRF failure says what to do, not "The CSRF token is
    missing"."""
    r = public_client.get("/grids/999999999999999")
    assert r.status_code == 404
    html = r.get_data(as_text=True)
    assert "页面或条目不存在" in html
    r = public_client.get("/grids/999999999999999?lang=en")
    assert "This page or item does not exist." in r.get_data(as_text=True)
    r = public_client.post("/login?lang=zh", data={"username": "x", "password": "y"})
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert "表单已过期" in html and "CSRF" not in html


def test_a_session_expired_page_links_to_the_login(public_client):
    """A phone whose session ran out sends its form: the 401 page offers the login."""
    r = public_client.post("/m/report", data={"description": "x"})
    assert r.status_code == 401
    html = r.get_data(as_text=True)
    assert '<a class="button" href="/login' in html  # in the page, not only the menu
