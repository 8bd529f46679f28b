"""The residents' channel through HTTP: the QR code per compound, the report form (no
account), the tracking page, and what the public may and may not see."""

from __future__ import annotations

import io
import re
import shutil
import xml.etree.ElementTree as ET

import pytest
import segno
from PIL import Image

from tests.conftest import OUTSIDE

COMPOUND = "451102003001C01"  # 厦良新村小区, in one of gw's grids (厦良社区)
OTHER_COMPOUND = "451102003001C06"  # 香槟城小区, same community
PHONE = "13800138000"
STAFF_NAMES = ("王网格", "张师傅", "管理员")
# Crockford's base 32 (no I, L, O, U) in five groups of four: read off a phone, typed back.
TRACKING = re.compile(r"^([0-9A-HJKMNP-TV-Z]{4}-){4}[0-9A-HJKMNP-TV-Z]{4}$")


def csrf_token(resp) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', resp.get_data(as_text=True))
    assert m, "the page has no CSRF token"
    return m.group(1)


def jpeg(colour=(30, 140, 220)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 36), colour).save(buf, "JPEG")
    return buf.getvalue()


def photo_files(instance) -> set[str]:
    root = instance / "photos"
    return {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def point_in(hemei, code: str) -> tuple[float, float]:
    p = hemei.layers["compound"].set_index("code").loc[code].geometry.representative_point()
    return round(p.x, 7), round(p.y, 7)


def case_count(hemei) -> int:
    return hemei.store.list_cases(limit=1)[1]


def submit(client, compound=COMPOUND, *, token=True, photos=None, **fields):
    """GET the form (for its CSRF token), then POST it as a resident's phone would."""
    page = client.get(f"/r/{compound}")
    data = {"category": "street_light", "description": "楼下路灯一到晚上就不亮", **fields}
    if token:
        data["csrf_token"] = csrf_token(page)
    if photos:
        data["photos"] = [(io.BytesIO(b), f"p{i}.jpg") for i, b in enumerate(photos)]
    return client.post(f"/r/{compound}", data=data, content_type="multipart/form-data")


def tracking_code(resp) -> str:
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    m = re.search(r"/t/([^/?]+)\?new=1$", resp.headers["Location"])
    assert m, resp.headers["Location"]
    return m.group(1)


def test_a_tracking_code_is_found_however_it_is_typed(public_client, hemei):
    code = tracking_code(submit(public_client))
    case = hemei.store.find_by_tracking_code(code)
    # Lower case, without dashes, with spaces, O for 0 and I or L for 1: the same case.
    typed = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert hemei.store.find_by_tracking_code(typed).id == case.id
    r = public_client.get("/t/" + code.replace("-", "").lower())
    assert r.status_code == 200 and case.title in r.get_data(as_text=True)
    assert public_client.get("/t/" + code[:-1] + "*").status_code == 404


def test_the_report_page_takes_a_tracking_code_to_its_case(public_client, hemei):
    code = tracking_code(submit(public_client))
    page = public_client.get(f"/r/{COMPOUND}").get_data(as_text=True)
    assert 'id="find-by-code"' in page and 'action="/t"' in page
    r = public_client.get("/t", query_string={"code": " " + code.lower() + " "})
    assert r.status_code == 302
    assert public_client.get(r.headers["Location"]).status_code == 200
    assert public_client.get("/t", query_string={"code": "<script>"}).status_code == 404
    assert public_client.get("/t").status_code == 404


def test_a_code_of_the_old_alphabet_is_still_found_as_written(hemei, public_client):
    # Codes given out before (mixed-case base64): exact, case and all.
    from gis.cases import NewCase
    from gis.errors import NotFound

    lon, lat = point_in(hemei, COMPOUND)
    case = hemei.store.create_case(
        NewCase(category="road_damage", lon=lon, lat=lat, description="旧码", title="旧码"),
        hemei.locator.locate(lon, lat), None, extra={"tracking_code": "aB3_x-Yz9QwErT0p"})
    assert hemei.store.find_by_tracking_code("aB3_x-Yz9QwErT0p").id == case.id
    assert public_client.get("/t/aB3_x-Yz9QwErT0p").status_code == 200
    with pytest.raises(NotFound):
        hemei.store.find_by_tracking_code("ab3_x-yz9qwert0p")


# --------------------------------------------------------------------------- QR codes


def _modules_from_png(data: bytes, scale=10, border=4) -> list[list[bool]]:
    img = Image.open(io.BytesIO(data)).convert("L")
    n = img.width // scale - 2 * border
    return [[img.getpixel(((c + border) * scale + scale // 2,
                           (r + border) * scale + scale // 2)) < 128 for c in range(n)]
            for r in range(n)]


@pytest.mark.parametrize("public_url, base", [
    ("", "http://localhost"),
    ("https://grid.example.gov.cn/", "https://grid.example.gov.cn"),
])
def test_qr_png_encodes_the_report_url(seeded_template, tmp_path, public_url, base):
    from webapp import create_app

    inst = tmp_path / "instance"
    shutil.copytree(seeded_template, inst)
    app = create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none",
                      "PUBLIC_URL": public_url})
    r = app.test_client().get(f"/compounds/{COMPOUND}/qr.png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert r.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert f"hemei-{COMPOUND}.png" in r.headers["Content-Disposition"]
    # Read the modules back off the picture and compare with the symbol for the URL.
    expected = segno.make(f"{base}/r/{COMPOUND}", error="m")
    assert _modules_from_png(r.data) == [[bool(v) for v in row] for row in expected.matrix]
    wrong = segno.make(f"{base}/r/{OTHER_COMPOUND}", error="m")
    assert _modules_from_png(r.data) != [[bool(v) for v in row] for row in wrong.matrix]
    app.extensions["hemei"].store.dispose()


def test_qr_svg_is_an_svg_of_the_report_url(public_client):
    r = public_client.get(f"/compounds/{COMPOUND}/qr.svg")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml"
    root = ET.fromstring(r.data)
    assert root.tag.endswith("svg")
    buf = io.BytesIO()
    segno.make(f"http://localhost/r/{COMPOUND}", error="m").save(
        buf, kind="svg", scale=10, border=4, xmldecl=True)
    assert r.data == buf.getvalue()


@pytest.mark.parametrize("url", [
    "/compounds/451102003001C99/qr.png", f"/compounds/{COMPOUND}/qr.gif",
    "/compounds/../qr.svg",
])
def test_qr_for_unknown_compound_or_format_is_404(public_client, url):
    assert public_client.get(url).status_code == 404


# ------------------------------------------------------------------------ report form


def test_report_form_is_in_chinese_and_needs_no_account(public_client):
    r = public_client.get(f"/r/{COMPOUND}")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert 'lang="zh-CN"' in html
    assert "厦良新村小区" in html and "反映问题" in html and "提交" in html
    assert "不会公开" in html  # the privacy promise
    assert 'name="csrf_token"' in html


def test_report_form_for_an_unknown_compound_is_404(public_client):
    assert public_client.get("/r/451102003001C99").status_code == 404


def test_a_report_creates_a_case_in_that_compound(public_client, hemei):
    lon, lat = point_in(hemei, COMPOUND)
    n = case_count(hemei)
    r = submit(public_client, lon=str(lon), lat=str(lat), name="刘阿姨", phone=PHONE)
    code = tracking_code(r)
    assert TRACKING.match(code)
    case = hemei.store.find_by_tracking_code(code)
    assert case_count(hemei) == n + 1
    assert case.compound_code == COMPOUND and case.community_code == "451102003001"
    assert case.source == "resident" and case.status == "reported"
    assert (case.lon, case.lat) == (lon, lat)
    assert (case.reporter_name, case.reporter_phone) == ("刘阿姨", PHONE)
    assert case.history[0]["actor"] == "居民"
    page = public_client.get(r.headers["Location"]).get_data(as_text=True)
    assert code in page and "已收到您的反映" in page


def test_a_report_without_a_position_is_placed_in_the_compound(public_client, hemei):
    code = tracking_code(submit(public_client))
    case = hemei.store.find_by_tracking_code(code)
    assert case.compound_code == COMPOUND


def test_a_report_with_a_photo_keeps_it(public_client, hemei):
    code = tracking_code(submit(public_client, photos=[jpeg()]))
    case = hemei.store.find_by_tracking_code(code)
    rows = hemei.store.case_photos(case.id)
    assert [p["role"] for p in rows] == ["report"]
    assert hemei.photos.exists(rows[0]["key"])


@pytest.mark.parametrize("where", ["other_compound", "outside_street"])
def test_a_point_outside_the_compound_is_refused(public_client, hemei, instance, where):
    lon, lat = point_in(hemei, OTHER_COMPOUND) if where == "other_compound" else OUTSIDE
    n, files = case_count(hemei), photo_files(instance)
    r = submit(public_client, lon=str(lon), lat=str(lat), photos=[jpeg()])
    assert 400 <= r.status_code < 500
    html = r.get_data(as_text=True)
    assert 'data-field="lon"' in html
    assert case_count(hemei) == n and photo_files(instance) == files
    # What was typed is kept in the form; the position is dropped, and the reader is told
    # so in Chinese: sending the form again files the report at the compound itself.
    assert "楼下路灯一到晚上就不亮" in html
    assert "您的位置不在厦良新村小区内" in html and "not inside" not in html
    assert 'name="lon" id="lon" value=""' in html and 'name="lat" id="lat" value=""' in html
    code = tracking_code(submit(public_client, lon="", lat=""))
    assert hemei.store.find_by_tracking_code(code).compound_code == COMPOUND


@pytest.mark.parametrize("fields, photos, field", [
    ({"category": ""}, None, "category"),
    ({"category": "ufo"}, None, "category"),
    ({"description": ""}, None, "description"),
    ({"phone": "call me maybe"}, None, "phone"),
    ({"lon": "abc", "lat": "24.4"}, None, "lon"),
    ({}, [b"GIF89a not a photo at all"], "photo"),
    ({}, [jpeg((1, 1, 1)), jpeg((2, 2, 2)), jpeg((3, 3, 3)), jpeg((4, 4, 4))], "photos"),
])
def test_bad_report_is_400_naming_the_field_and_stores_nothing(public_client, hemei, instance,
                                                               fields, photos, field):
    n, files = case_count(hemei), photo_files(instance)
    r = submit(public_client, photos=photos, **fields)
    assert r.status_code == 400
    assert f'data-field="{field}"' in r.get_data(as_text=True)
    assert case_count(hemei) == n and photo_files(instance) == files


def test_a_bad_photo_after_a_good_one_keeps_neither(public_client, hemei, instance):
    n, files = case_count(hemei), photo_files(instance)
    r = submit(public_client, photos=[jpeg((9, 9, 9)), b"\xff\xd8\xff\xe0 truncated"])
    assert r.status_code == 400 and 'data-field="photo"' in r.get_data(as_text=True)
    assert case_count(hemei) == n and photo_files(instance) == files


def test_missing_csrf_token_is_400_and_stores_nothing(public_client, hemei):
    n = case_count(hemei)
    r = submit(public_client, token=False)
    assert r.status_code == 400
    assert "表单已过期" in r.get_data(as_text=True)
    assert case_count(hemei) == n
    # A token from another session is no better.
    other = csrf_token(public_client.application.test_client().get(f"/r/{COMPOUND}"))
    r = public_client.post(f"/r/{COMPOUND}", data={
        "csrf_token": other, "category": "street_light", "description": "x"})
    assert r.status_code == 400 and case_count(hemei) == n


def test_the_report_form_is_rate_limited_per_device(limited_app):
    client = limited_app.test_client()
    hemei = limited_app.extensions["hemei"]
    codes = [tracking_code(submit(client)) for _ in range(3)]
    n = case_count(hemei)
    r = submit(client)
    assert r.status_code == 429
    assert "请稍后再试" in r.get_data(as_text=True)
    assert case_count(hemei) == n
    # Reading is not limited, and another device may still report.
    assert client.get(f"/t/{codes[0]}").status_code == 200
    other = limited_app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.0.0.2"
    assert submit(other).status_code == 302


# --------------------------------------------------------------------------- tracking


@pytest.mark.parametrize("code", [
    "AAAAAAAAAAAAAAAA",  # the right shape, but no such case
    "short", "x" * 17, "abc$defghijklmno", "..%2F..%2Fetc%2Fp",
])
def test_forged_or_unknown_tracking_codes_are_404(public_client, code):
    assert public_client.get(f"/t/{code}").status_code == 404


def test_evaluating_with_an_unknown_code_is_404_and_changes_nothing(public_client, hemei):
    n = case_count(hemei)
    token = csrf_token(public_client.get(f"/r/{COMPOUND}"))  # the session's token
    r = public_client.post("/t/AAAAAAAAAAAAAAAA",
                           data={"csrf_token": token, "verdict": "satisfied"})
    assert r.status_code == 404
    assert case_count(hemei) == n


def test_a_case_cannot_be_evaluated_before_it_is_resolved(public_client, hemei):
    code = tracking_code(submit(public_client))
    case = hemei.store.find_by_tracking_code(code)
    page = public_client.get(f"/t/{code}")
    assert "请评价处理结果" not in page.get_data(as_text=True)
    token = csrf_token(public_client.get(f"/r/{COMPOUND}"))
    r = public_client.post(f"/t/{code}", data={"csrf_token": token, "verdict": "satisfied"})
    assert r.status_code == 409
    assert hemei.store.get_case(case.id).row_version == case.row_version


def _walk(client, auth, case_id, steps):
    for who, body in steps:
        r = client.post(f"/api/v1/issues/{case_id}/transitions", headers=auth(who), json=body)
        assert r.status_code == 200, r.get_json()


@pytest.fixture
def handled_case(app, people, auth, public_client, hemei):
    """A resident's report, verified by gw and resolved by the crew, with notes."""
    code = tracking_code(submit(public_client, name="刘阿姨", phone=PHONE))
    case = hemei.store.find_by_tracking_code(code)
    api = app.test_client()
    _walk(api, auth, case.id, [
        ("gw", {"to": "verified", "note": "已到现场核实"}),
        ("gw", {"to": "filed"}),
        ("gw", {"to": "dispatched", "assignee_org": people["orgs"]["crew"]}),
        ("crew", {"to": "in_progress"}),
        ("crew", {"to": "resolved", "note": "已更换灯泡"}),
    ])
    return code, case.id


def test_a_bad_evaluation_is_400_and_changes_nothing(public_client, hemei, handled_case):
    code, cid = handled_case
    before = hemei.store.get_case(cid)
    page = public_client.get(f"/t/{code}")
    assert "请评价处理结果" in page.get_data(as_text=True)
    for data in ({"verdict": "meh"}, {"verdict": "not_satisfied", "comment": ""},
                 {"verdict": "not_satisfied", "comment": "长" * 1001}):
        r = public_client.post(f"/t/{code}", data={"csrf_token": csrf_token(page), **data})
        assert r.status_code == 400
        assert 'role="alert"' in r.get_data(as_text=True)
    after = hemei.store.get_case(cid)
    assert (after.row_version, len(after.history)) == (before.row_version,
                                                       len(before.history))


def test_tracking_page_shows_no_staff_names_and_no_phone(public_client, handled_case):
    code, _ = handled_case
    html = public_client.get(f"/t/{code}").get_data(as_text=True)
    assert "已到现场核实" in html and "已更换灯泡" in html  # the public history is there
    for secret in (*STAFF_NAMES, PHONE, "刘阿姨"):
        assert secret not in html


def test_public_case_page_shows_no_staff_names_and_no_phone(public_client, handled_case):
    code, cid = handled_case
    html = public_client.get(f"/cases/{cid}").get_data(as_text=True)
    for secret in (*STAFF_NAMES, PHONE, "刘阿姨", code):
        assert secret not in html


def test_public_api_hides_reporter_and_actors(public_client, handled_case):
    code, cid = handled_case
    r = public_client.get(f"/api/v1/issues/{cid}")
    assert r.status_code == 200
    props = r.get_json()["properties"]
    assert "reporter_name" not in props and "reporter_phone" not in props
    assert "assignee_user" not in props and "tracking_code" not in props
    assert props["history"] and all("actor" not in ev for ev in props["history"])
    text = r.get_data(as_text=True)
    for secret in (*STAFF_NAMES, PHONE, "刘阿姨", code):
        assert secret not in text
    listed = public_client.get("/api/v1/issues?limit=10000").get_data(as_text=True)
    assert PHONE not in listed and "刘阿姨" not in listed and code not in listed


@pytest.mark.parametrize("who, sees", [("gw", True), ("admin", True), ("gw2", False),
                                       ("crew2", False)])
def test_staff_in_scope_see_the_reporter(app, auth, handled_case, who, sees):
    _, cid = handled_case
    props = app.test_client().get(f"/api/v1/issues/{cid}",
                                  headers=auth(who)).get_json()["properties"]
    assert ("reporter_phone" in props) is sees
    if sees:
        assert props["reporter_name"] == "刘阿姨" and props["reporter_phone"] == PHONE
        assert [ev["actor"] for ev in props["history"]][:2] == ["居民", "王网格"]
    else:
        assert all("actor" not in ev for ev in props["history"])


@pytest.mark.parametrize("who", ["crew", "planner"])
def test_only_the_responsible_grid_worker_sees_the_residents_phone(app, auth, handled_case,
                                                                   who):
    _, cid = handled_case
    props = app.test_client().get(f"/api/v1/issues/{cid}",
                                  headers=auth(who)).get_json()["properties"]
    assert "reporter_phone" not in props and "reporter_name" not in props
