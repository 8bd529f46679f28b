"""Settings, declared once as data.

Every setting has a name, a default, a help text and the environment variable that
sets it (prefix ``HEMEI_``). The web app, the CLI and the docs all read this table;
a test checks that the README documents each one.

A setting comes from, first to last: what the caller passes (tests, ``create_app``), the
environment (``HEMEI_TILES=osm``), the instance config file (``<INSTANCE>/hemei.toml``, or
the file ``HEMEI_CONFIG`` names: ``tiles = "osm"``), its default. The file lets an operator
keep an instance's configuration next to its data; the environment overrides it per
process (containers, systemd units). A file with a syntax error or a key that is not a
setting is refused with the file, the line or the key named: a typo must not silently
fall back to a default.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gis.errors import HemeiError

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
    Setting("CONFIG", None, "Instance config file (TOML; keys are these settings' names "
            "in lower case). Default: <INSTANCE>/hemei.toml if it exists."),
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
    Setting("LOGIN_LIMIT", "10", "Failed logins allowed per client address and per username "
            "in 15 minutes; more are refused (429) until the oldest is 15 minutes old. 0: "
            "no limit."),
    Setting("SECURE_COOKIES", "0", "1: mark the session cookie Secure, so browsers send it "
            "over HTTPS only (set it when the service is reached by HTTPS); 0: also over "
            "plain HTTP."),
)


def setting_default(name: str) -> object:
    """The declared default of setting ``name``."""
    return next(s.default for s in SETTINGS if s.name == name)


class SettingsError(HemeiError):
    """The instance config file cannot be used (unreadable, bad TOML, unknown keys)."""

    code = "bad_settings"


def read_config_file(path: Path) -> dict[str, str]:
    """The settings an instance config file sets, by setting name (values as text)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SettingsError(f"cannot read the config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"the config file {path} is not UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"the config file {path} is not valid TOML: {err}") from None
    known = {s.name for s in SETTINGS} - {"INSTANCE", "CONFIG"}
    out: dict[str, str] = {}
    for key, value in data.items():
        name = key.upper()
        if name not in known:
            raise SettingsError(
                f"the config file {path} sets {key!r}, which is not a setting; known: "
                f"{', '.join(sorted(k.lower() for k in known))}", field=key)
        if isinstance(value, bool):
            value = "1" if value else "0"
        elif not isinstance(value, (str, int, float)):
            raise SettingsError(f"the config file {path}: {key} must be a string or a "
                                f"number", field=key)
        out[name] = str(value)
    return out


def read_settings(env: dict[str, str] | None = None, **overrides: object) -> dict[str, object]:
    """Resolve every setting from ``overrides``, then ``env`` (default ``os.environ``), then
    the instance config file, then its default. Derived defaults (the database URL) are
    filled in last. Raises :class:`SettingsError` for a config file that cannot be used."""
    env = os.environ if env is None else env

    def given(name: str) -> object:
        if overrides.get(name) is not None:
            return overrides[name]
        return env.get("HEMEI_" + name)

    instance = Path(str(given("INSTANCE") or setting_default("INSTANCE"))).resolve()
    config = given("CONFIG")
    path = Path(str(config)) if config else instance / "hemei.toml"
    if config and not path.is_file():
        raise SettingsError(f"HEMEI_CONFIG names {path}, which is not a file", field="CONFIG")
    from_file = read_config_file(path) if path.is_file() else {}
    out: dict[str, object] = {}
    for s in SETTINGS:
        value = given(s.name)
        if value is None:
            value = from_file.get(s.name, s.default)
        out[s.name] = value
    out["INSTANCE"] = str(instance)
    out["CONFIG"] = str(path) if from_file or config else None
    if not out["DATABASE_URL"]:
        out["DATABASE_URL"] = f"sqlite:///{instance / 'hemei.sqlite3'}"
    return out
