"""The architecture rules that a test can check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gis.settings import SETTINGS

REPO = Path(__file__).resolve().parent.parent


def test_importing_gis_does_not_import_flask():
    code = ("import sys, gis, gis.service, gis.maps, gis.layers, gis.validate, gis.storage; "
            "sys.exit(1 if 'flask' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_every_setting_is_documented_in_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [s.env for s in SETTINGS if s.env not in readme]
    assert not missing, f"README does not document {missing}"


def test_templates_and_code_name_no_cdn():
    hits = []
    for p in list((REPO / "webapp").rglob("*.html")) + list((REPO / "webapp").rglob("*.py")):
        text = p.read_text(encoding="utf-8")
        for host in ("cdn.jsdelivr", "unpkg.com", "cdnjs", "code.jquery", "bootstrapcdn"):
            if host in text:
                hits.append(f"{p}: {host}")
    assert not hits
