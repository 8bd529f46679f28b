"""The store on every backend (a real SQLite file; a real PostGIS database when
``HEMEI_TEST_PG_URL`` is set): transactions, the status flow, concurrent writers, and
what is particular to each (WAL; geometry columns, GiST indexes, locating in SQL)."""

from __future__ import annotations

import sqlite3
import threading

import geopandas as gpd
import numpy as np
import pytest
import shapely
import sqlalchemy as sa
import sqlalchemy.exc

from gis.cases import NewCase, add_working_time, check_transition, utcnow
from gis.errors import Conflict, InvalidInput, NotFound
from gis.storage import PostgisCaseStore, SqliteCaseStore, cases, open_store

pytestmark = pytest.mark.backends("sqlite", "postgis")


@pytest.fixture
def store(database_url):
    s = open_store(database_url)
    yield s
    s.dispose()


CHAIN = {"street": {"code": "451102003"}, "community": {"code": "451102003001"},
         "compound": None, "grid": {"code": "451102003001001"}}


def new_case(**kw) -> NewCase:
    base = dict(category="roof_leak", lon=111.57, lat=24.40, description="漏水", title="漏水")
    return NewCase(**{**base, **kw})


def test_the_url_picks_the_backend(store, backend):
    assert type(store) is {"sqlite": SqliteCaseStore, "postgis": PostgisCaseStore}[backend]


@pytest.mark.backends("sqlite")
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


def test_two_concurrent_transitions_one_wins(database_url):
    url = database_url
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
    s.dispose()


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
    points, total = store.case_points(bbox=(111.5705, 24.39, 111.5725, 24.41))
    assert total == 2 and sorted(round(p[1], 6) for p in points) == [111.571, 111.572]
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


def test_case_points_epoch_is_the_creation_time_truncated_to_the_second(store):
    from datetime import UTC, datetime

    for created in (datetime(2026, 5, 1, 8, 0, 0, 600_000), datetime(2026, 5, 1, 8, 0, 1)):
        store.create_case(new_case(created_at=created), CHAIN, None)
    points, _ = store.case_points()
    assert [p[5] for p in points] == [int(datetime(2026, 5, 1, 8, 0, s, tzinfo=UTC)
                                          .timestamp()) for s in (1, 0)]


def test_bbox_edges_are_inside_and_a_hair_outside_is_not(store):
    # Cases exactly on the box's edges and corners count; ones 1e-9° outside do not —
    # finer than PostGIS's single-precision index boxes, so the exact test must run too.
    box = (111.57, 24.40, 111.58, 24.41)
    on_edge = [(111.57, 24.405), (111.58, 24.405), (111.575, 24.40), (111.575, 24.41),
               (111.57, 24.40), (111.58, 24.41)]
    outside = [(111.57 - 1e-9, 24.405), (111.58 + 1e-9, 24.405), (111.575, 24.40 - 1e-9),
               (111.575, 24.41 + 1e-9)]
    for lon, lat in on_edge + outside:
        store.create_case(new_case(lon=lon, lat=lat), CHAIN, None)
    rows, total = store.list_cases(bbox=box, limit=None)
    assert total == len(on_edge)
    assert sorted((r.lon, r.lat) for r in rows) == sorted(on_edge)
    assert store.case_points(bbox=box)[1] == len(on_edge)


# -- PostGIS only -----------------------------------------------------------------------


def _sql(store, sql: str, **params):
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).fetchall()


@pytest.mark.backends("postgis")
def test_postgis_geometry_columns_gist_indexes_and_triggers(store):
    store.save_layers({"grid": _layer(["A"], [(111.5, 24.3, 111.6, 24.5)])}, "v1")
    c = store.create_case(new_case(lon=111.571, lat=24.401), CHAIN, None)
    cols = dict((r[0], r[1:]) for r in _sql(store, """
        SELECT f_table_name || '.' || f_geometry_column, type, srid FROM geometry_columns
        WHERE f_table_name IN ('cases', 'boundaries')"""))
    assert cols == {"cases.geom": ("POINT", 4326), "boundaries.shape": ("GEOMETRY", 4326)}
    indexes = {r[0]: r[1] for r in _sql(store, """
        SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('cases', 'boundaries')""")}
    assert "USING gist (geom)" in indexes["ix_cases_geom"]
    assert "USING gist (shape)" in indexes["ix_boundaries_shape"]
    [(x, y, srid)] = _sql(store, "SELECT ST_X(geom), ST_Y(geom), ST_SRID(geom) FROM cases "
                                 "WHERE id = :id", id=c.id)
    assert (x, y, srid) == (111.571, 24.401, 4326)
    # Any writer keeps the point in step with lon/lat, not only this code.
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cases SET lon = 111.575 WHERE id = :id"), {"id": c.id})
    assert _sql(store, "SELECT ST_X(geom) FROM cases WHERE id = :id", id=c.id) == [(111.575,)]
    [(area, srid)] = _sql(store, "SELECT ST_Area(shape), ST_SRID(shape) FROM boundaries")
    assert area == pytest.approx(0.1 * 0.2) and srid == 4326


@pytest.mark.backends("postgis")
def test_postgis_bbox_filter_goes_through_the_geometry_index(store):
    sql = str(store.bbox_condition(111.5, 24.3, 111.6, 24.5).compile(store.engine))
    assert "cases.geom && ST_MakeEnvelope(" in sql
    # With enough rows the planner finds the cases in a small box through the GiST index.
    with store.engine.begin() as conn:
        conn.execute(sa.text("""
            INSERT INTO cases (category, title, description, lon, lat, status, source,
                               created_at, updated_at, row_version, published, rework_count,
                               extension_count)
            SELECT 'roof_leak', 't', 'd', 111.5 + (i * 0.6180339887 % 1) * 0.1,
                   24.3 + (i * 0.7548776662 % 1) * 0.1, 'reported', 'test', now(), now(),
                   1, false, 0, 0
            FROM generate_series(1, 20000) AS i"""))
        conn.execute(sa.text("ANALYZE cases"))
        box = (111.55, 24.35, 111.551, 24.351)
        q = sa.select(sa.func.count()).select_from(cases).where(store.bbox_condition(*box))
        plan = "\n".join(r[0] for r in conn.execute(sa.text(
            "EXPLAIN " + str(q.compile(store.engine, compile_kwargs={"literal_binds": True})))))
        inside = conn.execute(sa.text(
            "SELECT count(*) FROM cases WHERE lon BETWEEN :a AND :c AND lat BETWEEN :b AND :d"),
            dict(zip("abcd", box, strict=True))).scalar()
    assert "ix_cases_geom" in plan, plan
    assert inside > 0 and store.list_cases(bbox=box)[1] == inside


@pytest.mark.backends("postgis")
def test_locate_in_db_agrees_with_the_locator_edges_included(hemei):
    loc, store = hemei.locator, hemei.store
    grids = hemei.layers["grid"]
    rng = np.random.default_rng(3)
    x0, y0, x1, y1 = grids.total_bounds
    pad = 0.002
    points = list(zip(rng.uniform(x0 - pad, x1 + pad, 150), rng.uniform(y0 - pad, y1 + pad, 150),
                      strict=True))
    # Vertices shared by several grids and compounds: the edge rule decides there.
    for layer in ("grid", "compound"):
        coords = shapely.get_coordinates(hemei.layers[layer].boundary.values)
        points += [tuple(p) for p in coords[rng.choice(len(coords), 60, replace=False)]]
    outside = 0
    for lon, lat in points:
        want = loc.locate(lon, lat)
        assert store.locate_in_db(lon, lat) == want, (lon, lat)
        outside += want is None
    assert 0 < outside < len(points)  # both outcomes were exercised


@pytest.mark.backends("postgis")
def test_open_store_on_a_bare_database_adds_postgis_once_even_when_two_start_at_once(
        backend, pg_databases):
    url = pg_databases.new()  # from template1: no PostGIS, no tables
    errors, barrier = [], threading.Barrier(2)

    def start():
        barrier.wait()
        try:
            open_store(url).dispose()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = open_store(url.replace("postgresql+psycopg://", "postgresql://"))  # default driver
    try:
        assert s.engine.url.drivername == "postgresql+psycopg"
        assert _sql(s, "SELECT extname FROM pg_extension WHERE extname = 'postgis'")
        from gis import schema

        assert _sql(s, "SELECT version_num FROM alembic_version") == [(schema.head(),)]
        assert s.list_cases() == ([], 0)
    finally:
        s.dispose()  # the database is dropped at the end of the session


def test_bulk_import_keeps_each_history_with_its_case(store):
    """import_cases batches the cases and the events; the ids must still pair them up,
    and a column some rows leave out gets its default, not NULL."""
    from datetime import datetime

    def row(i, **kw):
        t = datetime(2026, 10, 1, 8, 0)
        return {"category": "pothole", "title": f"第{i}件", "description": "d", "lon": 111.57,
                "lat": 24.40, "status": "reported", "source": "import", "created_at": t,
                "updated_at": t, **CHAIN_CODES, **kw}

    rows = [row(0), row(1, tracking_code="TRK-1", rework_count=2), row(2)]
    events = [[{"at": r["created_at"], "actor": f"导入{i}", "from_status": None,
                "to_status": "reported", "note": r["title"]} for _ in range(i + 1)]
              for i, r in enumerate(rows)]
    assert store.import_cases(rows, events) == 3
    got = sorted(store.list_cases()[0], key=lambda c: c.id)[-3:]
    assert [c.title for c in got] == ["第0件", "第1件", "第2件"]
    assert [c.rework_count for c in got] == [0, 2, 0]
    assert [c.row_version for c in got] == [1, 1, 1]
    for i, c in enumerate(got):
        hist = store.get_case(c.id).history
        assert len(hist) == i + 1 and {h["actor"] for h in hist} == {f"导入{i}"}
        assert {h["note"] for h in hist} == {c.title}
    assert store.import_cases([], []) == 0


CHAIN_CODES = {"street_code": "451102003", "community_code": "451102003001",
               "compound_code": None, "grid_code": "451102003001001"}
