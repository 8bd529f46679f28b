"""Storage behind one interface, with an embedded SQLite default.

``open_store(url)`` picks the backend from a SQLAlchemy URL. :class:`SqlCaseStore`
holds the SQL every backend shares (SQLAlchemy Core); a backend overrides only what
differs: :class:`SqliteCaseStore` sets WAL, a busy timeout and ``BEGIN IMMEDIATE``
for writes, so concurrent writers queue instead of failing with "database is locked";
:class:`PostgisCaseStore` (``postgresql+psycopg://…``) adds geometry columns with GiST
indexes (:mod:`gis.pg`) and filters bounding boxes and locates points in the database.

Boundary layers are stored too, as versions: importing a layer adds a new version and
activates it in one transaction, so a failed import leaves the active layers as they
were, and old versions stay for history.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime
from typing import NamedTuple

import geopandas as gpd
import pandas as pd
import shapely
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert

try:
    import fcntl
except ImportError:  # Windows: SQLite's busy handler alone
    fcntl = None

from gis.cases import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    Case,
    NewCase,
    check_transition,
    normalise_tracking_code,
    utcnow,
)
from gis.errors import Conflict, InvalidInput, NotFound
from gis.process import PerProcess

metadata = sa.MetaData()

meta_table = sa.Table(
    "meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

layer_versions = sa.Table(
    "layer_versions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("source", sa.String(500), nullable=False),
    sa.Column("features", sa.Integer, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=False),
)

boundaries = sa.Table(
    "boundaries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version_id", sa.Integer, sa.ForeignKey("layer_versions.id"), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("code", sa.String(32), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("parent_code", sa.String(32)),
    sa.Column("households", sa.Integer),
    sa.Column("minx", sa.Float, nullable=False),
    sa.Column("miny", sa.Float, nullable=False),
    sa.Column("maxx", sa.Float, nullable=False),
    sa.Column("maxy", sa.Float, nullable=False),
    sa.Column("geom", sa.LargeBinary, nullable=False),  # WKB, EPSG:4326
    sa.Index("ix_boundaries_version", "version_id"),
)

cases = sa.Table(
    "cases", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("category", sa.String(64), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("street_code", sa.String(32)),
    sa.Column("community_code", sa.String(32)),
    sa.Column("compound_code", sa.String(32)),
    sa.Column("grid_code", sa.String(32)),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Column("due_at", sa.DateTime),
    sa.Column("resolved_at", sa.DateTime),
    sa.Column("closed_at", sa.DateTime),
    sa.Column("row_version", sa.Integer, nullable=False, default=1),
    sa.Column("assignee_org", sa.Integer),
    sa.Column("assignee_user", sa.Integer),
    sa.Column("needs_kind", sa.String(16)),  # fix_now / long_term: on the needs list
    sa.Column("published", sa.Boolean, nullable=False, default=False),  # claimable
    sa.Column("rework_count", sa.Integer, nullable=False, default=0),
    sa.Column("extension_count", sa.Integer, nullable=False, default=0),
    sa.Column("tracking_code", sa.String(32), unique=True),
    sa.Column("reporter_name", sa.String(100)),
    sa.Column("reporter_phone", sa.String(40)),
    sa.Column("satisfaction", sa.String(16)),  # satisfied / not_satisfied (last say)
    # The grid layer version (layer_versions.id) the codes above come from (migration 0002).
    sa.Column("grid_version_id", sa.Integer),
    # Covering index for the per-grid GROUP BY of the coverage metrics: the query is
    # answered from the index alone instead of one table lookup per case (5× at 1 M cases).
    sa.Index("ix_cases_grid_cover", "grid_code", "status", "created_at", "due_at",
             "resolved_at", "closed_at", "updated_at"),
    # Covers the map's bounding-box query (/api/v1/issues/points): the rows it draws are
    # read from the index alone, with no lookup per case.
    sa.Index("ix_cases_points", "lon", "lat", "created_at", "status", "category", "title"),
    sa.Index("ix_cases_created", "created_at"),
    sa.Index("ix_cases_street_status", "street_code", "status"),
)

case_events = sa.Table(
    "case_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("from_status", sa.String(32)),
    sa.Column("to_status", sa.String(32), nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
    # transition, extension, evaluation, feedback, needs, comment
    sa.Column("kind", sa.String(16), nullable=False, default="transition"),
    sa.Column("lon", sa.Float),
    sa.Column("lat", sa.Float),
    sa.Column("data", sa.Text),  # JSON: photos, distance, repair line, quantities …
    sa.Index("ix_case_events_case", "case_id"),
)

photos = sa.Table(
    "photos", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("case_events.id")),
    sa.Column("key", sa.String(100), nullable=False),
    sa.Column("mime", sa.String(32), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # report / before / after
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("ix_photos_case", "case_id"),
)

# Idempotency-Key of POST /api/v1/issues: (user, key) → the case the first request made.
# Written in the case's own transaction; the primary key makes concurrent retries race-safe.
idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("key", sa.String(100), nullable=False),
    sa.Column("case_id", sa.Integer, sa.ForeignKey("cases.id"), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    # SHA-256 (hex) of the report the key came with: the same key with another report is
    # refused, not answered with the first case (migration 0003; None for older keys).
    sa.Column("fingerprint", sa.String(64), nullable=True),
    sa.PrimaryKeyConstraint("user_id", "key", name="pk_idempotency_keys"),
)


class StaleLayers(Exception):
    """A case was located against a grid layer that is no longer the active one (a new
    layer was imported meanwhile): locate it again. ``active`` is the active version."""

    def __init__(self, active: int | None):
        super().__init__(f"the grid layer changed (active version {active})")
        self.active = active


@dataclass
class LayerSave:
    """What :meth:`SqlCaseStore.save_layers` did: the new version of each level, and the
    open cases it re-assigned (``moved``: case id → (old codes, new codes)) or could not
    (``outside``: ids of open cases no new grid holds; they keep their codes)."""

    versions: dict[str, int]
    checked: int = 0
    moved: dict[int, tuple[dict, dict]] = dc_field(default_factory=dict)
    outside: list[int] = dc_field(default_factory=list)


class IdempotencyKey(NamedTuple):
    """An Idempotency-Key as the store records it: whose, the key, and the fingerprint
    of the report it came with (None: not compared)."""

    user_id: int
    key: str
    fingerprint: str | None = None


class IdempotentReplay(Exception):
    """The (user, Idempotency-Key) already made a case: ``case_id`` is that case, and
    ``fingerprint`` what the key first came with (None for keys stored before 0003)."""

    def __init__(self, case_id: int, fingerprint: str | None = None):
        super().__init__(f"idempotency key already used for case {case_id}")
        self.case_id = case_id
        self.fingerprint = fingerprint


LEVELS = ("street", "community", "compound", "grid")
_CASE_COLS = [c.name for c in cases.columns]

# The intake path's statements, built once: compiling them per report was a third of
# create_case's time (bench/intake.py). Executed with parameter dicts.
_INSERT_CASE = sa.insert(cases)
_INSERT_EVENT = sa.insert(case_events)
_INSERT_PHOTO = sa.insert(photos)
_INSERT_KEY = sa.insert(idempotency_keys)
_BUMP = (sa.update(meta_table).where(meta_table.c.key == "data_version")
         .values(value=sa.cast(sa.cast(meta_table.c.value, sa.Integer) + 1, sa.String)))
_KEY_CASE = sa.select(idempotency_keys.c.case_id, idempotency_keys.c.fingerprint).where(
    idempotency_keys.c.user_id == sa.bindparam("uid"),
    idempotency_keys.c.key == sa.bindparam("key"))
_ACTIVE_GRID_ID = sa.select(layer_versions.c.id).where(layer_versions.c.level == "grid",
                                                       layer_versions.c.active.is_(True))
_ACTIVE_GRID_VERSION = _ACTIVE_GRID_ID.with_for_update(read=True)


def _binds(prefix: str, table: sa.Table, cols: list[str]) -> list[sa.BindParameter]:
    """One typed bind parameter per column, named ``prefix + column``."""
    return [sa.bindparam(f"{prefix}{c}", type_=table.c[c].type) for c in cols]


def _checked_case_insert(case_cols: list[str], active_grid, *,
                         returning: bool = True) -> sa.Insert:
    """INSERT a case (``c_``-prefixed parameters) only if ``active_grid`` (the active grid
    layer version, a column or scalar subquery) is ``c_grid_version_id``, RETURNING id
    (or not, when the driver reports the new rowid itself): no row means the grid layer
    changed after the report was located."""
    check = active_grid == sa.bindparam("c_grid_version_id", type_=sa.Integer)
    stmt = (sa.insert(cases)
            .from_select(case_cols, sa.select(*_binds("c_", cases, case_cols)).where(check)))
    return stmt.returning(cases.c.id) if returning else stmt


def _report_cte(case_cols: list[str], event_cols: list[str]) -> sa.Select:
    """A report as one statement (PostgreSQL's data-modifying WITH): take the active grid
    version FOR SHARE, insert the case only if it is the one the report was located
    against (``c_grid_version_id``), then its first event, its idempotency key (when
    ``k_use``) and the data version. Returns (case_id, event_id); no row means the grid
    layer changed. Run in autocommit it is one round trip and one transaction."""
    gv = _ACTIVE_GRID_VERSION.cte("gv")
    c = _checked_case_insert(case_cols, gv.c.id).cte("c")
    e = (sa.insert(case_events)
         .from_select(["case_id", *event_cols],
                      sa.select(c.c.id, *_binds("e_", case_events, event_cols)))
         .returning(case_events.c.id).cte("e"))
    k = (sa.insert(idempotency_keys)
         .from_select(["user_id", "key", "case_id", "created_at", "fingerprint"],
                      sa.select(sa.bindparam("k_user_id", type_=sa.Integer),
                                sa.bindparam("k_key", type_=sa.String), c.c.id,
                                sa.bindparam("k_created_at", type_=sa.DateTime),
                                sa.bindparam("k_fingerprint", type_=sa.String))
                      .where(sa.bindparam("k_use", type_=sa.Boolean)))
         .cte("k"))
    # The data version's share this report moves: one of DATA_VERSION_SLOTS rows, made
    # on first use (a store copied from SQLite has only the main row).
    slot = pg_insert(meta_table).from_select(
        ["key", "value"], sa.select(sa.bindparam("b_slot", type_=sa.String),
                                    sa.literal("1", sa.String))
        .where(sa.exists(sa.select(c.c.id))))
    b = slot.on_conflict_do_update(
        index_elements=[meta_table.c.key],
        set_={"value": sa.cast(sa.cast(meta_table.c.value, sa.Integer) + 1, sa.String)},
    ).cte("b")
    return sa.select(c.c.id.label("case_id"), e.c.id.label("event_id")).add_cte(k, b)


#: PostGIS reports move the data version through one of this many rows of ``meta``
#: (``data_version.0`` …), picked at random, and the version is the sum of them all and
#: the main row. One row, which every report updated, made concurrent reports wait for
#: each other's COMMIT (its WAL flush) one after the other: 893 reports/s in
#: bench/intake.py, 1,052/s without that update. A COMMIT still shows its case and its
#: share of the version together.
DATA_VERSION_SLOTS = 16
_DATA_VERSION_SUM = sa.select(sa.func.sum(sa.cast(meta_table.c.value, sa.BigInteger))).where(
    sa.or_(meta_table.c.key == "data_version", meta_table.c.key.like("data_version.%")))


def _wrapped(engine: sa.Engine, err: Exception, dead: bool = False) -> sa.exc.DBAPIError:
    """The driver's error ``err`` as SQLAlchemy's exception of the same kind (a refused
    or lost connection is ``sa.exc.OperationalError``), which callers catch and the web
    app answers with 503; ``dead``: the connection it came from is gone."""
    return sa.exc.DBAPIError.instance(None, None, err, engine.dialect.loaded_dbapi.Error,
                                      connection_invalidated=dead, dialect=engine.dialect)


def _raw_connection(engine: sa.Engine) -> sa.PoolProxiedConnection:
    """``engine.raw_connection()``, with a driver error while connecting (the server is
    down or refuses this database, the file cannot be opened) raised as SQLAlchemy's
    wrapped exception, as ``engine.connect()`` raises it. Unwrapped, a psycopg
    ``OperationalError`` is no error the web app knows: a 500 that clients do not retry,
    where every other request got a 503."""
    try:
        return engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as err:
        raise _wrapped(engine, err) from err


def _ping_when_idle(engine: sa.Engine, after_s: float) -> None:
    """Check a pooled connection with a round trip only if it sat idle ``after_s``
    seconds or more (a restart or failover may have closed it meanwhile); a dead one is
    replaced before use. ``pool_pre_ping`` pings on every checkout: two extra round trips
    per report for connections that were in use a millisecond ago."""
    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, proxy):
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < after_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
            dbapi_conn.rollback()  # the ping's SELECT opened a transaction
        except Exception as err:
            # The pool discards this connection and checks out another.
            raise sa.exc.DisconnectionError(str(err)) from err


class CaseStore:
    """The storage interface. Callers use only these methods; backends subclass
    :class:`SqlCaseStore` and override the few spatial or dialect bits that differ."""

    def init_schema(self) -> None: ...
    def first_run_lock(self): ...
    def data_version(self) -> int: ...
    def accounts_stamp(self) -> object | None: ...
    def accounts_changed(self) -> None: ...
    def save_layers(self, layers: dict, source: str, *, relocate=None,
                    actor: str = "system") -> LayerSave: ...
    def save_layers_and_cases(self, layers: dict, source: str, rows: list[dict],
                              events: list[list[dict]], *, relocate=None,
                              actor: str = "system") -> LayerSave: ...
    def load_active_layers(self) -> dict[str, gpd.GeoDataFrame]: ...
    def layer_versions(self) -> list[dict]: ...
    def create_case(self, new: NewCase, chain: dict, due_at: datetime | None,
                    actor: str = "system") -> Case: ...
    def get_case(self, case_id: int) -> Case: ...
    def list_cases(self, **filters) -> tuple[list[Case], int]: ...
    def transition(self, case_id: int, to: str, actor: str, note: str = "",
                   expected_version: int | None = None, **step) -> Case: ...
    def update_case(self, case_id: int, *, actor: str, kind: str, **step) -> Case: ...
    def case_photos(self, case_id: int) -> list[dict]: ...
    def find_by_tracking_code(self, code: str) -> Case: ...
    def grid_counts(self) -> pd.DataFrame: ...


class SqlCaseStore(CaseStore):
    """The shared SQLAlchemy Core implementation."""

    # Backends whose DBAPI connections run :class:`gis.rawsql.Prepared` statements in
    # autocommit (see :meth:`_dbapi`) set this: the hot paths then skip SQLAlchemy's
    # per-execution machinery. Others take the plain Core path, with the same results.
    _prepared_ok = False

    def __init__(self, url: str, **engine_kw):
        self.url = url
        self.engine = sa.create_engine(url, **engine_kw)
        self._prepared_cache: dict = {}
        self._first_run = threading.Lock()

    # -- plumbing ---------------------------------------------------------------
    @contextmanager
    def _write(self):
        """A write transaction (backends may make it take the write lock up front)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self):
        with self.engine.connect() as conn:
            yield conn

    def _bump(self, conn) -> None:
        # One counter that changes on every write: the key for caches and ETags.
        conn.execute(_BUMP)

    def _prepared(self, key: str, build: Callable[[], tuple]):
        """The :class:`gis.rawsql.Prepared` statement ``key`` for this engine's dialect,
        compiled on first use from ``build() -> (statement, column_keys)``."""
        p = self._prepared_cache.get(key)
        if p is None:
            from gis.rawsql import Prepared

            stmt, column_keys = build()
            p = self._prepared_cache[key] = Prepared(stmt, self.engine.dialect, column_keys)
        return p

    @contextmanager
    def _dbapi(self):
        """A pooled DBAPI connection in autocommit (each statement its own transaction
        unless the caller sends BEGIN). A driver error, connecting included, comes out
        as SQLAlchemy's wrapped exception, as from ``Connection.execute``; a connection
        the error shows to be dead is dropped from the pool."""
        fairy = _raw_connection(self.engine)
        dbc = fairy.driver_connection
        try:
            yield dbc
        except self.engine.dialect.loaded_dbapi.Error as err:
            dead = self.engine.dialect.is_disconnect(err, dbc, None)
            if dead:
                fairy.invalidate(err)
            raise _wrapped(self.engine, err, dead) from err
        finally:
            fairy.close()

    def query_rows(self, stmt: sa.Select, params: dict) -> list[dict]:
        """All rows of one read-only statement as dicts (the per-request look-ups: a
        token's user). One statement needs no transaction around it."""
        if not self._prepared_ok:
            with self._read() as conn:
                return [dict(r) for r in conn.execute(stmt, params).mappings()]
        p = self._prepared(f"q{id(stmt)}", lambda: (stmt, None))
        with self._dbapi() as dbc:
            cur = p.execute(dbc.cursor(), params)
            return [p.row(r) for r in cur.fetchall()]

    @contextmanager
    def _schema_transaction(self):
        """The transaction a schema upgrade runs in (backends add their locks)."""
        with self._write() as conn:
            yield conn

    def init_schema(self, migrate: bool = True) -> None:
        """Bring the schema up to date with the migrations (:mod:`gis.schema`) and add
        the meta rows, in one transaction. With ``migrate=False`` only check it, and
        raise :class:`gis.schema.SchemaOutdated` if it is behind."""
        from gis import schema

        with self._schema_transaction() as conn:
            if migrate:
                schema.upgrade(conn)
            else:
                schema.check_current(conn)
            self._ensure_meta(conn)

    @contextmanager
    def first_run_lock(self):
        """Held while the first run's data (boundary layers, demo cases) is looked for
        and, if missing, loaded (:meth:`gis.service.Hemei.ensure_initialised`), so that
        processes starting together on an empty database load it once: each looks again
        once it holds the lock. Backends lock across processes (SQLite: the writer's
        turn; PostgreSQL: an advisory lock); this generic one only within the process."""
        with self._first_run:
            yield

    @staticmethod
    def _ensure_meta(conn) -> None:
        have = conn.execute(sa.select(meta_table.c.key)).scalars().all()
        if "data_version" not in have:
            conn.execute(sa.insert(meta_table).values(key="data_version", value="1"))

    def dispose(self) -> None:
        self.engine.dispose()

    # -- the accounts stamp -------------------------------------------------------
    def accounts_stamp(self) -> object | None:
        """A value that changes whenever users, their grids, organisations or API tokens
        change, from any process that serves this database, cheap enough to read on
        every request; None when the backend has none (then nothing may cache accounts:
        :class:`gis.accounts.Accounts` looks every token up)."""
        return None

    def accounts_changed(self) -> None:
        """Move :meth:`accounts_stamp` (after the change has committed)."""

    def data_version(self) -> int:
        """A number that moves on every committed write (caches and ETags are keyed on
        it): the main row of ``meta`` plus the PostGIS report slots."""
        with self._read() as conn:
            v = conn.execute(_DATA_VERSION_SUM).scalar()
        return int(v or 0)

    # -- boundary layers --------------------------------------------------------
    def save_layers(self, layers: dict, source: str, *,
                    relocate: Callable[..., pd.DataFrame] | None = None,
                    actor: str = "system") -> LayerSave:
        """Store ``layers`` (level → GeoDataFrame in EPSG:4326) as new active versions,
        all in one transaction.

        With ``relocate`` (``Locator.locate_many`` over the new active layers) every case
        not yet closed (open, or resolved and waiting for the grid worker's check) is
        located again in the same transaction: those whose street, community, compound
        or grid changed get the new codes, a new ``row_version`` (a worker acting on the
        old assignment gets a 409) and a ``relocation`` event keeping the old codes in
        their history. Closed cases keep the codes they were handled under.
        Any failure rolls back everything: layers, codes and events."""
        now = utcnow()
        with self._write() as conn:
            out = self._save_layers_on(conn, layers, source, relocate, actor, now)
            self._bump(conn)
        return out

    def save_layers_and_cases(self, layers: dict, source: str, rows: list[dict],
                              events: list[list[dict]], *,
                              relocate: Callable[..., pd.DataFrame] | None = None,
                              actor: str = "system") -> LayerSave:
        """:meth:`save_layers` and then :meth:`import_cases` (``rows`` located on the
        new layers), in one transaction: both are written or neither is. The first run
        (:meth:`gis.service.Hemei.ensure_initialised`) loads the demo boundaries and
        cases with it, so that a failure or a killed process part way leaves an empty
        database (the next start loads both again), never layers without their cases."""
        self._check_case_lists(rows, events)
        now = utcnow()
        with self._write() as conn:
            out = self._save_layers_on(conn, layers, source, relocate, actor, now)
            self._import_cases_on(conn, rows, events)
            self._bump(conn)
        return out

    def _save_layers_on(self, conn, layers: dict, source: str, relocate, actor: str,
                        now) -> LayerSave:
        """The body of :meth:`save_layers` on the caller's transaction ``conn``."""
        out = LayerSave(versions={})
        for level, gdf in layers.items():
            if level not in LEVELS:
                raise InvalidInput(f"unknown layer {level!r}", field="layer")
            out.versions[level] = self._insert_layer(conn, level, gdf, source, now)
        if relocate is not None:
            self._relocate_open_cases(conn, relocate, out, actor, now)
        return out

    @staticmethod
    def _insert_layer(conn, level: str, gdf, source: str, now) -> int:
        conn.execute(sa.update(layer_versions).where(layer_versions.c.level == level)
                     .values(active=False))
        vid = conn.execute(sa.insert(layer_versions).values(
            level=level, created_at=now, source=str(source)[:500],
            features=len(gdf), active=True)).inserted_primary_key[0]
        geoms = gdf.geometry.values
        bounds = shapely.bounds(geoms)
        wkb = shapely.to_wkb(geoms)
        hh = gdf["households"] if "households" in gdf else pd.Series([None] * len(gdf))
        rows = [
            {"version_id": vid, "level": level, "code": _str_or_none(code),
             "name": _str_or_none(name),
             "parent_code": None if pd.isna(parent) else str(parent),
             "households": None if pd.isna(h) else int(h),
             "minx": b[0], "miny": b[1], "maxx": b[2], "maxy": b[3], "geom": g}
            for code, name, parent, h, b, g in zip(
                gdf["code"], gdf["name"], gdf["parent_code"], hh, bounds, wkb, strict=True)
        ]
        if rows:
            conn.execute(sa.insert(boundaries), rows)
        return vid

    def _relocate_open_cases(self, conn, relocate, out: LayerSave, actor: str, now) -> None:
        code_cols = [f"{lvl}_code" for lvl in LEVELS]
        found = conn.execute(
            sa.select(cases.c.id, cases.c.lon, cases.c.lat, cases.c.status,
                      *(cases.c[c] for c in code_cols))
            # Resolved cases too: the check that closes them is the new grid's to make.
            .where(cases.c.status.not_in(FINAL_STATUSES)).order_by(cases.c.id)
        ).all()
        out.checked = len(found)
        if not found:
            return
        old = pd.DataFrame(found, columns=["id", "lon", "lat", "status", *code_cols])
        new = relocate(old["lon"].to_numpy(), old["lat"].to_numpy())
        inside = new["grid_code"].notna().to_numpy()
        differs = (old[code_cols].fillna("").to_numpy(dtype=object)
                   != new[code_cols].fillna("").to_numpy(dtype=object)).any(axis=1)
        moved = inside & differs
        out.outside = old.loc[~inside, "id"].astype(int).tolist()
        grid_version = out.versions.get("grid")
        if grid_version is None:
            grid_version = conn.execute(
                sa.select(layer_versions.c.id).where(layer_versions.c.level == "grid",
                                                     layer_versions.c.active.is_(True))
            ).scalar()
        if moved.any():
            # None, not NaN, for a level with no feature there (no compound): NaN is no
            # JSON, and the events' data must stay JSON.
            olds = _records(old.loc[moved, code_cols])
            news = _records(new.loc[moved, code_cols])
            ids = old.loc[moved, "id"].astype(int).tolist()
            statuses = old.loc[moved, "status"].tolist()
            b = sa.bindparam
            conn.execute(
                sa.update(cases).where(cases.c.id == b("b_id")).values(
                    **{c: b(f"b_{c}") for c in code_cols}, grid_version_id=grid_version,
                    row_version=cases.c.row_version + 1, updated_at=now),
                [{"b_id": i, **{f"b_{c}": n[c] for c in code_cols}}
                 for i, n in zip(ids, news, strict=True)])
            conn.execute(_INSERT_EVENT, [
                {"case_id": i, "at": now, "actor": actor, "from_status": st,
                 "to_status": st, "kind": "relocation", "lon": None, "lat": None,
                 "note": f"{o['grid_code'] or '-'} → {n['grid_code'] or '-'}",
                 "data": json.dumps({"from": o, "to": n, "layer_versions": out.versions},
                                    ensure_ascii=False, sort_keys=True)}
                for i, st, o, n in zip(ids, statuses, olds, news, strict=True)])
            out.moved = {i: (o, n) for i, o, n in zip(ids, olds, news, strict=True)}
        # Every open case now stands on the new grid layer (moved or not).
        if "grid" in out.versions:
            stay = old.loc[inside & ~moved, "id"].astype(int).tolist()
            for chunk in range(0, len(stay), 500):
                conn.execute(sa.update(cases)
                             .where(cases.c.id.in_(stay[chunk:chunk + 500]))
                             .values(grid_version_id=grid_version))

    def load_active_layers(self) -> dict[str, gpd.GeoDataFrame]:
        """The active version of each stored level as GeoDataFrames (EPSG:4326)."""
        q = (sa.select(boundaries.c.level, boundaries.c.code, boundaries.c.name,
                       boundaries.c.parent_code, boundaries.c.households, boundaries.c.geom)
             .join(layer_versions, layer_versions.c.id == boundaries.c.version_id)
             .where(layer_versions.c.active.is_(True))
             .order_by(boundaries.c.level, boundaries.c.code))
        with self._read() as conn:
            df = pd.DataFrame(conn.execute(q).fetchall(),
                              columns=["level", "code", "name", "parent_code", "households",
                                       "geom"])
        out = {}
        for level in LEVELS:
            part = df[df["level"] == level]
            if part.empty:
                continue
            gdf = gpd.GeoDataFrame(
                part[["code", "name", "parent_code"]].reset_index(drop=True),
                geometry=shapely.from_wkb(part["geom"].to_numpy()), crs="EPSG:4326")
            gdf["households"] = pd.array(part["households"].to_numpy(), dtype="Int64")
            out[level] = gdf[["code", "name", "parent_code", "households", "geometry"]]
        return out

    def layer_versions(self) -> list[dict]:
        with self._read() as conn:
            rows = conn.execute(sa.select(layer_versions)
                                .order_by(layer_versions.c.id)).mappings().all()
        return [dict(r) for r in rows]

    # -- cases ------------------------------------------------------------------
    @staticmethod
    def _chain_values(chain: dict | None) -> dict:
        chain = chain or {}
        return {f"{lvl}_code": (chain.get(lvl) or {}).get("code") for lvl in LEVELS}

    def create_case(self, new: NewCase, chain: dict, due_at: datetime | None,
                    actor: str = "system", *, extra: dict | None = None,
                    photo_rows: list[dict] | None = None,
                    idempotency: tuple | None = None,
                    grid_version: int | None = None) -> Case:
        """Insert a case, its first history event and its photos in one transaction.
        ``extra`` holds further column values (tracking code, reporter, needs kind …).
        ``idempotency`` = (user id, key[, fingerprint]) (:class:`IdempotencyKey`) is
        recorded in the same transaction; if that key was already used (a retry, or a
        concurrent one that won), nothing is written and :class:`IdempotentReplay` names
        the first case and what the key first came with. ``grid_version`` is the grid
        layer version ``chain`` was located against: if another is active by the time
        the transaction runs, nothing is written and :class:`StaleLayers` says so."""
        now = new.created_at or utcnow()
        if idempotency is not None:
            idempotency = IdempotencyKey(*idempotency)
        values = {
            "category": new.category, "title": new.title, "description": new.description,
            "lon": new.lon, "lat": new.lat, **self._chain_values(chain),
            "status": "reported", "source": new.source, "created_at": now,
            "updated_at": now, "due_at": due_at, "row_version": 1, "published": False,
            "rework_count": 0, "extension_count": 0, "grid_version_id": grid_version,
            **(extra or {}),
        }
        event = {"case_id": None, "at": now, "actor": actor, "from_status": None,
                 "to_status": "reported", "note": "", "kind": "transition", "lon": new.lon,
                 "lat": new.lat, "data": None}
        try:
            if self._prepared_ok and not photo_rows and grid_version is not None:
                # The common report (no photos): the backend's prepared statements.
                cid, eid = self._insert_report(values, event, idempotency, grid_version)
            else:
                cid, eid = self._insert_case_core(values, event, photo_rows, idempotency,
                                                  grid_version, now)
        except sa.exc.IntegrityError:
            # Rolled back. A concurrent request with the same key won: name its case.
            winner = (self._idempotent_row(idempotency.user_id, idempotency.key)
                      if idempotency else None)
            if winner is None:
                raise
            raise IdempotentReplay(*winner) from None
        # What was written, without reading it back (the row is exactly these values).
        case = self._row_to_case({**dict.fromkeys(_CASE_COLS), **values, "id": cid})
        case.history = [{"id": eid, "at": now, "actor": actor, "from": None, "to": "reported",
                         "note": "", "kind": "transition", "lon": new.lon, "lat": new.lat,
                         "data": None}]
        return case

    def _insert_case_core(self, values: dict, event: dict, photo_rows, idempotency,
                          grid_version: int | None, now: datetime) -> tuple[int, int]:
        """:meth:`create_case`'s writes through SQLAlchemy Core, in one transaction;
        returns (case id, event id)."""
        with self._write() as conn:
            if grid_version is not None:
                self._check_grid_version(conn, grid_version)
            cid = conn.execute(_INSERT_CASE, values).inserted_primary_key[0]
            event["case_id"] = cid
            eid = conn.execute(_INSERT_EVENT, event).inserted_primary_key[0]
            for p in photo_rows or []:
                conn.execute(_INSERT_PHOTO, {**p, "case_id": cid, "event_id": eid,
                                             "created_at": now})
            if idempotency is not None:
                conn.execute(_INSERT_KEY, {**idempotency._asdict(), "case_id": cid,
                                           "created_at": utcnow()})
            self._bump(conn)
        return cid, eid

    def _insert_report(self, values: dict, event: dict, idempotency: IdempotencyKey | None,
                       grid_version: int) -> tuple[int, int]:
        """The backend's fast path for :meth:`create_case` (no photos, a grid version to
        check): the same rows, checks and errors as :meth:`_insert_case_core`."""
        raise NotImplementedError

    @staticmethod
    def _check_grid_version(conn, grid_version: int) -> None:
        # FOR SHARE (PostgreSQL; SQLite's write lock already serialises): an import that
        # deactivates this version waits for this insert, then re-assigns the new case
        # with the other open ones; an insert after the import finds no active row here.
        active = conn.execute(_ACTIVE_GRID_VERSION).scalar()
        if active != grid_version:
            raise StaleLayers(active)

    def idempotent_case_id(self, user_id: int, key: str) -> int | None:
        """The case that ``user_id``'s request with Idempotency-Key ``key`` made."""
        row = self._idempotent_row(user_id, key)
        return None if row is None else row[0]

    def _idempotent_row(self, user_id: int, key: str) -> tuple[int, str | None] | None:
        with self._read() as conn:
            row = conn.execute(_KEY_CASE, {"uid": user_id, "key": key}).first()
        return None if row is None else (row[0], row[1])

    def find_by_tracking_code(self, code: str) -> Case:
        """The case with this resident tracking code; ``NotFound`` otherwise."""
        # As typed (codes of the old mixed-case alphabet), or as the resident meant it
        # (lower case, without dashes, O for 0 …): one query either way.
        candidates = {code, normalise_tracking_code(code)} - {""}
        with self._read() as conn:
            cid = conn.execute(sa.select(cases.c.id)
                               .where(cases.c.tracking_code.in_(candidates))).scalar()
        if cid is None:
            raise NotFound("no case with that tracking code", field="tracking_code")
        return self.get_case(cid)

    def import_cases(self, rows: list[dict], events: list[list[dict]]) -> int:
        """Bulk-insert already validated and located cases with their histories
        (demo data, bulk imports) in one transaction. Returns how many.

        Two batched statements, not one per case: the cases in one multi-row INSERT …
        RETURNING (SQLAlchemy's insertmanyvalues, ids in the order of ``rows``), then
        every event in one executemany."""
        self._check_case_lists(rows, events)
        if not rows:
            return 0
        with self._write() as conn:
            self._import_cases_on(conn, rows, events)
            self._bump(conn)
        return len(rows)

    @staticmethod
    def _check_case_lists(rows: list[dict], events: list[list[dict]]) -> None:
        if len(rows) != len(events):
            raise ValueError("one list of events per case")

    @staticmethod
    def _import_cases_on(conn, rows: list[dict], events: list[list[dict]]) -> None:
        """The inserts of :meth:`import_cases` on the caller's transaction ``conn``."""
        if not rows:
            return
        # executemany takes its columns from the first row: give every row every key so
        # none is silently dropped (a key some rows lack gets the column's default).
        fill = {k: _scalar_default(cases.c[k]) for k in set().union(*rows)}
        ids = conn.execute(
            sa.insert(cases).returning(cases.c.id, sort_by_parameter_order=True),
            [{**fill, **r} for r in rows]).scalars().all()
        evs = [{**e, "case_id": cid} for cid, case_evs in zip(ids, events, strict=True)
               for e in case_evs]
        if evs:
            keys = set().union(*evs)
            conn.execute(sa.insert(case_events),
                         [{**dict.fromkeys(keys), **e} for e in evs])

    def _row_to_case(self, row) -> Case:
        d = dict(row)
        return Case(**{k: d[k] for k in _CASE_COLS})

    def get_case(self, case_id: int) -> Case:
        """The case ``case_id`` with its history; ``NotFound`` if there is none."""
        with self._read() as conn:
            row = conn.execute(sa.select(cases).where(cases.c.id == case_id)).mappings().first()
            if row is None:
                raise NotFound(f"no case with id {case_id}", field="id")
            evs = conn.execute(sa.select(case_events).where(case_events.c.case_id == case_id)
                               .order_by(case_events.c.id)).mappings().all()
        case = self._row_to_case(row)
        case.history = [
            {"id": e["id"], "at": e["at"], "actor": e["actor"], "from": e["from_status"],
             "to": e["to_status"], "note": e["note"], "kind": e["kind"],
             "lon": e["lon"], "lat": e["lat"],
             "data": json.loads(e["data"]) if e["data"] else None} for e in evs
        ]
        return case

    def bbox_condition(self, minx: float, miny: float, maxx: float,
                       maxy: float) -> sa.ColumnElement[bool]:
        """SQL condition: the case's point lies in the box (edges included). Backends
        with a spatial index override this; the answer must stay the same."""
        return sa.and_(cases.c.lon >= minx, cases.c.lon <= maxx,
                       cases.c.lat >= miny, cases.c.lat <= maxy)

    def epoch_seconds(self, column) -> sa.ColumnElement[int]:
        """SQL: whole seconds since 1970 of a naive-UTC timestamp column, truncated
        (SQLite's ``strftime('%s')`` truncates; backends whose EXTRACT keeps the
        fraction override this to truncate too)."""
        return sa.cast(sa.extract("epoch", column), sa.Integer)

    def _filters(self, bbox=None, grid=None, status=None, category=None, compound=None,
                 grids=None, org=None, published=None, needs=None):
        conds = []
        if grids is not None:
            conds.append(cases.c.grid_code.in_(list(grids)))
        if org is not None:
            conds.append(cases.c.assignee_org == org)
        if published is not None:
            conds.append(cases.c.published.is_(bool(published)))
        if needs:
            conds.append(cases.c.needs_kind.is_not(None) if needs == "any"
                         else cases.c.needs_kind == needs)
        if bbox is not None:
            conds.append(self.bbox_condition(*bbox))
        if grid:
            conds.append(cases.c.grid_code == grid)
        if compound:
            conds.append(cases.c.compound_code == compound)
        if status:
            statuses = (list(OPEN_STATUSES) if status == "open"
                        else status if isinstance(status, list | tuple) else [status])
            conds.append(cases.c.status.in_(statuses))
        if category:
            conds.append(cases.c.category == category)
        return conds

    def list_cases(self, *, bbox=None, grid=None, status=None, category=None, compound=None,
                   grids=None, org=None, published=None, needs=None,
                   limit: int | None = 100, offset: int = 0) -> tuple[list[Case], int]:
        """Cases matching every filter, newest first, and the total count."""
        conds = self._filters(bbox, grid, status, category, compound, grids, org, published,
                              needs)
        q = sa.select(cases).where(*conds).order_by(cases.c.created_at.desc(), cases.c.id.desc())
        if limit is not None:
            q = q.limit(limit).offset(offset)
        with self._read() as conn:
            rows = conn.execute(q).mappings().all()
            total = conn.execute(sa.select(sa.func.count()).select_from(cases)
                                 .where(*conds)).scalar()
        return [self._row_to_case(r) for r in rows], int(total)

    def case_points(self, *, bbox=None, status=None, category=None,
                    limit: int = 5000) -> tuple[list[list], int]:
        """Compact rows ``[id, lon, lat, status, category, created epoch s, title]`` for
        drawing, newest first, and how many match in all."""
        conds = self._filters(bbox, None, status, category, None)
        q = (sa.select(cases.c.id, cases.c.lon, cases.c.lat, cases.c.status, cases.c.category,
                       self.epoch_seconds(cases.c.created_at), cases.c.title)
             .where(*conds).order_by(cases.c.created_at.desc()).limit(limit))
        with self._read() as conn:
            rows = conn.execute(q).fetchall()
            total = conn.execute(sa.select(sa.func.count()).select_from(cases)
                                 .where(*conds)).scalar()
        return [list(r) for r in rows], int(total)

    def transition(self, case_id: int, to: str, actor: str, note: str = "",
                   expected_version: int | None = None, *, changes: dict | None = None,
                   data: dict | None = None, lon: float | None = None,
                   lat: float | None = None, photo_rows: list[dict] | None = None,
                   check=None, pre_events: list[dict] | None = None) -> Case:
        """Move a case to ``to``; refuse illegal moves (409) and lost updates (409).

        The update is conditional on the row version read in the same transaction, so of
        two people acting at once one wins and the other gets a ``Conflict``. ``changes``
        are further column values (assignee, due date …); ``data`` goes into the history
        event as JSON; ``photo_rows`` are linked to the event; ``check(row)`` may raise
        to refuse the move after seeing the current row (inside the transaction).
        """
        now = utcnow()
        with self._write() as conn:
            row = conn.execute(sa.select(cases).where(cases.c.id == case_id)).mappings().first()
            if row is None:
                raise NotFound(f"no case with id {case_id}", field="id")
            status, version = row["status"], row["row_version"]
            if expected_version is not None and expected_version != version:
                raise Conflict(f"case {case_id} was changed by someone else "
                               f"(version {version}, you had {expected_version}); reload it",
                               details={"current_version": version})
            check_transition(status, to)
            if check is not None:
                check(row)
            values = {"status": to, "updated_at": now, "row_version": version + 1,
                      **(changes or {})}
            if to == "resolved":
                values["resolved_at"] = now
            if to in ("closed", "rejected", "closed_not_fixed"):
                values["closed_at"] = now
            if to == "reopened":
                values["rework_count"] = row["rework_count"] + 1
            res = conn.execute(sa.update(cases).where(cases.c.id == case_id,
                                                      cases.c.row_version == version)
                               .values(**values))
            if res.rowcount != 1:
                raise Conflict(f"case {case_id} was changed by someone else; reload it")
            for pre in pre_events or []:
                conn.execute(sa.insert(case_events).values(
                    case_id=case_id, at=now, actor=pre["actor"], from_status=status,
                    to_status=status, note=pre.get("note") or "", kind=pre["kind"],
                    data=json.dumps(pre["data"], ensure_ascii=False) if pre.get("data")
                    else None))
            self._record_event(conn, case_id, now, actor, status, to, note, "transition",
                               data, lon, lat, photo_rows)
            self._bump(conn)
        return self.get_case(case_id)

    @staticmethod
    def _record_event(conn, case_id, at, actor, from_status, to_status, note, kind, data,
                      lon, lat, photo_rows) -> int:
        """Append one history event (and link its photos) inside the caller's transaction."""
        eid = conn.execute(sa.insert(case_events).values(
            case_id=case_id, at=at, actor=actor, from_status=from_status,
            to_status=to_status, note=note or "", kind=kind, lon=lon, lat=lat,
            data=json.dumps(data, ensure_ascii=False) if data else None,
        )).inserted_primary_key[0]
        for p in photo_rows or []:
            conn.execute(sa.insert(photos).values(case_id=case_id, event_id=eid,
                                                  created_at=at, **p))
        return eid

    def update_case(self, case_id: int, *, actor: str, kind: str, note: str = "",
                    changes: dict | None = None, data: dict | None = None,
                    expected_version: int | None = None, check=None,
                    photo_rows: list[dict] | None = None) -> Case:
        """Change a case without changing its status (extension, needs list, evaluation
        …), recording a history event of ``kind``; same concurrency rules as
        :meth:`transition`."""
        now = utcnow()
        with self._write() as conn:
            row = conn.execute(sa.select(cases).where(cases.c.id == case_id)).mappings().first()
            if row is None:
                raise NotFound(f"no case with id {case_id}", field="id")
            version = row["row_version"]
            if expected_version is not None and expected_version != version:
                raise Conflict(f"case {case_id} was changed by someone else; reload it")
            if check is not None:
                check(row)
            values = {"updated_at": now, "row_version": version + 1, **(changes or {})}
            res = conn.execute(sa.update(cases).where(cases.c.id == case_id,
                                                      cases.c.row_version == version)
                               .values(**values))
            if res.rowcount != 1:
                raise Conflict(f"case {case_id} was changed by someone else; reload it")
            self._record_event(conn, case_id, now, actor, row["status"], row["status"], note,
                               kind, data, None, None, photo_rows)
            self._bump(conn)
        return self.get_case(case_id)

    def case_photos(self, case_id: int) -> list[dict]:
        """Photo records of a case (oldest first)."""
        with self._read() as conn:
            rows = conn.execute(sa.select(photos).where(photos.c.case_id == case_id)
                                .order_by(photos.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def grid_counts(self) -> pd.DataFrame:
        """Per grid: total cases and open cases (aggregated in the database)."""
        open_expr = sa.func.sum(sa.case((cases.c.status.in_(OPEN_STATUSES), 1), else_=0))
        q = (sa.select(cases.c.grid_code, sa.func.count().label("total"),
                       open_expr.label("open"))
             .where(cases.c.grid_code.is_not(None)).group_by(cases.c.grid_code))
        with self._read() as conn:
            rows = conn.execute(q).fetchall()
        df = pd.DataFrame(rows, columns=["grid_code", "total", "open"])
        return df.astype({"total": "int64", "open": "int64"})


def _scalar_default(column: sa.Column):
    """The column's Python-side default value if it is a plain value, else None."""
    d = column.default
    return d.arg if d is not None and d.is_scalar else None


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with None where pandas holds NaN."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _str_or_none(value) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


class _PendingReport:
    """A report waiting for its group commit (:meth:`SqliteCaseStore._commit_group`)."""

    __slots__ = ("case_params", "event_params", "key_values", "ids", "error", "done")

    def __init__(self, case_params, event_params: list, key_values: dict | None):
        self.case_params, self.event_params, self.key_values = (
            case_params, event_params, key_values)
        self.ids: tuple[int, int] | None = None
        self.error: BaseException | None = None
        self.done = False


def _as_sa_error(err: Exception) -> Exception:
    """A driver error as SQLAlchemy raises it (what callers catch); others unchanged."""
    if isinstance(err, sqlite3.Error):
        return sa.exc.DBAPIError.instance(None, None, err, sqlite3.Error)
    return err


def create_private_file(path: str | os.PathLike) -> None:
    """Create ``path`` empty and readable by its owner only (0600), if it does not exist,
    before SQLite makes it: a database holds residents' names and phone numbers and
    password hashes, and SQLite would create it with the umask's mode (usually 0644).
    Its -wal and -shm files take the database file's mode; an empty file is a new
    database to SQLite. An existing file keeps its mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        # There already, or a folder we may not write: SQLite opens it or reports the
        # problem itself, as it would have without this.
        pass


def accounts_stamp_path(database: str | os.PathLike) -> str:
    """The accounts stamp file of the SQLite database file ``database``."""
    return os.fspath(database) + ".accounts"


def announce_accounts_changed(url: str) -> None:
    """Tell the servers on the database ``url`` that users, grids or tokens changed
    behind their stores' backs (a restore, a copy into it): they stop trusting cached
    tokens. SQLite: the stamp file; PostgreSQL: ``NOTIFY``."""
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            touch_accounts_stamp(accounts_stamp_path(u.database))
        return
    from gis import pg

    engine = sa.create_engine(pg.psycopg_url(u), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            pg.notify_accounts_changed(conn)
    finally:
        engine.dispose()


def touch_accounts_stamp(stamp_path: str) -> None:
    """Append one byte to an accounts stamp file (see :meth:`SqliteCaseStore.accounts_stamp`;
    accounts change a few times a day, so it stays small)."""
    fd = os.open(stamp_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)


class SqliteCaseStore(SqlCaseStore):
    """The embedded default: one SQLite file, WAL, busy timeout, immediate writes.

    Checkpoints are SQLite's own (``wal_autocheckpoint``, 1,000 pages): the COMMIT that
    crosses the threshold copies the WAL back, inside the writer's turn. Run anywhere
    else they let the WAL grow without end under steady load from several processes: a
    checkpoint outside the turn has always just missed another process's commit, so no
    writer ever finds the WAL fully copied and starts it over (268 MB after 5,500
    reports in bench/intake.py, and a third more CPU a report from reading it).
    """

    def __init__(self, url: str, busy_timeout_ms: int = 10_000):
        super().__init__(url)

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Let SQLAlchemy's begin event emit BEGIN itself (pysqlite's own is deferred).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn):
            # Writers take the write lock at BEGIN, so a read-then-write transaction
            # cannot fail half-way with SQLITE_BUSY; readers stay deferred (WAL).
            if conn.get_execution_options().get("sqlite_immediate"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

        # Writers queue on a lock file before BEGIN IMMEDIATE. SQLite's own busy handler
        # polls with sleeps of up to 100 ms, so under contention from several worker
        # processes the write lock sat idle between sleeps (p99 over 130 ms in
        # bench/intake.py); a blocking flock wakes the next writer the moment the lock
        # is free. The kernel drops the lock of a killed process. SQLite's own locking
        # stays the guarantee (other programs writing the file do not take this lock).
        self._lock_path = self._stamp_path = None
        path = sa.make_url(url).database
        if path and path != ":memory:" and not path.startswith("file:"):
            create_private_file(path)
            self._lock_path = path + ".writelock"
            self._stamp_path = accounts_stamp_path(path)
        self._stamp_count = 0
        self._thread_lock = threading.Lock()
        self._turn_holder: int | None = None  # the thread holding the writer's turn
        # Group commit (_insert_report): reports queued by this process's threads, and
        # whether one of them is committing a group now.
        self._group = threading.Condition(threading.Lock())
        self._queue: list[_PendingReport] = []
        self._committing = False
        # One descriptor per process (flock is per open file description), so gunicorn
        # workers forked from a preloaded app do not share it.
        self._lock_fd = PerProcess(
            lambda: os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600))
        self._group_conn = PerProcess(self._detached_connection)

    _prepared_ok = True

    def accounts_stamp(self) -> object | None:
        """The size of the file ``<database>.accounts``: every accounts change appends a
        byte to it (a size only grows, where two changes within one clock tick can leave
        the modification time as it was). All processes serving a SQLite file run on its
        machine, so a revocation by ``hemei token revoke`` or by another worker is seen
        by the next request; one ``stat`` costs about a microsecond. In-memory databases
        live in one process: a counter."""
        if self._stamp_path is None:
            return self._stamp_count
        try:
            return os.stat(self._stamp_path).st_size
        except FileNotFoundError:
            return 0

    def accounts_changed(self) -> None:
        self._stamp_count += 1
        if self._stamp_path is not None:
            touch_accounts_stamp(self._stamp_path)

    def _insert_report(self, values: dict, event: dict, idempotency: IdempotencyKey | None,
                       grid_version: int) -> tuple[int, int]:
        """The report's statements on the DBAPI connection, committed together with the
        reports other threads of this process are waiting to write (group commit, see
        :meth:`_commit_group`). The grid-version check is part of the case's INSERT, and
        every parameter but the new case's id is converted beforehand."""
        case_cols = [c for c in _CASE_COLS if c != "id"]
        # No RETURNING: sqlite3 reports the new rowid (cursor.lastrowid) and the row count
        # from the one step that runs the INSERT; RETURNING takes a second step per row.
        p_case = self._prepared("case", lambda: (_checked_case_insert(
            case_cols, _ACTIVE_GRID_ID.scalar_subquery(), returning=False), None))
        p_event = self._prepared("event", lambda: (sa.insert(case_events), list(event)))
        # Everything but the new case's id is ready before the writer's turn: inside it
        # only the statements run (each one lets other threads take the GIL, so the
        # fewer Python steps between them, the sooner the lock is free again).
        report = _PendingReport(
            p_case.parameters({f"c_{k}": values.get(k) for k in case_cols}),
            list(p_event.parameters(event)),  # the case id is set when it is known
            None if idempotency is None else {**idempotency._asdict(),
                                              "created_at": utcnow()})
        group = self._group
        with group:
            self._queue.append(report)
            while self._committing and not report.done:
                group.wait()
            leader = not report.done
            if leader:
                self._committing = True  # this thread commits the next group
        if leader:
            batch: list[_PendingReport] = []
            try:
                # The writer's turn first, then the queue: reports this process's other
                # threads finish while another process is writing join this group
                # instead of waiting for the next one.
                with self._writer_turn():
                    with group:
                        batch, self._queue = self._queue, []
                    self._commit_group(batch)
            except BaseException as err:
                if not batch:  # no turn: this report (still queued) gets the error
                    with group:
                        self._queue.remove(report)
                    batch = [report]
                # The reports not committed get the error (with more than GROUP_MAX
                # queued, earlier transactions may have committed theirs).
                for r in batch:
                    if not r.done:
                        r.error, r.done = err, True
                if not isinstance(err, Exception):
                    raise  # interrupted: the others are told, and this thread stops
            finally:
                with group:
                    self._committing = False
                    group.notify_all()
        if report.error is not None:
            raise report.error
        return report.ids

    #: At most this many reports share one transaction.
    GROUP_MAX = 64

    def _commit_group(self, batch: list[_PendingReport]) -> None:
        """Write ``batch`` in one ``BEGIN IMMEDIATE`` transaction (the caller holds the
        writer's turn).

        Group commit: while one thread holds the write lock (its own or another
        process's), the reports this process's other threads finish meanwhile queue up,
        and the next one to commit writes them all in one transaction. The pages a
        report appends to (the cases table, its time and area indexes, the history, the
        data version) are then written to the WAL and checkpointed once per group
        instead of once per report, and the other processes' connections re-read their
        changed pages once per group (bench/intake.py). A report is acknowledged only
        after its group's COMMIT. One report's own refusal (its Idempotency-Key was
        used meanwhile, or its grid layer is no longer active) rolls back to its
        savepoint and the others are committed; any other error rolls back the group
        and every report in it gets that error."""
        p_case, p_event = self._prepared_cache["case"], self._prepared_cache["event"]
        p_key = self._prepared("key", lambda: (
            _INSERT_KEY, ["user_id", "key", "case_id", "created_at", "fingerprint"]))
        p_bump = self._prepared("bump", lambda: (_BUMP, None))
        bump_params = p_bump.parameters({})
        case_id_at = p_event.names.index("case_id")
        for start in range(0, len(batch), self.GROUP_MAX):
            chunk = batch[start:start + self.GROUP_MAX]
            many = len(chunk) > 1
            outcomes: list[tuple] = []
            with self._group_connection() as dbc:
                cur = dbc.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    for r in chunk:
                        if many:
                            cur.execute("SAVEPOINT report")
                        try:
                            if cur.execute(p_case.sql, r.case_params).rowcount != 1:
                                active = self._prepared(
                                    "active-grid", lambda: (_ACTIVE_GRID_ID, None))
                                raise StaleLayers((active.first(cur) or {}).get("id"))
                            cid = r.event_params[case_id_at] = cur.lastrowid
                            eid = cur.execute(p_event.sql, r.event_params).lastrowid
                            if r.key_values is not None:
                                r.key_values["case_id"] = cid
                                p_key.execute(cur, r.key_values)
                        except (sqlite3.IntegrityError, StaleLayers) as err:
                            if many:
                                cur.execute("ROLLBACK TO report")
                                cur.execute("RELEASE report")
                            outcomes.append((None, _as_sa_error(err)))
                        else:
                            if many:
                                cur.execute("RELEASE report")
                            outcomes.append(((cid, eid), None))
                    if any(err is None for _, err in outcomes):
                        cur.execute(p_bump.sql, bump_params)
                        cur.execute("COMMIT")
                    else:
                        cur.execute("ROLLBACK")
                except BaseException:
                    if dbc.in_transaction:
                        dbc.rollback()
                    raise
            for r, (ids, err) in zip(chunk, outcomes, strict=True):
                r.ids, r.error, r.done = ids, err, True

    @contextmanager
    def _group_connection(self):
        """The connection group commits run on: one per process, taken from the pool
        once and kept, and used by one thread at a time (the one committing). Its page
        cache then survives this process's own commits (a pooled connection had
        usually missed the last one and re-read its pages), and the report path does
        no pool check-out at all. A driver error comes out as SQLAlchemy's wrapped
        exception (one making the connection too: :func:`_raw_connection`) and retires
        the connection; a forked child makes its own."""
        dbc = self._group_conn.get()
        try:
            yield dbc
        except sqlite3.Error as err:
            self._close_group_connection()
            raise sa.exc.DBAPIError.instance(None, None, err, sqlite3.Error) from err

    def _detached_connection(self) -> sqlite3.Connection:
        """A new connection of the pool's making (its connect hooks run) that the pool
        no longer manages."""
        fairy = _raw_connection(self.engine)
        dbc = fairy.driver_connection
        fairy.detach()  # ours now: the pool neither hands it out nor closes it
        return dbc

    def _close_group_connection(self) -> None:
        dbc = self._group_conn.take()
        if dbc is not None:
            with suppress(sqlite3.Error):
                dbc.close()

    def dispose(self) -> None:
        self._close_group_connection()
        super().dispose()

    @contextmanager
    def _writer_turn(self):
        """This thread's turn to write (a no-op for in-memory databases and on Windows).
        A thread that holds it already (:meth:`first_run_lock`) writes on under it."""
        if self._lock_path is None or fcntl is None:
            yield
            return
        me = threading.get_ident()
        if self._turn_holder == me:
            # Taking it again would wait for ourselves (the thread lock), and letting go
            # of the inner one would unlock the file under the outer one.
            yield
            return
        with self._thread_lock:
            fd = self._lock_fd.get()
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._turn_holder = me
            try:
                yield
            finally:
                self._turn_holder = None
                fcntl.flock(fd, fcntl.LOCK_UN)

    @contextmanager
    def first_run_lock(self):
        """The writer's turn (the lock file, across processes), held from the look for
        the first run's data to the end of its loading: a process starting meanwhile
        waits for it (at its schema check, or here after finding no layers yet) and then
        finds the data there. The loading's own writes go on under the turn."""
        if self._lock_path is None or fcntl is None:
            with super().first_run_lock():  # no lock file: this process's threads only
                yield
            return
        with self._writer_turn():
            yield

    @contextmanager
    def _write(self):
        with self._writer_turn(), \
                self.engine.connect().execution_options(sqlite_immediate=True) as conn, \
                conn.begin():
            yield conn


class PostgisCaseStore(SqlCaseStore):
    """PostgreSQL + PostGIS: the path past one machine.

    The shared SQL runs unchanged under PostgreSQL's default READ COMMITTED: the
    conditional ``UPDATE … WHERE row_version = :seen`` of :meth:`transition` waits for a
    concurrent writer of the same row and then matches nothing, so one wins and the
    other gets a ``Conflict``, as on SQLite. What differs is spatial: geometry columns
    in EPSG:4326 with GiST indexes (see :mod:`gis.pg`), bounding boxes filtered through
    the index, and :meth:`locate_in_db` for point-in-boundary queries in the database.
    """

    def __init__(self, url: str | sa.URL, **engine_kw):
        from gis import pg

        super().__init__(pg.psycopg_url(url), **engine_kw)
        # Started on first use in each process (a thread does not cross a fork).
        self._listener = PerProcess(lambda: pg.AccountsListener(self.url))
        if not engine_kw.get("pool_pre_ping"):
            _ping_when_idle(self.engine, self.PING_AFTER_IDLE_S)

    _prepared_ok = True
    PING_AFTER_IDLE_S = 2.0

    def accounts_stamp(self) -> object | None:
        """What this process's :class:`gis.pg.AccountsListener` has heard."""
        return self._listener.get().stamp()

    def accounts_changed(self) -> None:
        from gis import pg

        with self.engine.begin() as conn:
            pg.notify_accounts_changed(conn)

    def dispose(self) -> None:
        listener = self._listener.take()
        if listener is not None:
            listener.close()
        super().dispose()

    @contextmanager
    def _dbapi(self):
        with super()._dbapi() as dbc:
            dbc.autocommit = True
            try:
                yield dbc
            finally:
                # Back as SQLAlchemy's pool hands it out (it runs transactions itself).
                if not dbc.closed:
                    try:
                        dbc.autocommit = False
                    except self.engine.dialect.loaded_dbapi.Error:
                        pass  # broken: the error that broke it is on its way up

    def _insert_report(self, values: dict, event: dict, idempotency: IdempotencyKey | None,
                       grid_version: int) -> tuple[int, int]:
        """The report in one statement (:func:`_report_cte`), one round trip in
        autocommit, instead of BEGIN, five statements and COMMIT."""
        p = self._prepared("report", lambda: (
            _report_cte([c for c in _CASE_COLS if c != "id"],
                        [c for c in event if c != "case_id"]), None))
        params = {f"c_{k}": values.get(k) for k in _CASE_COLS if k != "id"}
        params.update({f"e_{k}": v for k, v in event.items()})
        params["b_slot"] = f"data_version.{random.randrange(DATA_VERSION_SLOTS)}"
        params.update({"k_use": idempotency is not None,
                       "k_user_id": idempotency.user_id if idempotency else None,
                       "k_key": idempotency.key if idempotency else None,
                       "k_fingerprint": idempotency.fingerprint if idempotency else None,
                       "k_created_at": utcnow()})
        with self._dbapi() as dbc:
            row = p.first(dbc.cursor(), params)
        if row is None:
            with self._read() as conn:
                raise StaleLayers(conn.execute(_ACTIVE_GRID_VERSION).scalar())
        return row["case_id"], row["event_id"]

    @contextmanager
    def _read(self):
        # Reads in autocommit: no BEGIN … ROLLBACK round trips around every read. Under
        # READ COMMITTED each statement takes its own snapshot anyway, so reads see the
        # same data as inside a transaction.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    @contextmanager
    def first_run_lock(self):
        """An advisory lock of its own (:data:`gis.pg.FIRST_RUN_LOCK_KEY`), held on a
        connection of its own while the data is loaded on others: processes starting
        together, on one machine or several, load the first run's data once."""
        from gis import pg

        with pg.advisory_lock(self.engine, pg.FIRST_RUN_LOCK_KEY):
            yield

    @contextmanager
    def _schema_transaction(self):
        """Under an advisory lock (several workers starting at once upgrade one after
        the other), with the PostGIS extension created first if this role may."""
        from gis import pg

        with self.engine.begin() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(pg.SCHEMA_LOCK_KEY)))
            pg.ensure_postgis(conn)
            yield conn

    def bbox_condition(self, minx: float, miny: float, maxx: float,
                       maxy: float) -> sa.ColumnElement[bool]:
        """``geom && box`` finds the candidates through the GiST index; the plain range
        test keeps the answer exact (the index compares single-precision boxes, rounded
        outwards) and equal to the other backends'."""
        envelope = sa.func.ST_MakeEnvelope(minx, miny, maxx, maxy, 4326)
        return sa.and_(sa.literal_column("cases.geom").op("&&", is_comparison=True)(envelope),
                       super().bbox_condition(minx, miny, maxx, maxy))

    def epoch_seconds(self, column) -> sa.ColumnElement[int]:
        # EXTRACT gives fractional seconds and CAST rounds: floor first, as SQLite does.
        return sa.cast(sa.func.floor(sa.extract("epoch", column)), sa.Integer)

    def locate_in_db(self, lon: float, lat: float) -> dict | None:
        """The chain street → community → compound (or None) → grid holding a point,
        found by ``ST_Intersects`` on the active boundaries in the database; the same
        answer and edge rule as :meth:`gis.locate.Locator.locate`, None when outside."""
        from gis import pg

        with self._read() as conn:
            row = conn.execute(pg.LOCATE_SQL, {"lon": float(lon), "lat": float(lat)})
            return pg.located_chain(row.mappings().first())


def open_store(url: str, *, migrate: bool = True) -> CaseStore:
    """Open the store a database URL names and make sure its schema exists:
    ``sqlite:///path`` → :class:`SqliteCaseStore`, ``postgresql+psycopg://…`` (or plain
    ``postgresql://``) → :class:`PostgisCaseStore`, other SQLAlchemy URLs the shared SQL
    implementation."""
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        store: CaseStore = SqliteCaseStore(url)
    elif sa.make_url(url).get_backend_name() == "postgresql":
        store = PostgisCaseStore(url)
    else:
        store = SqlCaseStore(url, pool_pre_ping=True)
    store.init_schema(migrate=migrate)
    return store
