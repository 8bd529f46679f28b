"""A resident on a phone: from a compound's QR code to the report page, the tracking page,
and the four steps (evaluate → rectify → feedback → summarise). No account, no staff
names on anything the resident sees."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.browser
SHOTS = Path("/tmp")
COMPOUND = "451102003001C01"  # 厦良新村小区, in a grid of gw
STAFF_NAMES = ("管理员", "王网格", "李网格", "张师傅", "赵物业", "陈规划")


def jpeg(seed=0) -> bytes:
    rnd = random.Random(seed)
    img = Image.frombytes("RGB", (240, 180), rnd.randbytes(240 * 180 * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


@pytest.fixture(scope="module")
def api(live_server):
    base, app = live_server
    tokens = json.loads((Path(app.instance_path) / "tokens.json").read_text("utf-8"))["tokens"]

    def call(user, method, path, **kw):
        r = requests.request(method, base + path, timeout=10,
                             headers={"Authorization": f"Bearer {tokens[user]}"}, **kw)
        assert r.status_code < 300, r.text
        return r.json()

    return call


def steps_done(page) -> list[str]:
    return page.eval_on_selector_all("#four-steps li.done",
                                     "els => els.map(e => e.dataset.step)")


def no_staff_names(page):
    text = page.content()
    assert not [n for n in STAFF_NAMES if n in text], "a staff name is shown to the public"


def test_the_qr_code_opens_the_compound_report_page(live_server):
    base, _app = live_server
    svg = requests.get(f"{base}/compounds/{COMPOUND}/qr.svg", timeout=10)
    assert svg.status_code == 200 and svg.headers["Content-Type"].startswith("image/svg+xml")
    assert svg.text.lstrip().startswith("<?xml") and "<svg" in svg.text and "<path" in svg.text
    png = requests.get(f"{base}/compounds/{COMPOUND}/qr.png", timeout=10)
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    img = Image.open(io.BytesIO(png.content))
    img.load()
    assert img.format == "PNG" and img.width == img.height >= 21 * 10
    assert requests.get(f"{base}/compounds/nope/qr.svg", timeout=10).status_code == 404


def test_a_resident_reports_follows_and_evaluates(page_factory, live_server, api):
    base, app = live_server
    h = app.extensions["hemei"]
    comps = h.layers["compound"]
    inside = comps[comps["code"] == COMPOUND].geometry.iloc[0].representative_point()
    page, watch = page_factory(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
        device_scale_factor=2, locale="zh-CN", permissions=["geolocation"],
        geolocation={"longitude": inside.x, "latitude": inside.y, "accuracy": 15})

    # As the QR code would: the compound's report page, no account.
    page.goto(f"{base}/r/{COMPOUND}")
    assert "厦良新村小区" in page.locator("h1").inner_text()
    page.locator("#use-location").tap()
    page.wait_for_function("document.getElementById('loc-status').textContent"
                           ".includes('已定位')")
    assert "精度约 15 米" in page.locator("#loc-status").inner_text()
    assert float(page.input_value("#lon")) == pytest.approx(inside.x, abs=1e-6)
    page.select_option("select[name=category]", "roof_leak")
    page.fill("textarea[name=description]", "3栋顶楼漏水，下雨天滴到客厅")
    page.set_input_files("input[name=photos]", files=[{
        "name": "leak.jpg", "mimeType": "image/jpeg", "buffer": jpeg(1)}])
    page.fill("input[name=name]", "李阿姨")
    page.fill("input[name=phone]", "13800000000")
    width = page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 391, width
    page.screenshot(path=str(SHOTS / "resident-report.png"), full_page=True)
    with page.expect_navigation():
        page.locator("#resident-form button[type=submit]").tap()

    # The tracking page: the code, the status, nobody's name or phone.
    assert "/t/" in page.url and page.url.endswith("?new=1")
    code = page.url.split("/t/")[1].split("?")[0]
    assert page.locator("#tracking-code").inner_text() == code
    # Copied down by hand: on one line, never broken inside a group.
    rects = page.evaluate("""() => {
        const r = document.createRange();
        r.selectNodeContents(document.getElementById('tracking-code'));
        return r.getClientRects().length; }""")
    assert rects == 1, rects
    assert page.locator("#case-status").inner_text() == "已上报"
    assert steps_done(page) == []
    no_staff_names(page)
    assert "李阿姨" not in page.content() and "13800000000" not in page.content()
    page.screenshot(path=str(SHOTS / "resident-track.png"), full_page=True)

    case = h.store.find_by_tracking_code(code)
    assert (case.compound_code, case.source, case.category) == (COMPOUND, "resident",
                                                                 "roof_leak")
    assert len(h.store.case_photos(case.id)) == 1
    # Staff handle it through the API (the grid worker fixes it himself).
    for step in ({"to": "filed"}, {"to": "in_progress"},
                 {"to": "resolved", "note": "已更换防水层"}):
        api("gw", "POST", f"/api/v1/issues/{case.id}/transitions", json=step)

    page.goto(f"{base}/t/{code}")
    assert page.locator("#case-status").inner_text() == "已处置"
    no_staff_names(page)
    page.locator("label.choice", has_text="不满意").tap()
    page.fill("textarea[name=comment]", "客厅还在滴水")
    with page.expect_navigation():
        page.locator(".evaluate button[type=submit]").tap()
    assert page.locator("#case-status").inner_text() == "返工"
    assert steps_done(page) == ["evaluate", "rectify"]
    assert "客厅还在滴水" in page.locator("#public-history").inner_text()
    no_staff_names(page)

    # The rework is resolved (the feedback), checked and closed (the summary).
    api("gw", "POST", f"/api/v1/issues/{case.id}/transitions",
        json={"to": "resolved", "note": "重新做了防水"})
    page.reload()
    assert steps_done(page) == ["evaluate", "rectify", "feedback"]
    # The new result is evaluated once: the form gives way to the verdict given.
    page.locator("label.choice:has(input[value=satisfied])").tap()
    with page.expect_navigation():
        page.locator(".evaluate button[type=submit]").tap()
    assert page.locator("#evaluation-given [data-verdict]").inner_text() == "满意"
    assert page.locator("form textarea[name=comment]").count() == 0
    api("gw", "POST", f"/api/v1/issues/{case.id}/transitions", json={"to": "closed"})
    page.reload()
    assert page.locator("#case-status").inner_text() == "已结案"
    assert steps_done(page) == ["evaluate", "rectify", "feedback", "summarise"]
    no_staff_names(page)
    page.screenshot(path=str(SHOTS / "resident-track-closed.png"), full_page=True)
    assert watch.errors == [], watch.errors
    assert watch.external == [], watch.external
