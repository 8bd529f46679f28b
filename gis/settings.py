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

Every value is checked once, here, where it is read (:func:`read_settings`): numbers must
be numbers in their range, yes/no settings one of ``1 0 true false yes no on off``, the
language ``zh`` or ``en``, the database URL one SQLAlchemy can use, a named demo-cases
file must exist. A bad value is a :class:`SettingsError` naming the variable (or the
config file's key) and what it accepts, so the CLI and the app refuse to start with one
line instead of failing later, or worse, quietly doing something else (``flase`` taken
as "on", a negative photo limit refusing every upload). Values stay text, in a canonical
form (yes/no settings become ``"1"``/``"0"``), so every reader keeps working unchanged.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gis.errors import HemeiError

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Setting:
    """One setting: its name (without ``HEMEI_``), default, help text and, for those
    whose value must have a form, ``check(value, where) -> canonical text`` (raising
    :class:`SettingsError`; ``where`` names the variable or the config file's key)."""

    name: str
    default: object
    help: str
    check: Callable[[str, str], str] | None = None

    @property
    def env(self) -> str:
        return "HEMEI_" + self.name


class SettingsError(HemeiError):
    """The settings cannot be used: a config file that is unreadable, bad TOML or holds
    unknown keys, or a value that is not of the setting's form."""

    code = "bad_settings"


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(value: str, where: str) -> str:
    """A yes/no setting as ``"1"`` or ``"0"``. Only the usual spellings are taken: before,
    anything that was not a "no" meant yes, so ``flase`` switched automatic upgrades on."""
    v = value.strip().lower()
    if v in _TRUE:
        return "1"
    if v in _FALSE:
        return "0"
    raise SettingsError(f"{where} must be one of {', '.join(_TRUE + _FALSE)}; got {value!r}")


def _number(lo: float, hi: float, unit: str = "") -> Callable[[str, str], str]:
    """A check for a (decimal) number from ``lo`` to ``hi``."""
    def check(value: str, where: str) -> str:
        try:
            x = float(value.strip())
        except ValueError:
            x = math.nan
        if not (math.isfinite(x) and lo <= x <= hi):
            raise SettingsError(f"{where} must be a number from {lo:g} to {hi:g}{unit}; "
                                f"got {value!r}")
        return value.strip()
    return check


def _whole(lo: int, hi: int, what: str = "") -> Callable[[str, str], str]:
    """A check for a whole number from ``lo`` to ``hi``."""
    def check(value: str, where: str) -> str:
        try:
            n = int(value.strip())
        except ValueError:
            n = None
        if n is None or not lo <= n <= hi:
            raise SettingsError(f"{where} must be a whole number from {lo} to {hi}{what}; "
                                f"got {value!r}")
        return str(n)
    return check


#: The UI languages the app has catalogs for (``webapp/i18n.py`` LOCALES).
LANGUAGES = ("zh", "en")


def _language(value: str, where: str) -> str:
    """``zh`` or ``en`` (a region such as ``zh-CN`` or ``en_GB`` is accepted and dropped):
    any other language used to fall back to Chinese without a word."""
    lang = re.split(r"[-_]", value.strip().lower(), maxsplit=1)[0]
    if lang not in LANGUAGES:
        raise SettingsError(f"{where} must be zh (简体中文) or en; got {value!r}")
    return lang


def _holidays(value: str, where: str) -> str:
    """Comma-separated ISO dates, parsed as the service parses them (its own error did
    not say which setting held the bad date)."""
    from gis.cases import parse_holidays
    from gis.errors import InvalidInput

    try:
        parse_holidays(value)
    except InvalidInput as err:
        raise SettingsError(f"{where}: {err.message}") from None
    return value


def _proxies(value: str, where: str) -> str:
    """Comma-separated IP addresses or networks, or ``*``: the reverse proxies whose
    X-Forwarded-For and X-Forwarded-Proto are believed (``webapp/proxy.py``)."""
    import ipaddress

    if value.strip().lower() == "none":
        return ""  # empty would be unset (the default), so "none" says no proxy
    parts = [p.strip() for p in value.split(",") if p.strip()]
    for part in parts:
        if part == "*":
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise SettingsError(f"{where} must be IP addresses or networks separated by "
                                f"commas (127.0.0.1,10.0.0.0/8), * or none; {part!r} is "
                                "neither") from None
    return ",".join(parts)


def _public_url(value: str, where: str) -> str:
    """Empty, or an absolute http(s) address: it is the start of every QR code's link,
    and a value such as ``grid.example.gov.cn`` printed links that phones cannot open."""
    from urllib.parse import urlsplit

    v = value.strip()
    if not v:
        return ""
    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.netloc or any(c.isspace() for c in v):
        raise SettingsError(f"{where} must be an address such as "
                            f"https://grid.example.gov.cn; got {value!r}")
    return v


def mask_url(url: str) -> str:
    """A database URL fit to print: the password replaced by ``***``. Works on text that
    SQLAlchemy cannot parse too (a mistyped URL may still hold a password)."""
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (not a URL: mask what looks like user:password@)
        return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", str(url))


def _database_url(value: str, where: str) -> str:
    """A URL SQLAlchemy parses, of a database kind it knows, whose driver is installed:
    otherwise the first connection failed with a traceback."""
    import sqlalchemy as sa

    shown = mask_url(value)
    try:
        u = sa.make_url(value.strip())
    except sa.exc.ArgumentError:
        raise SettingsError(f"{where} is not a database URL: {shown!r} (expected "
                            "sqlite:///path/to/hemei.sqlite3 or "
                            "postgresql+psycopg://user:password@host/database)") from None
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")  # as gis.pg.psycopg_url does
    try:
        u.get_dialect().import_dbapi()
    except (sa.exc.NoSuchModuleError, ImportError) as err:
        raise SettingsError(f"{where} names a database SQLAlchemy cannot use here "
                            f"({u.drivername}: {err}); use sqlite:/// or "
                            "postgresql+psycopg://") from None
    return value.strip()


SETTINGS: tuple[Setting, ...] = (
    Setting("INSTANCE", "./instance", "Folder holding the database, uploads and caches."),
    Setting("CONFIG", None, "Instance config file (TOML; keys are these settings' names "
            "in lower case). Default: <INSTANCE>/hemei.toml if it exists."),
    Setting(
        "DATABASE_URL",
        None,
        "SQLAlchemy database URL. Default: sqlite:///<INSTANCE>/hemei.sqlite3.",
        _database_url,
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
        "CSV of demo cases loaded on first run; empty to start with no cases. A file "
        "named that does not exist is refused.",
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
            "comma-separated dates (2026-10-01,2026-10-02,…).", _holidays),
    Setting("MAX_PHOTO_MB", "10", "Largest photo accepted, in MB (0.01 to 100).",
            _number(0.01, 100, " (MB)")),
    Setting("PUBLIC_URL", "", "The address residents reach the service at, for QR codes "
            "(e.g. https://grid.example.gov.cn). Default: the address of the request.",
            _public_url),
    Setting("PUBLIC_FORM_LIMIT", "10", "Residents' submissions allowed per device per 10 "
            "minutes (1 to 10000).", _whole(1, 10_000)),
    Setting("LOCALE", "zh", "Default UI language: zh (简体中文) or en.", _language),
    Setting("AUTO_MIGRATE", "1", "1: bring the database schema up to date when the service "
            "starts; 0: refuse to start on an outdated schema until an operator runs "
            "`hemei db upgrade`. Yes/no settings take 1/0, true/false, yes/no, on/off.",
            _flag),
    Setting("SECRET_KEY", None, "Flask secret key. Default: a random key kept in the instance."),
    Setting("LOGIN_LIMIT", "10", "Failed logins allowed per client address and per username "
            "in 15 minutes; more are refused (429) until the oldest is 15 minutes old. 0: "
            "no limit (at most 10000).", _whole(0, 10_000, " (0: no limit)")),
    Setting("TRUSTED_PROXIES", "127.0.0.1,::1", "Reverse proxies (IP addresses or networks "
            "such as 10.0.0.0/8, comma-separated; * for any) whose X-Forwarded-For and "
            "X-Forwarded-Proto are believed: behind them the login and form limits and the "
            "access log see the client's address, and links say https. none: trust no "
            "proxy.",
            _proxies),
    Setting("SECURE_COOKIES", "0", "1: mark the session cookie Secure, so browsers send it "
            "over HTTPS only (set it when the service is reached by HTTPS); 0: also over "
            "plain HTTP.", _flag),
)


def setting_default(name: str) -> object:
    """The declared default of setting ``name``."""
    return next(s.default for s in SETTINGS if s.name == name)


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
    the instance config file, then its default, and check each value (see the module's
    docstring). Derived defaults (the database URL) are filled in last. Raises
    :class:`SettingsError` for a config file that cannot be used or a bad value, naming
    the variable (or the file's key) and what it takes."""
    env = os.environ if env is None else env

    def given(name: str) -> object:
        if overrides.get(name) is not None:
            return overrides[name]
        value = env.get("HEMEI_" + name)
        # An empty variable is an unset one (``HEMEI_DATABASE_URL=`` in a unit file): the
        # config file's value then counts, which the empty text used to hide. Except for
        # DEMO_CASES, where empty says "no demo cases".
        if value is not None and not value.strip() and name != "DEMO_CASES":
            return None
        return value

    instance = Path(str(given("INSTANCE") or setting_default("INSTANCE"))).resolve()
    config = given("CONFIG")
    path = Path(str(config)) if config else instance / "hemei.toml"
    if config and not path.is_file():
        raise SettingsError(f"HEMEI_CONFIG names {path}, which is not a file", field="CONFIG")
    from_file = read_config_file(path) if path.is_file() else {}
    out: dict[str, object] = {}
    for s in SETTINGS:
        value, where = given(s.name), s.env
        if value is None and s.name in from_file:
            value, where = from_file[s.name], f"{s.name.lower()} in {path}"
        out[s.name] = s.default if value is None else _checked(s, value, where)
    out["INSTANCE"] = str(instance)
    out["CONFIG"] = str(path) if from_file or config else None
    if not out["DATABASE_URL"]:
        out["DATABASE_URL"] = f"sqlite:///{instance / 'hemei.sqlite3'}"
    return out


def _checked(s: Setting, value: object, where: str) -> object:
    """``value`` of setting ``s`` (given, not its default) in canonical form, or a
    :class:`SettingsError` naming ``where`` it came from."""
    text = str(value)
    if s.name == "DEMO_CASES":
        # Empty means no demo cases; a named file that is not there used to give an
        # instance with no cases and no warning. (The default is not checked: an install
        # without the demo data quietly has none, as before.)
        if text.strip() and not Path(text).is_file():
            raise SettingsError(f"{where} names {text}, which is not a file (empty: no "
                                "demo cases)", field=s.name)
        return value
    if s.check is None:
        return value
    if not text.strip():
        # Empty is the same as unset (``HEMEI_X=`` in a unit file or .env).
        return s.default
    try:
        return s.check(text, where)
    except SettingsError as err:
        err.field = s.name
        raise
