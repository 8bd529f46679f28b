"""The field pages under /m/ through the Flask test client: logged in through the real
login form, every POST carrying the CSRF token scraped from a page (as a browser does)."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path

import pytest
from PIL import Image, TiffImagePlugin
from pyproj import Geod

from gis.workflow import geodesic_m
from tests.conftest import PASSWORDS

GEOD = Geod(ellps="WGS84")
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


# -- helpers ----------------------------------------------------------------------------

def jpeg(gps: tuple[float, float] | None = None, seed: int | None = None) -> bytes:
    """A small real JPEG (random pixels, so every call is a new photo), with EXIF GPS
    ``(lon, lat)`` when given."""
    rnd = random.Random(seed)
    img = Image.frombytes("RGB", (64, 48), rnd.randbytes(64 * 48 * 3))
    buf = io.BytesIO()
    if gps is None:
        img.save(buf, "JPEG")
        return buf.getvalue()
    exif = Image.Exif()
    gps_ifd = exif.get_ifd(0x8825)
    lon, lat = gps
    for ref_tag, val_tag, v, pos, neg in ((1, 2, lat, "N", "S"), (3, 4, lon, "E", "W")):
        seconds = round(abs(v) * 3600 * 1000)
        deg, rest = divmod(seconds, 3600 * 1000)
        minutes, sec = divmod(rest, 60 * 1000)
        r = TiffImagePlugin.IFDRational
        gps_ifd[ref_tag] = pos if v >= 0 else neg
        gps_ifd[val_tag] = (r(deg, 1), r(minutes, 1), r(sec, 1000))
    img.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def csrf(client, url: str = "/login") -> str:
    return TOKEN.search(client.get(url).get_data(as_text=True)).group(1)


def login(client, username: str):
    r = client.post("/login", data={"username": username, "password": PASSWORDS[username],
                                    "csrf_token": csrf(client)})
    assert r.status_code == 302, r.get_data(as_text=True)
    return client


def photo_files(instance: Path) -> set[Path]:
    root = instance / "photos"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def case_count(hemei) -> int:
    return hemei.store.list_cases(limit=1)[1]


def offset(lon: float, lat: float, north_m: float = 0.0, east_m: float = 0.0):
    """The point ``north_m`` north and ``east_m`` east of (lon, lat), geodesically."""
    if north_m:
        lon, lat, _ = GEOD.fwd(lon, lat, 0, north_m)
    if east_m:
        lon, lat, _ = GEOD.fwd(lon, lat, 90, east_m)
    return round(lon, 7), round(lat, 7)


def grid_point(hemei, grid_code: str) -> tuple[float, float]:
    g = hemei.layers["grid"]
    p = g[g["code"] == grid_code].geometry.iloc[0].representative_point()
    return round(p.x, 7), round(p.y, 7)


def plant(hemei, lon, lat, category="road_damage", description="路面坑洼"):
    return hemei.report({"category": category, "lon": lon, "lat": lat,
                         "description": description, "source": "patrol"}, actor="测试")


def test_the_field_case_page_gives_the_position_as_the_case_page_does(web, hemei, gw_point,
                                                                     public_client):
    """Longitude first, then latitude, on the phone as on the case page (and in the API):
    the phone showed them the other way round, unlabelled."""
    case = plant(hemei, *gw_point)
    where = f"{case.lon:.6f}, {case.lat:.6f}"
    assert case.lon != case.lat
    assert where in web("gw").get(f"/m/cases/{case.id}").get_data(as_text=True)
    assert where in public_client.get(f"/cases/{case.id}").get_data(as_text=True)


# -- login, CSRF, roles ------------------------------------------------------------------

def test_pages_need_a_login(public_client):
    for url in ("/m/", "/m/report", "/m/patrol", "/m/cases/1", "/m/needs"):
        r = public_client.get(url)
        assert r.status_code == 302 and "/login" in r.headers["Location"], url


def test_a_post_without_the_csrf_token_is_refused(web, hemei, gw_point):
    c = web("gw")
    before = case_count(hemei)
    r = c.post("/m/report", data={"category": "sanitation", "description": "垃圾",
                                  "lon": gw_point[0], "lat": gw_point[1],
                                  "confirm_new": "1"},
               content_type="multipart/form-data")
    assert r.status_code == 400
    assert "表单已过期" in r.get_data(as_text=True)  # what to do, in the page's language
    assert case_count(hemei) == before
    # The same form with the token goes through.
    r = c.post("/m/report", data={"category": "sanitation", "description": "垃圾",
                                  "lon": gw_point[0], "lat": gw_point[1], "confirm_new": "1",
                                  "csrf_token": csrf(c, "/m/report")},
               content_type="multipart/form-data")
    assert r.status_code == 302 and case_count(hemei) == before + 1


def test_planner_may_not_report_and_field_staff_do_not_patrol(web):
    assert web("planner").get("/m/report").status_code == 403
    assert web("crew").get("/m/patrol").status_code == 403
    assert web("crew").get("/m/report").status_code == 200


# -- home --------------------------------------------------------------------------------

def test_home_of_a_grid_worker_lists_their_open_cases_most_overdue_first(web, hemei, people):
    html = web("gw").get("/m/").get_data(as_text=True)
    mine = set(people["grids"]["gw"])
    opened, _ = hemei.store.list_cases(grids=mine, status="open", limit=None)
    section = html.split('id="open-cases"')[1].split("</ul>")[0]
    ids = [int(i) for i in re.findall(r'data-case-id="(\d+)"', section)]
    assert sorted(ids) == sorted(c.id for c in opened) and ids
    due = {c.id: c.due_at for c in opened}
    assert [due[i] for i in ids] == sorted(due[i] for i in ids)
    assert "超期" in section  # the demo has overdue cases
    assert 'id="to-check"' in html and 'id="go-patrol"' in html
    # A case of another grid is not on the list.
    other, _ = hemei.store.list_cases(grids=people["grids"]["gw2"], status="open", limit=1)
    assert f'data-case-id="{other[0].id}"' not in section


def test_home_of_field_staff_lists_their_organisation_and_the_claimable_list(
        web, hemei, people, gw_point):
    admin = hemei.accounts.by_username("admin")
    mine = plant(hemei, *gw_point)
    hemei.move(admin, mine.id, {"to": "filed"})
    hemei.move(admin, mine.id, {"to": "dispatched", "assignee_org": people["orgs"]["crew"]})
    listed = plant(hemei, *gw_point, category="parking", description="乱停车")
    hemei.move(admin, listed.id, {"to": "filed"})
    hemei.set_needs(admin, listed.id, {"kind": "fix_now", "publish": True})
    html = web("crew").get("/m/").get_data(as_text=True)
    org_part = html.split('id="org-cases"')[1].split("</ul>")[0]
    claim_part = html.split('id="claimable"')[1].split("</ul>")[0]
    assert f'data-case-id="{mine.id}"' in org_part
    assert f'data-case-id="{listed.id}"' in claim_part
    assert 'id="go-patrol"' not in html
    # The claimable item offers field staff the claim button on its page.
    page = web("crew").get(f"/m/cases/{listed.id}").get_data(as_text=True)
    assert 'id="form-claimed"' in page and "认领" in page


# -- report ------------------------------------------------------------------------------

def test_photo_location_returns_the_exif_gps(web, gw_point):
    c = web("gw")
    token = csrf(c, "/m/report")
    lon, lat = gw_point
    r = c.post("/m/photo-location", data={"photo": (io.BytesIO(jpeg((lon, lat))), "p.jpg")},
               headers={"X-CSRFToken": token}, content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["lon"] == pytest.approx(lon, abs=1e-6)
    assert body["lat"] == pytest.approx(lat, abs=1e-6)
    assert body["inside"] is True
    # No GPS: nulls, not an error. Not a photo: a 400 error body.
    r = c.post("/m/photo-location", data={"photo": (io.BytesIO(jpeg()), "p.jpg")},
               headers={"X-CSRFToken": token}, content_type="multipart/form-data")
    assert r.status_code == 200 and r.get_json()["lon"] is None
    r = c.post("/m/photo-location", data={"photo": (io.BytesIO(b"GIF89a not"), "p.jpg")},
               headers={"X-CSRFToken": token}, content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "photo"
    # The header is the CSRF token of a fetch: without it, refused.
    r = c.post("/m/photo-location", data={"photo": (io.BytesIO(jpeg()), "p.jpg")},
               content_type="multipart/form-data")
    assert r.status_code == 400


def test_report_with_a_geotagged_photo_creates_the_case(web, hemei, instance, gw_point):
    c = web("gw")
    lon, lat = gw_point
    photo = jpeg((lon, lat), seed=7)
    page = c.get("/m/report").get_data(as_text=True)
    assert 'capture="environment"' in page and 'accept="image/*"' in page
    assert "leaflet.js" in page and "js/field.js" in page
    r = c.post("/m/report", data={
        "csrf_token": TOKEN.search(page).group(1), "category": "street_light",
        "description": "路灯不亮\n第二行", "lon": lon, "lat": lat, "accuracy": "8",
        "confirm_new": "1", "photos": [(io.BytesIO(photo), "a.jpg")]},
        content_type="multipart/form-data")
    assert r.status_code == 302, r.get_data(as_text=True)
    case_id = int(r.headers["Location"].rsplit("/", 1)[1])
    case = hemei.store.get_case(case_id)
    assert (case.category, case.source, case.status) == ("street_light", "patrol", "reported")
    assert case.grid_code == grid_code_of(hemei, lon, lat)
    assert case.history[0]["actor"] == "王网格"
    photos = hemei.store.case_photos(case_id)
    assert len(photos) == 1 and hemei.photos.exists(photos[0]["key"])
    # The case page: the flash message, the photo thumbnail, no move that gw may not make.
    html = c.get(r.headers["Location"]).get_data(as_text=True)
    assert f"已上报，案件编号 #{case_id}" in html
    key = photos[0]["key"]
    assert f"/m/photos/{key}?thumb=1" in html
    thumb = c.get(f"/m/photos/{key}?thumb=1")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert thumb.data[:2] == b"\xff\xd8"
    assert 'id="form-verified"' in html and 'id="form-rejected"' in html


def grid_code_of(hemei, lon, lat):
    return hemei.locator.locate(lon, lat)["grid"]["code"]


def test_nearby_finds_the_same_category_within_50_m_only(web, hemei, gw_point):
    lon, lat = gw_point
    near = plant(hemei, *offset(lon, lat, north_m=30))
    far = plant(hemei, *offset(lon, lat, north_m=80))
    other = plant(hemei, *offset(lon, lat, east_m=20), category="sanitation")
    closed = plant(hemei, *offset(lon, lat, east_m=-10))
    hemei.move(hemei.accounts.by_username("admin"), closed.id,
               {"to": "rejected", "note": "重复"})
    c = web("gw")
    r = c.get(f"/m/nearby?lon={lon}&lat={lat}&category=road_damage&radius=50")
    assert r.status_code == 200
    found = {row["id"]: row for row in r.get_json()["cases"]}
    assert near.id in found
    assert found[near.id]["distance_m"] == pytest.approx(30, abs=0.2)
    assert far.id not in found and other.id not in found and closed.id not in found
    assert all(row["distance_m"] <= 50 for row in found.values())
    assert geodesic_m(lon, lat, far.lon, far.lat) == pytest.approx(80, abs=0.2)
    # A wider radius reaches the far one; the other category never.
    ids = {row["id"] for row in c.get(
        f"/m/nearby?lon={lon}&lat={lat}&category=road_damage&radius=100").get_json()["cases"]}
    assert far.id in ids and other.id not in ids
    # Bad input: a JSON error naming the field.
    bad = c.get(f"/m/nearby?lon={lon}&lat={lat}&category=nope")
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "category"
    bad = c.get(f"/m/nearby?lon={lon}&lat={lat}&category=road_damage&radius=-5")
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "radius"


def test_without_script_the_server_offers_the_duplicates_before_saving(web, hemei, gw_point):
    lon, lat = gw_point
    near = plant(hemei, *offset(lon, lat, north_m=20))
    c = web("gw")
    before = case_count(hemei)
    r = c.post("/m/report", data={"csrf_token": csrf(c, "/m/report"),
                                  "category": "road_damage", "description": "又一个坑",
                                  "lon": lon, "lat": lat},
               content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and case_count(hemei) == before
    assert f'formaction="/m/cases/{near.id}/add"' in html and "仍然新建" in html
    assert "又一个坑" in html  # what was typed is kept


def test_add_to_an_existing_case_adds_a_comment_and_no_new_case(web, hemei, instance,
                                                               gw_point):
    lon, lat = gw_point
    existing = plant(hemei, *offset(lon, lat, north_m=25))
    c = web("gw")
    before = case_count(hemei)
    photo = jpeg(seed=11)
    r = c.post(f"/m/cases/{existing.id}/add", data={
        "csrf_token": csrf(c, "/m/report"), "category": "road_damage",
        "description": "坑又变大了", "lon": lon, "lat": lat,
        "photos": [(io.BytesIO(photo), "b.jpg")]}, content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/m/cases/{existing.id}")
    assert case_count(hemei) == before
    case = hemei.store.get_case(existing.id)
    ev = case.history[-1]
    assert (ev["kind"], ev["note"], ev["to"]) == ("comment", "坑又变大了", "reported")
    assert ev["data"]["distance_m"] == pytest.approx(25, abs=0.2)
    (key,) = ev["data"]["photos"]
    assert hemei.photos.exists(key)
    html = c.get(f"/m/cases/{existing.id}").get_data(as_text=True)
    assert "已补充到案件" in html and "补充情况" in html and f"/m/photos/{key}" in html
    assert c.get(f"/m/photos/{key}").status_code == 200
    # A closed case takes no more: 409 and the report form again, nothing stored.
    hemei.move(hemei.accounts.by_username("admin"), existing.id,
               {"to": "rejected", "note": "已处理"})
    files = photo_files(instance)
    r = c.post(f"/m/cases/{existing.id}/add", data={
        "csrf_token": csrf(c, "/m/report"), "description": "还有",
        "photos": [(io.BytesIO(jpeg(seed=12)), "c.jpg")]}, content_type="multipart/form-data")
    assert r.status_code == 409 and "还有" in r.get_data(as_text=True)
    assert photo_files(instance) == files


# -- acting on a case ----------------------------------------------------------------------

def _move(c, case_id, data, files=None):
    page = c.get(f"/m/cases/{case_id}").get_data(as_text=True)
    version = re.search(r'name="version" value="(\d+)"', page).group(1)
    body = {"csrf_token": TOKEN.search(page).group(1), "version": version, **data}
    if files:
        body["photos"] = [(io.BytesIO(b), f"p{i}.jpg") for i, b in enumerate(files)]
    return c.post(f"/m/cases/{case_id}/move", data=body, content_type="multipart/form-data")


def test_field_staff_resolve_far_from_the_case_with_a_photo_a_line_and_quantities(
        web, hemei, instance, dispatched):
    c = web("crew")
    page = c.get(f"/m/cases/{dispatched.id}").get_data(as_text=True)
    assert 'id="form-in_progress"' in page and 'id="form-resolved"' not in page
    assert _move(c, dispatched.id, {"to": "in_progress"}).status_code == 302
    page = c.get(f"/m/cases/{dispatched.id}").get_data(as_text=True)
    assert 'id="form-resolved"' in page and 'id="after-photos"' in page
    assert 'name="q_road_m"' in page and 'id="repair-map"' in page

    me = offset(dispatched.lon, dispatched.lat, north_m=150)
    line = [list(offset(dispatched.lon, dispatched.lat, north_m=-20)),
            [dispatched.lon, dispatched.lat],
            list(offset(dispatched.lon, dispatched.lat, north_m=10, east_m=35))]
    after = jpeg(seed=21)
    r = _move(c, dispatched.id, {
        "to": "resolved", "note": "已修补", "lon": me[0], "lat": me[1],
        "line": json.dumps(line), "q_road_m": "62", "q_area_m2": "12.5",
        "q_patches": "", "q_lamps": "0"}, files=[after])
    assert r.status_code == 302, r.get_data(as_text=True)
    case = hemei.store.get_case(dispatched.id)
    assert case.status == "resolved"
    ev = case.history[-1]
    assert ev["data"]["distance_m"] == pytest.approx(150, abs=0.2)
    assert ev["data"]["far"] is True
    assert (ev["lon"], ev["lat"]) == pytest.approx(me)
    lons, lats = zip(*line, strict=True)
    assert ev["data"]["line_length_m"] == pytest.approx(GEOD.line_length(lons, lats), abs=0.1)
    assert ev["data"]["quantities"] == {"road_m": 62, "area_m2": 12.5, "lamps": 0}
    (key,) = ev["data"]["photos"]
    assert hemei.photos.exists(key)
    assert (instance / "photos").exists() and any(
        p.name == key for p in photo_files(instance))
    assert [p["role"] for p in hemei.store.case_photos(case.id)] == ["after"]
    # The warning is shown on the case page, once.
    html = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "超过 100 米" in html and "m-warn" in html
    assert "维修线" in html and "距案件 150 米" in html
    assert "超过 100 米" not in c.get(r.headers["Location"]).get_data(as_text=True)
    # Field staff do not check their own work: no more moves for crew.
    assert 'id="moves"' not in c.get(f"/m/cases/{case.id}").get_data(as_text=True)


def test_a_grid_worker_of_another_grid_gets_403_on_move(web, hemei, instance, dispatched):
    c = web("gw2")
    files = photo_files(instance)
    page = c.get(f"/m/cases/{dispatched.id}").get_data(as_text=True)
    assert 'id="moves"' not in page  # no buttons for them
    r = c.post(f"/m/cases/{dispatched.id}/move", data={
        "csrf_token": csrf(c, "/m/report"), "to": "closed_not_fixed",
        "note": "不是我的", "photos": [(io.BytesIO(jpeg(seed=31)), "x.jpg")]},
        content_type="multipart/form-data")
    assert r.status_code == 403
    assert "not in your grids" in r.get_data(as_text=True)
    assert hemei.store.get_case(dispatched.id).status == "dispatched"
    assert photo_files(instance) == files
    # Field staff of another organisation: 403 as well.
    c2 = web("crew2")
    r = c2.post(f"/m/cases/{dispatched.id}/move", data={
        "csrf_token": csrf(c2, "/m/report"), "to": "in_progress"},
        content_type="multipart/form-data")
    assert r.status_code == 403


def test_a_bad_move_re_shows_the_form_with_what_was_typed(web, hemei, instance, dispatched):
    c = web("crew")
    _move(c, dispatched.id, {"to": "in_progress"})
    files = photo_files(instance)
    r = _move(c, dispatched.id, {"to": "resolved", "note": "补了一半", "q_road_m": "十米"},
              files=[jpeg(seed=41)])
    html = r.get_data(as_text=True)
    assert r.status_code == 400
    assert "补了一半" in html and 'value="十米"' in html and "应是数字" in html
    assert '<details class="m-move" id="move-resolved" open' in html
    assert hemei.store.get_case(dispatched.id).status == "in_progress"
    assert photo_files(instance) == files
    # Resolving needs evidence.
    r = _move(c, dispatched.id, {"to": "resolved"})
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and "请添加一张处置后的照片，或写明处置情况" in html
    shown = html.split('id="form-errors"')[1].split("</div>")[0]
    assert "照片" in shown and "照片无法使用" not in shown  # no photo was at fault
    # A stale version (someone acted meanwhile) is a 409, not a lost update.
    page = c.get(f"/m/cases/{dispatched.id}").get_data(as_text=True)
    hemei.store.update_case(dispatched.id, actor="x", kind="comment", note="meanwhile")
    r = c.post(f"/m/cases/{dispatched.id}/move", data={
        "csrf_token": TOKEN.search(page).group(1), "to": "resolved", "note": "done",
        "version": re.search(r'name="version" value="(\d+)"', page).group(1)},
        content_type="multipart/form-data")
    assert r.status_code == 409


def test_grid_worker_dispatches_and_reopens_with_a_note(web, hemei, people, gw_point):
    case = plant(hemei, *gw_point)
    c = web("gw")
    assert _move(c, case.id, {"to": "filed"}).status_code == 302
    page = c.get(f"/m/cases/{case.id}").get_data(as_text=True)
    assert "城管维修队" in page and 'name="assignee_org"' in page
    r = _move(c, case.id, {"to": "dispatched", "assignee_org": str(people["orgs"]["crew"])})
    assert r.status_code == 302
    assert hemei.store.get_case(case.id).assignee_org == people["orgs"]["crew"]
    r = _move(c, case.id, {"to": "closed_not_fixed"})
    assert r.status_code == 400 and "note" in r.get_data(as_text=True)


def test_photos_are_served_only_to_staff_who_may_read_the_case(web, hemei, dispatched):
    admin = hemei.accounts.by_username("admin")
    hemei.move(admin, dispatched.id, {"to": "in_progress"})
    hemei.move(admin, dispatched.id, {"to": "resolved"}, [jpeg(seed=51)])
    key = hemei.store.case_photos(dispatched.id)[0]["key"]
    assert web("crew").get(f"/m/photos/{key}").status_code == 200
    assert web("gw").get(f"/m/photos/{key}?thumb=1").status_code == 200
    assert web("crew2").get(f"/m/photos/{key}").status_code == 404
    assert web("gw2").get(f"/m/photos/{key}").status_code == 404
    assert web("gw").get("/m/photos/" + "0" * 64 + ".jpg").status_code == 404
    assert web("gw").get("/m/photos/..%2Fsecret_key").status_code == 404


# -- patrol ----------------------------------------------------------------------------------

def test_patrol_check_in_updates_last_patrolled(web, hemei, people):
    grid = people["grids"]["gw"][1]
    lon, lat = grid_point(hemei, grid)
    c = web("gw")
    page = c.get("/m/patrol").get_data(as_text=True)
    row = page.split(f'data-grid="{grid}"')[1].split("</li>")[0]
    assert "尚未巡查" in row
    r = c.post("/m/patrol", data={"csrf_token": TOKEN.search(page).group(1), "lon": lon,
                                  "lat": lat, "accuracy": "12.5"},
               content_type="multipart/form-data")
    assert r.status_code == 302
    assert grid in hemei.accounts.last_patrolled()
    page = c.get("/m/patrol").get_data(as_text=True)
    assert "已签到" in page
    row = page.split(f'data-grid="{grid}"')[1].split("</li>")[0]
    assert "最近巡查" in row and "尚未巡查" not in row
    # Outside the street: 422 and the form again.
    r = c.post("/m/patrol", data={"csrf_token": TOKEN.search(page).group(1),
                                  "lon": 111.30, "lat": 24.10},
               content_type="multipart/form-data")
    assert r.status_code == 422 and "outside" in r.get_data(as_text=True)


# -- nothing half-written --------------------------------------------------------------------

def test_a_fake_image_is_400_with_no_case_and_no_file(web, hemei, instance, gw_point):
    c = web("gw")
    before, files = case_count(hemei), photo_files(instance)
    r = c.post("/m/report", data={
        "csrf_token": csrf(c, "/m/report"), "category": "sanitation",
        "description": "假照片", "lon": gw_point[0], "lat": gw_point[1], "confirm_new": "1",
        "photos": [(io.BytesIO(jpeg(seed=61)), "good.jpg"),
                   (io.BytesIO(b"\xff\xd8\xff\xe0 this is not a jpeg at all"), "bad.jpg")]},
        content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and 'data-field="photo"' in html
    assert "假照片" in html  # what was typed is kept
    assert case_count(hemei) == before
    assert photo_files(instance) == files


def test_a_point_outside_the_street_is_422_and_keeps_the_form(web, hemei):
    c = web("gw")
    before = case_count(hemei)
    r = c.post("/m/report", data={
        "csrf_token": csrf(c, "/m/report"), "category": "sanitation",
        "description": "街道外", "lon": 111.30, "lat": 24.10, "confirm_new": "1"},
        content_type="multipart/form-data")
    assert r.status_code == 422 and "街道外" in r.get_data(as_text=True)
    assert case_count(hemei) == before


def test_only_the_responsible_grid_worker_sees_the_residents_name_and_phone(
        web, hemei, people, gw_point):
    case = hemei.report({"category": "sanitation", "lon": gw_point[0], "lat": gw_point[1],
                         "description": "楼道堆满杂物"}, actor="居民",
                        extra={"reporter_name": "李阿姨", "reporter_phone": "13800000000"})
    admin = hemei.accounts.by_username("admin")
    hemei.move(admin, case.id, {"to": "filed"})
    hemei.move(admin, case.id, {"to": "dispatched", "assignee_org": people["orgs"]["crew"]})
    assert "13800000000" in web("gw").get(f"/m/cases/{case.id}").get_data(as_text=True)
    for who in ("crew", "planner", "gw2"):
        html = web(who).get(f"/m/cases/{case.id}").get_data(as_text=True)
        assert "13800000000" not in html and "李阿姨" not in html, who
    # Others see the public part of the case, without the staff names of the history.
    html = web("gw2").get(f"/m/cases/{case.id}").get_data(as_text=True)
    assert "楼道堆满杂物" in html and "管理员" not in html


def test_the_needs_list_page(web, hemei, people, gw_point):
    admin = hemei.accounts.by_username("admin")
    item = plant(hemei, *gw_point, category="parking", description="划停车位")
    hemei.move(admin, item.id, {"to": "filed"})
    hemei.set_needs(admin, item.id, {"kind": "long_term", "publish": True})
    c = web("crew")
    html = c.get("/m/needs").get_data(as_text=True)
    assert f'data-case-id="{item.id}"' in html
    r = _move(c, item.id, {"to": "claimed"})
    assert r.status_code == 302
    assert hemei.store.get_case(item.id).assignee_org == people["orgs"]["crew"]
    html = c.get("/m/needs").get_data(as_text=True)
    assert f'data-case-id="{item.id}"' not in html
    assert "城管维修队" in html.split('id="units"')[1]


def test_the_script_messages_are_translated(web):
    # field.js shows no text of its own: it reads the translated messages from #field-i18n.
    c = web("gw")
    pattern = re.compile(r'<script id="field-i18n" type="application/json">(.*?)</script>', re.S)
    en = json.loads(pattern.search(c.get("/m/report?lang=en").get_data(as_text=True)).group(1))
    assert en["addToCase"] == "Add to this case"
    assert en["accuracy"] == "accuracy about %(num)s m"
    assert en["inGrid"] == "Located (%(accuracy)s), you are in %(grid)s"
    assert len(en) >= 25 and all(isinstance(v, str) and v for v in en.values())
    cjk = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # and CJK punctuation
    chinese = {k: v for k, v in en.items() if cjk.search(v)}
    assert not chinese, chinese
    zh = json.loads(pattern.search(c.get("/m/report?lang=zh").get_data(as_text=True)).group(1))
    assert set(zh) == set(en)
    assert zh["addToCase"] == "补充到此案件" and zh["aboutM"] == "约 %(num)s 米"
    # Every page with a map carries them, with the same placeholders in both languages.
    for url in ("/m/patrol", "/m/cases/1"):
        assert 'id="field-i18n"' in c.get(url).get_data(as_text=True), url
    for k in en:
        assert set(re.findall(r"%\(\w+\)s", en[k])) == set(re.findall(r"%\(\w+\)s", zh[k])), k
