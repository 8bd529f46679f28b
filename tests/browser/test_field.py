"""The field pages on a phone (390 × 844, touch, GPS granted) in a real Chromium: a repair
crew resolves a case on site, a grid worker checks in on patrol, a report meets its
duplicate. Nothing may leave 127.0.0.1 and nothing may log an error."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import requests
from PIL import Image, TiffImagePlugin
from pyproj import Geod

from tests.conftest import PASSWORDS

pytestmark = pytest.mark.browser
GEOD = Geod(ellps="WGS84")
SHOTS = Path("/tmp")


def jpeg(gps=None, seed=0) -> bytes:
    """A real JPEG from a phone camera, as far as the server can tell (EXIF GPS optional)."""
    rnd = random.Random(seed)
    img = Image.frombytes("RGB", (320, 240), rnd.randbytes(320 * 240 * 3))
    buf = io.BytesIO()
    if gps is None:
        img.save(buf, "JPEG", quality=80)
        return buf.getvalue()
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8825)
    r = TiffImagePlugin.IFDRational
    for ref_tag, val_tag, v, pos, neg in ((1, 2, gps[1], "N", "S"), (3, 4, gps[0], "E", "W")):
        ms = round(abs(v) * 3600 * 1000)
        deg, rest = divmod(ms, 3600 * 1000)
        minutes, sec = divmod(rest, 60 * 1000)
        ifd[ref_tag] = pos if v >= 0 else neg
        ifd[val_tag] = (r(deg, 1), r(minutes, 1), r(sec, 1000))
    img.save(buf, "JPEG", quality=80, exif=exif)
    return buf.getvalue()


def north(lon, lat, metres):
    lon2, lat2, _ = GEOD.fwd(lon, lat, 0, metres)
    return round(lon2, 7), round(lat2, 7)


@pytest.fixture(scope="module")
def api(live_server):
    """``api(user, method, path, json=…)`` over HTTP with that user's token."""
    base, app = live_server
    people = json.loads((Path(app.instance_path) / "tokens.json").read_text("utf-8"))

    def call(user, method, path, **kw):
        r = requests.request(method, base + path, timeout=10,
                             headers={"Authorization": f"Bearer {people['tokens'][user]}"},
                             **kw)
        assert r.status_code < 300, r.text
        return r.json()

    call.people = people
    return call


def grid_point(app, code):
    g = app.extensions["hemei"].layers["grid"]
    p = g[g["code"] == code].geometry.iloc[0].representative_point()
    return round(p.x, 7), round(p.y, 7)


def phone(page_factory, lon, lat, accuracy=12):
    return page_factory(viewport={"width": 390, "height": 844}, is_mobile=True,
                        has_touch=True, device_scale_factor=2, locale="zh-CN",
                        permissions=["geolocation"],
                        geolocation={"longitude": lon, "latitude": lat,
                                     "accuracy": accuracy})


def log_in(page, base, username, next_path="/m/"):
    page.goto(f"{base}/login?next={next_path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORDS[username])
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith(next_path), page.url


def fits_the_phone(page):
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 391, f"the page scrolls sideways: {width}px"


def small_targets(page) -> list[str]:
    """Visible buttons and links of the main column smaller than 44 px high."""
    return page.evaluate("""() => [...document.querySelectorAll(
        'main button, main a.big, main summary, main .m-list a, main select, '
        + 'main input[type=file]')]
        .filter(e => e.offsetParent !== null && e.getBoundingClientRect().height < 43.5)
        .map(e => e.outerHTML.slice(0, 80))""")


def test_crew_resolves_a_dispatched_case_on_site(page_factory, live_server, api):
    base, app = live_server
    gw_grid = api.people["grids"]["gw"][0]
    lon, lat = grid_point(app, gw_grid)
    case = api("admin", "POST", "/api/v1/issues", json={
        "category": "road_damage", "lon": lon, "lat": lat,
        "description": "人行道塌陷约两米"})
    cid = case["id"]
    api("admin", "POST", f"/api/v1/issues/{cid}/transitions", json={"to": "filed"})
    api("admin", "POST", f"/api/v1/issues/{cid}/transitions",
        json={"to": "dispatched", "assignee_org": api.people["orgs"]["crew"]})

    here = north(lon, lat, 30)  # the crew stands 30 m from the reported point
    page, watch = phone(page_factory, *here)
    log_in(page, base, "crew")
    item = page.locator(f"#org-cases li[data-case-id='{cid}'] a")
    assert item.is_visible()
    fits_the_phone(page)
    page.screenshot(path=str(SHOTS / "field-home-crew.png"), full_page=True)
    with page.expect_navigation():
        item.tap()
    assert page.locator("#case-status").inner_text() == "已派遣"
    with page.expect_navigation():
        page.locator("#form-in_progress button[type=submit]").tap()
    assert page.locator("#case-status").inner_text() == "处置中"
    assert "开始处置" in page.locator("#flash").inner_text()

    page.locator("#move-resolved > summary").tap()
    page.set_input_files("#after-photos", files=[{
        "name": "after.jpg", "mimeType": "image/jpeg", "buffer": jpeg(seed=3)}])
    page.locator("#use-my-location").tap()
    status = page.locator("#my-loc-status")
    page.wait_for_function("document.getElementById('my-loc-status').textContent"
                           ".includes('已定位')")
    assert "精度约 12 米" in status.inner_text() and "距案件约 30 米" in status.inner_text()

    # A repair line: two taps on the small map.
    page.locator("#line-details > summary").tap()
    page.wait_for_selector("#repair-map[data-ready]")
    box = page.locator("#repair-map").bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.6)
    page.wait_for_timeout(400)  # two quick taps would be a double tap (a zoom)
    page.touchscreen.tap(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.4)
    page.wait_for_function("document.getElementById('line-length').textContent"
                           ".includes('长约')")
    client_len = float(page.get_attribute("#line-length", "data-length"))
    assert client_len > 5
    page.locator("#quantities > summary").tap()
    page.fill("#q_road_m", str(round(client_len)))
    page.fill("#q_area_m2", "6.5")
    page.fill("#form-resolved textarea[name=note]", "已重新铺设")
    fits_the_phone(page)
    assert small_targets(page) == []
    page.screenshot(path=str(SHOTS / "field-case-resolve.png"), full_page=True)
    with page.expect_navigation():
        page.locator("#form-resolved button[type=submit]").tap()

    assert page.locator("#case-status").inner_text() == "已处置"
    assert "处置完成" in page.locator("#flash").inner_text()
    img = page.locator("#case-photos img").first
    img.wait_for()
    page.wait_for_function("document.querySelector('#case-photos img').naturalWidth > 0")
    fits_the_phone(page)
    page.screenshot(path=str(SHOTS / "field-case-resolved.png"), full_page=True)

    ev = api("admin", "GET", f"/api/v1/issues/{cid}")["properties"]["history"][-1]
    assert ev["to"] == "resolved" and ev["actor"] == "张师傅"
    assert ev["data"]["distance_m"] == pytest.approx(30, abs=0.5)
    assert "far" not in ev["data"]
    line = ev["data"]["line"]
    assert len(line) == 2
    lons, lats = zip(*line, strict=True)
    assert ev["data"]["line_length_m"] == pytest.approx(GEOD.line_length(lons, lats), abs=0.1)
    assert ev["data"]["line_length_m"] == pytest.approx(client_len, rel=0.01)
    assert ev["data"]["quantities"] == {"road_m": round(client_len), "area_m2": 6.5}
    assert len(ev["data"]["photos"]) == 1
    assert app.extensions["hemei"].photos.exists(ev["data"]["photos"][0])
    assert watch.errors == [], watch.errors
    assert watch.external == [], watch.external
    assert watch.failed == [], watch.failed


def test_grid_worker_checks_in_and_sees_last_patrolled(page_factory, live_server, api):
    base, app = live_server
    grid = api.people["grids"]["gw"][2]
    lon, lat = grid_point(app, grid)
    page, watch = phone(page_factory, lon, lat, accuracy=8)
    log_in(page, base, "gw")
    assert page.locator("#open-cases li").count() > 0
    fits_the_phone(page)
    page.screenshot(path=str(SHOTS / "field-home-gw.png"))
    with page.expect_navigation():
        page.locator("#go-patrol").tap()
    row = page.locator(f"#grids li[data-grid='{grid}'] .last-patrolled")
    assert row.inner_text() == "尚未巡查"
    page.wait_for_selector("#check-in:not([disabled])")
    page.wait_for_selector(f"#loc-status[data-grid='{grid}']")
    name = app.extensions["hemei"].locator.name("grid", grid)
    assert page.locator("#loc-status").inner_text() == f"已定位（精度约 8 米），您在{name}"
    page.wait_for_selector("#patrol-map[data-grids-loaded]")
    fits_the_phone(page)
    assert small_targets(page) == []
    page.screenshot(path=str(SHOTS / "field-patrol.png"), full_page=True)
    with page.expect_navigation():
        page.locator("#check-in").tap()
    assert f"已签到：{name}" in page.locator("#flash").inner_text()
    assert row.inner_text().startswith("最近巡查 ")
    assert grid in app.extensions["hemei"].accounts.last_patrolled()
    page.screenshot(path=str(SHOTS / "field-patrol-done.png"), full_page=True)
    assert watch.errors == [] and watch.external == [] and watch.failed == []


def test_a_report_offers_the_photo_location_and_the_duplicate_nearby(page_factory,
                                                                      live_server, api):
    base, app = live_server
    grid = api.people["grids"]["gw"][3]
    lon, lat = grid_point(app, grid)
    existing = api("admin", "POST", "/api/v1/issues", json={
        "category": "street_light", "lon": lon, "lat": lat, "description": "路灯不亮"})
    here = north(lon, lat, 120)  # GPS is off: the photo knows better
    taken = north(lon, lat, 15)
    page, watch = phone(page_factory, *here, accuracy=60)
    log_in(page, base, "gw")
    with page.expect_navigation():
        page.locator("#go-report").tap()
    page.wait_for_selector("#report-map[data-located=gps]")
    assert "精度约 60 米" in page.locator("#loc-status").inner_text()
    assert page.input_value("#lat") == f"{here[1]:.7f}"
    page.select_option("#category", "street_light")
    page.fill("#description", "路灯一直不亮，晚上很黑")
    page.set_input_files("#photos", files=[{"name": "lamp.jpg", "mimeType": "image/jpeg",
                                            "buffer": jpeg(taken, seed=5)}])
    use_photo = page.locator("#use-photo-location")
    use_photo.wait_for(state="visible")
    assert "使用照片位置" in use_photo.inner_text()
    use_photo.tap()
    # EXIF keeps 1/1000 of a second of arc (3 cm): the position the photo carries.
    assert float(page.input_value("#lon")) == pytest.approx(taken[0], abs=1e-6)
    assert float(page.input_value("#lat")) == pytest.approx(taken[1], abs=1e-6)
    fits_the_phone(page)
    page.screenshot(path=str(SHOTS / "field-report.png"), full_page=True)

    before = app.extensions["hemei"].store.list_cases(limit=1)[1]
    page.locator("#submit-report").tap()
    dup = page.locator(f"#dup-list li[data-case-id='{existing['id']}']")
    dup.wait_for(state="visible")
    assert "约 15 米" in dup.inner_text()
    assert page.locator("#report-anyway").is_visible()
    fits_the_phone(page)
    assert small_targets(page) == []
    page.screenshot(path=str(SHOTS / "field-report-duplicate.png"), full_page=True)
    with page.expect_navigation():
        dup.locator("button").tap()
    assert page.url.endswith(f"/m/cases/{existing['id']}")
    assert "已补充到案件" in page.locator("#flash").inner_text()
    assert page.locator("#history li[data-kind=comment]").count() == 1
    assert page.locator("#case-photos img").count() == 1
    assert app.extensions["hemei"].store.list_cases(limit=1)[1] == before

    # Reported anyway: a new case, with the photo, at the photo's position.
    page.goto(base + "/m/report")
    page.wait_for_selector("#report-map[data-located=gps]")
    page.select_option("#category", "street_light")
    page.fill("#description", "另一盏路灯也不亮")
    page.set_input_files("#photos", files=[{"name": "lamp2.jpg", "mimeType": "image/jpeg",
                                            "buffer": jpeg(taken, seed=6)}])
    page.locator("#use-photo-location").wait_for(state="visible")
    page.locator("#use-photo-location").tap()
    page.locator("#submit-report").tap()
    page.locator("#report-anyway").wait_for(state="visible")
    with page.expect_navigation():
        page.locator("#report-anyway").tap()
    assert "已上报，案件编号" in page.locator("#flash").inner_text()
    new_id = int(page.url.rsplit("/", 1)[1])
    new = app.extensions["hemei"].store.get_case(new_id)
    assert (new.lon, new.lat) == pytest.approx(taken, abs=1e-6)
    assert new.source == "patrol" and new.grid_code == grid
    assert watch.errors == [] and watch.external == [] and watch.failed == []


# -- the tester's defects: double taps, patrol refusals said before the tap, vague GPS ---

def test_a_double_tap_on_a_move_sends_it_once(page_factory, live_server, api):
    """Two taps before the answer arrives: the script lets one submission through (and
    the buttons come back when the page is shown again from history)."""
    base, app = live_server
    lon, lat = grid_point(app, api.people["grids"]["gw"][0])
    case = api("admin", "POST", "/api/v1/issues", json={
        "category": "road_damage", "lon": lon, "lat": lat, "description": "双击立案"})
    page, watch = phone(page_factory, lon, lat)
    log_in(page, base, "gw", f"/m/cases/{case['id']}")
    posts = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    with page.expect_navigation():
        page.evaluate("""() => { const b = document.querySelector('#form-filed button');
                                 b.click(); b.click(); }""")
    assert [u for u in posts if u.endswith("/move")] == [f"{base}/m/cases/{case['id']}/move"]
    assert page.locator("#case-status").get_attribute("data-status") == "filed"
    # A page shown again from the back-forward cache gets its buttons back.
    page.evaluate("""() => { const f = document.querySelector('form.m-form');
        f.requestSubmit = null; f.setAttribute('data-submitting', '1');
        const b = f.querySelector('button[type=submit]');
        b.disabled = true; b.setAttribute('data-busy', '1');
        window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true})); }""")
    assert page.locator("form.m-form[data-submitting]").count() == 0
    assert page.locator("form.m-form button[type=submit]").first.is_enabled()
    assert watch.errors == [] and watch.external == []


def test_the_report_anyway_button_still_says_so_when_tapped_twice(page_factory, live_server,
                                                                 api):
    """The submit buttons are disabled only after the form is collected: the tapped
    button's name=value (confirm_new) still travels, once."""
    base, app = live_server
    lon, lat = grid_point(app, api.people["grids"]["gw"][3])
    api("admin", "POST", "/api/v1/issues", json={
        "category": "street_light", "lon": lon, "lat": lat, "description": "路灯不亮"})
    page, watch = phone(page_factory, lon, lat)
    log_in(page, base, "gw", "/m/report")
    page.wait_for_selector("#report-map[data-located=gps]")
    page.select_option("#category", "street_light")
    page.fill("#description", "路灯又不亮了")
    page.locator("#submit-report").tap()
    page.wait_for_selector("#duplicates:not([hidden])")
    hemei = app.extensions["hemei"]
    before = hemei.store.list_cases(limit=1)[1]
    posts = []
    page.on("request", lambda r: posts.append(r.post_data or "") if r.method == "POST"
            else None)
    with page.expect_navigation():
        page.evaluate("""() => { const b = document.getElementById('report-anyway');
                                 b.click(); b.click(); }""")
    assert len(posts) == 1 and "confirm_new" in posts[0]
    assert hemei.store.list_cases(limit=1)[1] == before + 1
    assert "已上报" in page.locator("#flash").inner_text()
    assert watch.errors == [] and watch.external == []


def test_patrol_says_why_it_cannot_check_in_before_the_tap(page_factory, live_server, api):
    base, app = live_server
    other = grid_point(app, api.people["grids"]["gw2"][0])
    page, watch = phone(page_factory, *other)
    log_in(page, base, "gw", "/m/patrol")
    page.wait_for_selector("#check-in-why:not([hidden])")
    name = app.extensions["hemei"].locator.name("grid", api.people["grids"]["gw2"][0])
    assert page.locator("#check-in").is_disabled()
    assert page.locator("#check-in-why").inner_text() == f"无法签到：{name}不是您负责的网格"
    # Outside the street.
    page.context.set_geolocation({"longitude": 111.30, "latitude": 24.10, "accuracy": 10})
    page.locator("#locate-me").tap()
    page.wait_for_function("document.getElementById('check-in-why').textContent"
                           ".includes('不在本街道')")
    assert page.locator("#check-in").is_disabled()
    # In one's own grid but located to ±3000 m.
    mine = grid_point(app, api.people["grids"]["gw"][0])
    page.context.set_geolocation({"longitude": mine[0], "latitude": mine[1],
                                  "accuracy": 3000})
    page.locator("#locate-me").tap()
    page.wait_for_function("document.getElementById('check-in-why').textContent"
                           ".includes('3000')")
    assert page.locator("#check-in").is_disabled()
    assert "200 米以内" in page.locator("#check-in-why").inner_text()
    # A good fix there: allowed again.
    page.context.set_geolocation({"longitude": mine[0], "latitude": mine[1],
                                  "accuracy": 15})
    page.locator("#locate-me").tap()
    page.wait_for_selector("#check-in:not([disabled])")
    assert page.locator("#check-in-why").is_hidden()
    assert watch.errors == [] and watch.external == []


def test_the_report_page_warns_about_a_vague_position(page_factory, live_server, api):
    base, app = live_server
    lon, lat = grid_point(app, api.people["grids"]["gw"][1])
    page, watch = phone(page_factory, lon, lat, accuracy=300)
    log_in(page, base, "gw", "/m/report")
    page.wait_for_selector("#loc-status[data-poor='1']")
    assert "约 300 米" in page.locator("#loc-status").inner_text()
    assert "拖到问题的准确位置" in page.locator("#loc-status").inner_text()
    assert watch.errors == [] and watch.external == []
