"""Copy a whole store from one database to another: ``hemei migrate-store --from --to``.

The way a street that started on the embedded SQLite default moves to a shared PostGIS
server (or back, or between two servers): every table of the schema — cases and their
history, photo metadata, idempotency keys, boundary layers and their versions, accounts,
organisations, tokens, check-ins, the meta rows — is copied with its ids, in foreign-key
order, and then verified.

- The source is only read, in one transaction (a consistent snapshot, even while the app
  keeps writing), and must be at this release's schema (``hemei db upgrade`` it first).
- The target is created or upgraded to the same schema and must hold no data (unless
  ``force``: then its rows are replaced). Everything is written in one transaction, and
  before it commits the target's row counts and per-table SHA-256 checksums
  (:func:`gis.backup.checksums`, read back through the same transaction) are compared
  with the source's: a difference rolls everything back, so the target ends up either a
  verified copy or as it was.
- On PostgreSQL the id sequences are moved past the copied ids (new cases get new ids)
  and the PostGIS triggers fill the geometry columns as the rows go in.
- The target's data version (the key of every serving worker's page, coverage and API
  caches) ends strictly above both its own before the copy and the source's
  (``max(before, source) + 1``, as ``hemei restore`` does), set in the same transaction
  with the target's writers held off (SQLite: the write lock; PostgreSQL: the tables
  locked before the version is read). Copied as it was, it could repeat a value workers
  on the target (``--force`` into a live database) had cached with other data, and they
  would serve stale figures and ``304 Not Modified``. The checksums leave the version's
  value out (:func:`gis.backup.checksums`), so the target's still equal the source's.

Photos are files (``<instance>/photos``), not rows: copy that folder with the usual file
tools, or point the new instance's ``HEMEI_INSTANCE`` at the same (shared) folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from gis import schema
from gis.backup import (
    _VERSION_KEYS,
    _VERSION_SUM,
    _engine,
    _first_line,
    _has_data,
    _safe,
    _tables,
    checksums,
)
from gis.errors import HemeiError

BATCH = 5000


class TransferError(HemeiError):
    """A copy that could not be made or did not verify; the target is unchanged."""

    status = 500
    code = "transfer_failed"


def _same_database(a: str, b: str) -> bool:
    ua, ub = sa.make_url(a), sa.make_url(b)
    if ua.get_backend_name() == "sqlite" and ub.get_backend_name() == "sqlite":
        return Path(ua.database or "").resolve() == Path(ub.database or "").resolve()
    return (ua.host, ua.port, ua.database) == (ub.host, ub.port, ub.database)


def _parse(url: str, which: str) -> str:
    try:
        name = sa.make_url(url).get_backend_name()
    except sa.exc.ArgumentError:
        from gis.settings import mask_url

        raise TransferError(f"--{which} is not a database URL: {mask_url(url)!r}") from None
    if name not in ("sqlite", "postgresql"):
        raise TransferError(f"--{which}: SQLite and PostgreSQL are supported, not {name!r}")
    return url


def migrate_store(src_url: str, dst_url: str, *, force: bool = False,
                  progress: Callable[[str, int], None] | None = None,
                  ) -> dict[str, tuple[int, str]]:
    """Copy everything from ``src_url`` to ``dst_url`` and verify it (see the module
    docstring). Returns ``{table: (rows, sha256)}``, equal on both sides."""
    _parse(src_url, "from")
    _parse(dst_url, "to")
    if _same_database(src_url, dst_url):
        raise TransferError("--from and --to name the same database")
    if sa.make_url(src_url).get_backend_name() == "sqlite":
        if not Path(sa.make_url(src_url).database or "").is_file():
            raise TransferError(f"--from: no database at {sa.make_url(src_url).database}")

    src = _engine(src_url)
    try:
        with src.connect() as sconn, sconn.begin():
            have = schema.current(sconn)
            if have != schema.head():
                raise TransferError(
                    f"the source schema is at {have or 'nothing (empty)'}, not {schema.head()}:"
                    f" upgrade it first (HEMEI_DATABASE_URL={_safe(src_url)} hemei db upgrade)")
            expected = checksums(sconn)
            _copy_all(sconn, dst_url, expected, force=force, progress=progress)
    except sa.exc.DBAPIError as err:
        raise TransferError(f"copy failed, the target is unchanged: "
                            f"{_first_line(err.orig)}") from err
    finally:
        src.dispose()
    from gis.storage import announce_accounts_changed

    announce_accounts_changed(dst_url)  # a server on the target: users and tokens changed
    return expected


def _copy_all(sconn, dst_url: str, expected: dict, *, force: bool, progress) -> None:
    from gis.storage import open_store

    # The target's schema first (its own transaction: creating it is harmless to keep).
    store = open_store(dst_url)
    try:
        if not force and _has_data(dst_url):
            raise TransferError(f"the target {_safe(dst_url)} already holds data; use "
                                "--force to replace it")
        tables = [t for t in _tables() if t.name in expected]
        with store._schema_transaction() as dconn:
            if dconn.dialect.name == "postgresql":
                _lock_tables(dconn)
            # Read under the writers' lock, so no write moves it before the copy commits.
            before = _version(dconn)
            for table in reversed(tables):  # children first
                dconn.execute(sa.delete(table))
            for table in tables:
                _copy_table(sconn, dconn, table, progress)
            if dconn.dialect.name == "postgresql":
                _reset_sequences(dconn, tables)
            got = checksums(dconn)
            bad = sorted(t for t in expected if got.get(t) != expected[t])
            if bad:
                detail = ", ".join(f"{t} ({expected[t][0]} → {got.get(t, (0,))[0]} rows)"
                                   for t in bad)
                raise TransferError(f"verification failed, nothing was written: {detail}")
            # After the verification (of the rows as copied), before the commit.
            _move_version_past(dconn, before)
    finally:
        store.dispose()


def _lock_tables(dconn) -> None:
    """Lock the target's tables in the order its writers take them (parents first,
    ``meta`` last, as ``hemei restore`` does): a writer on the target then either
    finished before the copy or waits until it has committed, and none moves the data
    version between reading it and replacing it."""
    have = set(sa.inspect(dconn).get_table_names())
    names = [t.name for t in _tables() if t.name != "meta"] + ["meta", "alembic_version"]
    prep = dconn.dialect.identifier_preparer
    for name in names:
        if name in have:
            dconn.exec_driver_sql(f"LOCK TABLE {prep.quote(name)} IN ACCESS EXCLUSIVE MODE")


def _version(dconn) -> int:
    """The data version of the connected database (the main ``meta`` row plus the
    PostGIS report slots), in the caller's transaction."""
    return int(dconn.execute(sa.text(_VERSION_SUM)).scalar() or 0)


def _move_version_past(dconn, before: int) -> None:
    """Set the copied main data-version row so the target's version is
    ``max(before, the source's) + 1`` (the source's being what was copied, report slots
    included): above every value a worker on the target or on the source has seen."""
    copied = _version(dconn)
    slots = int(dconn.execute(sa.text(
        "SELECT COALESCE(SUM(CAST(value AS BIGINT)), 0) FROM meta "
        f"WHERE ({_VERSION_KEYS}) AND key <> 'data_version'")).scalar() or 0)
    main = str(max(before, copied) + 1 - slots)
    if dconn.execute(sa.text("SELECT 1 FROM meta WHERE key = 'data_version'")).first():
        dconn.execute(sa.text("UPDATE meta SET value = :v WHERE key = 'data_version'"),
                      {"v": main})
    else:
        dconn.execute(sa.text("INSERT INTO meta (key, value) VALUES ('data_version', :v)"),
                      {"v": main})


def _copy_table(sconn, dconn, table: sa.Table, progress) -> None:
    order = list(table.primary_key.columns) or list(table.columns)
    result = sconn.execute(sa.select(*table.columns).order_by(*order)
                           .execution_options(yield_per=BATCH))
    done = 0
    for chunk in result.mappings().partitions(BATCH):
        dconn.execute(sa.insert(table), [dict(r) for r in chunk])
        done += len(chunk)
        if progress:
            progress(table.name, done)


def _reset_sequences(dconn, tables: list[sa.Table]) -> None:
    # Rows went in with their ids, so the serial sequences never moved: set each to the
    # largest id, or the next insert would collide with a copied row.
    for table in tables:
        pk = list(table.primary_key.columns)
        if len(pk) != 1 or not isinstance(pk[0].type, sa.Integer):
            continue
        seq = dconn.execute(sa.select(sa.func.pg_get_serial_sequence(
            table.name, pk[0].name))).scalar()
        if seq:
            dconn.execute(sa.text(
                f"SELECT setval(:seq, COALESCE((SELECT max({pk[0].name}) FROM "
                f"{table.name}), 0) + 1, false)"), {"seq": seq})
