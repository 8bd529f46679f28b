"""A redrawn grid layer imported under live data (both backends).

The redrawn layer is built from the demo street by construction: a strip of grid B next
to its neighbour A (same community) is handed to A. So the right answer is known: every
open case in the strip moves from B to A, in the same transaction as the layer, with the
old code kept in its history; closed cases and cases elsewhere keep their codes; and a
failure half-way through leaves the layers, the cases and the histories as they were.
"""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
import sqlalchemy as sa

from gis.storage import StaleLayers, cases

pytestmark = pytest.mark.backends("sqlite", "postgis")


def _neighbours(grids: gpd.GeoDataFrame) -> tuple[int, int]:
    """Rows of two grids of one community sharing an edge (the first such pair)."""
    for i in range(len(grids)):
        for j in range(len(grids)):
            a, b = grids.iloc[i], grids.iloc[j]
            if i != j and a.parent_code == b.parent_code:
                shared = a.geometry.boundary.intersection(b.geometry.boundary)
                if shared.length > 0.002:
                    return i, j
    raise AssertionError("no two neighbouring grids")


@pytest.fixture
def redrawn(hemei):
    """(new grid layer, code of A, code of B, the strip of B that A takes over)."""
    grids = hemei.layers["grid"].copy()
    i, j = _neighbours(grids)
    a, b = grids.geometry.iloc[i], grids.geometry.iloc[j]
    edge = a.boundary.intersection(b.boundary)
    strip = shapely.intersection(b, shapely.buffer(edge, 0.0015, cap_style="flat"))
    grids.loc[grids.index[i], "geometry"] = shapely.union(a, strip)
    grids.loc[grids.index[j], "geometry"] = shapely.difference(b, strip)
    return grids, grids["code"].iloc[i], grids["code"].iloc[j], strip


def _report(hemei, point, title="屋顶漏水"):
    return hemei.report({"category": "roof_leak", "title": title, "description": title,
                         "lon": round(point.x, 7), "lat": round(point.y, 7)}, actor="test")


def _snapshot(hemei):
    with hemei.store.engine.connect() as conn:
        codes = conn.execute(sa.select(cases.c.id, cases.c.grid_code, cases.c.compound_code,
                                       cases.c.row_version, cases.c.grid_version_id)
                             .order_by(cases.c.id)).all()
        events = conn.execute(sa.text("SELECT count(*) FROM case_events")).scalar()
    return ([tuple(r) for r in codes], events,
            [(v["id"], v["active"]) for v in hemei.store.layer_versions()],
            hemei.store.data_version())


def _points_in(strip, hemei):
    """Open cases whose point lies inside the strip, by construction (not via the app)."""
    with hemei.store.engine.connect() as conn:
        rows = conn.execute(sa.select(cases.c.id, cases.c.lon, cases.c.lat, cases.c.status)
                            ).all()
    ids = np.array([r.id for r in rows])
    pts = shapely.points([r.lon for r in rows], [r.lat for r in rows])
    inside = shapely.contains(strip, pts)
    from gis.cases import FINAL_STATUSES

    # Open or resolved: a resolved case still waits for its grid worker's check.
    is_open = np.array([r.status not in FINAL_STATUSES for r in rows])
    return set(ids[inside & is_open].tolist()), set(ids[inside & ~is_open].tolist())


def test_open_cases_follow_the_new_boundary_and_keep_the_old_code(hemei, redrawn, client):
    grids, code_a, code_b, strip = redrawn
    moving = _report(hemei, strip.representative_point(), "会搬到A的案件")
    closed = _report(hemei, shapely.Point(np.asarray(strip.centroid.coords[0]) + 1e-6))
    hemei.store.transition(closed.id, "rejected", actor="test", note="重复")
    resolved = _report(hemei, shapely.Point(np.asarray(strip.centroid.coords[0]) - 1e-6),
                       "已处置待核查")
    for step in ("filed", "dispatched", "in_progress", "resolved"):
        hemei.store.transition(resolved.id, step, actor="test", note="已修复")
    staying = _report(hemei, shapely.difference(
        grids.geometry[grids["code"] == code_b].iloc[0], strip).representative_point())
    assert moving.grid_code == code_b and staying.grid_code == code_b
    expected_moves, closed_in_strip = _points_in(strip, hemei)
    assert moving.id in expected_moves and closed.id in closed_in_strip
    assert resolved.id in expected_moves

    report = hemei.import_layers({"grid": grids}, source="redrawn.gpkg", actor="planner")
    assert report.ok, report.format_text()
    saved = report.saved
    assert set(saved.moved) == expected_moves
    assert all(old["grid_code"] == code_b and new["grid_code"] == code_a
               for old, new in saved.moved.values())
    assert saved.outside == []

    after = hemei.store.get_case(moving.id)
    assert after.grid_code == code_a
    assert after.row_version == moving.row_version + 1  # a stale write now gets a 409
    assert after.grid_version_id == saved.versions["grid"]
    last = after.history[-1]
    assert last["kind"] == "relocation" and last["actor"] == "planner"
    data = last["data"] if isinstance(last["data"], dict) else json.loads(last["data"])
    assert data["from"]["grid_code"] == code_b and data["to"]["grid_code"] == code_a
    # A resolved case waits for the new grid's worker to check it.
    assert hemei.store.get_case(resolved.id).grid_code == code_a
    # The events' data is strict JSON: no NaN for a level with no feature (no compound).
    with hemei.store.engine.connect() as conn:
        raw = conn.execute(sa.text("SELECT data FROM case_events WHERE kind = 'relocation'")
                           ).scalars().all()
    assert len(raw) == len(expected_moves)

    def refuse(constant):
        raise AssertionError(f"{constant} in a relocation event's data")

    for text in raw:
        json.loads(text, parse_constant=refuse)
    # Handled cases keep the grid they were handled in; others stay where they were.
    assert hemei.store.get_case(closed.id).grid_code == code_b
    assert hemei.store.get_case(staying.id).grid_code == code_b
    # And the API lists the moved case under its new grid.
    listed = client.get(f"/api/v1/issues?grid={code_a}&page_size=200").get_json()
    assert moving.id in {f["id"] for f in listed["features"]}
    page = client.get(f"/cases/{moving.id}").get_data(as_text=True)
    assert "边界调整，改属新网格" in page and f"{code_b} → {code_a}" in page


def test_a_failure_half_way_leaves_everything_as_it_was(hemei, redrawn, backend):
    grids, code_a, code_b, strip = redrawn
    first = _report(hemei, strip.representative_point())
    last = _report(hemei, shapely.Point(np.asarray(strip.representative_point().coords[0])
                                        + [0, 1e-6]))
    # The database refuses the last update the re-assignment makes, after the layer and
    # the first updates went in: a real failure half-way through the transaction.
    with hemei.store.engine.begin() as conn:
        if backend == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER fail_half_way BEFORE UPDATE OF grid_code ON cases "
                f"WHEN NEW.id = {last.id} BEGIN SELECT RAISE(ABORT, 'injected'); END")
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION fail_half_way() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'injected'; END $$")
            conn.exec_driver_sql(
                f"CREATE TRIGGER fail_half_way BEFORE UPDATE OF grid_code ON cases "
                f"FOR EACH ROW WHEN (NEW.id = {last.id}) EXECUTE FUNCTION fail_half_way()")
    before = _snapshot(hemei)
    with pytest.raises(sa.exc.DatabaseError, match="injected"):
        hemei.import_layers({"grid": grids}, source="redrawn.gpkg")
    assert _snapshot(hemei) == before
    assert hemei.store.get_case(first.id).grid_code == code_b
    assert hemei.locator.locate(*strip.representative_point().coords[0])["grid"]["code"] \
        == code_b


def test_a_report_located_just_before_an_import_lands_in_the_new_grid(hemei, redrawn,
                                                                      monkeypatch):
    grids, code_a, code_b, strip = redrawn
    stale = hemei._located()  # the locator a request held when the import committed
    hemei.import_layers({"grid": grids}, source="redrawn.gpkg")
    calls = []
    real = type(hemei)._located

    def located_once_stale(self, **kw):
        calls.append(1)
        return stale if len(calls) == 1 else real(self, **kw)

    monkeypatch.setattr(type(hemei), "_located", located_once_stale)
    case = _report(hemei, strip.representative_point())
    assert len(calls) == 2  # refused once by the store, located again
    assert case.grid_code == code_a


def test_the_store_refuses_a_case_located_on_an_inactive_layer(hemei, redrawn):
    from gis.cases import parse_new_case

    grids, code_a, code_b, strip = redrawn
    locator, old_version = hemei._located()
    hemei.import_layers({"grid": grids}, source="redrawn.gpkg")
    p = strip.representative_point()
    new = parse_new_case({"category": "roof_leak", "title": "t", "description": "d",
                          "lon": p.x, "lat": p.y})
    n = hemei.store.list_cases()[1]
    with pytest.raises(StaleLayers):
        hemei.store.create_case(new, locator.locate(p.x, p.y), None,
                                grid_version=old_version)
    assert hemei.store.list_cases()[1] == n


@pytest.mark.backends("sqlite")
def test_import_shapes_says_which_open_cases_moved(hemei, redrawn, instance, tmp_path):
    import os
    import subprocess
    import sys

    grids, code_a, code_b, strip = redrawn
    case = _report(hemei, strip.representative_point())
    path = tmp_path / "redrawn.gpkg"
    grids.to_file(path, layer="grid", engine="pyogrio")
    env = {**os.environ, "HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8"}
    env.pop("HEMEI_DATABASE_URL", None)
    r = subprocess.run([sys.executable, "-m", "webapp.cli", "import-shapes", str(path),
                        "--layer", "grid"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "re-assigned to the new boundaries" in r.stdout
    assert f"case {case.id}: grid {code_b} → {code_a}" in r.stdout
    assert hemei.store.get_case(case.id).grid_code == code_a


def test_force_does_not_save_duplicate_codes_or_an_empty_layer(hemei, redrawn):
    """``force`` overrides geometric checks only: codes are keys everywhere (a forced
    duplicate made the overview and coverage 500), and an empty layer drops every case's
    code. The service holds this, not only the CLI."""
    grids, code_a, code_b, _ = redrawn
    dup = grids.copy()
    dup.loc[dup["code"] == code_b, "code"] = code_a
    before = _snapshot(hemei)
    report = hemei.import_layers({"grid": dup}, source="dup.gpkg", force=True)
    assert not report.ok and report.saved is None
    assert _snapshot(hemei) == before
    report = hemei.import_layers({"grid": grids.iloc[0:0]}, source="empty.gpkg", force=True)
    assert not report.ok and report.saved is None
    assert _snapshot(hemei) == before
