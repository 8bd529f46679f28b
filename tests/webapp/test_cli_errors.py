"""What an operator sees when the settings or the environment are wrong, run as they run
it (a subprocess): one ``error: …`` line naming the setting or what to check, exit status
2, never a traceback, never the database password (masked everywhere a URL is printed)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PG_URL_ENV, REPO

HEMEI = [sys.executable, "-m", "webapp.cli"]


def _env(instance: Path, **env) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("HEMEI_")}
    e.update({"HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8",
              "HEMEI_DEMO_CASES": "", **env})
    return e


def run(args, instance: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(HEMEI + list(args), env=_env(instance, **env), cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def assert_one_error_line(r: subprocess.CompletedProcess, *says: str) -> str:
    """``r`` failed with exit status 2 and one ``error:`` line holding every ``says``."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for text in says:
        assert text in lines[0], (text, lines[0])
    return lines[0]


# -- bad values: refused before anything runs ------------------------------------------------
@pytest.mark.parametrize("name, value", [
    ("MAX_PHOTO_MB", "abc"), ("MAX_PHOTO_MB", "-5"), ("PUBLIC_FORM_LIMIT", "x"),
    ("DATABASE_URL", "garbage"), ("AUTO_MIGRATE", "flase"), ("LOCALE", "fr"),
    ("DEMO_CASES", "/nonexist.csv"),
])
def test_a_bad_setting_stops_serve_with_one_error_line(tmp_path, name, value):
    inst = tmp_path / "inst"
    r = run(["serve"], inst, **{f"HEMEI_{name}": value})
    assert_one_error_line(r, f"HEMEI_{name}")
    assert not (inst / "hemei.sqlite3").exists()  # refused before anything was made


@pytest.mark.parametrize("command", [["init"], ["user", "list"], ["db", "upgrade"]])
def test_every_command_checks_the_settings_first(tmp_path, command):
    inst = tmp_path / "inst"
    r = run(command, inst, HEMEI_MAX_PHOTO_MB="abc", HEMEI_DEMO_CASES="/nonexist.csv")
    assert_one_error_line(r, "HEMEI_")
    assert not (inst / "hemei.sqlite3").exists()


def test_an_empty_demo_cases_setting_still_means_no_demo_cases(tmp_path):
    inst = tmp_path / "inst"
    r = run(["init"], inst, HEMEI_DEMO_CASES="")
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(inst / "hemei.sqlite3") as con:
        assert con.execute("SELECT count(*) FROM cases").fetchone()[0] == 0


def test_the_app_factory_refuses_bad_values_too(tmp_path):
    from gis.settings import SettingsError
    from webapp import create_app

    for name, value in [("MAX_PHOTO_MB", "-5"), ("LOCALE", "fr"), ("AUTO_MIGRATE", "flase")]:
        with pytest.raises(SettingsError, match=f"HEMEI_{name}"):
            create_app({"TESTING": True, "INSTANCE": str(tmp_path / "inst"), name: value})
    with pytest.raises(SettingsError, match="HEMEI_INSTANCE: cannot create"):
        create_app({"TESTING": True, "INSTANCE": "/proc/hemei-test/inst"})


# -- the instance folder ---------------------------------------------------------------------
@pytest.mark.parametrize("command", [["serve"], ["init"], ["user", "list"]])
def test_an_instance_folder_that_cannot_be_made_is_one_error_line(tmp_path, command):
    r = run(command, Path("/proc/hemei-test/inst"))
    assert_one_error_line(r, "/proc/hemei-test", "HEMEI_INSTANCE")


def test_an_instance_folder_that_cannot_be_written_is_one_error_line(tmp_path):
    inst = tmp_path / "inst"
    assert run(["init"], inst).returncode == 0
    # The writers' lock file cannot be opened for writing (what a read-only folder does
    # to it; made a folder here, so the test also works as root).
    (inst / "hemei.sqlite3.writelock").unlink(missing_ok=True)
    (inst / "hemei.sqlite3.writelock").mkdir()
    r = run(["user", "list"], inst)
    assert_one_error_line(r, "hemei.sqlite3.writelock", "HEMEI_INSTANCE")


def test_a_database_file_that_cannot_be_opened_is_one_error_line(tmp_path):
    inst = tmp_path / "inst"
    (inst / "hemei.sqlite3").mkdir(parents=True)  # SQLite: "unable to open database file"
    r = run(["user", "list"], inst)
    assert_one_error_line(r, "the database at sqlite:///", "unable to open database file",
                          "writable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only folder")
def test_a_read_only_instance_folder_is_one_error_line(tmp_path):
    inst = tmp_path / "inst"
    assert run(["init"], inst).returncode == 0
    (inst / "hemei.sqlite3.writelock").unlink(missing_ok=True)
    inst.chmod(0o555)
    try:
        r = run(["user", "list"], inst)
    finally:
        inst.chmod(0o755)
    assert_one_error_line(r, "HEMEI_INSTANCE")


# -- PostgreSQL: a wrong password, a server not there; URLs printed masked -------------------
@pytest.fixture
def pg_url() -> str:
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set")
    return url


def _with(url: str, **parts) -> str:
    return sa.make_url(url).set(**parts).render_as_string(hide_password=False)


@pytest.mark.parametrize("command", [["serve"], ["init"], ["user", "list"], ["db", "current"]])
@pytest.mark.parametrize("problem", ["wrong password", "no server"])
def test_a_database_that_cannot_be_reached_is_one_error_line(pg_url, tmp_path, command,
                                                            problem):
    if problem == "wrong password":
        url = _with(pg_url, password="wrong-pw-4711")
    else:
        url = _with(pg_url, host="127.0.0.1", port=_free_port(), password="wrong-pw-4711")
    r = run(command, tmp_path / "inst", HEMEI_DATABASE_URL=url)
    line = assert_one_error_line(r, "cannot connect to the database at postgresql",
                                 ":***@", "check HEMEI_DATABASE_URL")
    assert "wrong-pw-4711" not in r.stderr + r.stdout
    assert ("password authentication failed" if problem == "wrong password"
            else "refused") in line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_init_prints_the_database_url_without_its_password(pg_url, pg_databases, tmp_path):
    url = pg_databases.new()
    password = sa.make_url(url).password
    assert password
    r = run(["init"], tmp_path / "inst", HEMEI_DATABASE_URL=url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("initialised: postgresql+psycopg://")
    assert ":***@" in r.stdout and f":{password}@" not in r.stdout + r.stderr


@pytest.mark.parametrize("production", [False, True], ids=["development", "gunicorn"])
def test_serve_prints_the_database_url_without_its_password(pg_url, pg_databases, tmp_path,
                                                           production):
    url = pg_databases.new()
    password = sa.make_url(url).password
    args = ["serve", "--port", str(_free_port())]
    if production:
        args += ["--production", "--workers", "1"]
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen(HEMEI + args, env=_env(tmp_path / "inst", HEMEI_DATABASE_URL=url),
                             cwd=REPO, stdout=fo, stderr=fe)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and p.poll() is None:
                if "Hemei Grid" in out.read_text() + err.read_text():
                    break
                time.sleep(0.2)
        finally:
            p.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers too
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    text = out.read_text() + err.read_text()
    banner = [line for line in text.splitlines() if "Hemei Grid" in line]
    assert banner, text
    assert "(database: postgresql+psycopg://" in banner[0] and ":***@" in banner[0]
    assert f":{password}@" not in text
