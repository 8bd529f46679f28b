"""The ``hemei`` command, run as a user runs it: a subprocess on a real instance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import shapely

from gis.layers import read_layer_set
from tests.conftest import DEMO_GPKG, INSIDE

HEMEI = [sys.executable, "-m", "webapp.cli"]


def run(args, instance: Path, check=False):
    env = {**os.environ, "HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8"}
    env.pop("HEMEI_DATABASE_URL", None)
    r = subprocess.run(HEMEI + list(args), env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_console_script_is_installed():
    assert shutil.which("hemei") or (Path(sys.executable).parent / "hemei").exists()


def test_locate_prints_the_chain_as_json(instance):
    r = run(["locate", str(INSIDE[0]), str(INSIDE[1])], instance, check=True)
    body = json.loads(r.stdout)
    assert body["inside"] is True
    assert body["chain"]["street"]["name"] == "江南街道"
    assert len(body["chain"]["grid"]["code"]) == 15


def test_locate_outside_and_bad_input(instance):
    out = json.loads(run(["locate", "100", "10"], instance, check=True).stdout)
    assert out["inside"] is False and out["chain"] is None
    bad = run(["locate", "east", "24.4"], instance)
    assert bad.returncode != 0
    assert "lon must be a number" in bad.stderr and "Traceback" not in bad.stderr


def test_init_is_idempotent(tmp_path):
    inst = tmp_path / "fresh"
    first = run(["init"], inst, check=True)
    assert first.stdout.startswith("initialised")
    assert run(["init"], inst, check=True).stdout.startswith("already initialised")
    assert (inst / "hemei.sqlite3").exists()


@pytest.fixture(scope="module")
def demo_grid():
    return read_layer_set(str(DEMO_GPKG))["grid"]


def test_import_a_gbk_shapefile_in_gauss_kruger_with_field_mapping(instance, tmp_path,
                                                                  demo_grid):
    g = demo_grid.rename(columns={"code": "GRID_ID", "name": "WGMC", "parent_code": "SJBM",
                                  "households": "HS"})
    g["GRID_ID"] = g["GRID_ID"].astype(str)
    path = tmp_path / "grids.shp"
    g.to_crs("EPSG:4546").to_file(path, encoding="GBK", engine="pyogrio")
    (tmp_path / "grids.cpg").unlink(missing_ok=True)
    prj = tmp_path / "grids.prj"
    prj.unlink()  # no CRS in the file: the user names it
    refused = run(["import-shapes", str(path), "--layer", "grid"], instance)
    assert refused.returncode != 0 and "--crs" in refused.stderr
    r = run(["import-shapes", str(path), "--layer", "grid", "--crs", "EPSG:4546",
             "--field", "code=GRID_ID"], instance)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"imported {len(demo_grid)} grid features" in r.stdout
    # The new version is active and its Chinese names came through the GBK table.
    p = demo_grid.geometry.iloc[0].representative_point()
    body = json.loads(run(["locate", str(p.x), str(p.y)], instance, check=True).stdout)
    assert body["chain"]["grid"]["name"] == demo_grid["name"].iloc[0]


def test_import_with_overlapping_grids_is_refused_and_changes_nothing(instance, tmp_path,
                                                                     demo_grid):
    g = demo_grid.copy()
    g.loc[0, "geometry"] = shapely.buffer(g.geometry.iloc[0], 0.002)  # spills into neighbours
    path = tmp_path / "overlap.geojson"
    g.to_file(path, driver="GeoJSON", engine="pyogrio")
    p = demo_grid.geometry.iloc[1].representative_point()
    before = run(["locate", str(p.x), str(p.y)], instance, check=True).stdout
    r = run(["import-shapes", str(path), "--layer", "grid"], instance)
    assert r.returncode == 1
    assert "overlap" in r.stdout and demo_grid["code"].iloc[0] in r.stdout
    assert "active layers are unchanged" in r.stderr
    assert run(["locate", str(p.x), str(p.y)], instance, check=True).stdout == before
    forced = run(["import-shapes", str(path), "--layer", "grid", "--force"], instance)
    assert forced.returncode == 0


def test_import_a_broken_file_is_a_clean_error(instance, tmp_path):
    bad = tmp_path / "broken.shp"
    bad.write_bytes(b"this is not a shapefile")
    r = run(["import-shapes", str(bad), "--layer", "grid"], instance)
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_bad_field_option(instance, tmp_path):
    f = tmp_path / "x.geojson"
    f.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    r = run(["import-shapes", str(f), "--layer", "grid", "--field", "code"], instance)
    assert r.returncode == 2 and "NAME=COLUMN" in r.stderr


# -- what import-shapes refuses even with --force -------------------------------------------


def active_versions(instance: Path) -> list[tuple]:
    import sqlite3

    con = sqlite3.connect(instance / "hemei.sqlite3")
    try:
        return con.execute("SELECT id, level, features FROM layer_versions WHERE active "
                           "ORDER BY id").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def demo_layers():
    return read_layer_set(str(DEMO_GPKG))


@pytest.mark.parametrize("level", ["street", "community", "compound", "grid"])
def test_a_layer_with_no_features_is_refused_even_with_force(instance, tmp_path, demo_layers,
                                                            level):
    path = tmp_path / f"empty_{level}.gpkg"
    demo_layers[level].iloc[0:0].to_file(path, layer=level, engine="pyogrio")
    before = active_versions(instance)
    r = run(["import-shapes", str(path), "--layer", level, "--force"], instance)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the file has no features" in r.stderr and "Traceback" not in r.stderr
    assert "OK" not in r.stdout
    assert active_versions(instance) == before


def test_an_empty_compound_layer_leaves_the_compound_pages_working(instance, tmp_path,
                                                                  demo_layers):
    from webapp import create_app

    code = demo_layers["compound"]["code"].iloc[0]
    path = tmp_path / "empty_compound.gpkg"
    demo_layers["compound"].iloc[0:0].to_file(path, layer="compound", engine="pyogrio")
    r = run(["import-shapes", str(path), "--layer", "compound", "--force"], instance)
    assert r.returncode == 2
    app = create_app({"TESTING": True, "INSTANCE": str(instance), "TILES": "none"})
    try:
        c = app.test_client()
        assert c.get(f"/compounds/{code}").status_code == 200
        assert c.get(f"/r/{code}").status_code == 200
        with_compound = app.extensions["hemei"].store.list_cases(compound=code, limit=1)[1]
        assert with_compound > 0  # open cases kept their compound code
    finally:
        app.extensions["hemei"].store.dispose()


@pytest.mark.parametrize("problem", ["duplicate_code", "missing_code"])
def test_duplicate_or_missing_codes_are_refused_even_with_force(instance, tmp_path,
                                                               demo_grid, problem):
    from webapp import create_app

    g = demo_grid.copy()
    g.loc[1, "code"] = g.loc[0, "code"] if problem == "duplicate_code" else None
    path = tmp_path / f"{problem}.gpkg"
    g.to_file(path, layer="grid", engine="pyogrio")
    before = active_versions(instance)
    r = run(["import-shapes", str(path), "--layer", "grid", "--force"], instance)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"[{problem}]" in r.stdout
    assert f"--force cannot override {problem}" in r.stderr
    assert "active layers are unchanged" in r.stderr and "Traceback" not in r.stderr
    assert "imported" not in r.stdout
    assert active_versions(instance) == before
    app = create_app({"TESTING": True, "INSTANCE": str(instance), "TILES": "none"})
    try:
        c = app.test_client()
        for url in ("/", "/api/v1/coverage", "/api/v1/hotspots"):
            assert c.get(url).status_code == 200, url
    finally:
        app.extensions["hemei"].store.dispose()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # .dbf cuts
def test_a_zip_bomb_is_refused_before_it_is_unpacked(instance, tmp_path, demo_grid):
    import zipfile

    (tmp_path / "src").mkdir()
    shp = tmp_path / "src" / "grid.shp"
    demo_grid.to_file(shp, engine="pyogrio", encoding="UTF-8")
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for part in shp.parent.glob("grid.*"):
            if part.suffix != ".dbf":
                archive.write(part, part.name)
        with archive.open("grid.dbf", "w", force_zip64=True) as out:
            out.write(shp.with_suffix(".dbf").read_bytes())
            for _ in range(64):
                out.write(b"\0" * (1 << 20))  # 64 MB of padding, ~64 KB packed
    assert path.stat().st_size < 1 << 20
    before = active_versions(instance)
    r = run(["import-shapes", str(path), "--layer", "grid"], instance)
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "zip bomb" in r.stderr
    assert "Traceback" not in r.stderr
    assert active_versions(instance) == before


def test_import_names_the_accounts_left_on_grids_that_no_longer_exist(instance, tmp_path,
                                                                     demo_grid, people):
    from tests.webapp.test_accounts import logged_in
    from webapp import create_app

    dropped = people["grids"]["gw"][0]
    g = demo_grid.copy()
    g.loc[g["code"] == dropped, "code"] = "451102003001099"  # re-coded: the old code is gone
    path = tmp_path / "recoded.gpkg"
    g.to_file(path, layer="grid", engine="pyogrio")
    r = run(["import-shapes", str(path), "--layer", "grid"], instance)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: gw is assigned to {dropped}, which no longer exist" in r.stderr
    assert "gw2" not in r.stderr  # their grids are all still there
    listed = run(["user", "list"], instance, check=True)
    assert f"warning: gw is assigned to {dropped}" in listed.stderr
    app = create_app({"TESTING": True, "INSTANCE": str(instance), "TILES": "none"})
    try:
        client, _ = logged_in(app, "admin")
        html = client.get("/admin/").get_data(as_text=True)
        assert 'id="stale-assignments"' in html
        assert f'<li data-username="gw">gw: {dropped}</li>' in html
        assert 'data-username="gw2">gw2' not in html
    finally:
        app.extensions["hemei"].store.dispose()
