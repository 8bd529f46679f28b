"""``hemei migrate-store --from URL --to URL``: the demo street with its cases, history,
photos metadata, layers, users and tokens moved from SQLite to PostGIS (and back), then
served from the new database; every table's count and checksum verified; a target that
holds data, an outdated source and a copy that does not verify are refused with nothing
written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from gis.backup import table_checksums
from gis.storage import open_store
from tests.conftest import INSIDE, REPO

HEMEI = [sys.executable, "-m", "webapp.cli"]


def migrate(src: str, dst: str, *extra: str):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(HEMEI + ["migrate-store", "--from", src, "--to", dst, *extra],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.fixture
def seeded(seeded_template, tmp_path) -> tuple[Path, str]:
    """A copy of the seeded SQLite instance (400 demo cases with histories, 6 users with
    tokens, 2 organisations) plus a case with a photo, and its URL."""
    inst = tmp_path / "src"
    shutil.copytree(seeded_template, inst)
    from webapp import create_app

    app = create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none"})
    try:
        from io import BytesIO

        from PIL import Image

        buf = BytesIO()
        Image.new("RGB", (40, 30), "red").save(buf, "JPEG")
        app.extensions["hemei"].report(
            {"category": "roof_leak", "title": "带照片", "description": "屋顶漏水 <b>x</b>",
             "lon": INSIDE[0], "lat": INSIDE[1]}, actor="resident", photos=[buf.getvalue()])
    finally:
        app.extensions["hemei"].store.dispose()
    return inst, f"sqlite:///{inst / 'hemei.sqlite3'}"


def test_sqlite_to_postgis_and_serve_from_it(seeded, pg_databases, people):
    inst, src = seeded
    dst = pg_databases.new()
    r = migrate(src, dst)
    assert r.returncode == 0, r.stderr
    assert "counts and checksums equal" in r.stdout
    want = table_checksums(src)
    assert want["cases"][0] == 401 and want["photos"][0] == 1 and want["users"][0] == 6
    assert table_checksums(dst) == want

    from webapp import create_app

    app = create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none",
                      "DATABASE_URL": dst})
    try:
        c = app.test_client()
        c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {people['tokens']['gw']}"
        assert c.get("/api/v1/me").get_json()["username"] == "gw"  # token digests came too
        case = c.get("/api/v1/issues/401").get_json()["properties"]
        assert case["title"] == "带照片" and len(case["history"]) == 1
        made = c.post("/api/v1/issues", json={
            "category": "roof_leak", "title": "新的", "description": "迁移后的新案件",
            "lon": INSIDE[0], "lat": INSIDE[1]})
        assert made.status_code == 201, made.get_json()
        assert made.get_json()["id"] == 402  # the id sequence moved past the copied rows
        store = app.extensions["hemei"].store
        with store.engine.connect() as conn:  # the PostGIS triggers filled the geometries
            assert conn.execute(sa.text("SELECT count(*) FROM cases WHERE geom IS NULL")
                                ).scalar() == 0
        assert store.locate_in_db(*INSIDE)["grid"]["code"] == case["grid_code"]
    finally:
        app.extensions["hemei"].store.dispose()

    # And back again, to a new SQLite file: the same data.
    back = f"sqlite:///{inst / 'back.sqlite3'}"
    r = migrate(dst, back)
    assert r.returncode == 0, r.stderr
    assert table_checksums(back) == table_checksums(dst)


def test_a_target_with_data_is_refused(seeded, tmp_path):
    inst, src = seeded
    dst = f"sqlite:///{tmp_path / 'dst.sqlite3'}"
    assert migrate(src, dst).returncode == 0
    before = table_checksums(dst)
    again = migrate(src, dst)
    assert again.returncode == 2 and "already holds data" in again.stderr
    assert "Traceback" not in again.stderr
    assert table_checksums(dst) == before
    assert migrate(src, dst, "--force").returncode == 0  # replacing is explicit
    assert table_checksums(dst) == table_checksums(src)


def test_a_copy_that_does_not_verify_writes_nothing(seeded, tmp_path):
    inst, src = seeded
    dst = f"sqlite:///{tmp_path / 'dst.sqlite3'}"
    store = open_store(dst)
    with store.engine.begin() as conn:  # a target that quietly alters what it stores
        conn.exec_driver_sql("CREATE TRIGGER mangle AFTER INSERT ON cases WHEN NEW.id = 7 "
                             "BEGIN UPDATE cases SET title = 'x' WHERE id = 7; END")
    store.dispose()
    r = migrate(src, dst)
    assert r.returncode == 2
    assert "verification failed" in r.stderr and "cases" in r.stderr
    assert table_checksums(dst)["cases"][0] == 0
    assert table_checksums(dst)["users"][0] == 0


def test_an_outdated_source_and_bad_urls_are_refused(tmp_path):
    old = tmp_path / "old.sqlite3"
    shutil.copy(REPO / "tests" / "data" / "release-0.1.sqlite3", old)
    dst = f"sqlite:///{tmp_path / 'dst.sqlite3'}"
    r = migrate(f"sqlite:///{old}", dst)
    assert r.returncode == 2 and "hemei db upgrade" in r.stderr
    for src, why in [("nonsense", "not a database URL"),
                     ("mysql://u@h/db", "not 'mysql'"),
                     (f"sqlite:///{tmp_path / 'missing.sqlite3'}", "no database at"),
                     (dst, "same database")]:
        r = migrate(src, dst)
        assert r.returncode == 2 and why in r.stderr, (src, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_mistyped_url_is_refused_without_printing_its_password(tmp_path):
    from gis.transfer import TransferError, migrate_store

    with pytest.raises(TransferError) as err:
        migrate_store("postgresql+psycopg//hemei:s3cret@db/hemei",
                      f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert "s3cret" not in err.value.message and "not a database URL" in err.value.message
