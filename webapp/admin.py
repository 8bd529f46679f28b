"""Administration in the browser: organisations, accounts, grid assignments, deactivation,
password resets and API tokens.

Every form posts with the CSRF token and needs an administrator. A refused form is shown
again with the reason in the reader's language (:func:`_message`), a 4xx status, and
nothing written.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext, ngettext

from gis.accounts import ORG_KINDS, ROLES, org_kind_label, role_label
from gis.errors import Conflict, HemeiError, InvalidInput, NotFound
from webapp.auth import SESSION_GENERATION, web_user
from webapp.i18n import get_locale

bp = Blueprint("admin", __name__, url_prefix="/admin")


def hemei():
    return current_app.extensions["hemei"]


def _message(err: HemeiError) -> str:
    """What went wrong, for the page: the account rules' reasons worded in the reader's
    language (the ``gis`` messages are English and name the CLI's options)."""
    details = err.details if isinstance(err.details, dict) else {}
    reason = details.get("reason")
    if reason == "username_length":
        return gettext("The username must be 1 to 64 characters long.")
    if reason == "username_taken":
        return gettext("The username %(name)s is already taken (usernames are compared "
                       "without regard to upper and lower case).", name=details.get("name"))
    if reason == "role":
        return gettext("Choose a role.")
    if reason == "grid_required":
        return gettext("A grid worker needs at least one grid.")
    if reason == "unknown_grids":
        codes = details.get("codes") or []
        return ngettext("Unknown grid code: %(codes)s", "Unknown grid codes: %(codes)s",
                        len(codes), codes=", ".join(codes))
    if reason == "org_required":
        return gettext("Field staff belong to an organisation: choose one.")
    if reason == "area_required":
        return gettext("A planner needs an area: choose a street or a community.")
    if reason == "unknown_area":
        return gettext("%(code)s is not the code of a street or community in the active "
                       "boundary layers.", code=details.get("code"))
    if reason == "display_name_length":
        return gettext("The name must be at most 100 characters long.")
    if reason == "password_length":
        return gettext("The password must be at least 8 characters long.")
    if reason == "org_name_length":
        return gettext("The organisation's name must be 1 to 200 characters long.")
    if reason == "org_kind":
        return gettext("Choose the type of the organisation.")
    if reason == "org_exists":
        return gettext("An organisation named %(name)s already exists.",
                       name=details.get("name"))
    if reason == "own_account":
        return gettext("You cannot deactivate your own account.")
    return err.message


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


def _areas() -> list[tuple[str, str, str]]:
    """(level, code, name) of every street and community of the active layers: what a
    planner's area may be."""
    layers = hemei().layers
    return [(level, code, name) for level in ("street", "community") if level in layers
            for code, name in layers[level][["code", "name"]].itertuples(index=False)]


def _page(error: str | None = None, status: int = 200):
    h = hemei()
    locale = get_locale()
    grids = list(h.layers["grid"][["code", "name"]].itertuples(index=False))
    areas = _areas()
    users = h.accounts.all()
    tokens: dict[int, list[dict]] = {}
    for t in h.accounts.tokens():
        tokens.setdefault(t["user_id"], []).append(t)
    return render_template(
        "admin/index.html", users=users, orgs=h.accounts.orgs(),
        roles=[(r, role_label(r, locale)) for r in ROLES],
        org_kinds=[(k, org_kind_label(k, locale)) for k in ORG_KINDS],
        org_kind_label=lambda kind: org_kind_label(kind, locale),
        grids=grids, areas=areas, tokens=tokens,
        # Accounts still assigned to grids or areas a boundary import removed.
        stale=h.accounts.stale_assignments({g.code for g in grids},
                                           {code for _, code, _ in areas}),
        clashes=h.accounts.username_clashes(),
        error=error), status


def _refused(err: HemeiError):
    """The page again, with what was refused and why, at the error's 4xx status."""
    return _page(_message(err), err.status)


@bp.get("/")
def index():
    """Accounts and organisations."""
    web_user("admin")
    return _page()


@bp.post("/orgs")
def add_org():
    """Add an organisation."""
    web_user("admin")
    name = request.form.get("name", "")
    try:
        hemei().accounts.add_org(name, request.form.get("kind", ""))
    except (InvalidInput, Conflict) as err:
        return _refused(err)
    flash(gettext("The organisation %(name)s is added.", name=name.strip()), "admin-ok")
    return redirect(url_for("admin.index"))


@bp.post("/users")
def add_user():
    """Add an account (password at least 8 characters; a planner's area must be a street
    or community of the active layers)."""
    web_user("admin")
    f = request.form
    h = hemei()
    try:
        org = _org_id(f.get("org_id"))
        user = h.accounts.add_user(f.get("username", ""), f.get("role", ""),
                                   password=f.get("password") or None,
                                   display_name=f.get("display_name") or None,
                                   grids=f.getlist("grids"), org_id=org,
                                   area_code=f.get("area_code") or None,
                                   known_grids=set(h.layers["grid"]["code"]),
                                   known_areas={code for _, code, _ in _areas()})
    except (InvalidInput, Conflict) as err:
        return _refused(err)
    flash(gettext("The account %(name)s is added.", name=user.username), "admin-ok")
    return redirect(url_for("admin.index"))


@bp.post("/users/<int:user_id>/assign")
def assign(user_id: int):
    """Set a user's grids and organisation (a grid worker keeps at least one grid, field
    staff keep an organisation)."""
    web_user("admin")
    h = hemei()
    user = h.accounts.get(user_id)  # NotFound (404) for an unknown user
    try:
        org = _org_id(request.form.get("org_id"))
        h.accounts.assign(user_id, request.form.getlist("grids"), org,
                          known_grids=set(h.layers["grid"]["code"]))
    except InvalidInput as err:
        return _refused(err)
    flash(gettext("The assignment of %(name)s is saved.", name=user.username), "admin-ok")
    return redirect(url_for("admin.index"))


@bp.post("/users/<int:user_id>/active")
def set_active(user_id: int):
    """Deactivate (``active=0``) or reactivate (``active=1``) an account. A deactivated
    user's sessions and API tokens stop working at once."""
    me = web_user("admin")
    h = hemei()
    user = h.accounts.get(user_id)  # NotFound (404) for an unknown user
    value = request.form.get("active", "")
    if value not in ("0", "1"):
        return _page(gettext("Say whether the account is to be active (1) or not (0)."), 400)
    active = value == "1"
    if not active and user.id == me.id:
        # An administrator locking themselves out leaves nobody to undo it on the web.
        return _refused(InvalidInput("you cannot deactivate your own account",
                                     field="active", details={"reason": "own_account"}))
    h.accounts.set_active(user_id, active)
    flash(gettext("%(name)s is active again.", name=user.username) if active else
          gettext("%(name)s is deactivated: their sessions and API tokens no longer work.",
                  name=user.username), "admin-ok")
    return redirect(url_for("admin.index"))


@bp.post("/users/<int:user_id>/password")
def set_password(user_id: int):
    """Set a new password for a user (at least 8 characters); their sessions end."""
    me = web_user("admin")
    h = hemei()
    user = h.accounts.get(user_id)  # NotFound (404) for an unknown user
    try:
        h.accounts.set_password(user_id, request.form.get("password", ""))
    except InvalidInput as err:
        return _refused(err)
    if user.id == me.id:
        # Their own reset ends their sessions too; this one, in which they did it, stays.
        session[SESSION_GENERATION] = h.accounts.session_generation(user_id)
    flash(gettext("The password of %(name)s is changed; their sessions have ended.",
                  name=user.username), "admin-ok")
    return redirect(url_for("admin.index"))


@bp.post("/users/<int:user_id>/tokens/<int:token_id>/revoke")
def revoke_token(user_id: int, token_id: int):
    """Revoke one of a user's API tokens (it stops working at once, in every worker)."""
    web_user("admin")
    h = hemei()
    h.accounts.get(user_id)  # NotFound (404) for an unknown user
    h.accounts.revoke_token_id(token_id, user_id)  # NotFound (404): not this user's
    return redirect(url_for("admin.index"))
