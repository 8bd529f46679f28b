"""The phone tester's defects on /m/, through the Flask test client: double taps over a
slow connection, a double-tapped move, extension and needs list on the phone, patrol
check-ins the page should refuse, wording in the page's language, a reload after a form
error, and what a reporter outside the case's scope is told."""

from __future__ import annotations

import html as html_lib
import io
import re
from datetime import timedelta

import sqlalchemy as sa

from gis.accounts import checkins
from tests.webapp.test_field import (
    TOKEN,
    _move,
    case_count,
    csrf,
    grid_point,
    jpeg,
    offset,
    photo_files,
    plant,
)

FORM_KEY = re.compile(r'name="form_key" value="([^"]+)"')


def _checkins(hemei, user_id: int) -> int:
    with hemei.store._read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(checkins)
                            .where(checkins.c.user_id == user_id)).scalar()


# -- 1. double taps make one case, one comment, one check-in ------------------------------

def test_the_same_report_form_sent_twice_makes_one_case(web, hemei, gw_point):
    """Two taps on "report anyway" carry the same one-time key: one case, and the second
    answer shows that case."""
    c = web("gw")
    page = c.get("/m/report").get_data(as_text=True)
    key = FORM_KEY.search(page).group(1)
    assert FORM_KEY.search(c.get("/m/report").get_data(as_text=True)).group(1) != key
    lon, lat = gw_point
    body = {"csrf_token": TOKEN.search(page).group(1), "form_key": key,
            "category": "road_damage", "description": "双击上报", "lon": lon, "lat": lat,
            "confirm_new": "1"}
    before = case_count(hemei)
    photo = jpeg(seed=301)
    first = c.post("/m/report", data={**body, "photos": [(io.BytesIO(photo), "a.jpg")]},
                   content_type="multipart/form-data")
    second = c.post("/m/report", data={**body, "photos": [(io.BytesIO(photo), "a.jpg")]},
                    content_type="multipart/form-data")
    assert first.status_code == second.status_code == 302
    assert second.headers["Location"] == first.headers["Location"]
    assert case_count(hemei) == before + 1
    # The same key with another report is not taken for a repeat: refused, said so, and a
    # fresh key is given to send it as a new report.
    r = c.post("/m/report", data={**body, "description": "另一个问题"},
               content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 422 and "此表单已提交过" in html and "另一个问题" in html
    assert FORM_KEY.search(html).group(1) != key
    assert case_count(hemei) == before + 1


def test_the_same_comment_sent_twice_is_added_once(web, hemei, instance, gw_point):
    existing = plant(hemei, *gw_point)
    c = web("gw")
    body = {"csrf_token": csrf(c, "/m/report"), "description": "又看到一次"}
    photo = jpeg(seed=302)
    for _ in range(2):
        r = c.post(f"/m/cases/{existing.id}/add",
                   data={**body, "photos": [(io.BytesIO(photo), "a.jpg")]},
                   content_type="multipart/form-data")
        assert r.status_code == 302 and r.headers["Location"].endswith(
            f"/m/cases/{existing.id}")
    comments = [e for e in hemei.store.get_case(existing.id).history
                if e["kind"] == "comment"]
    assert len(comments) == 1
    (key,) = comments[0]["data"]["photos"]
    assert hemei.photos.exists(key)  # the repeat did not delete the first one's photo
    # Another note is news, not a repeat.
    c.post(f"/m/cases/{existing.id}/add", data={**body, "description": "更严重了"},
           content_type="multipart/form-data")
    assert [e["note"] for e in hemei.store.get_case(existing.id).history
            if e["kind"] == "comment"] == ["又看到一次", "更严重了"]


def test_a_check_in_sent_twice_is_recorded_once(web, hemei, people):
    lon, lat = grid_point(hemei, people["grids"]["gw"][0])
    c = web("gw")
    gw = hemei.accounts.by_username("gw")
    before = _checkins(hemei, gw.id)
    body = {"csrf_token": csrf(c, "/m/patrol"), "lon": lon, "lat": lat, "accuracy": "10"}
    for _ in range(2):
        r = c.post("/m/patrol", data=body, content_type="multipart/form-data")
        assert r.status_code == 302
    assert _checkins(hemei, gw.id) == before + 1
    assert "已签到" in c.get("/m/patrol").get_data(as_text=True)


# -- 2. a double-tapped move ----------------------------------------------------------------

def test_a_double_tapped_move_shows_the_case_as_done(web, hemei, gw_point):
    case = plant(hemei, *gw_point)
    c = web("gw")
    page = c.get(f"/m/cases/{case.id}").get_data(as_text=True)
    body = {"csrf_token": TOKEN.search(page).group(1), "to": "filed",
            "version": re.search(r'name="version" value="(\d+)"', page).group(1)}
    assert c.post(f"/m/cases/{case.id}/move", data=body,
                  content_type="multipart/form-data").status_code == 302
    r = c.post(f"/m/cases/{case.id}/move", data=body, content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/m/cases/{case.id}")
    html = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "已完成" in html and "changed by someone else" not in html
    assert [e["to"] for e in hemei.store.get_case(case.id).history].count("filed") == 1


def test_a_stale_move_by_someone_else_is_still_a_conflict(web, hemei, gw_point):
    case = plant(hemei, *gw_point)
    c = web("gw")
    page = c.get(f"/m/cases/{case.id}").get_data(as_text=True)
    hemei.move(hemei.accounts.by_username("admin"), case.id, {"to": "filed"})
    r = c.post(f"/m/cases/{case.id}/move", data={
        "csrf_token": TOKEN.search(page).group(1), "to": "filed",
        "version": re.search(r'name="version" value="(\d+)"', page).group(1)},
        content_type="multipart/form-data")
    # The last step is not this user's: a real conflict, said as one.
    assert r.status_code == 409 and "已完成" not in r.get_data(as_text=True)


# -- 3. extension and needs list on the phone ------------------------------------------------

def test_grid_worker_extends_a_case_from_the_phone(web, hemei, gw_point):
    case = plant(hemei, *gw_point)
    c = web("gw")
    html = c.get(f"/m/cases/{case.id}").get_data(as_text=True)
    assert 'id="form-extend"' in html and 'id="form-needs"' in html
    token = TOKEN.search(html).group(1)
    # No reason: refused in Chinese, what was typed kept, nothing written.
    later = case.due_at + timedelta(days=3, hours=8)  # Beijing wall clock of due + 3 days
    r = c.post(f"/m/cases/{case.id}/extend", data={
        "csrf_token": token, "due_at": later.strftime("%Y-%m-%dT%H:%M"), "reason": ""},
        content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "请填写延期理由" in html
    assert later.strftime("%Y-%m-%dT%H:%M") in html
    assert '<details class="m-move" id="move-extend" open' in html
    assert hemei.store.get_case(case.id).extension_count == 0
    # Earlier than the current due date: refused.
    r = c.post(f"/m/cases/{case.id}/extend", data={
        "csrf_token": token, "due_at": (case.due_at + timedelta(hours=7))
        .strftime("%Y-%m-%dT%H:%M"), "reason": "材料未到"},
        content_type="multipart/form-data")
    assert r.status_code == 400 and "必须晚于当前期限" in r.get_data(as_text=True)
    r = c.post(f"/m/cases/{case.id}/extend", data={
        "csrf_token": token, "due_at": later.strftime("%Y-%m-%dT%H:%M"),
        "reason": "材料未到"}, content_type="multipart/form-data")
    assert r.status_code == 302
    after = hemei.store.get_case(case.id)
    assert after.extension_count == 1
    assert after.due_at == later.replace(second=0, microsecond=0) - timedelta(hours=8)
    html = c.get(f"/m/cases/{case.id}").get_data(as_text=True)
    assert "已延期" in html and "材料未到" in html
    # Tapped twice: the second is told it is done, not refused.
    r = c.post(f"/m/cases/{case.id}/extend", data={
        "csrf_token": token, "due_at": later.strftime("%Y-%m-%dT%H:%M"),
        "reason": "材料未到"}, content_type="multipart/form-data")
    assert r.status_code == 302 and hemei.store.get_case(case.id).extension_count == 1


def test_only_those_allowed_see_the_extension_and_needs_forms(web, hemei, dispatched):
    assert 'id="form-extend"' not in web("crew").get(
        f"/m/cases/{dispatched.id}").get_data(as_text=True)
    assert 'id="form-needs"' not in web("gw2").get(
        f"/m/cases/{dispatched.id}").get_data(as_text=True)
    c = web("crew")
    r = c.post(f"/m/cases/{dispatched.id}/extend", data={
        "csrf_token": csrf(c, f"/m/cases/{dispatched.id}"), "due_at": "2099-01-01T10:00",
        "reason": "x"}, content_type="multipart/form-data")
    assert r.status_code in (400, 403)
    assert hemei.store.get_case(dispatched.id).extension_count == 0


def test_grid_worker_puts_a_case_on_the_needs_list(web, hemei, gw_point):
    case = plant(hemei, *gw_point)
    c = web("gw")
    token = csrf(c, f"/m/cases/{case.id}")
    # Publishing needs a filed case.
    r = c.post(f"/m/cases/{case.id}/needs", data={
        "csrf_token": token, "kind": "fix_now", "publish": "1", "note": "居民议事会"},
        content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "只有已立案的案件才能发布认领" in html
    assert "居民议事会" in html and hemei.store.get_case(case.id).needs_kind is None
    hemei.move(hemei.accounts.by_username("admin"), case.id, {"to": "filed"})
    r = c.post(f"/m/cases/{case.id}/needs", data={
        "csrf_token": token, "kind": "fix_now", "publish": "1"},
        content_type="multipart/form-data")
    assert r.status_code == 302
    after = hemei.store.get_case(case.id)
    assert (after.needs_kind, after.published) == ("fix_now", True)
    history = c.get(f"/m/cases/{case.id}").get_data(as_text=True).split('id="history"')[1]
    needs = history.split('data-kind="needs"')[1].split("</li>")[0]
    assert "立行立改" in needs and "已发布待认领" in needs


# -- 4/5. patrol check-ins the page knows will fail ---------------------------------------

def test_patrol_refusals_are_worded_in_chinese(web, hemei, people):
    c = web("gw")
    gw = hemei.accounts.by_username("gw")
    before = _checkins(hemei, gw.id)
    token = csrf(c, "/m/patrol")
    lon, lat = grid_point(hemei, people["grids"]["gw2"][0])
    r = c.post("/m/patrol", data={"csrf_token": token, "lon": lon, "lat": lat},
               content_type="multipart/form-data")
    assert r.status_code == 403 and "不是您负责的网格" in r.get_data(as_text=True)
    r = c.post("/m/patrol", data={"csrf_token": token, "lon": 111.30, "lat": 24.10},
               content_type="multipart/form-data")
    assert r.status_code == 422 and "不在本街道范围内" in r.get_data(as_text=True)
    lon, lat = grid_point(hemei, people["grids"]["gw"][0])
    r = c.post("/m/patrol", data={"csrf_token": token, "lon": lon, "lat": lat,
                                  "accuracy": "3000"}, content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "约 3000 米" in html and "200 米以内" in html
    assert _checkins(hemei, gw.id) == before
    # The page gives the script what it needs to say so before the tap.
    page = html_lib.unescape(c.get("/m/patrol").get_data(as_text=True))
    assert '"onlyMine": true' in page and '"maxAccuracy": 200.0' in page
    assert 'id="check-in-why"' in page
    en = c.post("/m/patrol?lang=en", data={"csrf_token": token, "lon": 111.30,
                                           "lat": 24.10}, content_type="multipart/form-data")
    assert "outside the street" in en.get_data(as_text=True)


def test_the_report_page_knows_when_to_warn_about_accuracy(web):
    html = html_lib.unescape(web("gw").get("/m/report").get_data(as_text=True))
    assert '"poorM": 100.0' in html and "拖到问题的准确位置" in html


# -- 7. a reload after a form error ----------------------------------------------------------

def test_get_on_a_form_address_goes_back_to_the_case(web, hemei, gw_point):
    case = plant(hemei, *gw_point)
    c = web("gw")
    for action in ("move", "add", "extend", "needs"):
        r = c.get(f"/m/cases/{case.id}/{action}?lang=en")
        assert r.status_code == 302, action
        assert r.headers["Location"].endswith(f"/m/cases/{case.id}?lang=en")
    r = c.get(f"/m/cases/{case.id}/move")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/m/cases/{case.id}")


# -- 8. a report outside one's own scope ------------------------------------------------------

def test_a_report_in_another_workers_grid_says_who_takes_it(web, hemei, people, gw_point):
    c = web("gw2")
    page = c.get("/m/report").get_data(as_text=True)
    lon, lat = gw_point  # in gw's grid, not gw2's
    r = c.post("/m/report", data={
        "csrf_token": TOKEN.search(page).group(1), "form_key": FORM_KEY.search(page).group(1),
        "category": "road_damage", "description": "路过看到", "lon": lon, "lat": lat,
        "confirm_new": "1", "photos": [(io.BytesIO(jpeg(seed=303)), "a.jpg")]},
        content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"].endswith("/m/")
    case = hemei.store.list_cases(limit=1)[0][0]
    html = c.get("/m/").get_data(as_text=True)
    grid = hemei.locator.name("grid", case.grid_code)
    assert f"已上报为案件 #{case.id}，位于{grid}，将由该网格的网格员处理" in html
    assert f'href="/cases/{case.id}"' in html


# -- 9. history and the needs page say what they count ---------------------------------------

def test_history_names_the_organisation_of_a_dispatch(web, hemei, people, dispatched):
    admin = hemei.accounts.by_username("admin")
    hemei.move(admin, dispatched.id, {"to": "dispatched",
                                      "assignee_org": people["orgs"]["property"]})
    history = web("gw").get(f"/m/cases/{dispatched.id}").get_data(
        as_text=True).split('id="history"')[1]
    assert "派给城管维修队" in history and "派给香槟城物业" in history


def test_the_needs_page_counts_what_units_took_on(web, hemei, people, gw_point):
    admin = hemei.accounts.by_username("admin")
    item = plant(hemei, *gw_point, category="parking")
    hemei.move(admin, item.id, {"to": "filed"})
    hemei.set_needs(admin, item.id, {"kind": "long_term"})
    hemei.move(admin, item.id, {"to": "dispatched", "assignee_org": people["orgs"]["crew"]})
    html = web("crew").get("/m/needs").get_data(as_text=True)
    assert "各单位承接情况" in html and "承接 1 项" in html.split('id="units"')[1]
    assert "认领情况" not in html


# -- 10. photo errors in the page's language --------------------------------------------------

def test_photo_refusals_are_worded_in_the_pages_language(web, hemei, instance, gw_point):
    c = web("gw")
    lon, lat = gw_point
    files = photo_files(instance)
    heic = b"\x00\x00\x00\x18ftypheic" + b"\x00" * 200
    cut = jpeg(seed=304)[:400]
    for blob, zh, en in ((heic, "不支持 HEIC 格式的照片", "HEIC photos"),
                         (cut, "照片文件已损坏或不完整", "damaged or incomplete"),
                         (b"hello, not a photo", "不是可用的照片", "not a photo")):
        for lang, words in (("zh", zh), ("en", en)):
            page = c.get(f"/m/report?lang={lang}").get_data(as_text=True)
            r = c.post(f"/m/report?lang={lang}", data={
                "csrf_token": TOKEN.search(page).group(1), "category": "road_damage",
                "description": "照片", "lon": lon, "lat": lat, "confirm_new": "1",
                "photos": [(io.BytesIO(blob), "p.jpg")]},
                content_type="multipart/form-data")
            shown = r.get_data(as_text=True).split('id="form-errors">')[1].split("</div>")[0]
            shown = re.sub(r"<[^>]+>", "", shown)
            assert r.status_code >= 400 and words in shown, (lang, shown)
            if lang == "zh":
                assert not re.search(r"[A-Za-z]{5,}", shown.replace("HEIC", "")
                                     .replace("JPEG", "").replace("WebP", "")
                                     .replace("iPhone", "")), shown
    assert photo_files(instance) == files


def test_too_large_a_photo_is_said_in_chinese(app, web, hemei, gw_point):
    app.extensions["hemei"].settings["MAX_PHOTO_MB"] = "0.001"
    c = web("gw")
    lon, lat = offset(*gw_point, north_m=3)
    page = c.get("/m/report").get_data(as_text=True)
    r = c.post("/m/report", data={
        "csrf_token": TOKEN.search(page).group(1), "category": "road_damage",
        "description": "大照片", "lon": lon, "lat": lat, "confirm_new": "1",
        "photos": [(io.BytesIO(jpeg(seed=305)), "p.jpg")]}, content_type="multipart/form-data")
    shown = r.get_data(as_text=True).split('id="form-errors"')[1].split("</div>")[0]
    assert r.status_code == 413 and "超过" in shown and "MB 的上限" in shown


def test_quantities_out_of_range_are_said_in_chinese(web, hemei, dispatched):
    c = web("crew")
    _move(c, dispatched.id, {"to": "in_progress"})
    r = _move(c, dispatched.id, {"to": "resolved", "note": "补好", "q_lamps": "-3"})
    assert r.status_code == 400 and "0 到 1,000,000" in r.get_data(as_text=True)
