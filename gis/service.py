"""The domain facade the web app and the CLI call: one object per instance.

It owns the store and the locator, keeps the locator in step with the active boundary
layers, and implements the use cases (report a case, import a layer, seed the demo)
so that ``webapp`` views and CLI commands stay thin.
"""

from __future__ import annotations

import csv
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from gis.accounts import Accounts
from gis.cases import (
    OPEN_STATUSES,
    NewCase,
    add_working_time,
    parse_holidays,
    parse_new_case,
    utcnow,
)
from gis.catalogue import get_category, load_catalogue
from gis.errors import (
    Conflict,
    Forbidden,
    IdempotencyKeyReused,
    InvalidInput,
    LayerError,
    NotFound,
    OutsideJurisdiction,
)
from gis.locate import Locator, check_lon_lat
from gis.storage import (
    CaseStore,
    IdempotencyKey,
    IdempotentReplay,
    StaleLayers,
    open_store,
)

# The order a demo case walks through the skeleton's flow to reach its status.
_PATH = {
    "reported": [],
    "accepted": ["filed"],
    "in_progress": ["filed", "dispatched", "in_progress"],
    "resolved": ["filed", "dispatched", "in_progress", "resolved"],
    "closed": ["filed", "dispatched", "in_progress", "resolved", "closed"],
    "rejected": ["rejected"],
}


class Hemei:
    """One instance of the service: settings, store, locator."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.store: CaseStore = open_store(
            str(settings["DATABASE_URL"]),
            migrate=str(settings.get("AUTO_MIGRATE", "1")).strip().lower()
            not in ("0", "false", "no", "off"))
        self.accounts = Accounts(self.store)
        self.holidays = parse_holidays(str(settings.get("HOLIDAYS") or ""))
        self._locator_pair: tuple[Locator, int | None, tuple] | None = None
        self._lock = threading.Lock()
        self._photos = None

    @property
    def photos(self):
        """Where photos are kept (``<instance>/photos``), behind the PhotoStore interface."""
        if self._photos is None:
            from gis.photos import LocalPhotoStore

            self._photos = LocalPhotoStore(Path(str(self.settings["INSTANCE"])) / "photos")
        return self._photos

    # -- boundaries -------------------------------------------------------------
    def _layers_version_key(self):
        return tuple((v["level"], v["id"]) for v in self.store.layer_versions()
                     if v["active"])

    def layers_version(self) -> str:
        """The active layer versions as one short string (a cache key, a URL's ``?v=``)."""
        return "-".join(str(vid) for _, vid in self._layers_version_key())

    def _located(self, *, cached: bool = False) -> tuple[Locator, int | None]:
        """The locator over the active layers and the grid layer version it was built
        from, as one pair (rebuilt when a new version is activated). The version is read
        before the layers: if an import lands in between, the pair names an old version
        with new layers, and the store's check sends the report round again.
        ``cached``: use the pair this process has without asking the database whether
        the layers changed (for writes that the store checks anyway)."""
        current = self._locator_pair
        if cached and current is not None:
            return current[0], current[1]
        key = self._layers_version_key()
        if current is None or key != current[2]:
            with self._lock:
                layers = self.store.load_active_layers()
                if "grid" not in layers:
                    raise LayerError("no grid layer is active; run `hemei init` or "
                                     "`hemei import-shapes`")
                current = (Locator(layers), dict(key).get("grid"), key)
                self._locator_pair = current
        return current[0], current[1]

    @property
    def locator(self) -> Locator:
        """The locator over the active layers (rebuilt when a new version is activated)."""
        return self._located()[0]

    @property
    def layers(self) -> dict:
        """The active boundary layers (level → GeoDataFrame)."""
        return self.locator.layers

    def has_layers(self) -> bool:
        return any(v["active"] for v in self.store.layer_versions())

    def import_layers(self, layers: dict, source: str, *, force: bool = False,
                      actor: str = "system"):
        """Validate new layers against the active ones and activate them if clean.

        Returns the validation report. Errors refuse the import (the active layers are
        untouched) unless ``force`` and every error is one force may override
        (:data:`gis.validate.FORCEABLE`: geometry, not missing or duplicate codes or an
        empty layer); warnings (repaired geometries) never block it. Cases not yet
        closed are re-assigned to the new boundaries in the same transaction; the
        report's ``saved`` (:class:`gis.storage.LayerSave`, None if refused) says which.
        """
        from gis.validate import validate_layers

        existing = self.store.load_active_layers() if self.has_layers() else {}
        others = {k: v for k, v in existing.items() if k not in layers}
        report = validate_layers(layers, existing=others)
        if report.ok or (force and report.forceable):
            merged = {**others, **report.layers}
            # Open cases follow the new boundaries (in the same transaction as the
            # layers); with no grid layer yet there is nothing to locate them on.
            relocate = Locator(merged).locate_many if "grid" in merged else None
            report.saved = self.store.save_layers(report.layers, source, relocate=relocate,
                                                  actor=actor)
        return report

    # -- initialisation ---------------------------------------------------------
    def ensure_initialised(self) -> bool:
        """Load the demo boundaries and cases on first run. Returns True if it did.

        Servers, workers and ``hemei init`` starting together on an empty database
        would each find no layers and each load them (the demo cases twice, two versions
        of every layer). So the loading happens under the store's first-run lock, and
        the look for layers is made again once it is held: the first process loads,
        the others wait and then find the layers there.

        The layers and the demo cases are written in one transaction: a failure or a
        killed process part way leaves no layers (and no cases), so the next start,
        finding no layers, does the whole first run again; it never finds the layers
        without the demo cases and skips them for good."""
        if self.has_layers():
            return False  # the usual start: no lock to wait for
        with self.store.first_run_lock():
            if self.has_layers():
                return False  # loaded by another process while this one waited
            self._load_first_run_data()
        return True

    def _load_first_run_data(self) -> None:
        """The demo boundaries (HEMEI_SHAPES) and cases (HEMEI_DEMO_CASES): validated,
        the cases located on the new layers in memory, then all saved in one
        transaction (:meth:`gis.storage.SqlCaseStore.save_layers_and_cases`)."""
        from gis.layers import read_layer_set
        from gis.validate import validate_layers

        shapes = str(self.settings["SHAPES"])
        # What import_layers does with no active layers (the caller holds the first-run
        # lock and found none), without its save.
        report = validate_layers(read_layer_set(shapes), existing={})
        if not report.ok:
            raise LayerError("the demo layers failed validation:\n" + report.format_text())
        locator = Locator(report.layers) if "grid" in report.layers else None
        rows: list[dict] = []
        events: list[list[dict]] = []
        demo = self.settings.get("DEMO_CASES")
        if demo and Path(str(demo)).exists():
            rows, events = self._demo_case_rows(str(demo), lambda: locator)
        self.store.save_layers_and_cases(
            report.layers, shapes, rows, events,
            relocate=locator.locate_many if locator is not None else None)

    def seed_demo_cases(self, path: str) -> int:
        """Load the demo cases CSV (times relative to now), located in bulk."""
        rows, events = self._demo_case_rows(path, lambda: self.locator)
        if not rows:
            return 0
        return self.store.import_cases(rows, events)

    def _demo_case_rows(self, path: str, locator) -> tuple[list[dict], list[list[dict]]]:
        """The demo cases CSV as :meth:`gis.storage.SqlCaseStore.import_cases` rows and
        events, located by ``locator()`` (called only if the file has cases)."""
        with open(path, encoding="utf-8", newline="") as fh:
            records = list(csv.DictReader(fh))
        if not records:
            return [], []
        where = locator()
        if where is None:
            raise LayerError("no grid layer is active; run `hemei init` or "
                             "`hemei import-shapes`")
        lons = np.array([float(r["lon"]) for r in records])
        lats = np.array([float(r["lat"]) for r in records])
        located = where.locate_many(lons, lats)
        now = utcnow()
        rows, events = [], []
        for r, loc in zip(records, located.itertuples(index=False), strict=True):
            if loc.grid_code is None:
                continue  # a demo point outside the street: skip rather than fail
            cat = get_category(r["category"])
            created = now - timedelta(days=float(r["days_ago"]))
            resolved = (now - timedelta(days=float(r["resolved_days_ago"]))
                        if r.get("resolved_days_ago") else None)
            closed = (now - timedelta(days=float(r["closed_days_ago"]))
                      if r.get("closed_days_ago") else None)
            steps = _PATH[r["status"]]
            times = _step_times(created, resolved, closed, steps)
            rows.append({
                "category": cat.code, "title": r["title"], "description": r["description"],
                "lon": float(r["lon"]), "lat": float(r["lat"]),
                "street_code": loc.street_code, "community_code": loc.community_code,
                "compound_code": loc.compound_code, "grid_code": loc.grid_code,
                "status": steps[-1] if steps else "reported", "source": r["source"],
                "created_at": created, "published": False, "rework_count": 0,
                "extension_count": 0,
                "updated_at": times[-1] if times else created,
                "due_at": add_working_time(created, cat.limit_value, cat.limit_unit,
                                           self.holidays),
                "resolved_at": resolved, "closed_at": closed if r["status"] == "closed" else (
                    times[-1] if r["status"] == "rejected" else None),
                # The demo's pothole, street-light and parking cases come from the
                # residents' meetings: the needs list (立行立改 / long term).
                "needs_kind": ("fix_now" if r["source"] == "meeting" and
                               cat.code in ("street_light", "parking", "road_damage")
                               else "long_term" if r["source"] == "meeting" else None),
                "row_version": 1 + len(steps),
            })
            evs = [{"at": created, "actor": "demo", "from_status": None,
                    "to_status": "reported", "note": r.get("ref", ""), "kind": "transition"}]
            prev = "reported"
            for st, at in zip(steps, times, strict=True):
                evs.append({"at": at, "actor": "demo", "from_status": prev, "to_status": st,
                            "note": "", "kind": "transition"})
                prev = st
            events.append(evs)
        return rows, events

    # -- cases ------------------------------------------------------------------
    def due(self, start, category: str):
        """The due time of a case in ``category`` reported at ``start`` (working days skip
        weekends and the configured holidays)."""
        cat = get_category(category)
        return add_working_time(start, cat.limit_value, cat.limit_unit, self.holidays)

    def report(self, payload: object, actor: str = "anonymous", *,
               photos: list[bytes] | None = None, extra: dict | None = None,
               compound: str | None = None, idempotency: tuple | None = None):
        """Validate, locate and store a new case (with its photos, all or nothing).
        Raises ``InvalidInput`` naming the bad field, or ``OutsideJurisdiction`` for a
        point outside the street (or outside ``compound`` when a report is scoped).
        ``idempotency`` = (user id, Idempotency-Key[, fingerprint]): if that key already
        made a case, :class:`gis.storage.IdempotentReplay` names it and nothing new is
        stored; if it came with another report (a different fingerprint, see
        :func:`gis.cases.report_fingerprint`), ``IdempotencyKeyReused`` (422)."""
        # No look-up of the key first: the key is inserted in the case's transaction under
        # a unique constraint, so a replay fails there, is rolled back and named
        # (IdempotentReplay) — one query fewer on every report (bench/intake.py).
        new: NewCase = parse_new_case(payload)
        datum = payload.get("datum") or "wgs84"
        if datum not in ("wgs84", "gcj02"):
            raise InvalidInput(f"datum must be wgs84 or gcj02, got {datum!r}", field="datum")
        if datum == "gcj02":
            # A point picked on a GCJ-02 base map (AMap): stored in WGS-84.
            from gis.gcj02 import gcj02_to_wgs84

            lon, lat = gcj02_to_wgs84(new.lon, new.lat)
            new.lon, new.lat = round(float(lon), 7), round(float(lat), 7)
        rows, keys = None, []
        try:
            # A boundary import between locating and storing makes the store refuse the
            # case (StaleLayers): locate it again on the new layers. Twice is plenty
            # (imports are rare); a third miss is a 409 the client may retry.
            for attempt in range(3):
                # First try: the cached locator (the store checks its version in the
                # insert's transaction); after a refusal, the active layers.
                locator, grid_version = self._located(cached=attempt == 0)
                chain = locator.locate(new.lon, new.lat)
                misses = chain is None or (
                    compound is not None
                    and (chain.get("compound") or {}).get("code") != compound)
                if misses and attempt == 0:
                    continue  # not on the cached layers: ask the active ones before refusing
                if chain is None:
                    raise OutsideJurisdiction(
                        f"the point ({new.lon:.6f}, {new.lat:.6f}) is outside the "
                        "jurisdiction (no grid contains it)", field="lon")
                if (compound is not None
                        and (chain.get("compound") or {}).get("code") != compound):
                    name = locator.name("compound", compound) or compound
                    raise OutsideJurisdiction(f"the point is not inside {name}", field="lon")
                if rows is None:
                    rows, keys = self._store_photos(photos or [], role="report")
                try:
                    return self.store.create_case(
                        new, chain, self.due(utcnow(), new.category), actor=actor,
                        extra=extra, photo_rows=rows, idempotency=idempotency,
                        grid_version=grid_version)
                except IdempotentReplay as replay:
                    sent = IdempotencyKey(*idempotency).fingerprint
                    if None not in (sent, replay.fingerprint) and sent != replay.fingerprint:
                        raise IdempotencyKeyReused(
                            f"this Idempotency-Key was already used for another report "
                            f"(case {replay.case_id}); send a new key with a new report",
                            field="Idempotency-Key",
                            details={"case_id": replay.case_id}) from None
                    raise
                except StaleLayers:
                    if attempt == 2:
                        raise Conflict("the boundary layers changed while this report was "
                                       "being stored; send it again") from None
        except Exception:
            self._forget_photos(keys)
            raise

    # -- photos -----------------------------------------------------------------
    def _store_photos(self, blobs: list[bytes], role: str) -> tuple[list[dict], list[str]]:
        """Validate every photo first (nothing is written if one is bad), then store."""
        from gis.photos import MAX_PHOTOS, prepare_photo

        if len(blobs) > MAX_PHOTOS:
            raise InvalidInput(f"at most {MAX_PHOTOS} photos, got {len(blobs)}", field="photos")
        limit = int(float(self.settings.get("MAX_PHOTO_MB") or 10) * 1024 * 1024)
        prepared = [prepare_photo(b, max_bytes=limit) for b in blobs]
        rows, keys = [], []
        try:
            for info, full, thumb in prepared:
                key = self.photos.put(info, full, thumb)
                keys.append(key)
                rows.append({"key": key, "mime": info.stored_mime, "width": info.width,
                             "height": info.height, "role": role})
        except Exception:
            self._forget_photos(keys)
            raise
        return rows, keys

    def _forget_photos(self, keys: list[str]) -> None:
        # Content-addressed files may be shared with an earlier case: keep those.
        from gis.storage import photos as photos_table

        for key in keys:
            with self.store._read() as conn:
                used = conn.execute(sa.select(sa.func.count()).select_from(photos_table)
                                    .where(photos_table.c.key == key)).scalar()
            if not used:
                self.photos.delete(key)

    # -- workflow ---------------------------------------------------------------
    def move(self, user, case_id: int, payload: object, photos: list[bytes] | None = None):
        """Apply a transition for ``user`` (role and scope checked in the transaction).
        Returns ``(case, warnings)``."""
        from gis.workflow import authorize_move, check_due, parse_move, plan_move

        move = parse_move(payload)
        if move.to in ("dispatched", "claimed"):
            self._check_assignees(move)
        case = self.store.get_case(case_id)
        changes, data, warnings = plan_move(user, case.to_dict() | {"lon": case.lon,
                                                                   "lat": case.lat}, move)
        if move.to == "resolved" and not (move.note or photos):
            raise InvalidInput("resolving needs evidence: an 'after' photo or a note",
                               field="photos")
        now = utcnow()

        def check(row):
            authorize_move(user, row, move.to)
            if move.due_at is not None:
                check_due(move.due_at, row["due_at"], now, extending=False)

        rows, keys = self._store_photos(photos or [], role="after" if move.to == "resolved"
                                        else "before")
        if rows:
            data["photos"] = [r["key"] for r in rows]
        try:
            case = self.store.transition(
                case_id, move.to, actor=user.display_name, note=move.note,
                expected_version=move.version, changes=changes, data=data or None,
                lon=move.lon, lat=move.lat, photo_rows=rows, check=check)
        except Exception:
            self._forget_photos(keys)
            raise
        return case, warnings

    def _check_assignees(self, move) -> None:
        """A dispatch goes to an organisation and/or a field worker that exist and can
        act on it: otherwise the case would wait on no one."""
        if move.assignee_org is not None:
            try:
                self.accounts.org(move.assignee_org)
            except NotFound:
                raise InvalidInput(f"assignee_org: there is no organisation with id "
                                   f"{move.assignee_org}", field="assignee_org") from None
        if move.assignee_user is None:
            return
        try:
            worker = self.accounts.get(move.assignee_user)
        except NotFound:
            raise InvalidInput(f"assignee_user: there is no user with id "
                               f"{move.assignee_user}", field="assignee_user") from None
        if worker.role != "field_staff" or not worker.active:
            raise InvalidInput(f"assignee_user: {worker.username} is not an active field "
                               "staff account", field="assignee_user")
        if move.assignee_org is not None and worker.org_id != move.assignee_org:
            raise InvalidInput(f"assignee_user: {worker.username} does not belong to "
                               f"organisation {move.assignee_org}", field="assignee_user")

    def add_comment(self, user, case_id: int, note: str, photos: list[bytes] | None = None,
                    data: dict | None = None):
        """Add a note and photos to an open case (a second report of the same problem,
        instead of a duplicate case)."""
        if user.role not in ("admin", "grid_worker", "field_staff"):
            raise Forbidden(f"a {user.role} cannot add to cases")
        note = (note or "").strip()
        if len(note) > 4000:
            raise InvalidInput("note is over 4000 characters", field="note")
        if not note and not photos:
            raise InvalidInput("add a note or a photo", field="note")

        import json

        from gis.storage import case_events as ev

        class RepeatedComment(Exception):
            """Raised inside the transaction: the comment repeats one just added."""

        repeat_s = 60  # the same note and photos again within a minute is the same tap

        def repeated(keys: list[str]) -> bool:
            # Whether this person added this note with these photos to the case just now.
            since = utcnow() - timedelta(seconds=repeat_s)
            with self.store._read() as conn:
                rows = conn.execute(sa.select(ev.c.data).where(
                    ev.c.case_id == case_id, ev.c.kind == "comment",
                    ev.c.actor == user.display_name, ev.c.note == note,
                    ev.c.at >= since)).scalars().all()
            for raw in rows:
                try:
                    sent = (json.loads(raw) if raw else {}) or {}
                except ValueError:
                    sent = {}
                if list(sent.get("photos") or []) == list(keys):
                    return True
            return False

        rows, keys = self._store_photos(photos or [], role="report")

        def check(row):
            if row["status"] not in OPEN_STATUSES:
                raise Conflict("the case is no longer open; report a new one")
            # Run inside the write transaction (after its write lock on SQLite), so the
            # first of two taps is committed by the time the second one looks.
            if repeated(keys):
                raise RepeatedComment

        try:
            for attempt in range(2):
                try:
                    return self.store.update_case(
                        case_id, actor=user.display_name, kind="comment", note=note,
                        data={**(data or {}), **({"photos": keys} if keys else {})} or None,
                        check=check, photo_rows=rows)
                except Conflict:
                    # Two taps at once on PostgreSQL: the loser's conditional update
                    # matches nothing; once more, it finds the winner's comment.
                    if attempt:
                        raise
        except RepeatedComment:
            # A double tap: answered as if it had just succeeded (the first one did). The
            # photos are the first one's (content-addressed) and stay with it.
            self._forget_photos(keys)
            return self.store.get_case(case_id)
        except Exception:
            self._forget_photos(keys)
            raise

    def extend(self, user, case_id: int, payload: object):
        """Set a new due date with a reason (延期); counted on the case."""
        from gis.workflow import authorize_move, check_due, parse_datetime, text_value

        if not isinstance(payload, dict):
            raise InvalidInput("the body must be a JSON object", field="body")
        due = parse_datetime(payload.get("due_at"), "due_at")
        reason = text_value(payload.get("reason"), "reason")
        if not reason:
            raise InvalidInput("an extension needs a reason", field="reason")
        now = utcnow()

        def check(row):
            authorize_move(user, row, "reopened")  # same people who check the work
            if row["status"] not in OPEN_STATUSES:
                raise Conflict(f"only an open case can be extended; this one is "
                               f"{row['status']!r}")
            check_due(due, row["due_at"], now, extending=True)

        case = self.store.get_case(case_id)
        return self.store.update_case(
            case_id, actor=user.display_name, kind="extension", note=reason,
            changes={"due_at": due, "extension_count": case.extension_count + 1},
            data={"from": case.due_at.isoformat() if case.due_at else None,
                  "to": due.isoformat()}, check=check, expected_version=case.row_version)

    def set_needs(self, user, case_id: int, payload: object):
        """Put a case on the needs list (fix now / long term) and publish it for partner
        units to claim, or take it off."""
        from gis.workflow import authorize_move, bool_value, needs_kind, text_value

        if not isinstance(payload, dict):
            raise InvalidInput("the body must be a JSON object", field="body")
        kind = needs_kind(payload.get("kind"))
        publish = bool_value(payload.get("publish"), "publish") and kind is not None
        note = text_value(payload.get("note"), "note")

        def check(row):
            authorize_move(user, row, "dispatched")
            if kind is not None and row["status"] not in OPEN_STATUSES:
                raise Conflict("only an open case can go on the needs list; this one is "
                               f"{row['status']!r}")
            if publish and row["status"] != "filed":
                raise Conflict("only a filed case can be published for claiming; this one "
                               f"is {row['status']!r}")

        return self.store.update_case(
            case_id, actor=user.display_name, kind="needs", note=note,
            changes={"needs_kind": kind, "published": publish},
            data={"kind": kind, "published": publish}, check=check)

    def evaluate(self, tracking_code: str, verdict: str, comment: str = ""):
        """A resident's evaluation of a resolved case. "not satisfied" sends it back for
        rectification (a rework); the next resolution is the feedback.

        **One evaluation per resolution**: the resolution being judged starts at the
        case's last move to "resolved"; once an evaluation follows it, another one is a
        ``Conflict`` (details ``reason: already_evaluated`` and the verdict given). A case
        reworked and resolved again may be evaluated again, once. Two evaluations at the
        same moment cannot both count: the write is conditional on the row version read
        with the history (``expected_version``), so the second one finds the case changed,
        reads it again and is refused by the same rule. Every refusal carries
        ``details["reason"]`` (``verdict``, ``comment_required``, ``comment_too_long``,
        ``not_resolved``, ``already_evaluated``) for a page to say it in its language."""
        limit = 1000
        if verdict not in ("satisfied", "not_satisfied"):
            raise InvalidInput("choose satisfied or not satisfied", field="verdict",
                               details={"reason": "verdict"})
        comment = (comment or "").strip()
        if len(comment) > limit:
            raise InvalidInput(f"the comment is over {limit:,} characters", field="comment",
                               details={"reason": "comment_too_long", "limit": limit})
        if verdict == "not_satisfied" and not comment:
            raise InvalidInput("please say what is still wrong", field="comment",
                               details={"reason": "comment_required"})

        def still_resolved(row):
            if row["status"] != "resolved":
                raise Conflict("the case is no longer resolved; reload it")

        case = self.store.find_by_tracking_code(tracking_code)
        retried = False
        while True:
            if case.status != "resolved":
                raise Conflict("a case can be evaluated once it has been resolved",
                               field="verdict",
                               details={"reason": "not_resolved", "status": case.status})
            before = case.evaluation_given()
            if before is not None:
                raise Conflict(
                    "this resolution has already been evaluated; a case reworked and "
                    "resolved again can be evaluated again", field="verdict",
                    details={"reason": "already_evaluated",
                             "verdict": (before.get("data") or {}).get("verdict"),
                             "at": before["at"].isoformat(timespec="seconds") + "Z"})
            evaluation = {"actor": "居民", "kind": "evaluation", "note": comment,
                          "data": {"verdict": verdict}}
            try:
                if verdict == "not_satisfied":
                    self.store.transition(case.id, "reopened", actor="居民",
                                          note=f"居民不满意：{comment}",
                                          expected_version=case.row_version,
                                          changes={"satisfaction": verdict},
                                          data={"rectify": True}, pre_events=[evaluation])
                else:
                    self.store.update_case(case.id, actor="居民", kind="evaluation",
                                           note=comment, changes={"satisfaction": verdict},
                                           data={"verdict": verdict},
                                           expected_version=case.row_version,
                                           check=still_resolved)
            except Conflict:
                if retried:
                    raise
                retried = True
                # Changed since it was read (another evaluation at the same moment, a
                # close, a boundary relocation): read it again and let the rules decide.
                case = self.store.get_case(case.id)
                continue
            return self.store.get_case(case.id)

    def needs_summary(self) -> list[dict]:
        """Per organisation: needs-list cases it holds (claimed or dispatched) and how
        many of them are finished (resolved or closed)."""
        from gis.accounts import organisations
        from gis.storage import cases as t

        done = sa.func.sum(sa.case((t.c.status.in_(("resolved", "closed")), 1), else_=0))
        q = (sa.select(organisations.c.id, organisations.c.name,
                       sa.func.count(t.c.id).label("claimed"), done.label("finished"))
             .select_from(organisations.join(t, t.c.assignee_org == organisations.c.id))
             .where(t.c.needs_kind.is_not(None))
             .group_by(organisations.c.id, organisations.c.name)
             .order_by(organisations.c.name))
        with self.store._read() as conn:
            return [{"org_id": r[0], "org": r[1], "claimed": int(r[2]),
                     "finished": int(r[3] or 0)} for r in conn.execute(q)]

    def check_in(self, user, lon: object, lat: object, accuracy: object = None) -> dict:
        """A grid worker's patrol check-in at their position (must be in the street, in
        one of their grids, and located to within 200 m).
        Refusals carry ``details["reason"]`` (``accuracy``, ``too_inaccurate``,
        ``outside_street``, ``not_your_grid`` with ``grid``) for a page to word them. The
        same person checking in again within 30 s gets the first check-in back
        (``repeat: True``; see :meth:`gis.accounts.Accounts.check_in`)."""
        x, y = check_lon_lat(lon, lat)
        acc = None
        if accuracy not in (None, ""):
            try:
                acc = float(accuracy)
            except (TypeError, ValueError, OverflowError):
                acc = float("nan")
            if not (np.isfinite(acc) and 0 <= acc <= 100_000):
                raise InvalidInput("accuracy must be a number of metres (0–100,000)",
                                   field="accuracy", details={"reason": "accuracy"})
            limit = 200.0  # vaguer than this, the position may lie in any of several grids
            if acc > limit:
                # Checked before the grid: a vague position says nothing about the grid.
                raise InvalidInput(
                    f"the position is only accurate to about {acc:.0f} m (at most "
                    f"{limit:.0f} m for a check-in); locate again in the open",
                    field="accuracy",
                    details={"reason": "too_inaccurate", "accuracy": acc, "limit": limit})
        chain = self.locator.locate(x, y)
        if chain is None:
            raise OutsideJurisdiction("your position is outside the street", field="lon",
                                      details={"reason": "outside_street"})
        if user.role == "grid_worker" and chain["grid"]["code"] not in user.grids:
            raise Forbidden(f"your position is in grid {chain['grid']['code']}, not in your "
                            f"grids ({', '.join(user.grids) or 'none'})",
                            details={"reason": "not_your_grid",
                                     "grid": chain["grid"]["code"]})
        return self.accounts.check_in(user, x, y, chain["grid"]["code"], acc)

    def parse_bbox(self, text: str | None):
        """Parse ``minLon,minLat,maxLon,maxLat``; ``InvalidInput`` on anything else."""
        if text in (None, ""):
            return None
        parts = str(text).split(",")
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            vals = []
        if len(vals) != 4 or not all(np.isfinite(vals)):
            raise InvalidInput("bbox must be four numbers: minLon,minLat,maxLon,maxLat",
                               field="bbox")
        minx, miny, maxx, maxy = vals
        if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
            raise InvalidInput("bbox must have min ≤ max within lon ±180 and lat ±90",
                               field="bbox")
        return minx, miny, maxx, maxy

    def catalogue(self):
        return load_catalogue()

    def coverage(self, period):
        """The grid layer with every coverage metric for ``period`` (NaN = no data) and
        the all-time ``open``/``total`` counts the tooltips show."""
        from gis.coverage import METRICS, grid_metrics

        key = (period.key, period.start.strftime("%Y%m%d%H"), period.end.strftime("%Y%m%d%H"),
               self.store.data_version(), self._layers_version_key())
        memo = self.__dict__.setdefault("_coverage_memo", {})
        if key in memo:
            return memo[key].copy()
        grids = self.grid_summary()
        metrics = grid_metrics(self.store, self.layers["grid"], period)
        for k in METRICS:
            grids[k] = grids["code"].map(metrics[k]).astype(float)
        memo.clear()
        memo[key] = grids
        return grids.copy()

    def grid_summary(self):
        """The grid layer with per-grid case counts (``open``, ``total``) joined on."""
        grids = self.layers["grid"].copy()
        counts = self.store.grid_counts().set_index("grid_code")
        grids["open"] = grids["code"].map(counts["open"]).fillna(0).astype(int)
        grids["total"] = grids["code"].map(counts["total"]).fillna(0).astype(int)
        return grids


def _step_times(created, resolved, closed, steps):
    """Plausible times for each demo step between creation and resolution/closure."""
    if not steps:
        return []
    end = closed or resolved or (created + timedelta(hours=6 * len(steps)))
    span = max((end - created).total_seconds(), 60.0)
    times = []
    for i, st in enumerate(steps, start=1):
        if st == "resolved" and resolved:
            times.append(resolved)
        elif st == "closed" and closed:
            times.append(closed)
        else:
            times.append(created + timedelta(seconds=span * i / (len(steps) + 1)))
    now = utcnow()
    return [min(t, now) for t in times]

