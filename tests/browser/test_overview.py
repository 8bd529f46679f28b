"""What a person sees: the overview map in a real Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _filled_paths(page) -> list[str]:
    return page.eval_on_selector_all(
        "path.leaflet-interactive",
        "els => els.map(e => e.getAttribute('fill')).filter(f => f && f !== 'none')")


def _map_var(page) -> str:
    return page.evaluate("Object.keys(window).find(k => /^map_[0-9a-f]+$/.test(k))")


def _screen_xy(page, lon: float, lat: float):
    """Where Leaflet itself draws a lon/lat, in page coordinates."""
    return page.evaluate(
        f"(() => {{ const m = window['{_map_var(page)}']; "
        f"const pt = m.latLngToContainerPoint([{lat}, {lon}]); "
        f"const r = m.getContainer().getBoundingClientRect(); "
        f"return [pt.x + r.left, pt.y + r.top]; }})()")


def test_overview_renders_one_shape_per_grid_offline_with_a_legend(page_factory, live_server,
                                                                    tmp_path):
    base, app = live_server
    n_grids = len(app.extensions["hemei"].layers["grid"])
    page, watch = page_factory(viewport={"width": 1280, "height": 800})
    page.goto(base + "/", wait_until="networkidle")
    page.wait_for_selector(".folium-map[data-cases-loaded][data-grids-loaded]")
    fills = _filled_paths(page)
    assert len(fills) >= n_grids
    legend = page.locator("#map-legend")
    assert legend.is_visible()
    assert "无数据" in legend.inner_text() and "越少越好" in legend.inner_text()
    assert page.locator(".marker-cluster").count() > 0
    assert int(page.get_attribute(".folium-map", "data-cases-loaded")) > 0
    # Tile source "none": nothing leaves the app, nothing fails, nothing logs an error.
    assert watch.external == [], watch.external
    assert watch.errors == [], watch.errors
    assert watch.failed == [], watch.failed
    # The README's screenshot is this page; the suite does not rewrite the tracked file
    # unless asked to (HEMEI_UPDATE_SCREENSHOT=1 make test).
    folder = DOCS if os.environ.get("HEMEI_UPDATE_SCREENSHOT") else tmp_path
    shot = folder / "screenshot-overview.png"
    shot.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


def test_changing_the_metric_changes_the_legend_and_the_colours(page_factory, live_server):
    base, _app = live_server
    page, watch = page_factory(viewport={"width": 1280, "height": 800})
    page.goto(base + "/?metric=open", wait_until="networkidle")
    page.wait_for_selector(".folium-map[data-grids-loaded]")
    before_title = page.locator("#map-legend .legend-title").inner_text()
    before = _filled_paths(page)
    with page.expect_navigation(wait_until="networkidle"):
        page.select_option("#metric-select", "resolution_rate")
    page.wait_for_selector(".folium-map[data-grids-loaded]")
    assert page.url.endswith("metric=resolution_rate&period=30d&scheme=natural_breaks")
    after_title = page.locator("#map-legend .legend-title").inner_text()
    assert after_title != before_title
    assert "越高越好" in page.locator("#map-legend").inner_text()
    assert _filled_paths(page) != before
    assert watch.errors == []


def test_hovering_a_grid_shows_its_tooltip_with_counts(page_factory, live_server):
    base, app = live_server
    summary = app.extensions["hemei"].grid_summary()
    row = summary.sort_values("open", ascending=False).iloc[0]
    page, _watch = page_factory(viewport={"width": 1280, "height": 800})
    page.goto(base + "/", wait_until="networkidle")
    page.wait_for_selector(".folium-map[data-grids-loaded]")
    p = row.geometry.representative_point()
    x, y = _screen_xy(page, p.x, p.y)
    page.mouse.click(x, y)
    tip = page.locator(".leaflet-tooltip").first
    tip.wait_for(state="visible", timeout=5000)
    text = tip.inner_text()
    assert row["name"] in text and row["code"] in text
    assert str(int(row["open"])) in text and str(int(row["total"])) in text
    # The default metric is the open cases: its row is shown once, not twice.
    headers = tip.locator("th").all_inner_texts()
    assert len(headers) == len(set(headers)) == 4, headers


def test_search_by_compound_name_opens_its_page(page_factory, live_server):
    base, _app = live_server
    page, _watch = page_factory(viewport={"width": 1280, "height": 800})
    page.goto(base + "/", wait_until="networkidle")
    page.fill("input[name=q]", "香槟城小区")
    with page.expect_navigation():
        page.press("input[name=q]", "Enter")
    assert "/compounds/" in page.url
    assert page.locator("h1").inner_text().startswith("香槟城小区")
