"""The ``hemei`` command. Every command works on the instance the settings name
(``HEMEI_INSTANCE``, ``HEMEI_DATABASE_URL``)."""

from __future__ import annotations

import json
import sys

import click
import sqlalchemy as sa

from gis.errors import HemeiError
from gis.layers import LEVELS
from gis.settings import mask_url, read_settings


def _service():
    from gis.service import Hemei

    return Hemei(read_settings())


def _fail(err: HemeiError) -> None:
    click.echo(f"error: {err.message}", err=True)
    sys.exit(2)


def _first_line(err: BaseException) -> str:
    """The first non-empty line of an error's text (drivers add hints on more lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _database_error(err: sa.exc.DBAPIError, url: str | None,
                    source: str | None = None) -> str:
    """What an operator reads for a database error that reached the command's entry:
    where (the URL, password masked), the driver's reason and what to check, in one
    line. ``source`` names where the URL came from (:func:`_url_source`); None for the
    URLs of ``migrate-store`` (its --from and --to)."""
    where = f" at {mask_url(url)}" if url else ""
    reason = _first_line(err.orig if err.orig is not None else err)
    if url and url.startswith("sqlite"):
        # SQLite's errors here are about the file: "unable to open database file",
        # "attempt to write a readonly database".
        return (f"the database{where} failed: {reason} (check that the file and its "
                f"folder exist and are writable by this user; "
                f"{source or 'HEMEI_INSTANCE, HEMEI_DATABASE_URL'})")
    if err.statement is None:  # raised while connecting: no statement ran
        return (f"cannot connect to the database{where}: {reason} (check "
                f"{'--from and --to' if url is None else source or 'HEMEI_DATABASE_URL'}"
                ": host, port, user, password, database name; that the server is running)")
    return f"the database{where} failed: {reason}"


def _url_source(environ=None) -> str | None:
    """Where the database URL in force came from, for an error that says what to check:
    ``HEMEI_DATABASE_URL`` (the environment), ``database_url in <file>`` (the instance
    config file: an operator told to check the variable would find it unset), or the
    default beside the instance folder (``HEMEI_INSTANCE``). None if the settings cannot
    be read."""
    import os
    from pathlib import Path

    from gis.settings import read_config_file

    environ = os.environ if environ is None else environ
    try:
        settings = read_settings(env=environ)
        url = str(settings["DATABASE_URL"])
        if (environ.get("HEMEI_DATABASE_URL") or "").strip() == url:
            return "HEMEI_DATABASE_URL"
        config = settings.get("CONFIG")
        if config and Path(str(config)).is_file():
            from_file = read_config_file(Path(str(config))).get("DATABASE_URL")
            if from_file is not None and from_file.strip() == url:
                return f"database_url in {config}"
    except HemeiError:
        return None
    return ("HEMEI_INSTANCE (the default database is hemei.sqlite3 in it), or set "
            "HEMEI_DATABASE_URL")


def _os_error(err: OSError, instance: str | None) -> str:
    """An OS error (a folder that cannot be made, a file that cannot be written) in one
    line, pointing at HEMEI_INSTANCE when the path is the instance folder, in it, or one
    of the folders above it that would have to be made."""
    import os
    from pathlib import Path

    msg = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    if instance and err.filename:
        path = Path(os.path.abspath(os.fsdecode(err.filename)))
        inst = Path(os.path.abspath(instance))
        if path == inst or inst in path.parents or path in inst.parents:
            msg += (f" (check HEMEI_INSTANCE={instance}: it must be a folder this user "
                    "can create and write)")
    return msg


class _Main(click.Group):
    """The ``hemei`` group: errors no command turned into a message — the database not
    reachable or refusing the login, an instance folder that cannot be made or written —
    become one ``error:`` line and exit status 2 here, once for every command, instead
    of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HemeiError as err:
            _fail(err)
        except sa.exc.DBAPIError as err:
            theirs = ctx.invoked_subcommand == "migrate-store"  # --from and --to
            url = None if theirs else _setting("DATABASE_URL")
            source = None if theirs else _url_source()
            click.echo(f"error: {_database_error(err, url, source)}", err=True)
            sys.exit(2)
        except BrokenPipeError:
            raise  # `hemei … | head`: click ends quietly
        except OSError as err:
            click.echo(f"error: {_os_error(err, _setting('INSTANCE'))}", err=True)
            sys.exit(2)


def _setting(name: str) -> str | None:
    """A setting's value for an error message (None if the settings cannot be read)."""
    try:
        value = read_settings()[name]
    except HemeiError:
        return None
    return None if value is None else str(value)


@click.group(cls=_Main, help="和美网格 Hemei Grid: community grid management.")
def main() -> None:
    # Every command reads the settings: a broken config file or a bad value (checked in
    # gis.settings) is one clean error here, before any command runs.
    try:
        read_settings()
    except HemeiError as err:
        _fail(err)


@main.command()
def init() -> None:
    """Create the database and load the demo street on first run."""
    try:
        h = _service()
        did = h.ensure_initialised()
    except HemeiError as err:
        _fail(err)
    state = "initialised" if did else "already initialised"
    click.echo(f"{state}: {mask_url(str(h.settings['DATABASE_URL']))}")  # no password


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--debug", is_flag=True, help="Flask debug mode (never in production).")
@click.option("--production", is_flag=True,
              help="Serve with gunicorn (several worker processes, JSON access log); a "
                   "first run loads no demo cases unless HEMEI_DEMO_CASES is set.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="gunicorn worker processes with --production (default: 2×cores+1, "
                   "at most 8).")
def serve(host: str, port: int, debug: bool, production: bool, workers: int | None) -> None:
    """Run the web app (initialising the database and demo data on first run): the
    development server, or gunicorn with --production (whose first run loads the
    boundary layers but no demo cases unless HEMEI_DEMO_CASES is set)."""
    import os

    from webapp import create_app

    if production and debug:
        click.echo("error: --debug is for the development server, not --production",
                   err=True)
        sys.exit(2)
    if workers is not None and not production:
        click.echo("error: --workers needs --production", err=True)
        sys.exit(2)
    if production:
        os.environ.setdefault("HEMEI_ACCESS_LOG", "1")  # one JSON line per request
    try:
        overrides = _serve_overrides(production)
        if production:
            # The first run here, once, before gunicorn forks (create_app then finds the
            # layers), so that it is told apart from a later start and the operator
            # learns whose boundaries the service now has.
            from gis.service import Hemei

            h = Hemei(read_settings(**overrides))
            try:
                loaded = h.ensure_initialised()
            finally:
                h.store.dispose()
            if loaded:
                click.echo(_first_run_note(h.settings), err=True)
        app = create_app(overrides)  # the development server's first run is in here
    except HemeiError as err:
        _fail(err)
    if production:
        _serve_gunicorn(app, host, port, workers or min(2 * (os.cpu_count() or 1) + 1, 8))
        return
    click.echo(f"Hemei Grid on http://{host}:{port}/  (database: "
               f"{mask_url(str(app.config['HEMEI']['DATABASE_URL']))})")
    app.run(host=host, port=port, debug=debug, threaded=True)


def _serve_overrides(production: bool, environ=None) -> dict[str, str]:
    """The settings ``hemei serve`` passes to the app on top of the usual ones. With
    ``--production`` the first run loads no demo cases unless HEMEI_DEMO_CASES is set
    explicitly (environment or config file, a path or empty): the 400 invented cases of
    the demo street went into what was meant to be a real database. The boundary
    layers are still loaded (the service needs layers; :func:`_first_run_note` says so).
    The development server (the quickstart, ``make run``) keeps the demo cases."""
    import os
    from pathlib import Path

    from gis.settings import read_config_file

    if not production:
        return {}
    environ = os.environ if environ is None else environ
    if "HEMEI_DEMO_CASES" in environ:
        return {}
    config = read_settings(env=environ)["CONFIG"]
    if config and "DEMO_CASES" in read_config_file(Path(str(config))):
        return {}
    return {"DEMO_CASES": ""}  # empty: no demo cases (see gis.settings)


def _first_run_note(settings: dict) -> str:
    """The one line ``hemei serve --production`` prints when it loaded the boundary
    layers into a fresh database: whose they are and how to import one's own."""
    from gis.settings import setting_default

    shapes = str(settings["SHAPES"])
    cases = ("no demo cases" if not settings.get("DEMO_CASES")
             else f"the cases of {settings['DEMO_CASES']}")
    if shapes == str(setting_default("SHAPES")):
        what = f"the demo street's (Jiangnan Street) boundary layers from {shapes}"
    else:
        what = f"the boundary layers of {shapes}"
    return (f"first run: loaded {what} and {cases}; import your own boundaries with "
            "`hemei import-shapes FILE --layer grid` (and street, community, compound)")


def _serve_gunicorn(app, host: str, port: int, workers: int) -> None:
    """Serve ``app`` (made, and its database initialised, in this process) with gunicorn:
    the workers fork from it (preload), each with its own database connections."""
    from gunicorn.app.base import BaseApplication

    app.extensions["hemei"].store.dispose()  # no connection crosses the fork

    def post_fork(server, worker):
        # Forget any pooled connection inherited from the master (never close it).
        app.extensions["hemei"].store.engine.dispose(close=False)

    class HemeiGunicorn(BaseApplication):
        def load_config(self):
            for k, v in {"bind": f"{host}:{port}", "workers": workers, "threads": 4,
                         "preload_app": True, "post_fork": post_fork, "accesslog": None,
                         "errorlog": "-", "loglevel": "info", "graceful_timeout": 10,
                         "proc_name": "hemei",
                         # The app reads X-Forwarded-* from TRUSTED_PROXIES itself
                         # (webapp/proxy.py, networks too); gunicorn's own reading of
                         # FORWARDED_ALLOW_IPS would be a second, differing list.
                         "forwarded_allow_ips": ""}.items():
                self.cfg.set(k, v)

        def load(self):
            return app

    click.echo(f"Hemei Grid (gunicorn, {workers} workers) on http://{host}:{port}/  "
               f"(database: {mask_url(str(app.config['HEMEI']['DATABASE_URL']))})",
               err=True)
    HemeiGunicorn().run()


@main.command("import-shapes")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--layer", "level", type=click.Choice(LEVELS), required=True,
              help="Which boundary level the file holds.")
@click.option("--crs", default=None, help="CRS of a file that has none, e.g. EPSG:4547.")
@click.option("--encoding", default=None, help="Force the attribute encoding (e.g. GBK).")
@click.option("--field", "fields", multiple=True, metavar="NAME=COLUMN",
              help="Map a field: code, name, parent_code or households to a column.")
@click.option("--source-layer", default=None, help="Layer inside a GeoPackage.")
@click.option("--force", is_flag=True,
              help="Activate the layer despite overlaps, gaps, features outside their "
                   "parent or unknown parent codes. Never despite missing or duplicate "
                   "codes, features with no geometry or no name, or a file with no features.")
def import_shapes(path, level, crs, encoding, fields, source_layer, force) -> None:
    """Import a boundary layer (GeoPackage, Shapefile, .zip or GeoJSON), validate it
    against the active layers, and activate it if it is clean. Warns about accounts
    still assigned to grids or areas the new layer no longer has."""
    from gis.layers import read_layer
    from gis.validate import FORCEABLE

    mapping = {}
    for f in fields:
        name, sep, column = f.partition("=")
        if not sep or not name or not column:
            click.echo(f"error: --field must look like NAME=COLUMN, got {f!r}", err=True)
            sys.exit(2)
        mapping[name.strip()] = column.strip()
    try:
        gdf = read_layer(path, level, crs=crs, encoding=encoding, fields=mapping or None,
                         source_layer=source_layer)
        h = _service()
        report = h.import_layers({level: gdf}, source=path, actor="hemei import-shapes")
        if not report.ok and force and report.forceable:
            # Validated again inside the import: --force lets through only what
            # FORCEABLE names, which the first report showed to be all there is.
            report = h.import_layers({level: gdf}, source=path, force=True,
                                     actor="hemei import-shapes")
    except HemeiError as err:
        _fail(err)
    except sa.exc.SQLAlchemyError as err:
        # One transaction: the layer, the re-assigned cases and their events are all gone.
        why = str(getattr(err, "orig", None) or err).splitlines()[0]
        click.echo("error: the import failed and was rolled back (the active layers and "
                   f"the cases are unchanged): {why}", err=True)
        sys.exit(2)
    click.echo(report.format_text())
    if report.saved is None:
        if not report.forceable:
            checks = ", ".join(sorted({p.check for p in report.blocking}))
            click.echo(f"import refused: the active layers are unchanged; --force cannot "
                       f"override {checks} (it overrides only {', '.join(sorted(FORCEABLE))})"
                       ": fix the file", err=True)
        else:
            click.echo("import refused: the active layers are unchanged (use --force to "
                       "override)", err=True)
        sys.exit(1)
    click.echo(f"imported {len(gdf)} {level} features from {path}")
    saved = report.saved
    click.echo(f"open cases: {saved.checked} checked, {len(saved.moved)} re-assigned to the "
               f"new boundaries (old codes kept in their history)")
    for cid, (old, new) in list(saved.moved.items())[:20]:
        click.echo(f"  case {cid}: {_moved_codes(old, new)}")
    if len(saved.moved) > 20:
        click.echo(f"  … and {len(saved.moved) - 20} more")
    if saved.outside:
        click.echo(f"warning: {len(saved.outside)} open cases lie outside every new grid "
                   f"and keep their old codes: {', '.join(map(str, saved.outside[:20]))}",
                   err=True)
    _warn_stale_assignments(h)


def _moved_codes(old: dict, new: dict) -> str:
    """What changed in a re-assigned case's chain: ``grid A → B`` first, then any other
    level that changed (a new compound layer moves cases between compounds only)."""
    parts = []
    for level in ("grid", "compound", "community", "street"):
        before, after = old.get(f"{level}_code"), new.get(f"{level}_code")
        if before != after or (level == "grid" and not parts):
            parts.append(f"{level} {before or 'none'} → {after or 'none'}")
    return "; ".join(parts) if parts else "unchanged"


def _warn_stale_assignments(h) -> None:
    """Name on stderr the accounts assigned to grids or areas no active layer has."""
    layers = h.layers
    grids = set(layers["grid"]["code"]) if "grid" in layers else set()
    areas = {code for level in ("street", "community") if level in layers
             for code in layers[level]["code"]}
    for username, codes in h.accounts.stale_assignments(grids, areas).items():
        click.echo(f"warning: {username} is assigned to {', '.join(codes)}, which no longer "
                   "exist(s) in the active layers; assign them again on /admin/", err=True)


# The options of `hemei user add` that set each field an account error names.
_USER_OPTIONS = {"grid": "--grid", "org": "--org", "area_code": "--area",
                 "display_name": "--display-name", "password": "--password"}


def _fail_user(err: HemeiError) -> None:
    """An account error with the option to fix it, non-zero exit."""
    option = _USER_OPTIONS.get(err.field or "")
    click.echo(f"error: {err.message}" + (f" ({option})" if option else ""), err=True)
    sys.exit(2)


def _area_codes(h) -> set[str]:
    """The street and community codes of the active layers: what a planner's area may be."""
    return {code for level in ("street", "community") if level in h.layers
            for code in h.layers[level]["code"]}


@main.group()
def user() -> None:
    """Manage accounts."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "planner", "grid_worker", "field_staff"]),
              required=True)
@click.option("--grid", "grids", multiple=True, help="A grid code (grid workers; repeat).")
@click.option("--org", default=None, help="Organisation name (field staff); created if new.")
@click.option("--area", default=None, help="Street or community code (planners; required).")
@click.option("--display-name", default=None)
@click.option("--password", default=None, help="Prompted for when omitted.")
@click.option("--no-password", is_flag=True, help="Token-only account (no web login).")
def user_add(name, role, grids, org, area, display_name, password, no_password) -> None:
    """Create an account: hemei user add NAME --role R [--grid CODE ...] [--org ORG]
    [--area CODE]. Usernames are unique without regard to case."""
    from gis.errors import NotFound

    try:
        h = _service()
        h.ensure_initialised()
        org_id = None
        if org:
            try:
                org_id = h.accounts.org_by_name(org)["id"]
            except NotFound:
                org_id = h.accounts.add_org(org, "partner")
        if password is None and not no_password:
            password = click.prompt("password", hide_input=True, confirmation_prompt=True)
        u = h.accounts.add_user(name, role, password=password, display_name=display_name,
                                grids=list(grids), org_id=org_id, area_code=area,
                                known_grids=set(h.layers["grid"]["code"]),
                                known_areas=_area_codes(h))
    except HemeiError as err:
        _fail_user(err)
    click.echo(json.dumps(u.to_dict(), ensure_ascii=False))


@user.command("list")
def user_list() -> None:
    """List accounts: username, role, organisation, grids or area, active/deactivated.
    Warns (stderr) about usernames that differ only in case and about assignments to
    grids or areas that no longer exist."""
    try:
        h = _service()
        users = h.accounts.all()
        clashes = h.accounts.username_clashes()
    except HemeiError as err:
        _fail(err)
    for u in users:
        where = ",".join(u.grids) or u.area_code or ""
        click.echo(f"{u.username}\t{u.role}\t{u.org_name or ''}\t{where}\t"
                   f"{'active' if u.active else 'deactivated'}")
    for group in clashes:
        click.echo(f"warning: usernames {', '.join(group)} differ only in case; deactivate "
                   "the ones that should not exist", err=True)
    if users:
        _warn_stale_assignments(h)


def _set_active(name: str, active: bool) -> None:
    """`hemei user activate/deactivate NAME`: set the flag and say what it means."""
    try:
        h = _service()
        u = h.accounts.by_username(name)
        h.accounts.set_active(u.id, active)
        live = [t for t in h.accounts.tokens(u.id) if t["revoked_at"] is None]
    except HemeiError as err:
        _fail(err)
    if active:
        click.echo(f"activated {u.username}: they can log in again and their "
                   f"{len(live)} unrevoked API token(s) work again")
    else:
        click.echo(f"deactivated {u.username}: their web sessions have ended and their "
                   f"{len(live)} API token(s) no longer work (`hemei user activate "
                   f"{u.username}` undoes it; `hemei token revoke` ends a token for good)")


@user.command("deactivate")
@click.argument("name")
def user_deactivate(name) -> None:
    """Deactivate account NAME: no login, no API token works, sessions end at once."""
    _set_active(name, False)


@user.command("activate")
@click.argument("name")
def user_activate(name) -> None:
    """Reactivate account NAME (their unrevoked API tokens work again)."""
    _set_active(name, True)


@user.command("passwd")
@click.argument("name")
@click.option("--password", default=None, help="Prompted for when omitted.")
def user_passwd(name, password) -> None:
    """Set a new password for NAME (at least 8 characters); their web sessions end."""
    try:
        h = _service()
        u = h.accounts.by_username(name)
        if password is None:
            password = click.prompt("new password", hide_input=True,
                                    confirmation_prompt=True)
        h.accounts.set_password(u.id, password)
    except HemeiError as err:
        _fail(err)
    click.echo(f"password of {u.username} changed; their web sessions have ended")


@main.group()
def token() -> None:
    """Manage API tokens."""


@token.command("create")
@click.argument("name")
@click.option("--label", default="", help="What the token is for.")
def token_create(name, label) -> None:
    """Create an API token for user NAME (printed once; keep it secret)."""
    try:
        h = _service()
        u = h.accounts.by_username(name)
        click.echo(h.accounts.create_token(u.id, label))
    except HemeiError as err:
        _fail(err)


@token.command("list")
@click.argument("name", required=False)
def token_list(name) -> None:
    """List the API tokens of user NAME (or of everyone): the first 10 characters (what
    `hemei token revoke` takes), user, label, created (UTC), and active or revoked. The
    tokens themselves are not stored and cannot be shown."""
    try:
        h = _service()
        uid = h.accounts.by_username(name).id if name else None
        rows = h.accounts.tokens(uid)
        inactive = {u.username for u in h.accounts.all() if not u.active}
    except HemeiError as err:
        _fail(err)
    for t in rows:
        if t["revoked_at"] is not None:
            state = f"revoked {t['revoked_at']:%Y-%m-%d %H:%M}"
        else:
            state = "user deactivated" if t["username"] in inactive else "active"
        click.echo(f"{t['prefix']}\t{t['username']}\t{t['label']}\t"
                   f"{t['created_at']:%Y-%m-%d %H:%M}\t{state}")


@token.command("revoke")
@click.argument("token_or_prefix")
def token_revoke(token_or_prefix) -> None:
    """Revoke a token (the token itself or its first 10 characters)."""
    try:
        n = _service().accounts.revoke_token(token_or_prefix)
    except HemeiError as err:
        _fail(err)
    click.echo(f"revoked {n} token(s)")
    if n == 0:
        sys.exit(1)


@main.group()
def org() -> None:
    """Manage organisations (property companies, partner units, crews)."""


@org.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(["property", "partner", "crew", "office"]),
              default="partner")
def org_add(name, kind) -> None:
    """Add an organisation."""
    try:
        click.echo(_service().accounts.add_org(name, kind))
    except HemeiError as err:
        _fail(err)


@main.command()
@click.argument("lon")
@click.argument("lat")
def locate(lon: str, lat: str) -> None:
    """Print the chain street → community → compound → grid for a point, as JSON."""
    from gis.locate import check_lon_lat

    try:
        x, y = check_lon_lat(lon, lat)
        h = _service()
        h.ensure_initialised()
        chain = h.locator.locate(x, y)
    except HemeiError as err:
        _fail(err)
    click.echo(json.dumps({"lon": x, "lat": y, "inside": chain is not None, "chain": chain},
                          ensure_ascii=False, indent=2))


# -- exports and the monthly report ----------------------------------------------------------
_CASE_FORMATS = ("csv", "xlsx", "geojson", "gpkg")


def _format_for(fmt: str | None, out: str, allowed: tuple[str, ...]) -> str:
    """The format named, or the one the output file's suffix implies."""
    if fmt:
        return fmt
    if out == "-":
        return "csv"
    suffix = out.rsplit(".", 1)[-1].lower() if "." in out else ""
    suffix = {"json": "geojson", "xls": "xlsx"}.get(suffix, suffix)
    if suffix not in allowed:
        click.echo(f"error: cannot tell the format from {out!r}; add --format "
                   f"({'|'.join(allowed)})", err=True)
        sys.exit(2)
    return suffix


def _progress_bar(label: str):
    """A click progress bar on stderr and the ``progress(done, total)`` that drives it."""
    bar = click.progressbar(length=1, label=label, file=sys.stderr, show_pos=True,
                            show_percent=True)
    seen = [0]

    def progress(done: int, total: int) -> None:
        bar.length = max(total, 1)
        bar.update(done - seen[0])
        seen[0] = done

    return bar, progress


def _write_text(out: str, chunks) -> None:
    if out == "-":
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return
    from gis.exports import atomic_path

    with atomic_path(out, ".part") as tmp, open(tmp, "w", encoding="utf-8",
                                                newline="") as fh:
        for chunk in chunks:
            fh.write(chunk)


@main.group()
def export() -> None:
    """Export cases or indicator tables (CSV, Excel, GeoJSON, GeoPackage)."""


@export.command("cases")
@click.option("--format", "fmt", type=click.Choice(_CASE_FORMATS), default=None,
              help="Default: from the suffix of --out.")
@click.option("--out", required=True, help="Output file ('-' for stdout: csv, geojson).")
@click.option("--period", default=None, help="Cases reported in: 2026-10, 30d, "
              "2026-10-01..2026-10-15 (default: all).")
@click.option("--category", default=None, help="A category code (e.g. street_light).")
@click.option("--grid", default=None, help="A grid code.")
@click.option("--community", default=None, help="A community code.")
@click.option("--status", default=None, help="A status, or 'open'.")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
              help="Language of headers and names.")
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1),
              help="Cases read per query.")
def export_cases(fmt, out, period, category, grid, community, status, lang,
                 batch_size) -> None:
    """Export cases with their grid chain (never reporters' names or phone numbers)."""
    from gis import exports
    from gis.coverage import parse_period, up_to_now
    from gis.errors import InvalidInput

    fmt = _format_for(fmt, out, _CASE_FORMATS)
    if out == "-" and fmt in ("xlsx", "gpkg"):
        click.echo(f"error: {fmt} needs a file; give --out FILE", err=True)
        sys.exit(2)
    try:
        h = _service()
        h.ensure_initialised()
        # As the web export: bounded years, no period that starts after now.
        p = up_to_now(parse_period(period)) if period and period.strip() else None
        filters = exports.CaseFilters.parse(period=p, category=category, grid=grid,
                                            community=community, status=status)
        for level, code in (("grid", grid), ("community", community)):
            if code and h.locator.name(level, code) is None:
                raise InvalidInput(f"unknown {level} code {code!r}", field=level)
        # The command speaks English whatever --lang (the language of the file).
        bar, progress = _progress_bar("exporting cases")
        kw = {"locale": lang, "batch_size": batch_size, "progress": progress}
        with bar:
            if fmt == "csv":
                _write_text(out, exports.cases_csv(h.store, filters, **kw))
            elif fmt == "geojson":
                _write_text(out, exports.cases_geojson(h.store, filters, **kw))
            elif fmt == "xlsx":
                exports.cases_xlsx(out, h.store, filters, **kw)
            else:
                exports.cases_gpkg(out, h.store, filters, **kw)
        n = exports.count_cases(h.store, filters)
    except HemeiError as err:
        _fail(err)
    except OSError as err:
        click.echo(f"error: cannot write {out}: {err.strerror or err}", err=True)
        sys.exit(2)
    if out != "-":
        click.echo(f"wrote {n} cases to {out}", err=True)


@export.command("indicators")
@click.option("--level", type=click.Choice(["grid", "compound", "community", "street", "org"]),
              default="grid", show_default=True)
@click.option("--period", required=True, help="2026-10, 30d or 2026-10-01..2026-10-15.")
@click.option("--format", "fmt", type=click.Choice(["csv", "xlsx"]), default=None,
              help="Default: from the suffix of --out.")
@click.option("--out", required=True, help="Output file ('-' for stdout: csv).")
@click.option("--category", default=None, help="Only this category's cases (a code).")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
              help="Language of the file's headers.")
def export_indicators(level, period, fmt, out, category, lang) -> None:
    """Export the national indicators of every area of a level, with 环比 and 同比.
    A period that starts after now is refused; the current month is counted to date."""
    from gis import exports
    from gis.catalogue import get_category
    from gis.coverage import parse_period, up_to_now
    from gis.indicators import indicators

    fmt = _format_for(fmt, out, ("csv", "xlsx"))
    if out == "-" and fmt == "xlsx":
        click.echo("error: xlsx needs a file; give --out FILE", err=True)
        sys.exit(2)
    try:
        p = up_to_now(parse_period(period))
        cat = get_category(category).code if category else None
        h = _service()
        h.ensure_initialised()
        df = indicators(h.store, level, p, category=cat)
        if fmt == "csv":
            _write_text(out, exports.indicators_csv(df, locale=lang))
        else:
            exports.indicators_xlsx(out, df, locale=lang)
    except HemeiError as err:
        _fail(err)
    except OSError as err:
        click.echo(f"error: cannot write {out}: {err.strerror or err}", err=True)
        sys.exit(2)
    if out != "-":
        click.echo(f"wrote {len(df)} {level} rows for {p.key} to {out}", err=True)


def _last_month() -> str:
    from gis.cases import utcnow
    from gis.localtime import to_beijing

    first = to_beijing(utcnow()).replace(day=1)  # the street office's (Beijing) month
    prev = first.replace(year=first.year - (first.month == 1),
                         month=(first.month - 2) % 12 + 1)
    return f"{prev:%Y-%m}"


@main.command()
@click.option("--period", default=None, help="The month (2026-10) or any period; "
              "default: last month.")
@click.option("--out", required=True, help="The PDF to write.")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@click.option("--street", default=None, help="The street's code (default: the first).")
def report(period, out, lang, street) -> None:
    """Write the monthly report for the street office as a PDF. A period that starts
    after now is refused; the current month is reported to date."""
    import warnings

    from gis.coverage import parse_period, up_to_now
    from gis.localtime import to_beijing
    from gis.report import monthly_report

    try:
        p = up_to_now(parse_period(period or _last_month()))
        h = _service()
        h.ensure_initialised()
        # The command speaks English whatever --lang (the language of the PDF).
        to_date = (f" to date ({to_beijing(p.end):%Y-%m-%d %H:%M} Beijing time)"
                   if p.partial else "")
        click.echo(f"building the report for {p.key}{to_date} …", err=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            result = monthly_report(h, p, out, locale=lang, street=street)
        for w in caught:
            if "CJK" in str(w.message):
                click.echo(f"warning: {w.message}", err=True)
    except HemeiError as err:
        _fail(err)
    except OSError as err:
        click.echo(f"error: cannot write {out}: {err.strerror or err}", err=True)
        sys.exit(2)
    click.echo(f"wrote {len(result['pages'])} pages to {out}", err=True)


# -- backups ---------------------------------------------------------------------------------
def _print_counts(verb: str, where: str, counts: dict[str, int], note: str = "") -> None:
    for table, n in counts.items():
        click.echo(f"{table}\t{n}")
    click.echo(f"{verb} {sum(counts.values())} rows in {len(counts)} tables {where}"
               f"{note}", err=True)


@main.command("backup")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def backup_cmd(out: str, force: bool) -> None:
    """Back up the database to OUT (SQLite: online backup; PostGIS: pg_dump). An
    existing OUT is kept unless --force. Photos are files in the instance folder: back
    them up separately."""
    from gis.backup import backup

    url = str(read_settings()["DATABASE_URL"])
    try:
        counts = backup(url, out, force=force)
    except HemeiError as err:
        _fail(err)
    _print_counts("backed up", f"to {out}", counts)


@main.command("restore")
@click.argument("in_path", metavar="IN", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite a database that holds data.")
def restore_cmd(in_path: str, force: bool) -> None:
    """Restore the database from the backup IN. A running server shows the restored data
    at once: its caches are keyed on the data version, which the restore moves past every
    value they have seen. Restart it if boundary layers were imported after the backup.
    The rows printed are those restored (what `hemei backup` printed), not counted again
    afterwards while the server writes."""
    from gis.backup import restore

    url = str(read_settings()["DATABASE_URL"])
    try:
        counts = restore(url, in_path, force=force)
    except HemeiError as err:
        _fail(err)
    # The counts are the restore's own (counted in what it wrote, before a running
    # service could add to it), so they equal what `hemei backup` printed.
    _print_counts("restored", f"from {in_path}", counts,
                  " (the rows restored, counted before the service could write more)")


@main.group()
def db() -> None:
    """The database schema: its version and its upgrades (Alembic migrations)."""


def _revision_of(url: str) -> str | None:
    """The schema revision of the database at ``url`` (None: empty or not there yet),
    read without creating or changing anything."""
    import sqlalchemy as sa

    from gis import schema
    from gis.backup import _engine

    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        from pathlib import Path

        path = Path(u.database or "")
        if not path.is_file() or path.stat().st_size == 0:
            return None
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return schema.current(conn)
    except sa.exc.DBAPIError as err:
        click.echo(f"error: {_database_error(err, url, _url_source())}", err=True)
        sys.exit(2)
    finally:
        engine.dispose()


@db.command("current")
def db_current() -> None:
    """Print the schema revision of the database and this release's (never changes it)."""
    from gis import schema

    have = _revision_of(str(read_settings()["DATABASE_URL"]))
    head = schema.head()
    state = "up to date" if have == head else "needs `hemei db upgrade`"
    click.echo(f"database: {have or 'empty'}; this release: {head} ({state})")


@db.command("history")
def db_history() -> None:
    """List the schema revisions, oldest first."""
    from gis import schema

    for r in schema.revisions():
        click.echo(f"{r['revision']}  {r['doc']}")


@db.command("upgrade")
@click.option("--sql", "as_sql", is_flag=True,
              help="Print the SQL instead of running it (for a DBA to review).")
def db_upgrade(as_sql: bool) -> None:
    """Upgrade the database to this release's schema, in one transaction (an empty
    database gets the whole schema). Back up first: `hemei backup`."""
    import sqlalchemy as sa

    from gis import schema
    from gis.storage import open_store

    url = str(read_settings()["DATABASE_URL"])
    before = _revision_of(url)
    after = schema.head()
    if before == after:
        if as_sql:
            # `hemei db upgrade --sql > upgrade.sql`: stdout must stay a script the
            # database runs (a comment: nothing to do); the notice is for the operator.
            click.echo(f"-- hemei db upgrade: the database is already at {after}; "
                       "nothing to run")
            click.echo(f"already up to date ({after}): the SQL is empty", err=True)
            return
        click.echo(f"already up to date ({after})")
        return
    if as_sql:
        from gis.backup import _engine

        engine = _engine(url)
        try:
            with engine.connect() as conn:
                legacy = schema.is_legacy(conn)
        finally:
            engine.dispose()
        click.echo(schema.upgrade_sql(url, start=before, legacy=legacy))
        return
    try:
        open_store(url, migrate=True).dispose()
    except HemeiError as err:
        _fail(err)
    except (sa.exc.SQLAlchemyError, RuntimeError) as err:
        click.echo(f"error: the upgrade failed and was rolled back: "
                   f"{str(err).splitlines()[0]}", err=True)
        sys.exit(2)
    click.echo(f"upgraded {before or 'empty database'} → {after}")


@main.command("migrate-store")
@click.option("--from", "src", required=True, metavar="URL", help="The database to copy.")
@click.option("--to", "dst", required=True, metavar="URL",
              help="The database to copy into (made or upgraded; must be empty).")
@click.option("--force", is_flag=True, help="Replace the rows of a target that holds data.")
def migrate_store_cmd(src: str, dst: str, force: bool) -> None:
    """Copy everything (cases, history, photo metadata, layers, users, tokens) from one
    database to another — e.g. from the SQLite default to PostGIS — and verify the row
    counts and checksums of every table. The target's data version ends above both its
    own and the source's, so a server already running on the target serves the copied
    data at once. Photo files are not rows: copy the photos folder too."""
    from gis.transfer import migrate_store

    last = {}

    def progress(table: str, done: int) -> None:
        if done - last.get(table, 0) >= 50_000:
            click.echo(f"  {table}: {done}", err=True)
            last[table] = done

    try:
        sums = migrate_store(src, dst, force=force, progress=progress)
    except HemeiError as err:
        _fail(err)
    for table, (n, digest) in sums.items():
        click.echo(f"  {table:<18} {n:>9} rows  sha256 {digest[:16]}…")
    click.echo(f"copied and verified {len(sums)} tables, "
               f"{sum(n for n, _ in sums.values())} rows: counts and checksums equal")
    click.echo("photos are files: copy <instance>/photos to the new instance too")


if __name__ == "__main__":
    main()
