"""The instance config file (``<instance>/hemei.toml`` or ``HEMEI_CONFIG``): read by every
command and the app, overridden by the environment, and refused cleanly when broken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gis.settings import SettingsError, read_settings
from tests.conftest import REPO

HEMEI = [sys.executable, "-m", "webapp.cli"]


def run(args, instance: Path, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("HEMEI_")}
    e.update({"HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8",
              "HEMEI_DEMO_CASES": "", **env})
    return subprocess.run(HEMEI + list(args), env=e, capture_output=True, text=True,
                          timeout=180, cwd=REPO)


def test_the_file_configures_the_instance_and_the_environment_wins(tmp_path):
    inst = tmp_path / "inst"
    inst.mkdir()
    elsewhere = tmp_path / "data" / "street.sqlite3"
    (inst / "hemei.toml").write_text(
        f'# 江南街道\ndatabase_url = "sqlite:///{elsewhere}"\ntiles = "osm"\n'
        "auto_migrate = false\nmax_photo_mb = 4\n", encoding="utf-8")
    s = read_settings(env={}, INSTANCE=str(inst))
    assert s["TILES"] == "osm" and s["AUTO_MIGRATE"] == "0" and s["MAX_PHOTO_MB"] == "4"
    assert read_settings(env={"HEMEI_TILES": "none"}, INSTANCE=str(inst))["TILES"] == "none"

    r = run(["db", "upgrade"], inst)
    assert r.returncode == 0, r.stderr
    assert elsewhere.is_file() and not (inst / "hemei.sqlite3").exists()
    other = tmp_path / "env.sqlite3"
    r = run(["db", "upgrade"], inst, HEMEI_DATABASE_URL=f"sqlite:///{other}")
    assert r.returncode == 0 and other.is_file()


def test_hemei_config_names_a_file_elsewhere(tmp_path):
    conf = tmp_path / "etc" / "hemei.toml"
    conf.parent.mkdir()
    db = tmp_path / "x.sqlite3"
    conf.write_text(f'database_url = "sqlite:///{db}"\n', encoding="utf-8")
    assert run(["db", "upgrade"], tmp_path / "inst", HEMEI_CONFIG=str(conf)).returncode == 0
    assert db.is_file()
    missing = run(["db", "current"], tmp_path / "inst", HEMEI_CONFIG=str(tmp_path / "no"))
    assert missing.returncode == 2 and "not a file" in missing.stderr


@pytest.mark.parametrize("text, why", [
    ('tiels = "osm"\n', "'tiels', which is not a setting"),
    ('tiles = "osm\n', "not valid TOML"),
    ("tiles = [1, 2]\n", "tiles must be a string or a number"),
])
def test_a_broken_file_is_a_clean_error(tmp_path, text, why):
    inst = tmp_path / "inst"
    inst.mkdir()
    (inst / "hemei.toml").write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError, match=why.split("'")[0] or why):
        read_settings(env={}, INSTANCE=str(inst))
    r = run(["locate", "111.57", "24.40"], inst)
    assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr
    assert "hemei.toml" in r.stderr
