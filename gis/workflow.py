"""The case workflow: who may move a case where, and what each step needs.

Every write checks role and scope here, before the store's transaction checks the status
and the row version:

- ``admin`` may do anything;
- ``grid_worker`` acts on cases located in their grids: verify, file, reject, dispatch,
  publish on the needs list, handle small things themselves, check (close or reopen),
  extend, close not fixed;
- ``field_staff`` act on cases dispatched to or claimed by their organisation (or
  assigned to them), and may claim a published needs-list case;
- ``planner`` writes nothing. Like everyone, they read what is public about every case
  of the street; staff-only fields (the assigned field worker) only in their area. The
  planner's page opens on their community, and they may compare it with the others.

Reporting, and adding a note or a photo to an open case (the same problem seen again,
instead of a duplicate case), are open to every admin, grid worker and field worker
anywhere in the street: that is telling, not acting on the case.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from gis.accounts import User
from gis.cases import NEEDS_KINDS, STATUSES, Case, allowed_transitions
from gis.errors import Forbidden, InvalidInput
from gis.locate import check_lon_lat

WORKER_MOVES = {"verified", "filed", "rejected", "dispatched", "in_progress", "resolved",
                "closed", "reopened", "closed_not_fixed"}
FIELD_MOVES = {"claimed", "in_progress", "resolved"}
NEEDS_NOTE = {"rejected", "reopened", "closed_not_fixed"}
FAR_M = 100.0  # a repair geotagged farther than this from the case is flagged


def in_scope(user: User, case: Case | dict) -> bool:
    """Whether ``user`` may act on ``case`` at all (not which move)."""
    get = case.get if isinstance(case, dict) else (lambda k: getattr(case, k))
    if user.role == "admin":
        return True
    if user.role == "grid_worker":
        return get("grid_code") in user.grids
    if user.role == "field_staff":
        return ((user.org_id is not None and get("assignee_org") == user.org_id)
                or get("assignee_user") == user.id)
    return False


def can_read(user: User, case: Case | dict) -> bool:
    """Whether ``user`` may see the case's staff-only fields (reporter, assignees)."""
    get = case.get if isinstance(case, dict) else (lambda k: getattr(case, k))
    if in_scope(user, case):
        return True
    if user.role == "planner":
        return user.area_code in (get("street_code"), get("community_code"))
    if user.role == "field_staff":
        return bool(get("published")) and get("status") == "filed"
    return False


def can_see_reporter(user: User, case: Case | dict) -> bool:
    """The resident's name and phone: the administrator and the responsible grid worker."""
    get = case.get if isinstance(case, dict) else (lambda k: getattr(case, k))
    return user.role == "admin" or (user.role == "grid_worker"
                                    and get("grid_code") in user.grids)


def authorize_move(user: User, case: dict, to: str) -> None:
    """Raise ``Forbidden`` (with the reason) unless ``user`` may move ``case`` to ``to``."""
    if user.role == "planner":
        raise Forbidden("planners read cases; they do not change them")
    if to == "claimed" and not case["published"]:
        # Claiming takes a case off the published needs list; one not on it is
        # dispatched instead (an admin's claim left a case held by no one).
        raise Forbidden(f"case {case['id']} is not on the published needs list; "
                        "dispatch it instead")
    if user.role == "admin":
        return
    if user.role == "grid_worker":
        if case["grid_code"] not in user.grids:
            raise Forbidden(f"case {case['id']} is in grid {case['grid_code']}, not in your "
                            f"grids ({', '.join(user.grids) or 'none'})")
        if to not in WORKER_MOVES:
            raise Forbidden(f"a grid worker cannot move a case to {to!r}")
        return
    if user.role == "field_staff":
        if to == "claimed":
            return
        if not in_scope(user, case):
            raise Forbidden(f"case {case['id']} is not dispatched to or claimed by your "
                            "organisation")
        if to not in FIELD_MOVES:
            raise Forbidden(f"field staff cannot move a case to {to!r}; the grid worker "
                            "checks and closes it")
        return
    raise Forbidden(f"role {user.role!r} cannot change cases")


@dataclass
class Move:
    """A parsed transition request."""

    to: str
    note: str = ""
    lon: float | None = None
    lat: float | None = None
    assignee_org: int | None = None
    assignee_user: int | None = None
    due_at: datetime | None = None
    line: list | None = None
    quantities: dict | None = None
    version: int | None = None


def int_value(value: object, name: str, lo: int = -(2**31), hi: int = 2**31 - 1) -> int | None:
    """An integer id or version from JSON (a number) or a form (ASCII digits); None when
    absent. Refuses what is no whole number instead of rounding it (``2.9``, ``true``,
    ``"²"``), and what lies outside ``[lo, hi]`` (the store's integer columns)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        value = int(value)
    elif isinstance(value, float) and (value.is_integer() or math.isinf(value)):
        # A huge JSON integer arrives as a float (webapp.api._json_int): out of range.
        if not lo <= value <= hi:
            raise InvalidInput(f"{name} is out of range", field=name)
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer id", field=name)
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} is out of range", field=name)
    return value


_INT_TEXT = re.compile(r"\s*-?[0-9]{1,20}\s*")


def text_value(value: object, name: str, limit: int = 4000) -> str:
    """Optional free text (a note, a reason), stripped; refuses a non-string and text
    over ``limit`` characters, naming the field."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(f"{name} must be text of at most {limit} characters", field=name)
    return value.strip()


def bool_value(value: object, name: str) -> bool:
    """An optional JSON boolean (absent or null is false); ``"false"`` is no boolean."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false", field=name)
    return value


def parse_datetime(value: object, field: str) -> datetime:
    """An ISO 8601 date or date-time (``Z`` or offset allowed) as naive UTC."""
    from datetime import UTC

    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} must be an ISO 8601 date-time", field=field)
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        # Year 1 or 9999 with an offset leaves datetime's range (OverflowError).
        dt = dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt
    except (ValueError, OverflowError):
        raise InvalidInput(f"{field} must be an ISO 8601 date-time, got {value!r}",
                           field=field) from None
    return dt


#: How far ahead a due date may be set (a transition's or an extension's).
MAX_DUE_AHEAD = timedelta(days=731)


def check_due(due: datetime, current: datetime | None, now: datetime, *,
              extending: bool) -> None:
    """A new due date: in the future and at most two years ahead. An extension moves it
    later; a transition may only bring it forward, because moving it later is what an
    extension is for (with a reason, and counted on the case)."""
    if due <= now:
        raise InvalidInput("due_at must be in the future", field="due_at")
    if due > now + MAX_DUE_AHEAD:
        raise InvalidInput("due_at may be at most two years ahead", field="due_at")
    if current is None:
        return
    if extending and due <= current:
        raise InvalidInput("the new due date must be later than the current one "
                           f"({current:%Y-%m-%d %H:%M} UTC)", field="due_at")
    if not extending and due > current:
        raise InvalidInput(
            f"a transition may only bring the due date forward (it is now "
            f"{current:%Y-%m-%d %H:%M} UTC); to move it later, extend the case with a "
            "reason (POST …/extension)", field="due_at")


def parse_move(payload: object) -> Move:
    """Validate a transition body: ``to``, ``note`` and what the step needs."""
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    to = payload.get("to")
    if not isinstance(to, str) or to not in STATUSES:
        raise InvalidInput(f"to must be one of: {', '.join(STATUSES)}", field="to")
    move = Move(to=to, note=text_value(payload.get("note"), "note"))
    if payload.get("lon") not in (None, "") or payload.get("lat") not in (None, ""):
        move.lon, move.lat = check_lon_lat(payload.get("lon"), payload.get("lat"))
    move.assignee_org = int_value(payload.get("assignee_org"), "assignee_org")
    move.assignee_user = int_value(payload.get("assignee_user"), "assignee_user")
    move.version = int_value(payload.get("version"), "version")
    if payload.get("due_at") not in (None, ""):
        move.due_at = parse_datetime(payload.get("due_at"), "due_at")
    line = payload.get("line")
    if line not in (None, "", []):
        move.line = parse_line(line)
    q = payload.get("quantities")
    if q not in (None, "", {}):
        move.quantities = parse_quantities(q)
    if to in NEEDS_NOTE and not move.note:
        raise InvalidInput(f"moving a case to {to!r} needs a note saying why", field="note")
    if to == "dispatched" and move.assignee_org is None and move.assignee_user is None:
        raise InvalidInput("dispatching needs assignee_org or assignee_user",
                           field="assignee_org")
    return move


def parse_line(line: object) -> list[list[float]]:
    """A repair line: 2–500 ``[lon, lat]`` pairs (or a GeoJSON LineString)."""
    if isinstance(line, dict) and line.get("type") == "LineString":
        line = line.get("coordinates")
    if not isinstance(line, list) or not 2 <= len(line) <= 500:
        raise InvalidInput("line must be a list of 2 to 500 [lon, lat] points", field="line")
    out = []
    for p in line:
        if not isinstance(p, list | tuple) or len(p) != 2:
            raise InvalidInput("each point of line must be [lon, lat]", field="line")
        try:
            out.append(list(check_lon_lat(p[0], p[1])))
        except InvalidInput as e:
            raise InvalidInput(f"line: {e.message}", field="line") from None
    return out


QUANTITIES = {"road_m": "metres of road or footpath", "area_m2": "m² patched",
              "lamps": "street lights relit", "parking_spaces": "parking spaces marked",
              "patches": "asphalt patches"}


def parse_quantities(q: object) -> dict:
    """Physical quantities of a repair (non-negative numbers under known names)."""
    if not isinstance(q, dict):
        raise InvalidInput("quantities must be an object", field="quantities")
    out = {}
    for k, v in q.items():
        if k not in QUANTITIES:
            raise InvalidInput(f"unknown quantity {k!r}; known: {', '.join(QUANTITIES)}",
                               field="quantities")
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1e6:
            raise InvalidInput(f"quantity {k} must be a number from 0 to 1,000,000",
                               field="quantities")
        out[k] = v
    return out


def geodesic_m(lon1, lat1, lon2, lat2) -> float:
    """Distance on the WGS-84 ellipsoid in metres."""
    from pyproj import Geod

    return float(Geod(ellps="WGS84").inv(lon1, lat1, lon2, lat2)[2])


def line_length_m(line: list[list[float]]) -> float:
    """Geodesic length of a line of [lon, lat] points, in metres."""
    from pyproj import Geod

    lons, lats = zip(*line, strict=True)
    return float(Geod(ellps="WGS84").line_length(lons, lats))


def plan_move(user: User, case: dict, move: Move) -> tuple[dict, dict, list[str]]:
    """What a permitted move writes: column changes, event data, and warnings."""
    changes: dict = {}
    data: dict = {}
    warnings: list[str] = []
    if move.to == "dispatched":
        changes["assignee_org"] = move.assignee_org
        changes["assignee_user"] = move.assignee_user
        data["assignee_org"], data["assignee_user"] = move.assignee_org, move.assignee_user
    if move.to == "claimed":
        if user.role == "field_staff" and user.org_id is None:
            raise Forbidden("you belong to no organisation, so you cannot claim")
        if user.role == "admin" and move.assignee_org is None:
            raise InvalidInput("an administrator claims for a unit: name it in assignee_org",
                               field="assignee_org")
        changes["assignee_org"] = move.assignee_org if user.role == "admin" else user.org_id
        changes["published"] = False  # off the list of what can still be claimed
        data["assignee_org"] = changes["assignee_org"]
    if move.due_at is not None:
        changes["due_at"] = move.due_at
    if move.lon is not None:
        dist = geodesic_m(case["lon"], case["lat"], move.lon, move.lat)
        data["distance_m"] = round(dist, 1)
        if move.to in ("resolved", "in_progress") and dist > FAR_M:
            data["far"] = True
            warnings.append(f"you are {dist:.0f} m from the case (more than {FAR_M:.0f} m); "
                            "the distance is recorded")
    if move.line:
        data["line"] = move.line
        data["line_length_m"] = round(line_length_m(move.line), 1)
    if move.quantities:
        data["quantities"] = move.quantities
    if move.to == "resolved" and case.get("satisfaction") == "not_satisfied":
        data["feedback"] = True  # the rectification fed back to the resident
    return changes, data, warnings


def allowed_for(user: User | None, case: Case) -> list[str]:
    """The moves ``user`` could make on ``case`` now (for buttons and 409 bodies)."""
    if user is None:
        return []
    out = []
    row = {k: getattr(case, k) for k in ("id", "grid_code", "assignee_org", "assignee_user",
                                         "published", "status", "street_code",
                                         "community_code")}
    for to in allowed_transitions(case.status):
        try:
            authorize_move(user, row, to)
        except Forbidden:
            continue
        out.append(to)
    return out


def needs_kind(value: object) -> str | None:
    """Validate a needs-list kind (``fix_now``/``long_term``, or None to take it off)."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or value not in NEEDS_KINDS:
        raise InvalidInput(f"kind must be one of: {', '.join(NEEDS_KINDS)}", field="kind")
    return str(value)
