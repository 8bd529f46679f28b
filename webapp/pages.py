"""HTML pages: the overview map, a grid, a compound, a case, and search."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from flask import (
    Blueprint,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user

from gis import maps
from gis.cases import Case, status_label, utcnow
from gis.catalogue import get_category, load_catalogue
from gis.coverage import METRICS, parse_period, up_to_now
from gis.errors import InvalidInput, NotFound
from webapp.cache import PageCache, page_entry, respond
from webapp.i18n import get_locale, t

bp = Blueprint("pages", __name__)
PERIODS = ("7d", "30d", "90d", "365d")


def hemei():
    return current_app.extensions["hemei"]


def tiles():
    """The configured tile source (``HEMEI_TILES``)."""
    return current_app.extensions["hemei_tiles"]


def _render(m) -> dict[str, str]:
    return maps.render_parts(m, url_for("static", filename="vendor").rstrip("/"))


def _case_rows(cases: list[Case], locale: str, now: datetime | None = None) -> list[dict]:
    now = now or utcnow()
    return [{
        "id": c.id, "title": c.title, "lon": c.lon, "lat": c.lat, "status": c.status,
        "status_label": status_label(c.status, locale),
        "category_label": get_category(c.category).label(locale),
        "age_days": max((now - c.created_at).days, 0),
        "created_at": c.created_at, "due_at": c.due_at, "overdue": c.is_overdue(now),
        "overdue_days": ((now - c.due_at).total_seconds() / 86400) if c.due_at else None,
        "compound_code": c.compound_code, "grid_code": c.grid_code,
    } for c in cases]


def _by_urgency(rows: list[dict]) -> list[dict]:
    """Open cases, most overdue first (then those due soonest); no due date last."""
    return sorted(rows, key=lambda r: (r["due_at"] is None, r["due_at"] or datetime.max))


@bp.after_app_request
def remember_language(resp):
    # Most requests (every API call) carry no ?lang=: skip parsing the query string.
    if b"lang=" not in request.query_string:
        return resp
    lang = request.args.get("lang")
    if lang in ("zh", "en"):
        resp.set_cookie("lang", lang, max_age=365 * 86400, samesite="Lax")
    return resp


def lang_href(code: str, args=None) -> str:
    """The language switch's link: the current page in language ``code``. A relative URL
    of only a query string, so the browser keeps the path; every query parameter but
    ``lang`` is kept (``/?metric=overdue&period=90d`` stays that map, ``/search?q=…`` keeps
    its results). ``args`` (a mapping or pairs) replaces the request's parameters, for a
    cached page whose link must not depend on parameters its cache key ignores."""
    if args is None:
        pairs = list(request.args.items(multi=True))
    else:
        pairs = list(args.items() if hasattr(args, "items") else args)
    return "?" + urlencode([("lang", code)] + [(k, v) for k, v in pairs
                                               if k != "lang" and v is not None])


@bp.app_context_processor
def inject_i18n():
    return {"t": t, "locale": get_locale(), "lang_href": lang_href}


def _case_options(locale: str) -> dict:
    cats = load_catalogue()
    return {
        "points_url": url_for("api.issue_points"),
        "case_url": url_for("pages.case", case_id=0).replace("/0", "/{id}"),
        "script_url": url_for("static", filename="js/hemei-map.js"),
        "categories": {c.code: c.label(locale) for c in cats.values()},
    }


@bp.get("/")
def overview():
    """The street map: grids coloured by a chosen coverage metric for a period, outlines,
    cases in view (clustered, heat map), search. Cached per data version."""
    h = hemei()
    locale = get_locale()
    metric_key = request.args.get("metric") or "open"
    if metric_key not in METRICS:
        raise InvalidInput(f"unknown metric {metric_key!r}; expected one of: "
                           f"{', '.join(METRICS)}", field="metric")
    # A month not over yet counts to now; one not begun is refused (as on the planner).
    period = up_to_now(parse_period(request.args.get("period") or "30d"))
    scheme = request.args.get("scheme") or "natural_breaks"
    if scheme not in maps.SCHEMES:
        raise InvalidInput(f"unknown scheme {scheme!r}; expected one of: "
                           f"{', '.join(maps.SCHEMES)}", field="scheme")
    now = utcnow()
    key = ("overview", metric_key, period.key, period.end.strftime("%Y%m%d%H"), scheme, locale,
           tiles().kind, h.store.data_version(), _account_links())

    def render() -> str:
        metric = METRICS[metric_key]
        grids = h.coverage(period)
        ch = maps.Choropleth(column=metric_key, title=metric.label(locale),
                             better=metric.better, scheme=scheme,
                             fmt="{:.0%}" if metric.kind == "rate" else "{:.3g}",
                             note=metric.formula(locale), integer=metric.kind == "count")
        m = maps.overview_map(grids, h.layers, ch, tiles=tiles(), locale=locale,
                              grid_url=url_for("pages.grid", code="CODE").replace(
                                  "CODE", "{code}"),
                              case_options=_case_options(locale),
                              geometry_url=url_for("pages.layer_display", level="LEVEL")
                              .replace("LEVEL", "{level}") + "?v={version}",
                              layer_version=_layers_version(),
                              script_url=url_for("static", filename="js/hemei-map.js"))
        open_total = int(grids["open"].fillna(0).sum())
        return render_template(
            "overview.html", map=_render(m), metrics=METRICS, metric=metric,
            metric_key=metric_key, period=period, periods=PERIODS, scheme=scheme,
            schemes=maps.SCHEMES, n_grids=len(grids), n_open=open_total,
            search_names=_search_names(), generated=now,
            # The page is cached by these three: its language link keeps only them.
            lang_args=[(k, request.args.get(k)) for k in ("metric", "period", "scheme")
                       if request.args.get(k)])

    if _flash_pending():
        # A message for this visitor only (logged out …): rendered for them, not cached.
        return respond(page_entry(render()))
    return respond(current_app.extensions["hemei_pages"].get_or_render(key, render))


def _account_links() -> str:
    """Which account links the page header shows (base.html): part of a cached page's
    key, so one visitor's links are never served to another."""
    if not (current_user and current_user.is_authenticated):
        return "anonymous"
    return "planner" if current_user.role in ("admin", "planner", "grid_worker") else "staff"


def _flash_pending() -> bool:
    """Whether the session holds a flashed message (without opening a session that
    the request does not carry)."""
    if not request.cookies.get(current_app.config.get("SESSION_COOKIE_NAME", "session")):
        return False
    return bool(session.get("_flashes"))


def _layers_version() -> str:
    return hemei().layers_version()


@bp.get("/layers/<level>/display.geojson")
def layer_display(level: str):
    """A boundary layer's display geometry (simplified for the overview, rounded, in the
    tile datum): one file per layer version, fetched once and cached by the browser."""
    h = hemei()
    gdf = h.layers.get(level)
    if gdf is None:
        raise NotFound(f"no layer {level!r}")
    version = _layers_version()
    key = ("display", level, version, tiles().datum)

    def render() -> str:
        import json

        b = h.layers["grid"].total_bounds  # the same tolerance for every layer
        extent = max(b[2] - b[0], b[3] - b[1])
        return json.dumps(maps.display_geojson(gdf, tiles(), extent), ensure_ascii=False,
                          separators=(",", ":"))

    resp = respond(current_app.extensions["hemei_pages"].get_or_render(key, render),
                   mimetype="application/geo+json")
    if request.args.get("v") == version:
        # The URL names the layer version, so the file can be kept for a day.
        resp.headers["Cache-Control"] = "public, max-age=86400"
    return resp


def _search_names() -> list[str]:
    layers = hemei().layers
    names = []
    for level in ("compound", "community"):
        if level in layers:
            names += layers[level]["name"].tolist()
    return sorted(set(names))


@bp.get("/search")
def search():
    """Find a grid by code or name, or a compound or community by name or code."""
    q = (request.args.get("q") or "").strip()
    if not q:
        return redirect(url_for("pages.overview"))
    layers = hemei().layers
    hits = []
    for level in ("grid", "compound", "community"):
        gdf = layers.get(level)
        if gdf is None:
            continue
        exact = gdf[(gdf["code"] == q) | (gdf["name"] == q)]
        part = gdf[gdf["name"].str.contains(q, regex=False) | gdf["code"].str.startswith(q)]
        for _, row in (exact if len(exact) else part).iterrows():
            hits.append((level, row["code"], row["name"]))
        if len(exact):
            break
    if len(hits) == 1 and hits[0][0] in ("grid", "compound"):
        level, code, _ = hits[0]
        return redirect(url_for("pages.grid" if level == "grid" else "pages.compound",
                                code=code))
    return render_template("search.html", q=q, hits=hits[:200])


@bp.get("/grids/<code>")
def grid(code: str):
    """One grid: its map, its compounds and its open cases, most overdue first."""
    h = hemei()
    locale = get_locale()
    grids = h.grid_summary()
    match = grids[grids["code"] == code]
    if match.empty:
        raise NotFound(f"no grid with code {code}")
    row = match.iloc[0]
    comps = h.layers.get("compound")
    touching = comps[comps.intersects(row.geometry)] if comps is not None else None
    cases, _ = h.store.list_cases(grid=code, status="open", limit=None)
    rows = _by_urgency(_case_rows(cases, locale))
    m = maps.area_map(row, "grid", touching, rows, tiles=tiles(), locale=locale,
                      case_url=url_for("pages.case", case_id=0).replace("/0", "/{id}"))
    community = h.locator.name("community", row["parent_code"])
    names = dict(zip(comps["code"], comps["name"], strict=True)) if comps is not None else {}
    return render_template("grid.html", map=_render(m), grid=row, cases=rows,
                           community=community, compounds=touching, compound_names=names)


@bp.get("/compounds/<code>")
def compound(code: str):
    """One compound: its map, the grids it straddles and its open cases."""
    h = hemei()
    locale = get_locale()
    comps = h.layers.get("compound")
    match = comps[comps["code"] == code] if comps is not None else []
    if len(match) == 0:
        raise NotFound(f"no compound with code {code}")
    row = match.iloc[0]
    grids = h.layers["grid"]
    # Grids whose interiors meet the compound's (an overlap with an area, not a shared
    # edge): a topological test, so no area is computed in degrees.
    straddled = grids[grids.relate_pattern(row.geometry, "T********")]
    cases, _ = h.store.list_cases(compound=code, status="open", limit=None)
    _all, total = h.store.list_cases(compound=code, limit=1)
    rows = _by_urgency(_case_rows(cases, locale))
    m = maps.area_map(row, "compound", straddled, rows, tiles=tiles(), locale=locale,
                      case_url=url_for("pages.case", case_id=0).replace("/0", "/{id}"))
    return render_template("compound.html", map=_render(m), compound=row, cases=rows,
                           total=total, grids=straddled,
                           community=h.locator.name("community", row["parent_code"]))


@bp.get("/cases/<int:case_id>")
def case(case_id: int):
    """One case: a small map and its history."""
    h = hemei()
    locale = get_locale()
    c = h.store.get_case(case_id)
    layers = h.layers
    areas = {level: layers[level][layers[level]["code"] == code]
             for level, code in (("grid", c.grid_code), ("compound", c.compound_code))
             if code and level in layers}
    m = maps.point_map(c.lon, c.lat, c.title, tiles=tiles(), areas=areas, locale=locale)
    return render_template(
        "case.html", map=_render(m), case=c,
        category=get_category(c.category).label(locale),
        status=status_label(c.status, locale),
        grid_name=h.locator.name("grid", c.grid_code),
        compound_name=h.locator.name("compound", c.compound_code),
        status_label=status_label)


def init_app(app) -> None:
    """Per-app state the pages need: the page cache and the tile configuration."""
    from gis.tiles import tile_config

    s = app.config["HEMEI"]
    app.extensions["hemei_pages"] = PageCache()
    try:
        app.extensions["hemei_tiles"] = tile_config(
            str(s["TILES"]), tianditu_key=str(s.get("TIANDITU_KEY") or ""),
            attribution=str(s.get("TILES_ATTRIBUTION") or ""))
    except ValueError as err:
        raise InvalidInput(str(err), field="HEMEI_TILES") from None
