"""HTML pages: the overview map, a grid, a case."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request, url_for

from gis import maps
from gis.cases import Case, status_label, utcnow
from gis.catalogue import get_category
from gis.errors import NotFound
from webapp.i18n import get_locale, t

bp = Blueprint("pages", __name__)


def hemei():
    return current_app.extensions["hemei"]


def _tiles():
    s = current_app.config["HEMEI"]
    return maps.tile_source(str(s["TILES"]), str(s.get("TILES_ATTRIBUTION") or ""))


def _render(m) -> dict[str, str]:
    return maps.render_parts(m, url_for("static", filename="vendor").rstrip("/"))


def _case_rows(cases: list[Case], locale: str) -> list[dict]:
    now = utcnow()
    return [{
        "id": c.id, "title": c.title, "lon": c.lon, "lat": c.lat, "status": c.status,
        "status_label": status_label(c.status, locale),
        "category_label": get_category(c.category).label(locale),
        "age_days": max((now - c.created_at).days, 0),
        "created_at": c.created_at, "due_at": c.due_at, "overdue": c.is_overdue(now),
        "compound_code": c.compound_code,
    } for c in cases]


@bp.after_request
def remember_language(resp):
    lang = request.args.get("lang")
    if lang in ("zh", "en"):
        resp.set_cookie("lang", lang, max_age=365 * 86400, samesite="Lax")
    return resp


@bp.app_context_processor
def inject_i18n():
    return {"t": t, "locale": get_locale()}


@bp.get("/")
def overview():
    """The street map: grids coloured by open cases, outlines, clustered cases."""
    h = hemei()
    locale = get_locale()
    grids = h.grid_summary()
    cases, _ = h.store.list_cases(limit=None)
    m = maps.overview_map(grids, h.layers, _case_rows(cases, locale), tiles=_tiles(),
                          locale=locale)
    return render_template("overview.html", map=_render(m),
                           n_grids=len(grids), n_open=int(grids["open"].sum()))


@bp.get("/grids/<code>")
def grid(code: str):
    """One grid: its map, its compounds and its cases."""
    h = hemei()
    locale = get_locale()
    grids = h.grid_summary()
    match = grids[grids["code"] == code]
    if match.empty:
        raise NotFound(f"no grid with code {code}")
    row = match.iloc[0]
    comps = h.layers.get("compound")
    touching = comps[comps.intersects(row.geometry)] if comps is not None else None
    cases, _ = h.store.list_cases(grid=code, limit=None)
    rows = _case_rows(cases, locale)
    m = maps.grid_map(row, touching if touching is not None else [], rows, tiles=_tiles(),
                      locale=locale)
    community = h.locator.name("community", row["parent_code"])
    names = dict(zip(comps["code"], comps["name"], strict=True)) if comps is not None else {}
    return render_template("grid.html", map=_render(m), grid=row, cases=rows,
                           community=community, compounds=touching, compound_names=names)


@bp.get("/cases/<int:case_id>")
def case(case_id: int):
    """One case: a small map and its history."""
    h = hemei()
    locale = get_locale()
    c = h.store.get_case(case_id)
    m = maps.point_map(c.lon, c.lat, c.title, tiles=_tiles())
    return render_template(
        "case.html", map=_render(m), case=c,
        category=get_category(c.category).label(locale),
        status=status_label(c.status, locale),
        grid_name=h.locator.name("grid", c.grid_code),
        compound_name=h.locator.name("compound", c.compound_code),
        status_label=status_label)
