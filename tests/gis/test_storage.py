"""The SQLite store: real files, transactions, the status flow, concurrent writers."""

from __future__ import annotations

import sqlite3
import threading

import geopandas as gpd
import pytest
import shapely
import sqlalchemy.exc

from gis.cases import NewCase, add_working_time, check_transition, utcnow
from gis.errors import Conflict, InvalidInput, NotFound
from gis.storage import open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path / 'db' / 'hemei.sqlite3'}")
    yield s
    s.dispose()


CHAIN = {"street": {"code": "451102003"}, "community": {"code": "451102003001"},
         "compound": None, "grid": {"code": "451102003001001"}}


def new_case(**kw) -> NewCase:
    base = dict(category="roof_leak", lon=111.57, lat=24.40, description="漏水", title="漏水")
    return NewCase(**{**base, **kw})


def test_sqlite_file_uses_wal(store, tmp_path):
    store.create_case(new_case(), CHAIN, None)
    con = sqlite3.connect(tmp_path / "db" / "hemei.sqlite3")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*) FROM cases").fetchone()[0] == 1


def test_case_round_trip_keeps_the_chain_and_history(store):
    c = store.create_case(new_case(description="顶楼漏水\n第二行"), CHAIN, None, actor="tester")
    got = store.get_case(c.id)
    assert got.grid_code == "451102003001001" and got.compound_code is None
    assert got.description == "顶楼漏水\n第二行"
    [ev] = got.history
    assert {k: ev[k] for k in ("at", "actor", "from", "to", "note", "kind")} == {
        "at": got.created_at, "actor": "tester", "from": None, "to": "reported", "note": "",
        "kind": "transition"}


def test_full_minimal_flow_and_timestamps(store):
    c = store.create_case(new_case(), CHAIN, None)
    for to in ("filed", "dispatched", "in_progress", "resolved", "reopened", "in_progress",
               "resolved", "closed"):
        c = store.transition(c.id, to, actor="worker", note=f"to {to}")
    assert c.status == "closed" and c.resolved_at and c.closed_at
    assert [h["to"] for h in c.history] == ["reported", "filed", "dispatched", "in_progress",
                                            "resolved", "reopened", "in_progress", "resolved",
                                            "closed"]
    assert c.row_version == 9 and c.rework_count == 1


def test_illegal_transition_is_a_conflict_listing_allowed_and_changes_nothing(store):
    c = store.create_case(new_case(), CHAIN, None)
    with pytest.raises(Conflict) as e:
        store.transition(c.id, "closed", actor="x")
    assert e.value.details["allowed"] == ["verified", "filed", "rejected"]
    assert store.get_case(c.id).status == "reported"
    assert len(store.get_case(c.id).history) == 1


def test_unknown_status_and_case(store):
    c = store.create_case(new_case(), CHAIN, None)
    with pytest.raises(InvalidInput):
        store.transition(c.id, "teleported", actor="x")
    with pytest.raises(NotFound):
        store.transition(999, "filed", actor="x")


def test_stale_version_is_refused(store):
    c = store.create_case(new_case(), CHAIN, None)
    store.transition(c.id, "filed", actor="a", expected_version=1)
    with pytest.raises(Conflict):
        store.transition(c.id, "rejected", actor="b", expected_version=1)


def test_two_concurrent_transitions_one_wins(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.sqlite3'}"
    s = open_store(url)
    c = s.create_case(new_case(), CHAIN, None)
    results = []
    barrier = threading.Barrier(2)

    def act(to):
        st = open_store(url)  # separate connections, like separate workers
        barrier.wait()
        try:
            st.transition(c.id, to, actor=to, expected_version=1)
            results.append(("ok", to))
        except Conflict:
            results.append(("conflict", to))
        finally:
            st.dispose()

    threads = [threading.Thread(target=act, args=(to,)) for to in ("filed", "rejected")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r[0] for r in results) == ["conflict", "ok"]
    final = s.get_case(c.id)
    assert len(final.history) == 2 and final.row_version == 2


def test_data_version_changes_on_every_write(store):
    v0 = store.data_version()
    c = store.create_case(new_case(), CHAIN, None)
    v1 = store.data_version()
    store.transition(c.id, "filed", actor="x")
    assert v0 < v1 < store.data_version()


def _layer(codes, boxes, names=None):
    return gpd.GeoDataFrame({"code": codes, "name": names or codes,
                             "parent_code": ["451102003001"] * len(codes),
                             "households": [10] * len(codes)},
                            geometry=[shapely.box(*b) for b in boxes], crs="EPSG:4326")


def test_saving_layers_versions_them_and_a_failed_save_leaves_the_active_ones(store):
    store.save_layers({"grid": _layer(["A", "B"], [(0, 0, 1, 1), (1, 0, 2, 1)])}, "v1")
    good = _layer(["C", "D"], [(0, 0, 1, 1), (1, 0, 2, 1)])
    bad = _layer(["X1", "X2"], [(0, 0, 1, 1), (1, 0, 2, 1)], names=["小区", None])
    # The grid layer is written first, then the compound layer hits a NOT NULL
    # violation half-way: the whole import must roll back.
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        store.save_layers({"grid": good, "compound": bad}, "v2")
    active = store.load_active_layers()["grid"]
    assert active["code"].tolist() == ["A", "B"]
    assert [v["source"] for v in store.layer_versions()] == ["v1"]


def test_list_cases_filters_and_counts(store):
    for i in range(5):
        store.create_case(new_case(lon=111.57 + i * 0.001, category="parking" if i % 2 else
                                   "roof_leak"), CHAIN, None)
    rows, total = store.list_cases(category="parking")
    assert total == 2 and all(r.category == "parking" for r in rows)
    rows, total = store.list_cases(bbox=(111.5705, 24.39, 111.5725, 24.41))
    assert total == 2
    rows, total = store.list_cases(status="open", limit=2)
    assert total == 5 and len(rows) == 2
    counts = store.grid_counts().set_index("grid_code")
    assert counts.loc["451102003001001", "open"] == 5


def test_due_dates_skip_weekends():
    from datetime import datetime

    friday = datetime(2026, 11, 27, 10, 0)
    assert add_working_time(friday, 1, "working_days") == datetime(2026, 11, 30, 10, 0)
    assert add_working_time(friday, 5, "working_days") == datetime(2026, 12, 4, 10, 0)
    assert add_working_time(friday, 48, "hours") == datetime(2026, 11, 29, 10, 0)
    assert utcnow().tzinfo is None


def test_check_transition_rules():
    assert check_transition("reported", "filed") == "filed"
    with pytest.raises(Conflict):
        check_transition("closed", "reported")
