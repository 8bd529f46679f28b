"""Settings, declared once as data.

Every setting has a name, a default, a help text and the environment variable that
sets it (prefix ``HEMEI_``). The web app, the CLI and the docs all read this table;
a test checks that the README documents each one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    name: str
    default: object
    help: str

    @property
    def env(self) -> str:
        return "HEMEI_" + self.name


SETTINGS: tuple[Setting, ...] = (
    Setting("INSTANCE", "./instance", "Folder holding the database, uploads and caches."),
    Setting(
        "DATABASE_URL",
        None,
        "SQLAlchemy database URL. Default: sqlite:///<INSTANCE>/hemei.sqlite3.",
    ),
    Setting(
        "SHAPES",
        str(REPO_ROOT / "data" / "shapes" / "jiangnan.gpkg"),
        "GeoPackage with the boundary layers loaded on first run (street, community, "
        "compound, grid).",
    ),
    Setting(
        "DEMO_CASES",
        str(REPO_ROOT / "data" / "shapes" / "demo_cases.csv"),
        "CSV of demo cases loaded on first run; empty to start with no cases.",
    ),
    Setting(
        "TILES",
        "none",
        "Map tile source: none, osm, tianditu-vec, tianditu-img, amap (GCJ-02), or an XYZ "
        "URL template such as http://tiles.intranet/{z}/{x}/{y}.png (append #gcj02 if that "
        "server's tiles are GCJ-02).",
    ),
    Setting("TILES_ATTRIBUTION", "", "Attribution shown for a custom XYZ tile source."),
    Setting("TIANDITU_KEY", "", "Tianditu (天地图) key, needed when TILES is tianditu-vec or "
            "tianditu-img."),
    Setting("HOLIDAYS", "", "Public holidays skipped when counting working days, as "
            "comma-separated dates (2026-10-01,2026-10-02,…)."),
    Setting("MAX_PHOTO_MB", "10", "Largest photo accepted, in MB."),
    Setting("PUBLIC_URL", "", "The address residents reach the service at, for QR codes "
            "(e.g. https://grid.example.gov.cn). Default: the address of the request."),
    Setting("PUBLIC_FORM_LIMIT", "10", "Residents' submissions allowed per device per 10 "
            "minutes."),
    Setting("LOCALE", "zh", "Default UI language: zh (简体中文) or en."),
    Setting("AUTO_MIGRATE", "1", "1: bring the database schema up to date when the service "
            "starts; 0: refuse to start on an outdated schema until an operator runs "
            "`hemei db upgrade`."),
    Setting("SECRET_KEY", None, "Flask secret key. Default: a random key kept in the instance."),
)


def setting_default(name: str) -> object:
    """The declared default of setting ``name``."""
    return next(s.default for s in SETTINGS if s.name == name)


def read_settings(env: dict[str, str] | None = None, **overrides: object) -> dict[str, object]:
    """Resolve every setting from ``overrides``, then ``env`` (default ``os.environ``), then
    its default. Derived defaults (the database URL) are filled in last."""
    env = os.environ if env is None else env
    out: dict[str, object] = {}
    for s in SETTINGS:
        if s.name in overrides and overrides[s.name] is not None:
            out[s.name] = overrides[s.name]
        elif s.env in env:
            out[s.name] = env[s.env]
        else:
            out[s.name] = s.default
    instance = Path(str(out["INSTANCE"])).resolve()
    out["INSTANCE"] = str(instance)
    if not out["DATABASE_URL"]:
        out["DATABASE_URL"] = f"sqlite:///{instance / 'hemei.sqlite3'}"
    return out
