"""SQLAlchemy statements compiled once and run on the DBAPI connection.

The intake path (a token check and one report's inserts, on every ``POST``) spent most of
its time not in the database but in SQLAlchemy's per-execution machinery: execution
context, result wrapping, the ``BEGIN`` of every checkout (bench/intake.py). A
:class:`Prepared` statement is still written with SQLAlchemy Core against the same tables
(so it follows the schema), compiled once per dialect, and then executed directly on the
driver's cursor with the same type conversions SQLAlchemy would apply (SQLite's datetime
strings and 0/1 booleans), in both directions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa


class Prepared:
    """A Core statement compiled for one dialect, run with :meth:`execute` on a DBAPI
    cursor. ``column_keys`` names the columns an INSERT or UPDATE sets (the others are
    left to their defaults), as ``connection.execute(stmt, params)`` would decide."""

    def __init__(self, stmt: sa.Executable, dialect: sa.Dialect,
                 column_keys: Sequence[str] | None = None):
        compiled = stmt.compile(dialect=dialect, column_keys=column_keys)
        self.sql: str = compiled.string
        self.positional: bool = compiled.positional
        binds = {name: b for b, name in compiled.bind_names.items()}
        self.names: list[str] = (list(compiled.positiontup) if compiled.positional
                                 else list(binds))
        # What parameters() walks: (name, the value the statement carries itself — a
        # literal it compares with — or None) in order, and (index, converter).
        carried = {name: b.value for name, b in binds.items()
                   if not b.required and b.value is not None and not callable(b.value)}
        self._plan = [(n, carried.get(n)) for n in self.names]
        procs = {name: _bind_processor(b.type.dialect_impl(dialect), dialect)
                 for name, b in binds.items()}
        self._procs = [(i, procs[n]) for i, n in enumerate(self.names)
                       if procs.get(n) is not None]
        # The columns a row has: a SELECT's, or the RETURNING of an INSERT or UPDATE.
        cols = (list(stmt.selected_columns) if isinstance(stmt, sa.Select)
                else list(getattr(stmt, "exported_columns", ())))
        self.columns: list[str] = [c.key for c in cols]
        self.result_procs: list[Any] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in cols]

    def parameters(self, values: Mapping[str, Any]) -> tuple | dict:
        """The driver's parameters for ``values`` (converted, in the statement's order)."""
        get = values.get
        out = [get(name, default) for name, default in self._plan]
        for i, proc in self._procs:
            if out[i] is not None:
                out[i] = proc(out[i])
        return tuple(out) if self.positional else dict(zip(self.names, out, strict=True))

    def execute(self, cursor, values: Mapping[str, Any] | None = None):
        """Run on ``cursor`` (a DBAPI cursor); returns the cursor."""
        cursor.execute(self.sql, self.parameters(values or {}))
        return cursor

    def row(self, raw) -> dict | None:
        """One fetched row as a dict of converted values (None stays None)."""
        if raw is None:
            return None
        return {k: (p(v) if p is not None else v)
                for k, v, p in zip(self.columns, raw, self.result_procs, strict=True)}

    def first(self, cursor, values: Mapping[str, Any] | None = None) -> dict | None:
        """Run and return the first row as a dict, or None."""
        return self.row(self.execute(cursor, values).fetchone())


_SQLITE_DATETIME_FORMAT = ("%(year)04d-%(month)02d-%(day)02d "
                           "%(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d")


def _bind_processor(impl, dialect):
    """The type's bind processor; for SQLite's DATETIME in its default storage format,
    an equivalent one that formats a naive datetime with ``isoformat`` (SQLAlchemy's
    fills a %-template from a dict: a few datetimes per report added up)."""
    proc = impl.bind_processor(dialect)
    if (proc is None or dialect.name != "sqlite"
            or getattr(impl, "_storage_format", None) != _SQLITE_DATETIME_FORMAT):
        return proc

    def process(value, _general=proc, _datetime=datetime):
        if type(value) is _datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return _general(value)

    return process
