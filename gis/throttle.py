"""Failed logins, counted where every worker of an instance sees them: its database.

:class:`FailureLog` is what the login needs: :meth:`~FailureLog.wait` (seconds until
none of a login's keys is over the limit) and :meth:`~FailureLog.failed` (count one
failure against each key). A key is a pair (kind, value): ``("address", "203.0.113.9")``,
``("username", "gw")``. :class:`SqlFailureLog` keeps them in the table ``login_failures``
of the instance's database (SQLite or PostGIS, SQLAlchemy Core, made by migration
``0004``), so the limit holds across every worker process and host on that database and
survives a restart; the web layer (:class:`webapp.auth.LoginThrottle`) keeps an
in-process count beside it for when the database cannot be reached.

What the table holds: one row per failed login and key — the key's kind in clear
(``address`` or ``username``), an HMAC-SHA256 (hex) of its value under a key derived from
the app's secret key (``pepper``), and the time (naive UTC, as every stored time). No
username or client address is stored in clear, and without the secret key the hashes
cannot be reversed by trying every IPv4 address or a list of usernames. (Rotating the
secret key starts every count afresh.) Rows older than the window are pruned as failures
come in: a bounded batch (:attr:`SqlFailureLog.PRUNE_BATCH` of the oldest rows) every
:attr:`SqlFailureLog.PRUNE_EVERY` failures a process records, so no call does unbounded
work and the table holds about one window's failures.

The table is declared on a :class:`~sqlalchemy.MetaData` of its own, not on
:data:`gis.storage.metadata`: it is transient security state, not the street's data, so
backups' checksums and ``hemei migrate-store`` leave it out (a copied store starts with
no failures counted).

The check and the count are two statements, as the in-process count was two steps: two
wrong passwords sent at the same moment, each seeing ``limit - 1`` failures, are both
checked (at most one extra failure per concurrent request). Times come from the app's
clock, so hosts sharing one PostGIS database should keep their clocks in step (NTP).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime

import sqlalchemy as sa

#: A key a login is counted against: (kind, value), e.g. ("username", "gw").
Key = tuple[str, str]

metadata = sa.MetaData()

login_failures = sa.Table(
    "login_failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # "address" or "username", in clear; the value only as an HMAC-SHA256 (hex).
    sa.Column("key_kind", sa.String(16), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime, nullable=False),  # naive UTC
    sa.Index("ix_login_failures_key", "key_kind", "key", "at"),
)


class FailureLog:
    """Failed logins per key in a sliding window of ``window`` seconds.

    At ``limit`` failures within the window a key is refused until the oldest of the
    last ``limit`` leaves it. ``limit <= 0``: no limit (nothing is counted)."""

    limit: int
    window: float

    def wait(self, keys: Sequence[Key]) -> int:
        """Whole seconds until none of ``keys`` is over the limit (0: go ahead)."""
        raise NotImplementedError

    def failed(self, keys: Sequence[Key]) -> None:
        """Count one failed login for each of ``keys``."""
        raise NotImplementedError


def _seconds(wait: float) -> int:
    return math.ceil(wait) if wait > 0 else 0


def _utc(epoch: float) -> datetime:
    """Seconds since the epoch as a naive UTC datetime (how times are stored)."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _epoch(at: datetime) -> float:
    return at.replace(tzinfo=UTC).timestamp()


class SqlFailureLog(FailureLog):
    """The failures in the table ``login_failures`` of the database ``engine`` opens.

    ``write`` makes the write transaction a failure is recorded in (default
    ``engine.begin``; :meth:`for_store` passes the store's own, which on SQLite takes
    the writer's turn like every other write). ``clock`` gives seconds since the epoch
    (UTC). Database errors are raised (``sqlalchemy.exc.SQLAlchemyError``): the caller
    decides what a login does without its count."""

    #: Every this many failures a process records, it prunes …
    PRUNE_EVERY = 16
    #: … at most this many of the oldest rows, those past the window. Each failure adds
    #: two rows (address and username), so pruning keeps well ahead of the inserts.
    PRUNE_BATCH = 256

    def __init__(self, engine: sa.Engine, limit: int, window: float, *,
                 pepper: bytes = b"",
                 write: Callable[[], AbstractContextManager] | None = None,
                 clock: Callable[[], float] = time.time):
        self.engine, self.limit, self.window = engine, limit, window
        self._pepper = pepper
        self._write = write or engine.begin
        self._clock = clock
        self._waits: dict[int, sa.Select] = {}  # statement per number of keys
        self._count = 1  # the first prune at the PRUNE_EVERY-th failure
        self._lock = threading.Lock()

    @classmethod
    def for_store(cls, store, limit: int, window: float, **kw) -> SqlFailureLog:
        """The log on a :class:`gis.storage.SqlCaseStore`'s database, recorded in its
        write transactions."""
        return cls(store.engine, limit, window, write=getattr(store, "_write", None), **kw)

    def digest(self, value: str) -> str:
        """What the table stores of a key's value: its HMAC-SHA256 under the pepper."""
        return hmac.new(self._pepper, value.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).hexdigest()

    # -- the statements ------------------------------------------------------------
    def _wait_statement(self, n: int) -> sa.Select:
        """One SELECT with, per key ``i``, the time of its ``limit``-th most recent
        failure within the window (NULL when it has fewer): an index range scan of at
        most ``limit`` rows per key."""
        stmt = self._waits.get(n)
        if stmt is None:
            t = login_failures
            since = sa.bindparam("since", type_=sa.DateTime)
            cols = [
                sa.select(t.c.at)
                .where(t.c.key_kind == sa.bindparam(f"kind{i}", type_=sa.String),
                       t.c.key == sa.bindparam(f"key{i}", type_=sa.String),
                       t.c.at > since)
                .order_by(t.c.at.desc())
                .limit(1).offset(self.limit - 1)
                .scalar_subquery().label(f"at{i}")
                for i in range(n)
            ]
            stmt = self._waits[n] = sa.select(*cols)
        return stmt

    _INSERT = sa.insert(login_failures)
    # The oldest rows by id (in the order they came in: bounded work, through the
    # primary key), those of them past the window.
    _PRUNE = sa.delete(login_failures).where(
        login_failures.c.id.in_(
            sa.select(login_failures.c.id).order_by(login_failures.c.id)
            .limit(sa.bindparam("batch", type_=sa.Integer)).scalar_subquery()),
        login_failures.c.at <= sa.bindparam("cutoff", type_=sa.DateTime))

    # -- the interface ---------------------------------------------------------------
    def wait(self, keys: Sequence[Key]) -> int:
        if self.limit <= 0 or not keys:
            return 0
        now = self._clock()
        params: dict = {"since": _utc(now - self.window)}
        for i, (kind, value) in enumerate(keys):
            params[f"kind{i}"], params[f"key{i}"] = kind, self.digest(value)
        with self.engine.connect() as conn:
            row = conn.execute(self._wait_statement(len(keys)), params).one()
        wait = max((_epoch(at) + self.window - now for at in row if at is not None),
                   default=0.0)
        return _seconds(wait)

    def failed(self, keys: Sequence[Key]) -> None:
        if self.limit <= 0 or not keys:
            return
        now = self._clock()
        at = _utc(now)
        rows = [{"key_kind": kind, "key": self.digest(value), "at": at}
                for kind, value in keys]
        with self._lock:
            prune = self._count % self.PRUNE_EVERY == 0
            self._count += 1
        with self._write() as conn:
            conn.execute(self._INSERT, rows)
            if prune:
                self._prune(conn, now)

    def prune(self) -> int:
        """Delete up to :attr:`PRUNE_BATCH` of the oldest rows past the window now;
        returns how many went."""
        with self._write() as conn:
            return self._prune(conn, self._clock())

    def _prune(self, conn, now: float) -> int:
        result = conn.execute(self._PRUNE, {"batch": self.PRUNE_BATCH,
                                            "cutoff": _utc(now - self.window)})
        return result.rowcount
