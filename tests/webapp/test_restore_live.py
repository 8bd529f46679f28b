"""``hemei restore`` under a running server, on both backends: the server's caches (the
coverage memo and API ETags, the overview page cache) are keyed on the data version, so
after a restore and a few new writes they must show the new figures, never those of the
rows the restore took away. (The restore used to put the version back to the backup's,
and the next writes reached numbers the caches had already seen with other data.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gis.backup import backup
from tests.conftest import REPO

pytestmark = pytest.mark.backends("sqlite", "postgis")

HEMEI = [sys.executable, "-m", "webapp.cli"]


def _hemei_restore(path, instance, url: str) -> subprocess.CompletedProcess:
    """``hemei restore PATH --force`` as an operator runs it, on this app's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMEI_")}
    env.update({"HEMEI_INSTANCE": str(instance), "HEMEI_DATABASE_URL": url,
                "PYTHONIOENCODING": "utf-8"})
    return subprocess.run(HEMEI + ["restore", str(path), "--force"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _new_cases(client) -> dict[str, int]:
    """New cases of the last 30 days per grid code, from the coverage API."""
    r = client.get("/api/v1/coverage?period=30d")
    assert r.status_code == 200
    return {f["properties"]["code"]: f["properties"]["new"] or 0
            for f in r.get_json()["features"]}


def _report(client, point, n: int) -> None:
    for i in range(n):
        r = client.post("/api/v1/issues", json={
            "category": "street_light", "lon": point.x, "lat": point.y,
            "description": f"路灯不亮 {i}"})
        assert r.status_code == 201, r.get_json()


def test_a_restore_under_a_running_server_never_serves_the_figures_restored_away(
        app, client, instance, tmp_path):
    h = app.extensions["hemei"]
    url = str(h.settings["DATABASE_URL"])
    grids = h.layers["grid"]
    a_code, b_code = grids["code"].iloc[0], grids["code"].iloc[-1]
    a = grids.geometry.iloc[0].representative_point()
    b = grids.geometry.iloc[-1].representative_point()

    base = _new_cases(client)
    saved = tmp_path / "s.db"
    backup(url, saved)
    at_backup = h.store.data_version()

    _report(client, a, 2)
    seen = _new_cases(client)  # the server caches the figures with A's two cases
    assert seen[a_code] == base[a_code] + 2
    page = client.get("/?period=30d&metric=new")
    assert page.status_code == 200
    before = h.store.data_version()

    r = _hemei_restore(saved, instance, url)
    assert r.returncode == 0, r.stderr
    after = h.store.data_version()
    assert after > before and after > at_backup

    _report(client, b, 2)  # as many writes as were restored away
    now = _new_cases(client)
    assert now[a_code] == base[a_code], "the cases restored away are still counted"
    assert now[b_code] == base[b_code] + 2, "the cases written after the restore are missing"
    assert now != seen
    # The overview page, cached by the same key, is rendered again (a new ETag).
    again = client.get("/?period=30d&metric=new")
    assert again.status_code == 200 and again.headers["ETag"] != page.headers["ETag"]
