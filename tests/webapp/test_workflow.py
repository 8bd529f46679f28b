"""The case workflow through the HTTP interface.

Who may do what (one role × action table, below, that reads like the policy), one case
through its whole life, two people acting on one case at the same instant, and bad input
refused with a clear 4xx that leaves nothing half-written and no file behind.
"""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from PIL import Image

from gis.accounts import checkins

# The same tests on every storage backend (tests/conftest.py: PostGIS when configured).
pytestmark = pytest.mark.backends("sqlite", "postgis")

XIALIANG_GRID = "451102003001001"  # one of gw's grids (厦良社区)
XIALIANG_COMPOUND = "451102003001C01"  # 厦良新村小区, inside that grid
FAR_AWAY = (116.397, 39.909)  # Beijing: a valid coordinate, far outside the street

# ---------------------------------------------------------------------------- the policy
#
# Every write endpoint × every kind of caller. "gw" looks after the case's grid, "gw2"
# another community's grids; "crew" is the organisation the case is dispatched to (or
# that may claim it from the published needs list), "crew2" another organisation;
# "revoked" is gw's own token after `hemei token revoke`.
#
# 201/200 allowed · 401 no (valid) token · 403 known user, wrong role or scope.
POLICY_TABLE = """
action            anonymous  revoked  planner  gw   gw2  crew  crew2  admin
report            401        401      403      201  201  201   201    201
verified          401        401      403      200  403  403   403    200
filed             401        401      403      200  403  403   403    200
rejected          401        401      403      200  403  403   403    200
dispatched        401        401      403      200  403  403   403    200
claimed           401        401      403      403  403  200   200    200
in_progress       401        401      403      200  403  200   403    200
resolved          401        401      403      200  403  200   403    200
closed            401        401      403      200  403  403   403    200
reopened          401        401      403      200  403  403   403    200
closed_not_fixed  401        401      403      200  403  403   403    200
extension         401        401      403      200  403  403   403    200
needs             401        401      403      200  403  403   403    200
checkin           401        401      403      201  403  403   403    201
"""
# Notes on the table:
# - Any staff member may report what they see anywhere in the street (the case then goes
#   to the grid it lies in); reporting is not acting on someone else's case.
# - A published needs-list case may be claimed by any partner unit (crew and crew2); grid
#   workers publish, they do not claim.
# - Field staff handle (in progress, resolved); the grid worker checks: close, reopen,
#   extend, close not fixed.
# - A patrol check-in is a grid worker patrolling *their* grids.

_lines = [ln.split() for ln in POLICY_TABLE.strip().splitlines()]
ROLES = tuple(_lines[0][1:])
POLICY = {(row[0], role): int(code) for row in _lines[1:]
          for role, code in zip(ROLES, row[1:], strict=True)}
ACTIONS = tuple(row[0] for row in _lines[1:])

# What a 403 must name: the caller's role or the scope they are outside of.
REASON = {"planner": r"planner", "gw": r"grid worker", "gw2": r"not in your grids",
          "crew": r"field.staff|organisation", "crew2": r"field.staff|organisation"}

# The state each action starts from (how the admin walks a fresh case there) and the body.
START = {"report": None, "verified": "reported", "filed": "reported", "rejected": "reported",
         "dispatched": "filed", "claimed": "published", "in_progress": "dispatched",
         "resolved": "in_progress", "closed": "resolved", "reopened": "resolved",
         "closed_not_fixed": "in_progress", "extension": "dispatched", "needs": "filed",
         "checkin": None}
WALK = {
    "reported": [],
    "filed": ["filed"],
    "published": ["filed", "publish"],
    "dispatched": ["filed", "dispatched"],
    "in_progress": ["filed", "dispatched", "in_progress"],
    "resolved": ["filed", "dispatched", "in_progress", "resolved"],
}


# ------------------------------------------------------------------------------- helpers


def jpeg(colour=(200, 120, 40), size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def noise_jpeg(size=(400, 300), seed=1) -> bytes:
    import random

    rnd = random.Random(seed)
    img = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A real 1×1 PNG whose IHDR is patched to claim ``width`` × ``height`` (a pixel bomb
    in a few dozen bytes), as tests/gis/test_photos.py builds it."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 0, 0)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def csrf_token(resp) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', resp.get_data(as_text=True))
    assert m, "the page has no CSRF token"
    return m.group(1)


def photo_files(instance: Path) -> set[str]:
    root = instance / "photos"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} \
        if root.exists() else set()


class Api:
    """Calls the API as one of the test people; the admin walks cases into position."""

    def __init__(self, app, tokens: dict, orgs: dict, point: tuple[float, float]):
        self.app = app
        self.client = app.test_client()
        self.tokens = tokens
        self.orgs = orgs
        self.point = point

    def headers(self, role: str) -> dict:
        return {} if role == "anonymous" else {"Authorization": f"Bearer {self.tokens[role]}"}

    def post(self, role: str, url: str, client=None, **kw):
        return (client or self.client).post(url, headers=self.headers(role), **kw)

    def get(self, case_id: int) -> dict:
        r = self.client.get(f"/api/v1/issues/{case_id}", headers=self.headers("admin"))
        assert r.status_code == 200
        return r.get_json()["properties"]

    def snapshot(self, case_id: int) -> tuple:
        p = self.get(case_id)
        return p["status"], p["row_version"], len(p["history"])

    def move(self, role: str, case_id: int, to: str, **body):
        return self.post(role, f"/api/v1/issues/{case_id}/transitions", json={"to": to, **body})

    def report_body(self, **over) -> dict:
        return {"category": "road_damage", "lon": self.point[0], "lat": self.point[1],
                "description": "厦良新村门口人行道砖松动", **over}

    def new_case(self, state: str = "reported") -> int:
        r = self.post("admin", "/api/v1/issues", json=self.report_body())
        assert r.status_code == 201, r.get_json()
        cid = r.get_json()["id"]
        for step in WALK[state]:
            if step == "publish":
                r = self.post("admin", f"/api/v1/issues/{cid}/needs",
                              json={"kind": "fix_now", "publish": True})
            else:
                extra = {"dispatched": {"assignee_org": self.orgs["crew"]},
                         "resolved": {"note": "已修复"}}.get(step, {})
                r = self.move("admin", cid, step, **extra)
            assert r.status_code == 200, (step, r.get_json())
        assert self.get(cid)["status"] == ("filed" if state == "published" else state)
        return cid


def _count(app, table) -> int:
    h = app.extensions["hemei"]
    with h.store._read() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def case_count(app) -> int:
    return app.extensions["hemei"].store.list_cases(limit=1)[1]


def _api_for(app, instance: Path) -> Api:
    h = app.extensions["hemei"]
    people = json.loads((instance / "tokens.json").read_text(encoding="utf-8"))
    gw = h.accounts.by_username("gw")
    revoked = h.accounts.create_token(gw.id, "revoked in tests")
    assert h.accounts.revoke_token(revoked) == 1
    grid = h.layers["grid"].set_index("code").loc[XIALIANG_GRID]
    p = grid.geometry.representative_point()
    return Api(app, {**people["tokens"], "revoked": revoked}, people["orgs"],
               (round(p.x, 6), round(p.y, 6)))


@pytest.fixture(scope="module")
def world(instance_maker, tmp_path_factory):
    """One instance for the module: every test works on cases it creates itself."""
    inst = tmp_path_factory.mktemp("workflow") / "instance"
    app = instance_maker.new_app(inst)
    api = _api_for(app, inst)
    yield SimpleNamespace(app=app, api=api, instance=inst)
    instance_maker.close(app)


# --------------------------------------------------------------------- role × action


def _cells():
    for action in ACTIONS:
        for role in ROLES:
            yield pytest.param(action, role, POLICY[(action, role)], id=f"{action}-{role}")


def _request(api: Api, action: str, role: str, case_id: int | None):
    if action == "report":
        return api.post(role, "/api/v1/issues", json=api.report_body())
    if action == "checkin":
        return api.post(role, "/api/v1/checkins",
                        json={"lon": api.point[0], "lat": api.point[1], "accuracy": 8})
    if action == "extension":
        due = datetime.fromisoformat(api.get(case_id)["due_at"].rstrip("Z"))
        return api.post(role, f"/api/v1/issues/{case_id}/extension",
                        json={"due_at": (due + timedelta(days=3)).isoformat() + "Z",
                              "reason": "需等待配件到货"})
    if action == "needs":
        return api.post(role, f"/api/v1/issues/{case_id}/needs",
                        json={"kind": "fix_now", "publish": True})
    extra = {"dispatched": {"assignee_org": api.orgs["crew"]}}.get(action, {})
    if action == "claimed" and role == "admin":
        extra = {"assignee_org": api.orgs["crew"]}  # an admin claims for a named unit
    return api.move(role, case_id, action, note="现场处理记录", **extra)


@pytest.mark.parametrize("action, role, expected", list(_cells()))
def test_role_action_matrix(world, action, role, expected):
    api, app = world.api, world.app
    case_id = api.new_case(START[action]) if START[action] else None
    before = api.snapshot(case_id) if case_id else None
    n_cases, n_checkins = case_count(app), _count(app, checkins)

    r = _request(api, action, role, case_id)

    assert r.status_code != 500
    assert r.status_code == expected, r.get_json()
    body = r.get_json()
    if expected >= 400:
        err = body["error"]
        assert err["code"] == {401: "unauthorized", 403: "forbidden"}[expected]
        if expected == 403:
            assert re.search(REASON[role], err["message"]), err["message"]
        # Refused: nothing changed anywhere.
        if case_id:
            assert api.snapshot(case_id) == before
        assert case_count(app) == n_cases
        assert _count(app, checkins) == n_checkins
        return
    # Allowed: exactly the one change asked for.
    if action == "report":
        assert case_count(app) == n_cases + 1
        assert body["properties"]["grid_code"] == XIALIANG_GRID
    elif action == "checkin":
        assert _count(app, checkins) == n_checkins + 1
        assert body["grid_code"] == XIALIANG_GRID
    else:
        status, version, events = api.snapshot(case_id)
        assert version == before[1] + 1 and events == before[2] + 1
        props = api.get(case_id)
        if action == "extension":
            assert props["extension_count"] == 1 and status == before[0]
        elif action == "needs":
            assert props["needs_kind"] == "fix_now" and props["published"] is True
        else:
            assert status == action
            assert props["history"][-1]["to"] == action


def test_the_table_covers_every_write_endpoint_and_every_move():
    from gis.cases import STATUSES

    moves = set(STATUSES) - {"reported"}
    assert moves <= set(ACTIONS)
    assert {"report", "extension", "needs", "checkin"} <= set(ACTIONS)
    assert set(ROLES) == {"anonymous", "revoked", "planner", "gw", "gw2", "crew", "crew2",
                          "admin"}


def test_field_staff_of_the_assigned_org_cannot_check_their_own_work(world):
    """crew resolves the repair, but only the grid worker closes it."""
    api = world.api
    cid = api.new_case("in_progress")
    assert api.move("crew", cid, "resolved", note="已更换路灯").status_code == 200
    r = api.move("crew", cid, "closed", note="自己验收")
    assert r.status_code == 403
    assert "grid worker checks" in r.get_json()["error"]["message"]
    assert api.move("gw", cid, "closed", note="检查合格").status_code == 200


# ------------------------------------------------------------------- 409 lists moves


def test_409_lists_the_allowed_moves_and_the_callers_own(world):
    api = world.api
    cid = api.new_case("resolved")
    before = api.snapshot(cid)
    r = api.move("gw", cid, "filed")
    assert r.status_code == 409
    err = r.get_json()["error"]
    assert err["code"] == "conflict" and err["field"] == "to"
    assert err["details"]["current"] == "resolved"
    assert err["details"]["allowed"] == ["closed", "reopened"]
    assert err["details"]["allowed_for_you"] == ["closed", "reopened"]
    # Field staff of the assigned organisation may do neither of those.
    r = api.move("crew", cid, "in_progress")
    assert r.status_code == 409
    assert r.get_json()["error"]["details"]["allowed_for_you"] == []
    assert api.snapshot(cid) == before


def test_409_for_a_final_status_says_none_allowed(world):
    api = world.api
    cid = api.new_case("reported")
    assert api.move("gw", cid, "rejected", note="重复上报").status_code == 200
    r = api.move("gw", cid, "filed")
    assert r.status_code == 409
    details = r.get_json()["error"]["details"]
    assert details["allowed"] == [] and details["allowed_for_you"] == []
    assert "final" in r.get_json()["error"]["message"]


# ------------------------------------------------------------------------- lifecycle


def test_one_case_through_its_whole_life(app, people, auth):
    h = app.extensions["hemei"]
    api = app.test_client()
    resident = app.test_client()
    comp = h.layers["compound"].set_index("code").loc[XIALIANG_COMPOUND]
    p = comp.geometry.representative_point()

    # 1. A resident reports it from the compound's QR page (CSRF token from the form).
    page = resident.get(f"/r/{XIALIANG_COMPOUND}")
    r = resident.post(f"/r/{XIALIANG_COMPOUND}", data={
        "csrf_token": csrf_token(page), "category": "road_damage",
        "description": "3栋门前人行道塌陷，老人容易绊倒", "lon": f"{p.x:.7f}",
        "lat": f"{p.y:.7f}", "name": "刘阿姨", "phone": "13800138000"})
    assert r.status_code == 302
    code = re.search(r"/t/([0-9A-Z-]{24})", r.headers["Location"]).group(1)
    cid = h.store.find_by_tracking_code(code).id

    def move(who, to, **body):
        resp = api.post(f"/api/v1/issues/{cid}/transitions", headers=auth(who),
                        json={"to": to, **body})
        assert resp.status_code == 200, (who, to, resp.get_json())
        return resp.get_json()

    def props():
        return api.get(f"/api/v1/issues/{cid}", headers=auth("admin")).get_json()["properties"]

    def evaluate(verdict, comment):
        token = csrf_token(resident.get(f"/t/{code}"))
        resp = resident.post(f"/t/{code}", data={"csrf_token": token, "verdict": verdict,
                                                 "comment": comment})
        assert resp.status_code == 302, resp.get_data(as_text=True)

    # 2. The grid worker verifies it on site and files it.
    move("gw", "verified", note="现场核实属实", lon=p.x, lat=p.y)
    move("gw", "filed")
    # 3. …and publishes it on the needs list, where the crew claims it.
    r = api.post(f"/api/v1/issues/{cid}/needs", headers=auth("gw"),
                 json={"kind": "fix_now", "publish": True, "note": "立行立改"})
    assert r.status_code == 200
    claimable = api.get("/api/v1/needs").get_json()["claimable"]
    assert cid in [f["id"] for f in claimable]
    body = move("crew", "claimed")
    assert body["properties"]["assignee_org"] == people["orgs"]["crew"]
    assert body["properties"]["published"] is False
    assert cid not in [f["id"] for f in api.get("/api/v1/needs").get_json()["claimable"]]

    # 4. An extension: a later due date with a reason; an earlier one is refused.
    due = datetime.fromisoformat(props()["due_at"].rstrip("Z"))
    before = props()
    r = api.post(f"/api/v1/issues/{cid}/extension", headers=auth("gw"),
                 json={"due_at": (due - timedelta(days=1)).isoformat() + "Z",
                       "reason": "材料未到"})
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "due_at"
    r = api.post(f"/api/v1/issues/{cid}/extension", headers=auth("gw"),
                 json={"due_at": (due + timedelta(days=5)).isoformat() + "Z"})
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "reason"
    after = props()
    assert (after["row_version"], len(after["history"])) == (before["row_version"],
                                                             len(before["history"]))
    r = api.post(f"/api/v1/issues/{cid}/extension", headers=auth("gw"),
                 json={"due_at": (due + timedelta(days=5)).isoformat() + "Z",
                       "reason": "材料未到"})
    assert r.status_code == 200
    ext = r.get_json()["properties"]
    assert ext["extension_count"] == 1
    assert ext["due_at"] == (due + timedelta(days=5)).isoformat(timespec="seconds") + "Z"
    assert ext["history"][-1]["kind"] == "extension"
    assert ext["history"][-1]["note"] == "材料未到"

    # 5. The crew handles it and resolves it with an "after" photo (multipart).
    move("crew", "in_progress", lon=p.x, lat=p.y)
    r = api.post(f"/api/v1/issues/{cid}/transitions", headers=auth("crew"),
                 data={"to": "resolved", "lon": str(p.x), "lat": str(p.y),
                       "photos": (io.BytesIO(jpeg()), "after.jpg")},
                 content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    ev = r.get_json()["properties"]["history"][-1]
    assert ev["to"] == "resolved" and len(ev["data"]["photos"]) == 1
    assert ev["data"]["distance_m"] < 1
    key = ev["data"]["photos"][0]
    assert h.photos.exists(key)
    assert [ph["role"] for ph in h.store.case_photos(cid)] == ["after"]

    # 6. The resident is not satisfied: it goes back for rework (rectification).
    evaluate("not_satisfied", "砖还是松的")
    now = props()
    assert now["status"] == "reopened" and now["rework_count"] == 1
    assert now["satisfaction"] == "not_satisfied"
    assert now["history"][-1]["data"] == {"rectify": True}

    # 7. Reworked and resolved again: that resolution is the feedback to the resident.
    move("crew", "in_progress")
    body = move("crew", "resolved", note="已重新铺设并压实")
    assert body["properties"]["history"][-1]["data"] == {"feedback": True}

    # 8. Satisfied this time; the grid worker closes it with a summary.
    evaluate("satisfied", "")
    move("gw", "closed", note="总结：人行道已重铺，居民满意")
    final = props()
    assert final["status"] == "closed" and final["closed_at"] and final["resolved_at"]
    assert final["satisfaction"] == "satisfied"
    assert (final["rework_count"], final["extension_count"]) == (1, 1)
    steps = [(e["kind"], e["from"], e["to"]) for e in final["history"]]
    assert steps == [
        ("transition", None, "reported"),
        ("transition", "reported", "verified"),
        ("transition", "verified", "filed"),
        ("needs", "filed", "filed"),
        ("transition", "filed", "claimed"),
        ("extension", "claimed", "claimed"),
        ("transition", "claimed", "in_progress"),
        ("transition", "in_progress", "resolved"),
        ("evaluation", "resolved", "resolved"),
        ("transition", "resolved", "reopened"),
        ("transition", "reopened", "in_progress"),
        ("transition", "in_progress", "resolved"),
        ("evaluation", "resolved", "resolved"),
        ("transition", "resolved", "closed"),
    ]
    actors = [e["actor"] for e in final["history"]]
    assert actors[0] == "居民" and actors[1] == "王网格" and actors[4] == "张师傅"
    assert final["history"][-1]["note"] == "总结：人行道已重铺，居民满意"

    # 9. The resident's page shows all four steps done.
    html = resident.get(f"/t/{code}").get_data(as_text=True)
    for step, n in (("evaluate", 2), ("rectify", 1), ("feedback", 1), ("summarise", 1)):
        m = re.search(rf'<li class="([^"]*)" data-step="{step}">[^<]*（(\d+)）', html)
        assert m and m.group(1) == "done" and int(m.group(2)) == n, step
    assert "已结案" in html

    # 10. The needs summary credits the crew's organisation: claimed 1, finished 1.
    units = {u["org"]: u for u in api.get("/api/v1/needs").get_json()["units"]}
    assert units["城管维修队"]["claimed"] == 1 and units["城管维修队"]["finished"] == 1
    assert units["城管维修队"]["org_id"] == people["orgs"]["crew"]


def test_closed_not_fixed_is_distinct_from_closed(app, auth):
    api = app.test_client()
    h = app.extensions["hemei"]
    point = h.layers["grid"].set_index("code").loc[XIALIANG_GRID].geometry \
        .representative_point()

    def new_filed():
        r = api.post("/api/v1/issues", headers=auth("gw"), json={
            "category": "parking", "lon": point.x, "lat": point.y,
            "description": "消防通道长期被占"})
        cid = r.get_json()["id"]
        assert api.post(f"/api/v1/issues/{cid}/transitions", headers=auth("gw"),
                        json={"to": "filed"}).status_code == 200
        return cid

    a, b = new_filed(), new_filed()
    url = "/api/v1/issues/{}/transitions"
    no_note = api.post(url.format(a), headers=auth("gw"), json={"to": "closed_not_fixed"})
    assert no_note.status_code == 400 and no_note.get_json()["error"]["field"] == "note"
    r = api.post(url.format(a), headers=auth("gw"),
                 json={"to": "closed_not_fixed", "note": "产权不明，已上报街道"})
    assert r.status_code == 200
    props = r.get_json()["properties"]
    assert props["status"] == "closed_not_fixed" and props["closed_at"]
    assert props["status_name"]["zh"] == "结案（未解决）"
    assert props["status_name"]["zh"] != "已结案"
    # Not "closed": the grid worker cannot skip the repair to a closed case.
    r = api.post(url.format(b), headers=auth("gw"), json={"to": "closed", "note": "x"})
    assert r.status_code == 409
    assert "closed_not_fixed" in r.get_json()["error"]["details"]["allowed"]
    # Final: nothing moves it on, and the status filter tells the two apart.
    assert api.post(url.format(a), headers=auth("gw"),
                    json={"to": "reopened", "note": "再看看"}).status_code == 409
    closed = {f["id"] for f in api.get("/api/v1/issues?status=closed&limit=10000")
              .get_json()["features"]}
    not_fixed = {f["id"] for f in api.get("/api/v1/issues?status=closed_not_fixed")
                 .get_json()["features"]}
    assert a in not_fixed and a not in closed


# ------------------------------------------------------------------------ concurrency


def _race(api: Api, case_id: int, bodies: list[tuple[str, dict]]) -> list:
    """Post the bodies from separate threads (and clients) at the same instant."""
    barrier = threading.Barrier(len(bodies))
    results: list = [None] * len(bodies)

    def run(i, role, body):
        client = api.app.test_client()
        barrier.wait()
        try:
            r = api.post(role, f"/api/v1/issues/{case_id}/transitions", client=client,
                         json=body)
            results[i] = (r.status_code, r.get_json())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results[i] = (None, repr(exc))

    threads = [threading.Thread(target=run, args=(i, role, body))
               for i, (role, body) in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_two_concurrent_transitions_one_wins_one_gets_409(world):
    api = world.api
    for i in range(25):
        cid = api.new_case("reported")
        status, version, events = api.snapshot(cid)
        # Half the rounds send the version both read (a lost update), half send none
        # (the status check inside the transaction decides).
        v = {"version": version} if i % 2 else {}
        a, b = ("gw", "admin") if i % 3 else ("gw", "gw")
        results = _race(api, cid, [(a, {"to": "filed", **v}),
                                   (b, {"to": "rejected", "note": "重复", **v})])
        codes = sorted(code for code, _ in results)
        assert codes == [200, 409], results
        loser = next(body for code, body in results if code == 409)
        assert loser["error"]["code"] == "conflict"
        now_status, now_version, now_events = api.snapshot(cid)
        assert now_events == events + 1 and now_version == version + 1
        winner = next(body for code, body in results if code == 200)
        assert now_status == winner["properties"]["status"] in ("filed", "rejected")


def test_evaluation_and_a_close_at_the_same_moment_leave_nothing_half_written(app, auth,
                                                                             monkeypatch):
    """The resident says "not satisfied" while the grid worker closes the case. Either
    the evaluation happens whole (recorded *and* reopened for rework) or not at all."""
    h = app.extensions["hemei"]
    api = app.test_client()
    resident = app.test_client()
    page = resident.get(f"/r/{XIALIANG_COMPOUND}")
    r = resident.post(f"/r/{XIALIANG_COMPOUND}", data={
        "csrf_token": csrf_token(page), "category": "street_light",
        "description": "路灯不亮"})
    code = re.search(r"/t/([0-9A-Z-]{24})", r.headers["Location"]).group(1)
    cid = h.store.find_by_tracking_code(code).id
    for to in ("filed", "in_progress", "resolved"):
        assert api.post(f"/api/v1/issues/{cid}/transitions", headers=auth("gw"),
                        json={"to": to, "note": "处理"}).status_code == 200

    # The grid worker's close lands right after the evaluation is written.
    original = h.store.update_case

    def update_then_close(case_id, **kw):
        out = original(case_id, **kw)
        if kw.get("kind") == "evaluation":
            h.store.transition(case_id, "closed", actor="王网格", note="检查合格")
        return out

    monkeypatch.setattr(h.store, "update_case", update_then_close)
    token = csrf_token(resident.get(f"/t/{code}"))
    r = resident.post(f"/t/{code}", data={"csrf_token": token, "verdict": "not_satisfied",
                                           "comment": "灯还是不亮"})
    monkeypatch.undo()
    assert r.status_code != 500
    case = h.store.get_case(cid)
    evaluated = any(e["kind"] == "evaluation" for e in case.history)
    reopened = any(e["to"] == "reopened" for e in case.history)
    # Whole or nothing: an evaluation is recorded exactly when the rework happened.
    assert evaluated == reopened, [(e["kind"], e["to"]) for e in case.history]


# -------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small_photos(instance_maker, tmp_path_factory):
    """An instance whose photo limit is 0.05 MB (about 52 KB)."""
    inst = tmp_path_factory.mktemp("small") / "instance"
    app = instance_maker.new_app(inst, MAX_PHOTO_MB="0.05")
    yield SimpleNamespace(app=app, api=_api_for(app, inst), instance=inst)
    instance_maker.close(app)


def _resolve_with(api: Api, case_id: int, photos: list[bytes], role="crew", **fields):
    data = {"to": "resolved", **fields,
            "photos": [(io.BytesIO(b), f"p{i}.jpg") for i, b in enumerate(photos)]}
    data = {k: v for k, v in data.items() if v is not None}  # "to": None leaves it out
    return api.post(role, f"/api/v1/issues/{case_id}/transitions", data=data,
                    content_type="multipart/form-data")


BAD_PHOTOS = {
    "not_an_image": (b"%PDF-1.4 this is a document, not a photo\n" * 20, 400),
    "truncated_jpeg": (noise_jpeg((200, 150))[:3000], 400),
    "pixel_bomb_20000x20000": (png_declaring(20_000, 20_000), 400),
    "empty_file": (b"", 400),
}


@pytest.mark.parametrize("name", list(BAD_PHOTOS))
def test_bad_photo_is_refused_and_nothing_is_written(world, name):
    api, inst = world.api, world.instance
    data, status = BAD_PHOTOS[name]
    cid = api.new_case("in_progress")
    before, files = api.snapshot(cid), photo_files(inst)
    # A good photo goes first: all or nothing, so it must not be kept either.
    r = _resolve_with(api, cid, [jpeg((10, 200, 30)), data])
    assert r.status_code == status, r.get_json()
    err = r.get_json()["error"]
    assert err["field"] == "photo" and err["message"]
    assert api.snapshot(cid) == before
    assert photo_files(inst) == files


def test_pixel_bomb_message_names_the_problem(world):
    api = world.api
    cid = api.new_case("in_progress")
    r = _resolve_with(api, cid, [png_declaring(20_000, 20_000)])
    msg = r.get_json()["error"]["message"]
    assert "pixel" in msg.lower() or "bomb" in msg.lower(), msg


def test_photo_over_the_limit_is_413_and_nothing_is_written(small_photos):
    api, inst = small_photos.api, small_photos.instance
    cid = api.new_case("in_progress")
    big = noise_jpeg((400, 300))
    assert 60 * 1024 < len(big) < 1024 * 1024  # over the photo limit, under the body limit
    before, files = api.snapshot(cid), photo_files(inst)
    r = _resolve_with(api, cid, [jpeg((1, 2, 3)), big])
    assert r.status_code == 413, r.get_json()
    err = r.get_json()["error"]
    assert err["field"] == "photo" and "MB" in err["message"]
    assert api.snapshot(cid) == before and photo_files(inst) == files
    # A small photo is still fine on this instance.
    assert _resolve_with(api, cid, [jpeg((1, 2, 3))]).status_code == 200


def test_a_body_over_the_request_limit_is_413_and_nothing_is_written(small_photos):
    api, inst = small_photos.api, small_photos.instance
    cid = api.new_case("in_progress")
    before, files = api.snapshot(cid), photo_files(inst)
    huge = noise_jpeg((1300, 1000), seed=3)
    assert len(huge) > 1.2 * 1024 * 1024
    r = _resolve_with(api, cid, [huge])
    assert r.status_code == 413
    assert r.get_json()["error"]["code"] == "request_entity_too_large"
    assert api.snapshot(cid) == before and photo_files(inst) == files


# Each: what is sent, the status, and the field the error names. A valid photo rides
# along with every request that would otherwise be a resolution, to prove it is not kept.
BAD_MOVES = {
    "unknown_status": ({"to": "fixed_maybe"}, 400, "to"),
    "missing_to": ({"to": None, "note": "x"}, 400, "to"),
    "illegal_transition": ({"to": "closed", "note": "x"}, 409, "to"),
    "lat_out_of_range": ({"to": "resolved", "lon": "111.56", "lat": "95"}, 400, "lat"),
    "lon_not_a_number": ({"to": "resolved", "lon": "east", "lat": "24.4"}, 400, "lon"),
    "lon_without_lat": ({"to": "resolved", "lon": "111.56"}, 400, "lat"),
    "bad_version": ({"to": "resolved", "version": "abc"}, 400, "version"),
    "stale_version": ({"to": "resolved", "version": "1"}, 409, None),
    "bad_line": ({"to": "resolved", "line": "[[111.5, 24.4]]"}, 400, "line"),
    "line_not_json": ({"to": "resolved", "line": "[[111.5,"}, 400, "line"),
    "unknown_quantity": ({"to": "resolved", "quantities": '{"bananas": 3}'}, 400,
                         "quantities"),
    "negative_quantity": ({"to": "resolved", "quantities": '{"road_m": -1}'}, 400,
                          "quantities"),
    "note_too_long": ({"to": "resolved", "note": "长" * 4001}, 400, "note"),
    "bad_due_date": ({"to": "resolved", "due_at": "next tuesday"}, 400, "due_at"),
    "out_of_scope_worker": ({"to": "resolved", "note": "x", "_role": "gw2"}, 403, None),
    "other_org": ({"to": "resolved", "note": "x", "_role": "crew2"}, 403, None),
}


@pytest.mark.parametrize("name", list(BAD_MOVES))
def test_bad_transition_is_a_clear_4xx_and_nothing_is_written(world, name):
    api, inst = world.api, world.instance
    fields, status, field = BAD_MOVES[name]
    fields = dict(fields)
    role = fields.pop("_role", "crew")
    cid = api.new_case("in_progress")
    before, files = api.snapshot(cid), photo_files(inst)
    r = _resolve_with(api, cid, [jpeg((7, 77, 177))], role=role, **fields)
    assert r.status_code == status, r.get_json()
    err = r.get_json()["error"]
    assert err["message"]
    if field:
        assert err.get("field") == field, err
    assert api.snapshot(cid) == before
    assert photo_files(inst) == files


@pytest.mark.parametrize("body, field", [
    (b"", "body"), (b"not json", "body"), (b"[1, 2]", "body"), (b'{"to": 5}', "to"),
    (b'{"to": "dispatched"}', "assignee_org"),
    (b'{"to": "dispatched", "assignee_org": "crew"}', "assignee_org"),
])
def test_bad_json_bodies_name_the_field(world, body, field):
    api = world.api
    cid = api.new_case("filed")
    before = api.snapshot(cid)
    r = api.post("gw", f"/api/v1/issues/{cid}/transitions", data=body,
                 content_type="application/json")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == field
    assert api.snapshot(cid) == before


def test_unknown_case_is_404(world):
    r = world.api.move("admin", 99_999_999, "filed")
    assert r.status_code == 404 and r.get_json()["error"]["field"] == "id"


def test_a_repair_far_from_the_case_is_recorded_with_a_warning(world):
    """A valid position far away (a phone with a bad fix) is not refused: the distance
    is recorded and flagged, and the person is warned."""
    api = world.api
    cid = api.new_case("in_progress")
    r = _resolve_with(api, cid, [jpeg((90, 90, 90))], lon=str(FAR_AWAY[0]),
                      lat=str(FAR_AWAY[1]))
    assert r.status_code == 200
    body = r.get_json()
    ev = body["properties"]["history"][-1]
    assert ev["data"]["far"] is True and ev["data"]["distance_m"] > 1_000_000
    assert body["warnings"] and "m from the case" in body["warnings"][0]


def test_reports_and_checkins_outside_the_street_are_422(world):
    api, app = world.api, world.app
    n_cases, n_checkins = case_count(app), _count(app, checkins)
    r = api.post("gw", "/api/v1/issues", json=api.report_body(lon=FAR_AWAY[0],
                                                                lat=FAR_AWAY[1]))
    assert r.status_code == 422
    assert r.get_json()["error"]["code"] == "outside_jurisdiction"
    assert r.get_json()["error"]["field"] == "lon"
    r = api.post("gw", "/api/v1/checkins", json={"lon": FAR_AWAY[0], "lat": FAR_AWAY[1]})
    assert r.status_code == 422 and r.get_json()["error"]["field"] == "lon"
    r = api.post("gw", "/api/v1/checkins", json={"lon": api.point[0], "lat": api.point[1],
                                                 "accuracy": "good"})
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "accuracy"
    assert case_count(app) == n_cases and _count(app, checkins) == n_checkins


def test_a_report_with_a_bad_photo_stores_no_case_and_no_file(world):
    api, app, inst = world.api, world.app, world.instance
    n, files = case_count(app), photo_files(inst)
    body = api.report_body()
    r = api.post("gw", "/api/v1/issues", content_type="multipart/form-data", data={
        **{k: str(v) for k, v in body.items()},
        "photos": [(io.BytesIO(jpeg((3, 3, 3))), "ok.jpg"),
                   (io.BytesIO(png_declaring(20_000, 20_000)), "bomb.png")]})
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "photo"
    assert case_count(app) == n and photo_files(inst) == files


@pytest.mark.parametrize("body, field", [
    ({"due_at": "soon", "reason": "x"}, "due_at"),
    ({"reason": "x"}, "due_at"),
    ({"due_at": "2099-01-01T00:00:00Z"}, "reason"),
    ({"due_at": "2000-01-01T00:00:00Z", "reason": "x"}, "due_at"),
])
def test_bad_extensions_are_400(world, body, field):
    api = world.api
    cid = api.new_case("dispatched")
    before = api.snapshot(cid)
    r = api.post("gw", f"/api/v1/issues/{cid}/extension", json=body)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == field
    assert api.snapshot(cid) == before


def test_extending_a_closed_case_is_409(world):
    api = world.api
    cid = api.new_case("resolved")
    assert api.move("gw", cid, "closed", note="合格").status_code == 200
    before = api.snapshot(cid)
    r = api.post("gw", f"/api/v1/issues/{cid}/extension",
                 json={"due_at": "2099-01-01T00:00:00Z", "reason": "x"})
    assert r.status_code == 409
    assert api.snapshot(cid) == before


def test_bad_needs_requests(world):
    api = world.api
    cid = api.new_case("dispatched")
    before = api.snapshot(cid)
    r = api.post("gw", f"/api/v1/issues/{cid}/needs", json={"kind": "someday"})
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "kind"
    # Only a filed case can be published for claiming.
    r = api.post("gw", f"/api/v1/issues/{cid}/needs", json={"kind": "fix_now",
                                                           "publish": True})
    assert r.status_code == 409
    assert api.snapshot(cid) == before


def test_an_unpublished_case_cannot_be_claimed(world):
    api = world.api
    cid = api.new_case("filed")
    before = api.snapshot(cid)
    r = api.move("crew", cid, "claimed")
    assert r.status_code == 403 and "needs list" in r.get_json()["error"]["message"]
    assert api.snapshot(cid) == before


# ------------------------------------------------- strict bodies (found by using the API)


def _iso(dt: datetime) -> str:
    return dt.replace(microsecond=0).isoformat() + "Z"


def _utcnow() -> datetime:
    from gis.cases import utcnow

    return utcnow()


@pytest.mark.parametrize("body, field", [
    ({"to": "filed", "version": True}, "version"),
    ({"to": "filed", "version": 1.5}, "version"),
    ({"to": "filed", "version": "1e0"}, "version"),
    ({"to": "filed", "version": "²"}, "version"),
    ({"to": "filed", "version": 2**70}, "version"),
    ({"to": "dispatched", "assignee_org": True}, "assignee_org"),
    ({"to": "dispatched", "assignee_org": 1.7}, "assignee_org"),
    ({"to": "dispatched", "assignee_org": 999_999}, "assignee_org"),
    ({"to": "dispatched", "assignee_user": 999_999}, "assignee_user"),
    ({"to": "dispatched", "assignee_user": "planner"}, "assignee_user"),
    ({"to": "filed", "note": ["x"]}, "note"),
    ({"to": "filed", "due_at": "0001-01-01T00:00:00+01:00"}, "due_at"),
    ({"to": "filed", "due_at": "9999-12-31T23:59:59-01:00"}, "due_at"),
    ({"to": "filed", "due_at": "2000-01-01T00:00:00Z"}, "due_at"),
    ({"to": "filed", "due_at": "later"}, "due_at"),
    ({"to": "filed", "note": "\ud800"}, "note"),
])
def test_transition_bodies_are_taken_as_they_are_written(world, body, field):
    """A value that is not what the field is (a boolean or a fraction for an id, an id
    no one has, a list for a note, a date out of range or in the past, half a surrogate
    pair) is refused naming the field: nothing is rounded, coerced or written."""
    api = world.api
    cid = api.new_case("filed" if body["to"] == "dispatched" else "reported")
    before = api.snapshot(cid)
    if body.get("assignee_user") == "planner":
        body = {**body, "assignee_user": world.app.extensions["hemei"].accounts
                .by_username("planner").id}
    # As sent: a test client encoding the body itself would refuse a 70-bit integer.
    r = api.post("admin", f"/api/v1/issues/{cid}/transitions", data=json.dumps(body),
                 content_type="application/json")
    assert r.status_code == 400, r.get_json()
    assert r.get_json()["error"]["field"] == field
    assert api.snapshot(cid) == before


def test_a_dispatch_names_a_field_worker_of_the_organisation(world):
    api = world.api
    h = world.app.extensions["hemei"]
    crew, crew2 = h.accounts.by_username("crew"), h.accounts.by_username("crew2")
    cid = api.new_case("filed")
    r = api.move("admin", cid, "dispatched", assignee_org=api.orgs["crew"],
                 assignee_user=crew2.id)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "assignee_user"
    assert "does not belong" in r.get_json()["error"]["message"]
    r = api.move("admin", cid, "dispatched", assignee_org=api.orgs["crew"],
                 assignee_user=crew.id)
    assert r.status_code == 200
    p = r.get_json()["properties"]
    assert (p["assignee_org"], p["assignee_user"]) == (api.orgs["crew"], crew.id)


def test_a_transition_may_bring_the_due_date_forward_not_later(world):
    """Moving a due date later is an extension (a reason, counted); a transition may
    only tighten it, to a time still ahead."""
    api = world.api
    cid = api.new_case("reported")
    due = datetime.fromisoformat(api.get(cid)["due_at"].rstrip("Z"))
    before = api.snapshot(cid)
    r = api.move("admin", cid, "filed", due_at=_iso(due + timedelta(days=30)))
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "due_at"
    assert "extension" in r.get_json()["error"]["message"]
    assert api.snapshot(cid) == before
    earlier = min(due - timedelta(hours=1), _utcnow() + timedelta(hours=2))
    r = api.move("admin", cid, "filed", due_at=_iso(earlier))
    assert r.status_code == 200
    p = r.get_json()["properties"]
    assert p["due_at"] == _iso(earlier) and p["extension_count"] == 0


@pytest.mark.parametrize("body, field", [
    ({"due_at": "2999-01-01T00:00:00Z", "reason": "x"}, "due_at"),  # beyond two years
    ({"due_at": "0001-01-01T00:00:00+01:00", "reason": "x"}, "due_at"),
    ({"due_at": "LATER", "reason": ["x"]}, "due_at"),
    ({"due_at": "PLUS5", "reason": ["x"]}, "reason"),
    ({"due_at": "PLUS5", "reason": "x" * 4001}, "reason"),
])
def test_extension_bodies_are_strict(world, body, field):
    api = world.api
    cid = api.new_case("dispatched")
    due = datetime.fromisoformat(api.get(cid)["due_at"].rstrip("Z"))
    if body["due_at"] == "PLUS5":
        body = {**body, "due_at": _iso(due + timedelta(days=5))}
    before = api.snapshot(cid)
    r = api.post("gw", f"/api/v1/issues/{cid}/extension", json=body)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == field
    assert api.snapshot(cid) == before


@pytest.mark.parametrize("body, status, field", [
    ({"kind": "long_term", "publish": "false"}, 400, "publish"),
    ({"kind": "long_term", "publish": 1}, 400, "publish"),
    ({"kind": "fix_now", "note": ["x"]}, 400, "note"),
    ({"kind": "fix_now", "note": "x" * 4001}, 400, "note"),
])
def test_needs_bodies_are_strict(world, body, status, field):
    """``"publish": "false"`` used to publish the case (``bool("false")``)."""
    api = world.api
    cid = api.new_case("filed")
    before = api.snapshot(cid)
    r = api.post("gw", f"/api/v1/issues/{cid}/needs", json=body)
    assert r.status_code == status and r.get_json()["error"]["field"] == field
    assert api.snapshot(cid) == before
    assert api.get(cid)["published"] is False


def test_a_closed_case_does_not_go_on_the_needs_list(world):
    api = world.api
    cid = api.new_case("resolved")
    assert api.move("gw", cid, "closed", note="合格").status_code == 200
    before = api.snapshot(cid)
    r = api.post("gw", f"/api/v1/issues/{cid}/needs", json={"kind": "fix_now"})
    assert r.status_code == 409
    assert api.snapshot(cid) == before and api.get(cid)["needs_kind"] is None


def test_the_public_history_names_no_field_worker(world):
    """A dispatch to a person records their account id in the event's data: staff see
    it, the public does not."""
    api = world.api
    crew = world.app.extensions["hemei"].accounts.by_username("crew")
    cid = api.new_case("filed")
    assert api.move("admin", cid, "dispatched", assignee_org=api.orgs["crew"],
                    assignee_user=crew.id).status_code == 200
    public = api.client.get(f"/api/v1/issues/{cid}").get_json()["properties"]
    dispatch = [e for e in public["history"] if e["to"] == "dispatched"][-1]
    assert "assignee_user" not in (dispatch["data"] or {})
    assert dispatch["data"]["assignee_org"] == api.orgs["crew"]
    staff = api.get(cid)
    assert [e for e in staff["history"] if e["to"] == "dispatched"][-1]["data"][
        "assignee_user"] == crew.id


def test_one_case_etag_follows_the_body_and_the_reader(world):
    """The ETag of one case is its body's: a reader who may make other moves, or a case
    that has become overdue meanwhile, is not answered 304 with someone else's body."""
    api = world.api
    cid = api.new_case("published")  # an admin may claim it for a unit, gw may not
    admin = api.client.get(f"/api/v1/issues/{cid}", headers=api.headers("admin"))
    gw = api.client.get(f"/api/v1/issues/{cid}", headers=api.headers("gw"))
    assert admin.get_json()["allowed"] != gw.get_json()["allowed"]
    assert admin.headers["ETag"] != gw.headers["ETag"]
    assert {"Authorization", "Cookie"} <= {v.strip() for v in gw.headers["Vary"].split(",")}
    r = api.client.get(f"/api/v1/issues/{cid}", headers={
        **api.headers("gw"), "If-None-Match": admin.headers["ETag"]})
    assert r.status_code == 200 and r.get_json()["allowed"] == gw.get_json()["allowed"]
    r = api.client.get(f"/api/v1/issues/{cid}", headers={
        **api.headers("gw"), "If-None-Match": gw.headers["ETag"]})
    assert r.status_code == 304
    # Overdue by the clock, not by a write: the row version stays, the body changes.
    h = world.app.extensions["hemei"]
    from gis.storage import cases

    with h.store._write() as conn:
        conn.execute(sa.update(cases).where(cases.c.id == cid)
                     .values(due_at=_utcnow() + timedelta(seconds=1)))
    fresh = api.client.get(f"/api/v1/issues/{cid}", headers=api.headers("gw"))
    assert fresh.get_json()["properties"]["overdue"] is False
    import time

    time.sleep(1.5)
    r = api.client.get(f"/api/v1/issues/{cid}", headers={
        **api.headers("gw"), "If-None-Match": fresh.headers["ETag"]})
    assert r.status_code == 200 and r.get_json()["properties"]["overdue"] is True


def test_only_a_published_case_is_claimed_and_an_admin_names_the_unit(world):
    """An administrator's claim of a case never put on the needs list left it held by no
    one (found on the phone): claiming is taken off the published list, for everyone,
    and an administrator claims for a named unit."""
    api = world.api
    cid = api.new_case("filed")
    before = api.snapshot(cid)
    r = api.move("admin", cid, "claimed", assignee_org=api.orgs["crew"])
    assert r.status_code == 403 and "needs list" in r.get_json()["error"]["message"]
    assert "claimed" not in api.client.get(
        f"/api/v1/issues/{cid}", headers=api.headers("admin")).get_json()["allowed"]
    assert api.post("admin", f"/api/v1/issues/{cid}/needs",
                    json={"kind": "fix_now", "publish": True}).status_code == 200
    before = api.snapshot(cid)
    r = api.move("admin", cid, "claimed")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "assignee_org"
    r = api.move("admin", cid, "claimed", assignee_org=999_999)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "assignee_org"
    assert api.snapshot(cid) == before
    r = api.move("admin", cid, "claimed", assignee_org=api.orgs["crew"])
    assert r.status_code == 200
    assert r.get_json()["properties"]["assignee_org"] == api.orgs["crew"]
