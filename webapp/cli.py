"""The ``hemei`` command. Every command works on the instance the settings name
(``HEMEI_INSTANCE``, ``HEMEI_DATABASE_URL``)."""

from __future__ import annotations

import json
import sys

import click

from gis.errors import HemeiError
from gis.layers import LEVELS
from gis.settings import read_settings


def _service():
    from gis.service import Hemei

    return Hemei(read_settings())


def _fail(err: HemeiError) -> None:
    click.echo(f"error: {err.message}", err=True)
    sys.exit(2)


@click.group(help="和美网格 Hemei Grid: community grid management.")
def main() -> None:
    pass


@main.command()
def init() -> None:
    """Create the database and load the demo street on first run."""
    try:
        h = _service()
        did = h.ensure_initialised()
    except HemeiError as err:
        _fail(err)
    state = "initialised" if did else "already initialised"
    click.echo(f"{state}: {h.settings['DATABASE_URL']}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--debug", is_flag=True, help="Flask debug mode (never in production).")
def serve(host: str, port: int, debug: bool) -> None:
    """Run the web app (initialising the database and demo data on first run)."""
    from webapp import create_app

    try:
        app = create_app()
    except HemeiError as err:
        _fail(err)
    click.echo(f"Hemei Grid on http://{host}:{port}/  (database: "
               f"{app.config['HEMEI']['DATABASE_URL']})")
    app.run(host=host, port=port, debug=debug, threaded=True)


@main.command("import-shapes")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--layer", "level", type=click.Choice(LEVELS), required=True,
              help="Which boundary level the file holds.")
@click.option("--crs", default=None, help="CRS of a file that has none, e.g. EPSG:4547.")
@click.option("--encoding", default=None, help="Force the attribute encoding (e.g. GBK).")
@click.option("--field", "fields", multiple=True, metavar="NAME=COLUMN",
              help="Map a field: code, name, parent_code or households to a column.")
@click.option("--source-layer", default=None, help="Layer inside a GeoPackage.")
@click.option("--force", is_flag=True, help="Activate the layer even if validation has errors.")
def import_shapes(path, level, crs, encoding, fields, source_layer, force) -> None:
    """Import a boundary layer (GeoPackage, Shapefile, .zip or GeoJSON), validate it
    against the active layers, and activate it if it is clean."""
    from gis.layers import read_layer

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
        report = h.import_layers({level: gdf}, source=path, force=force)
    except HemeiError as err:
        _fail(err)
    click.echo(report.format_text())
    if not report.ok and not force:
        click.echo("import refused: the active layers are unchanged (use --force to "
                   "override)", err=True)
        sys.exit(1)
    click.echo(f"imported {len(gdf)} {level} features from {path}")


@main.group()
def user() -> None:
    """Manage accounts."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "planner", "grid_worker", "field_staff"]),
              required=True)
@click.option("--grid", "grids", multiple=True, help="A grid code (grid workers; repeat).")
@click.option("--org", default=None, help="Organisation name (field staff); created if new.")
@click.option("--area", default=None, help="Street or community code (planners).")
@click.option("--display-name", default=None)
@click.option("--password", default=None, help="Prompted for when omitted.")
@click.option("--no-password", is_flag=True, help="Token-only account (no web login).")
def user_add(name, role, grids, org, area, display_name, password, no_password) -> None:
    """Create an account: hemei user add NAME --role R [--grid CODE ...] [--org ORG]."""
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
                                known_grids=set(h.layers["grid"]["code"]))
    except HemeiError as err:
        _fail(err)
    click.echo(json.dumps(u.to_dict(), ensure_ascii=False))


@user.command("list")
def user_list() -> None:
    """List accounts."""
    h = _service()
    for u in h.accounts.all():
        click.echo(f"{u.username}\t{u.role}\t{u.org_name or ''}\t{','.join(u.grids)}")


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


@token.command("revoke")
@click.argument("token_or_prefix")
def token_revoke(token_or_prefix) -> None:
    """Revoke a token (the token itself or its first 10 characters)."""
    n = _service().accounts.revoke_token(token_or_prefix)
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


if __name__ == "__main__":
    main()
