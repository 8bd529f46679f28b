"""Administration in the browser: organisations, accounts, grid assignments."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_babel import gettext, ngettext

from gis.accounts import ORG_KINDS, ROLES
from gis.errors import Conflict, InvalidInput, NotFound
from webapp.auth import web_user

bp = Blueprint("admin", __name__, url_prefix="/admin")


def hemei():
    return current_app.extensions["hemei"]


def _org_id(value: str | None) -> int | None:
    """The organisation a form names (empty: none); InvalidInput for anything else."""
    if not value:
        return None
    try:
        org_id = int(value)
        hemei().accounts.org(org_id)
    except (ValueError, NotFound):
        raise InvalidInput(gettext("There is no organisation with the id %(id)s",
                                   id=repr(value)), field="org_id") from None
    return org_id


def _page(error: str | None = None, status: int = 200):
    h = hemei()
    grids = h.layers["grid"][["code", "name"]].itertuples(index=False)
    return render_template("admin/index.html", users=h.accounts.all(), orgs=h.accounts.orgs(),
                           roles=ROLES, org_kinds=ORG_KINDS, grids=list(grids),
                           error=error), status


@bp.get("/")
def index():
    """Accounts and organisations."""
    web_user("admin")
    return _page()


@bp.post("/orgs")
def add_org():
    """Add an organisation."""
    web_user("admin")
    try:
        hemei().accounts.add_org(request.form.get("name", ""), request.form.get("kind", ""))
    except (InvalidInput, Conflict) as err:
        return _page(err.message, err.status)
    return redirect(url_for("admin.index"))


@bp.post("/users")
def add_user():
    """Add an account (password at least 8 characters)."""
    web_user("admin")
    f = request.form
    h = hemei()
    try:
        org = _org_id(f.get("org_id"))
        h.accounts.add_user(f.get("username", ""), f.get("role", ""),
                            password=f.get("password") or None,
                            display_name=f.get("display_name") or None,
                            grids=f.getlist("grids"), org_id=org,
                            area_code=f.get("area_code") or None,
                            known_grids=set(h.layers["grid"]["code"]))
    except (InvalidInput, Conflict) as err:
        return _page(err.message, err.status)
    return redirect(url_for("admin.index"))


@bp.post("/users/<int:user_id>/assign")
def assign(user_id: int):
    """Set a user's grids and organisation."""
    web_user("admin")
    h = hemei()
    h.accounts.get(user_id)  # NotFound (404) for an unknown user
    grids = request.form.getlist("grids")
    unknown = set(grids) - set(h.layers["grid"]["code"])
    if unknown:
        return _page(ngettext("Unknown grid code: %(codes)s", "Unknown grid codes: %(codes)s",
                              len(unknown), codes=", ".join(sorted(unknown))), 400)
    try:
        org = _org_id(request.form.get("org_id"))
    except InvalidInput as err:
        return _page(err.message, err.status)
    h.accounts.set_grids(user_id, grids)
    h.accounts.set_org(user_id, org)
    return redirect(url_for("admin.index"))
