"""The first run's data (the demo boundary layers and cases) is loaded once, however many
processes start together on an empty database: two servers, the gunicorn workers of two
``hemei serve --production``, two ``hemei init``. Each used to find no layers and load
them all (800 cases, 8 layer versions, 152 boundaries from two); now the loading runs
under the store's first-run lock and the look for layers is made again once it is held.

Real processes (spawned: each its own interpreter, store, connections and lock-file
descriptor), released together by a barrier so that all of them look for the layers at
the same moment.
"""

from __future__ import annotations

import csv
import multiprocessing as mp

import pytest
import sqlalchemy as sa

from gis.storage import boundaries, cases, layer_versions, open_store
from tests.conftest import DEMO_CASES, DEMO_GPKG

pytestmark = pytest.mark.backends("sqlite", "postgis")

PROCESSES = 4


def _start(instance: str, database_url: str, barrier, results) -> None:
    """One process starting the service: open the store (the schema check), wait for the
    others, then the first-run initialisation. Puts (True/False, None) or (None, error)."""
    try:
        from gis.service import Hemei
        from gis.settings import read_settings

        hemei = Hemei(read_settings(env={}, INSTANCE=instance, DATABASE_URL=database_url))
        try:
            barrier.wait(timeout=120)
            results.put((hemei.ensure_initialised(), None))
        finally:
            hemei.store.dispose()
    except BaseException as err:  # noqa: BLE001 - the parent reports it
        barrier.abort()
        results.put((None, repr(err)))


def _start_together(instance: str, database_url: str, n: int) -> list[bool]:
    """Start ``n`` processes on the same database at once; what each one's
    ensure_initialised returned."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_start, args=(instance, database_url, barrier, results))
             for _ in range(n)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=300) for _ in procs]
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.terminate()
    errors = [err for _, err in got if err is not None]
    assert not errors, errors
    return [did for did, _ in got]


def _counts(database_url: str) -> dict:
    store = open_store(database_url)
    try:
        with store.engine.connect() as conn:
            versions = conn.execute(sa.select(layer_versions.c.level,
                                              layer_versions.c.active)).all()
            return {
                "versions": sorted(versions),
                "boundaries": conn.execute(sa.select(sa.func.count())
                                           .select_from(boundaries)).scalar(),
                "cases": conn.execute(sa.select(sa.func.count())
                                      .select_from(cases)).scalar(),
            }
    finally:
        store.dispose()


def test_processes_starting_together_on_an_empty_database_load_the_demo_once(
        database_url, tmp_path, backend):
    from gis.layers import read_layer_set

    did = _start_together(str(tmp_path / "instance"), database_url, PROCESSES)
    assert sorted(did) == [False] * (PROCESSES - 1) + [True]  # one loaded, the rest found

    layers = read_layer_set(str(DEMO_GPKG))
    with open(DEMO_CASES, encoding="utf-8", newline="") as fh:
        demo_cases = sum(1 for _ in csv.DictReader(fh))  # every demo point is in a grid
    got = _counts(database_url)
    assert got == {"versions": sorted((level, True) for level in layers),
                   "boundaries": sum(len(gdf) for gdf in layers.values()),
                   "cases": demo_cases}
