"""What a person sees: the overview map in a real Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_overview_renders_one_shape_per_grid_offline_with_a_legend(page_factory, live_server):
    base, app = live_server
    n_grids = len(app.extensions["hemei"].layers["grid"])
    page, watch = page_factory(viewport={"width": 1280, "height": 800})
    page.goto(base + "/", wait_until="networkidle")
    page.wait_for_selector(".leaflet-interactive")
    # One filled path per grid in the choropleth pane (grids have a fill; outlines do not).
    filled = page.eval_on_selector_all(
        "path.leaflet-interactive",
        "els => els.filter(e => e.getAttribute('fill') && e.getAttribute('fill') !== 'none')"
        ".length")
    assert filled >= n_grids
    assert page.locator("#map-legend").is_visible()
    assert "无数据" in page.locator("#map-legend").inner_text()
    assert page.locator(".marker-cluster").count() > 0
    assert watch.external == [], watch.external
    assert watch.errors == [], watch.errors
    assert watch.failed == [], watch.failed
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "screenshot-overview.png"))


def test_hovering_a_grid_shows_its_tooltip_with_counts(page_factory, live_server):
    base, app = live_server
    summary = app.extensions["hemei"].grid_summary()
    row = summary.sort_values("open", ascending=False).iloc[0]
    page, watch = page_factory(viewport={"width": 1280, "height": 800})
    page.goto(base + "/", wait_until="networkidle")
    # Hover the grid's own interior point, projected to screen by Leaflet itself.
    p = row.geometry.representative_point()
    map_var = page.evaluate("Object.keys(window).find(k => k.startsWith('map_'))")
    xy = page.evaluate(f"(() => {{ const m = window['{map_var}']; "
                       f"const pt = m.latLngToContainerPoint([{p.y}, {p.x}]); "
                       f"const r = m.getContainer().getBoundingClientRect(); "
                       f"return [pt.x + r.left, pt.y + r.top]; }})()")
    page.mouse.move(xy[0], xy[1])
    tip = page.locator(".leaflet-tooltip").first
    tip.wait_for(state="visible", timeout=5000)
    text = tip.inner_text()
    assert row["name"] in text or row["code"] in text
    assert str(int(row["open"])) in text
