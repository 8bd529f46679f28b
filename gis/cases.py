"""Cases: geotagged problems, their status flow and intake validation.

A case stores the full chain of boundary codes from :func:`gis.locate.Locator.locate`
at intake (as FixMyStreet stores every containing area on a report), so per-grid counts
need no spatial join later and a boundary change does not silently move old cases.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta

from gis.catalogue import Category, get_category
from gis.errors import Conflict, InvalidInput
from gis.locate import check_lon_lat

# The national seven stages (GB/T 30428) and the source's own practice: a public report is
# verified on site or rejected; filed; dispatched to an organisation or person, or claimed
# from the published needs list by a partner unit; handled; resolved with evidence;
# checked by the grid worker and closed, or reopened for rework; or closed, not fixed.
STATUSES = ("reported", "verified", "rejected", "filed", "dispatched", "claimed",
            "in_progress", "resolved", "closed", "reopened", "closed_not_fixed")
# Open = still waiting for a fix (resolved cases wait only for the check).
OPEN_STATUSES = ("reported", "verified", "filed", "dispatched", "claimed", "in_progress",
                 "reopened")
FINAL_STATUSES = ("rejected", "closed", "closed_not_fixed")
_NOT_FIXED_FROM = ("filed", "dispatched", "claimed", "in_progress", "reopened")
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "reported": ("verified", "filed", "rejected"),
    "verified": ("filed", "rejected"),
    "filed": ("dispatched", "claimed", "in_progress", "closed_not_fixed"),
    "dispatched": ("in_progress", "dispatched", "closed_not_fixed"),
    "claimed": ("in_progress", "closed_not_fixed"),
    "in_progress": ("resolved", "closed_not_fixed"),
    "resolved": ("closed", "reopened"),
    "reopened": ("in_progress", "dispatched", "resolved", "closed_not_fixed"),
    "closed": (),
    "rejected": (),
    "closed_not_fixed": (),
}
STATUS_LABELS = {
    "reported": ("已上报", "Reported"),
    "verified": ("已核实", "Verified"),
    "rejected": ("不予立案", "Rejected"),
    "filed": ("已立案", "Filed"),
    "dispatched": ("已派遣", "Dispatched"),
    "claimed": ("已认领", "Claimed"),
    "in_progress": ("处置中", "In progress"),
    "resolved": ("已处置", "Resolved"),
    "closed": ("已结案", "Closed"),
    "reopened": ("返工", "Reopened for rework"),
    "closed_not_fixed": ("结案（未解决）", "Closed, not fixed"),
}
NEEDS_KINDS = {"fix_now": ("立行立改", "Fix now"), "long_term": ("长期问题", "Long term")}
SOURCES = ("patrol", "resident", "hotline", "meeting")
MAX_DESCRIPTION = 4000
MAX_TITLE = 200


def status_label(status: str, locale: str = "zh") -> str:
    """The display name of ``status`` in ``locale``."""
    zh, en = STATUS_LABELS.get(status, (status, status))
    return en if locale.startswith("en") else zh


def allowed_transitions(status: str) -> tuple[str, ...]:
    """The statuses a case in ``status`` may move to."""
    return TRANSITIONS.get(status, ())


def check_transition(current: str, to: object) -> str:
    """Return ``to`` if a case may move there from ``current``.

    Raises ``InvalidInput`` for an unknown status and ``Conflict`` (listing the allowed
    next statuses) for a known one that is not allowed from ``current``.
    """
    if not isinstance(to, str) or to not in STATUSES:
        raise InvalidInput(f"unknown status {to!r}; expected one of: {', '.join(STATUSES)}",
                           field="to")
    allowed = allowed_transitions(current)
    if to not in allowed:
        raise Conflict(
            f"cannot move a case from {current!r} to {to!r}; allowed: "
            f"{', '.join(allowed) or 'none (final status)'}",
            field="to",
            details={"current": current, "allowed": list(allowed)},
        )
    return to


def add_working_time(start: datetime, value: int, unit: str,
                     holidays: frozenset = frozenset()) -> datetime:
    """``start`` plus a time limit: ``hours``, or ``working_days`` skipping weekends and
    the dates in ``holidays`` (a set of ``datetime.date``)."""
    if unit == "hours":
        return start + timedelta(hours=value)
    day = start
    left = value
    while left > 0:
        day += timedelta(days=1)
        if day.weekday() < 5 and day.date() not in holidays:
            left -= 1
    return day


def parse_holidays(text: str | None) -> frozenset:
    """``2026-10-01,2026-10-02,…`` (the ``HEMEI_HOLIDAYS`` setting) as a set of dates."""
    from datetime import date

    out = set()
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.add(date.fromisoformat(part))
        except ValueError:
            raise InvalidInput(f"holiday {part!r} is not a date like 2026-10-01",
                               field="HEMEI_HOLIDAYS") from None
    return frozenset(out)


def report_fingerprint(payload: object, photos: list[bytes] = ()) -> str:
    """SHA-256 (hex) of a report as sent: its fields (key order aside) and its photos. An
    Idempotency-Key remembers it, so a retry is told from another report with the key."""
    import hashlib

    import orjson

    h = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
    for blob in photos:
        h.update(hashlib.sha256(blob).digest())
    return h.hexdigest()


#: Tracking codes are read off a phone and typed back: Crockford's base-32 alphabet (no I,
#: L, O or U), upper case, in groups of four. Twenty characters: 100 random bits.
TRACKING_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TRACKING_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_tracking_code() -> str:
    """A new resident tracking code, e.g. ``K7Q9-M2XD-4HPR-W3NB-8C5T`` (100 random bits:
    it cannot be guessed)."""
    import secrets

    raw = "".join(secrets.choice(TRACKING_ALPHABET) for _ in range(20))
    return "-".join(raw[i:i + 4] for i in range(0, 20, 4))


def normalise_tracking_code(text: str) -> str:
    """A tracking code as typed (any case, spaces or dashes anywhere, O for 0, I or L for
    1) in its stored form. Codes made before this alphabet (mixed-case base64) are found
    as typed (:meth:`gis.storage.SqlCaseStore.find_by_tracking_code` tries both)."""
    raw = "".join(ch for ch in text.upper() if ch.isalnum()).translate(_TRACKING_LOOKALIKES)
    return "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))


def utcnow() -> datetime:
    """Naive UTC now: all stored timestamps are naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class NewCase:
    """A validated report, before it is located and stored."""

    category: str
    lon: float
    lat: float
    description: str
    title: str
    source: str = "resident"
    created_at: datetime | None = None


@dataclass
class Case:
    """A stored case with its chain of boundary codes."""

    id: int
    category: str
    title: str
    description: str
    lon: float
    lat: float
    street_code: str | None
    community_code: str | None
    compound_code: str | None
    grid_code: str | None
    status: str
    source: str
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    row_version: int = 1
    assignee_org: int | None = None
    assignee_user: int | None = None
    needs_kind: str | None = None
    published: bool = False
    rework_count: int = 0
    extension_count: int = 0
    tracking_code: str | None = None
    reporter_name: str | None = None
    reporter_phone: str | None = None
    satisfaction: str | None = None
    grid_version_id: int | None = None  # the grid layer version its codes come from
    history: list[dict] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def evaluation_given(self) -> dict | None:
        """The resident's evaluation of the current resolution (the history event), if
        any: one after the last move to "resolved" (a case with none recorded, e.g. an
        imported one, is searched whole). One evaluation per resolution (Hemei.evaluate)."""
        start = max((i for i, e in enumerate(self.history)
                     if e["kind"] == "transition" and e["to"] == "resolved"), default=-1)
        return next((e for e in self.history[start + 1:] if e["kind"] == "evaluation"), None)

    def is_overdue(self, now: datetime | None = None) -> bool:
        """Open and past its due time."""
        now = now or utcnow()
        return self.is_open and self.due_at is not None and self.due_at < now

    def to_dict(self) -> dict:
        """A JSON-able dict (timestamps as ISO 8601 UTC with a ``Z``). Includes the
        reporter's name and phone: callers decide who may see them."""
        # Field by field, not dataclasses.asdict: its recursive deep copy was a fifth of
        # the intake path's time (bench/intake.py); only the history needs copying.
        d = {name: (v.isoformat(timespec="seconds") + "Z" if isinstance(v, datetime) else v)
             for name in _case_fields() for v in (getattr(self, name),)}
        d["history"] = [
            {k: (v.isoformat(timespec="seconds") + "Z" if isinstance(v, datetime)
                 else copy.deepcopy(v) if isinstance(v, (dict, list)) else v)
             for k, v in ev.items()}
            for ev in self.history]
        d["overdue"] = self.is_overdue()
        return d


@functools.cache
def _case_fields() -> tuple[str, ...]:
    # Once: dataclasses.fields() reflects on the class at every call.
    return tuple(f.name for f in fields(Case))


def _text(payload: dict, name: str, limit: int, required: bool) -> str:
    value = payload.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInput(f"{name} is required", field=name)
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", field=name)
    value = value.strip()
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value)} characters long; the limit is {limit}",
                           field=name)
    return value


def parse_new_case(payload: object) -> NewCase:
    """Validate a report (a dict from JSON or a form) and return a :class:`NewCase`.

    Raises ``InvalidInput`` naming the first bad field: missing or non-numeric or
    out-of-range coordinates, unknown category, over-long text, unknown source.
    """
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    cat: Category = get_category(payload.get("category"))
    lon, lat = check_lon_lat(payload.get("lon"), payload.get("lat"))
    description = _text(payload, "description", MAX_DESCRIPTION, required=True)
    title = _text(payload, "title", MAX_TITLE, required=False) or _default_title(
        cat, description)
    source = payload.get("source") or "resident"
    if source not in SOURCES:
        raise InvalidInput(f"unknown source {source!r}; expected one of: {', '.join(SOURCES)}",
                           field="source")
    return NewCase(category=cat.code, lon=lon, lat=lat, description=description, title=title,
                   source=source)


def _default_title(cat: Category, description: str) -> str:
    first = description.splitlines()[0] if description else ""
    return (first[:40] + "…") if len(first) > 40 else (first or cat.zh)
