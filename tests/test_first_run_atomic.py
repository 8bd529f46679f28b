"""The first run is all or nothing: the demo boundary layers and the demo cases are
committed in one transaction, or nothing is written.

They used to be saved in two transactions (the layers, then the cases): an error or a
killed process between the two left a database with the layers and without the demo
cases, and the next start, finding layers, skipped the demo cases for good. Now a
failure part way leaves no layers and no cases, and the next start does the whole first
run again.

Each test runs on a real SQLite file, and on PostGIS when ``HEMEI_TEST_PG_URL`` is set.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from gis.storage import boundaries, case_events, cases, layer_versions, open_store
from tests.conftest import DEMO_CASES, DEMO_GPKG, REPO

pytestmark = pytest.mark.backends("sqlite", "postgis")

# The order a demo case walks to its status: how many events the first run gives it.
_STEPS = {"reported": 0, "accepted": 1, "in_progress": 3, "resolved": 4, "closed": 5,
          "rejected": 1}


def _demo_records() -> list[dict]:
    with open(DEMO_CASES, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _write_demo(path: Path, records: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(records[0]))
        w.writeheader()
        w.writerows(records)
    return path


def _expected(records: list[dict]) -> dict:
    """What a complete first run holds with these demo cases (every demo point lies in
    a grid of the demo street)."""
    from gis.layers import read_layer_set

    layers = read_layer_set(str(DEMO_GPKG))
    return {"versions": sorted((level, True) for level in layers),
            "boundaries": sum(len(gdf) for gdf in layers.values()),
            "cases": len(records),
            "events": sum(1 + _STEPS[r["status"]] for r in records)}


EMPTY = {"versions": [], "boundaries": 0, "cases": 0, "events": 0}


def _counts(database_url: str) -> dict:
    """What the database holds, read on a store of its own (what a restart would see)."""
    store = open_store(database_url)
    try:
        with store.engine.connect() as conn:
            def count(table):
                return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()

            return {"versions": sorted(conn.execute(sa.select(layer_versions.c.level,
                                                              layer_versions.c.active)).all()),
                    "boundaries": count(boundaries), "cases": count(cases),
                    "events": count(case_events)}
    finally:
        store.dispose()


def _hemei(tmp_path: Path, database_url: str, demo: Path | str = DEMO_CASES):
    from gis.service import Hemei
    from gis.settings import read_settings

    return Hemei(read_settings(env={}, INSTANCE=str(tmp_path / "instance"),
                               DATABASE_URL=database_url, DEMO_CASES=str(demo)))


def _fail_on(engine: sa.Engine, prefix: str):
    """Make the next statement starting with ``prefix`` raise; returns the listener."""
    def boom(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(prefix):
            raise RuntimeError(f"injected failure at {prefix}")

    sa.event.listen(engine, "before_cursor_execute", boom)
    return boom


# -- (1) an error part way -------------------------------------------------------------
@pytest.mark.parametrize("where", ["INSERT INTO CASES", "INSERT INTO CASE_EVENTS"])
def test_a_failure_while_the_demo_cases_are_written_leaves_nothing_and_the_next_start_loads_all(
        database_url, tmp_path, where):
    """The layers are written, then the cases (and their events) fail to insert: nothing
    is left (no layers, no cases), and a second ensure_initialised does the first run."""
    h = _hemei(tmp_path, database_url)
    try:
        boom = _fail_on(h.store.engine, where)
        with pytest.raises(Exception, match="injected failure"):
            h.ensure_initialised()
        sa.event.remove(h.store.engine, "before_cursor_execute", boom)
        assert _counts(database_url) == EMPTY
        assert not h.has_layers()

        assert h.ensure_initialised() is True  # the whole first run, again
        assert _counts(database_url) == _expected(_demo_records())
        assert h.ensure_initialised() is False  # and only once
    finally:
        h.store.dispose()


def test_a_demo_case_that_cannot_be_loaded_leaves_no_layers(database_url, tmp_path):
    """A demo case the first run cannot load (an unknown category) stops it before the
    layers are saved; with the file put right, the next start loads both."""
    records = _demo_records()[:50]
    bad = [*records[:30], {**records[30], "category": "no_such_category"}, *records[31:]]
    demo = _write_demo(tmp_path / "demo.csv", bad)
    h = _hemei(tmp_path, database_url, demo)
    try:
        with pytest.raises(Exception, match="no_such_category"):
            h.ensure_initialised()
        assert _counts(database_url) == EMPTY

        _write_demo(demo, records)
        assert h.ensure_initialised() is True
        assert _counts(database_url) == _expected(records)
    finally:
        h.store.dispose()


# -- (2) the process killed part way ---------------------------------------------------
_CHILD = """
import sys, time
import sqlalchemy as sa
from gis.service import Hemei
from gis.settings import read_settings

instance, url, demo, marker, where = sys.argv[1:6]
h = Hemei(read_settings(env={}, INSTANCE=instance, DATABASE_URL=url, DEMO_CASES=demo))

def hold(conn, cursor, statement, parameters, context, executemany):
    # Inside the first run's transaction: say so, and wait there to be killed.
    if statement.lstrip().upper().startswith(where):
        with open(marker, "w") as fh:
            fh.write("inside")
        time.sleep(600)

sa.event.listen(h.store.engine, "before_cursor_execute", hold)
h.ensure_initialised()
print("finished without being killed")
"""


@pytest.mark.parametrize("where", ["INSERT INTO CASES", "INSERT INTO CASE_EVENTS"])
def test_a_process_killed_in_the_first_run_leaves_nothing_and_a_restart_loads_all(
        database_url, tmp_path, where):
    """A process killed with SIGKILL while it writes the demo cases (the layers already
    written in the same transaction) leaves nothing or everything (here, inside the
    transaction: nothing), and the next start does the whole first run."""
    records = _demo_records() * 3  # a larger first run than the demo's
    demo = _write_demo(tmp_path / "demo.csv", records)
    marker = tmp_path / "inside"
    instance = tmp_path / "instance"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(instance), database_url, str(demo), str(marker),
         where], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if child.poll() is not None:
                out, err = child.communicate()
                pytest.fail(f"the first run ended before it was killed "
                            f"({child.returncode}): {out.decode()} {err.decode()}")
            assert time.monotonic() < deadline, "the first run never reached the cases"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(60)
        child.stdout.close()
        child.stderr.close()

    got = _counts(database_url)
    assert got in (EMPTY, _expected(records))
    assert got == EMPTY  # killed inside the transaction: none of it committed

    h = _hemei(tmp_path, database_url, demo)
    try:
        assert h.ensure_initialised() is True  # the restart does the first run
        assert _counts(database_url) == _expected(records)
    finally:
        h.store.dispose()


# -- (3) the usual first run -----------------------------------------------------------
def test_the_first_run_loads_the_layers_and_the_configured_demo_cases_in_one_commit(
        database_url, tmp_path):
    """The normal first run still loads every demo layer and as many demo cases as the
    configured file holds, with their histories, and commits once: the data version
    moves by one, and one transaction that wrote anything commits."""
    records = _demo_records()[:123]
    demo = _write_demo(tmp_path / "demo.csv", records)
    h = _hemei(tmp_path, database_url, demo)
    try:
        before = h.store.data_version()
        wrote: set[int] = set()
        commits: list[int] = []

        def on_execute(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                wrote.add(id(conn))

        def on_commit(conn):
            if id(conn) in wrote:
                commits.append(id(conn))
                wrote.discard(id(conn))

        sa.event.listen(h.store.engine, "before_cursor_execute", on_execute)
        sa.event.listen(h.store.engine, "commit", on_commit)
        try:
            assert h.ensure_initialised() is True
        finally:
            sa.event.remove(h.store.engine, "before_cursor_execute", on_execute)
            sa.event.remove(h.store.engine, "commit", on_commit)

        assert _counts(database_url) == _expected(records)
        assert len(commits) == 1, f"{len(commits)} write transactions committed"
        assert h.store.data_version() == before + 1
        # The cases were located on the new layers: every one in a grid of the street.
        listed, total = h.store.list_cases(limit=500)
        assert total == len(records)
        assert all(c.grid_code and c.street_code for c in listed)
        assert h.ensure_initialised() is False
    finally:
        h.store.dispose()
