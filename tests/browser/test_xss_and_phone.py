"""Hostile text stays text, and the grid page works on a phone."""

from __future__ import annotations

import pytest
import requests

from tests.browser.test_overview import _map_var, _screen_xy

pytestmark = pytest.mark.browser

TITLE = "<img src=x onerror=alert('t1')>`${alert('t2')}`</script><script>alert('t3')</script>\\"
DESC = "<svg onload=alert('d1')> ${alert('d2')} `x` \\u0061 </script>"


@pytest.fixture(scope="module")
def hostile_case(live_server):
    import json
    from pathlib import Path

    base, app = live_server
    tokens = json.loads((Path(app.instance_path) / "tokens.json").read_text("utf-8"))["tokens"]
    lon, lat = 111.575, 24.395
    r = requests.post(base + "/api/v1/issues", json={
        "category": "sanitation", "lon": lon, "lat": lat, "title": TITLE,
        "description": DESC}, headers={"Authorization": f"Bearer {tokens['admin']}"},
        timeout=10)
    assert r.status_code == 201
    return r.json()


def test_hostile_text_on_the_map_popup_is_inert(page_factory, live_server, hostile_case):
    base, _app = live_server
    page, watch = page_factory(viewport={"width": 1280, "height": 800})
    lon, lat = hostile_case["geometry"]["coordinates"]
    page.goto(base + "/", wait_until="networkidle")
    page.wait_for_selector(".folium-map[data-cases-loaded]")
    # Zoom right in on the case so it is a single marker, then open its popup.
    page.evaluate(f"window['{_map_var(page)}'].setView([{lat}, {lon}], 19)")
    page.wait_for_timeout(800)
    x, y = _screen_xy(page, lon, lat)
    page.mouse.click(x, y)
    popup = page.locator(".leaflet-popup-content .case-popup")
    popup.wait_for(state="visible", timeout=5000)
    assert TITLE in popup.inner_text()
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("svg[onload]").count() == 0
    assert watch.dialogs == []
    assert watch.errors == []


def test_hostile_text_on_the_case_page_is_inert(page_factory, live_server, hostile_case):
    base, _app = live_server
    page, watch = page_factory(viewport={"width": 1280, "height": 800})
    page.goto(f"{base}/cases/{hostile_case['id']}", wait_until="networkidle")
    assert page.locator("#case-title").inner_text() == TITLE
    assert page.locator("#case-description").inner_text().strip() == DESC.strip()
    # Hover the marker (drawn last, over the grid's outline): its tooltip holds the title.
    page.locator(".leaflet-interactive").last.hover()
    page.wait_for_selector(".leaflet-tooltip")
    assert TITLE.split()[0] in page.locator(".leaflet-tooltip").last.inner_text()
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("svg[onload]").count() == 0
    assert watch.dialogs == [] and watch.errors == []


def test_grid_page_on_a_phone_shows_the_open_cases(page_factory, live_server):
    base, app = live_server
    summary = app.extensions["hemei"].grid_summary()
    row = summary.sort_values("open", ascending=False).iloc[0]
    page, watch = page_factory(viewport={"width": 390, "height": 844}, is_mobile=True,
                               has_touch=True, device_scale_factor=2)
    page.goto(f"{base}/grids/{row['code']}", wait_until="networkidle")
    rows = page.locator("#open-cases tbody tr")
    assert rows.count() == row["open"] > 0
    assert rows.first.is_visible()
    # Nothing wider than the phone: no sideways scrolling of the page.
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 391, width
    assert page.locator(".folium-map").bounding_box()["width"] <= 390
    assert watch.errors == [] and watch.external == []
