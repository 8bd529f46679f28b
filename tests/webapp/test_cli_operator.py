"""Operators' findings on the ``hemei`` command:

- ``hemei db upgrade --sql > upgrade.sql`` on an up-to-date database wrote the notice
  ``already up to date (0003)`` into the file, which then was not SQL: the notice goes to
  stderr, stdout stays a script (a comment);
- a database that cannot be reached said "check HEMEI_DATABASE_URL" when the URL came
  from the instance config file: the line names where the URL came from;
- ``hemei serve --production`` on a fresh database loaded the demo street's 400 invented
  cases into what was meant to be a real database: in production no demo cases unless
  HEMEI_DEMO_CASES is set explicitly, the boundary layers still (with one line saying
  whose they are and how to import one's own); ``hemei serve`` (the quickstart) keeps
  the demo cases.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner

from gis import schema
from tests.conftest import DEMO_CASES, PG_URL_ENV, REPO
from tests.served import free_port, production_server

HEMEI = [sys.executable, "-m", "webapp.cli"]


def _env(instance: Path, **env) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("HEMEI_")}
    e.update({"HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8", **env})
    return e


def run(args, instance: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(HEMEI + list(args), env=_env(instance, **env), cwd=REPO,
                          capture_output=True, text=True, timeout=180)



def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# -- hemei db upgrade --sql on an up-to-date database ------------------------------------
def test_upgrade_sql_of_an_up_to_date_sqlite_database_is_still_sql(tmp_path):
    inst = tmp_path / "inst"
    assert run(["init"], inst, HEMEI_DEMO_CASES="").returncode == 0
    r = run(["db", "upgrade", "--sql"], inst)
    assert r.returncode == 0, r.stderr
    assert "already up to date" not in r.stdout
    assert f"already up to date ({schema.head()})" in r.stderr
    assert all(line.startswith("--") for line in r.stdout.splitlines() if line.strip())
    # `sqlite3 -bail hemei.sqlite3 < upgrade.sql` runs it: nothing to do, no error.
    with sqlite3.connect(inst / "hemei.sqlite3") as conn:
        conn.executescript(r.stdout)
    # Without --sql the notice is the command's answer, as before.
    plain = run(["db", "upgrade"], inst)
    assert plain.returncode == 0 and "already up to date" in plain.stdout


def test_upgrade_sql_of_an_up_to_date_postgis_database_is_still_sql(tmp_path):
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set")
    import shutil

    from gis import pg
    from gis.storage import open_store

    db = sa.make_url(url).set(database=f"hemei_cli_op_{os.getpid()}")
    dst = db.render_as_string(hide_password=False)
    pg.create_database(dst)
    try:
        open_store(dst).dispose()
        r = run(["db", "upgrade", "--sql"], tmp_path / "inst", HEMEI_DATABASE_URL=dst)
        assert r.returncode == 0, r.stderr
        assert f"already up to date ({schema.head()})" in r.stderr
        assert all(line.startswith("--") for line in r.stdout.splitlines() if line.strip())
        if shutil.which("psql"):
            libpq = db.set(drivername="postgresql", password=None)
            ran = subprocess.run(
                ["psql", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-f", "-", "--dbname",
                 libpq.render_as_string(hide_password=False)],
                input=r.stdout, capture_output=True, text=True, timeout=60,
                env={**os.environ, "PGPASSWORD": str(db.password or "")})
            assert ran.returncode == 0, ran.stderr
    finally:
        pg.drop_database(dst)


# -- a database that cannot be reached: where its URL came from --------------------------
def _unreachable() -> str:
    return f"postgresql+psycopg://hemei:wrong-pw-4711@127.0.0.1:{free_port()}/hemei"


@pytest.mark.parametrize("command", [["user", "list"], ["db", "current"]])
def test_a_url_from_the_config_file_is_named_as_such(tmp_path, command):
    inst = tmp_path / "inst"
    inst.mkdir()
    config = inst / "hemei.toml"
    config.write_text(f'database_url = "{_unreachable()}"\n', encoding="utf-8")
    line = _one_error_line(run(command, inst))
    assert "cannot connect to the database at postgresql" in line
    assert f"check database_url in {config}" in line
    assert "HEMEI_DATABASE_URL" not in line  # it is not set: the operator would look there
    assert "wrong-pw-4711" not in line


def test_a_url_from_the_environment_is_named_as_such(tmp_path):
    inst = tmp_path / "inst"
    inst.mkdir()
    # The environment wins over the file, and the message says which one is in force.
    (inst / "hemei.toml").write_text('database_url = "sqlite:////nonexistent/x.db"\n',
                                     encoding="utf-8")
    line = _one_error_line(run(["user", "list"], inst, HEMEI_DATABASE_URL=_unreachable()))
    assert "check HEMEI_DATABASE_URL:" in line and "hemei.toml" not in line


def test_a_sqlite_url_from_a_config_file_named_by_hemei_config(tmp_path):
    inst = tmp_path / "inst"
    (inst / "db").mkdir(parents=True)  # a folder where the database file should be
    config = tmp_path / "etc" / "hemei.toml"
    config.parent.mkdir()
    config.write_text(f'database_url = "sqlite:///{inst / "db"}"\n', encoding="utf-8")
    line = _one_error_line(run(["user", "list"], inst, HEMEI_CONFIG=str(config)))
    assert "unable to open database file" in line
    assert f"database_url in {config}" in line and "HEMEI_DATABASE_URL" not in line


def test_url_source_names_each_origin(tmp_path):
    from webapp.cli import _url_source

    inst = tmp_path / "inst"
    inst.mkdir()
    assert _url_source({"HEMEI_INSTANCE": str(inst)}).startswith("HEMEI_INSTANCE")
    env = {"HEMEI_INSTANCE": str(inst), "HEMEI_DATABASE_URL": f"sqlite:///{inst}/a.db"}
    assert _url_source(env) == "HEMEI_DATABASE_URL"
    (inst / "hemei.toml").write_text(f'database_url = "sqlite:///{inst}/b.db"\n',
                                     encoding="utf-8")
    assert _url_source({"HEMEI_INSTANCE": str(inst)}) == \
        f"database_url in {inst / 'hemei.toml'}"
    assert _url_source(env) == "HEMEI_DATABASE_URL"


# -- hemei serve --production on a fresh database ----------------------------------------
def test_production_loads_no_demo_cases_unless_they_are_set(tmp_path):
    from webapp.cli import _serve_overrides

    inst = tmp_path / "inst"
    inst.mkdir()
    base = {"HEMEI_INSTANCE": str(inst)}
    assert _serve_overrides(True, base) == {"DEMO_CASES": ""}
    assert _serve_overrides(False, base) == {}  # the quickstart keeps its demo cases
    # Set explicitly, in the environment (a file, or empty: none) or the config file.
    assert _serve_overrides(True, {**base, "HEMEI_DEMO_CASES": str(DEMO_CASES)}) == {}
    assert _serve_overrides(True, {**base, "HEMEI_DEMO_CASES": ""}) == {}
    (inst / "hemei.toml").write_text(f'demo_cases = "{DEMO_CASES}"\n', encoding="utf-8")
    assert _serve_overrides(True, base) == {}


def _cases(inst: Path) -> int:
    with sqlite3.connect(inst / "hemei.sqlite3") as conn:
        return conn.execute("SELECT count(*) FROM cases").fetchone()[0]


def _layers(inst: Path) -> int:
    with sqlite3.connect(inst / "hemei.sqlite3") as conn:
        return conn.execute("SELECT count(*) FROM layer_versions WHERE active").fetchone()[0]


def _invoke_serve(monkeypatch, inst: Path, *args: str, **env):
    """``hemei serve …`` in-process, everything up to starting the server."""
    import flask

    import webapp.cli

    started = []
    monkeypatch.setattr(webapp.cli, "_serve_gunicorn", lambda app, *a: started.append(app))
    monkeypatch.setattr(flask.Flask, "run", lambda self, **kw: started.append(self))
    # HEMEI_ACCESS_LOG too: --production sets it, and the runner puts back only the
    # variables it was given (the access log would stay on for the tests after this).
    environ = {k: None for k in os.environ if k.startswith("HEMEI_")}
    environ.update({"HEMEI_ACCESS_LOG": None, "HEMEI_INSTANCE": str(inst), **env})
    result = CliRunner().invoke(webapp.cli.main, ["serve", *args], env=environ)
    assert result.exit_code == 0, (result.output, result.exception)
    assert len(started) == 1
    started[0].extensions["hemei"].store.dispose()
    return result


def test_serve_production_starts_with_the_layers_and_no_demo_cases(tmp_path, monkeypatch):
    inst = tmp_path / "inst"
    r = _invoke_serve(monkeypatch, inst, "--production")
    assert _cases(inst) == 0 and _layers(inst) == 4
    note = [line for line in r.stderr.splitlines() if line.startswith("first run")]
    assert len(note) == 1, r.stderr
    assert "demo street" in note[0] and "hemei import-shapes" in note[0]
    assert "no demo cases" in note[0]
    again = _invoke_serve(monkeypatch, inst, "--production")  # a later start: no note
    assert "first run" not in again.stderr and _cases(inst) == 0


def test_serve_production_loads_demo_cases_set_explicitly(tmp_path, monkeypatch):
    inst = tmp_path / "inst"
    r = _invoke_serve(monkeypatch, inst, "--production", HEMEI_DEMO_CASES=str(DEMO_CASES))
    assert _cases(inst) == 400
    assert "first run" in r.stderr and str(DEMO_CASES) in r.stderr


def test_serve_for_development_keeps_the_demo_cases(tmp_path, monkeypatch):
    inst = tmp_path / "inst"
    _invoke_serve(monkeypatch, inst)
    assert _cases(inst) == 400 and _layers(inst) == 4


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs a Unix")
def test_serve_production_on_a_fresh_instance_serves_no_cases(tmp_path):
    inst = tmp_path / "fresh"
    env = _env(inst, HEMEI_TILES="none", PYTHONUNBUFFERED="1")
    with production_server(env, tmp_path / "server.log", timeout=120) as served:
        issues = requests.get(f"{served.base}/api/v1/issues", timeout=10)
        assert issues.status_code == 200, issues.text
        assert issues.json()["numberMatched"] == 0
        assert requests.get(f"{served.base}/readyz", timeout=10).status_code == 200
    output = served.output
    assert served.rc == 0, output
    note = [line for line in output.splitlines() if line.startswith("first run")]
    assert len(note) == 1 and "hemei import-shapes" in note[0], output
