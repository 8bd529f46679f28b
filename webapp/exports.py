"""Exports over HTTP: CSV and GeoJSON are streamed (the first bytes leave at once, so a
million-row export never times out a request); Excel and GeoPackage are built in the
background and offered as a download when ready (poll the job)."""

from __future__ import annotations

import re

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    request,
    send_file,
    stream_with_context,
    url_for,
)

from gis.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from webapp.apidoc import Content, document, path, query, ref, schema, tag
from webapp.auth import reader

bp = Blueprint("exports", __name__, url_prefix="/api/v1/exports")
EXPORTS = tag("exports", "Cases and indicators as CSV, Excel, GeoJSON and GeoPackage")
STREAMED = {"csv": "text/csv", "geojson": "application/geo+json"}
BUILT = {"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
         "gpkg": "application/geopackage+sqlite3"}
schema("ExportJob", {
    "type": "object", "required": ["id", "state", "done", "total"],
    "properties": {"id": {"type": "string"}, "state": {"enum": ["running", "done", "failed"]},
                   "done": {"type": "integer"}, "total": {"type": "integer"},
                   "error": {"type": ["string", "null"]}, "file": {"type": "string"},
                   "url": {"type": "string"}, "download": {"type": "string"}}})
_FILTERS = [query(n, {"type": "string"}, d) for n, d in (
    ("period", "cases reported in it: 30d, 2026-10 or 2026-10-01..2026-10-31"),
    ("category", "a catalogue code"), ("grid", "a grid code"),
    ("community", "a community code"), ("status", "a status or 'open'"),
    ("lang", "zh or en: headers and labels (default: the page language, the UI switch's "
             "cookie)"))]


def _staff():
    # Exports hold no reporter details, but whole-street downloads are for staff.
    user = reader()
    if user is None:
        raise Unauthorized("exports need a login or an API token")
    if user.role not in ("admin", "planner", "grid_worker"):
        raise Forbidden(f"a {user.role} cannot export cases")
    return user


def _period(default: str | None = None):
    """The ``period`` parameter (``default`` when absent; None when neither) as the
    analytics API reads it: years bounded (:func:`gis.coverage.parse_period`), a period
    that starts after now refused, the current month cut at now
    (:func:`gis.coverage.up_to_now`)."""
    from gis.coverage import parse_period, up_to_now

    raw = (request.args.get("period") or "").strip() or default
    return up_to_now(parse_period(raw)) if raw else None


def _area(level: str) -> str | None:
    """The ``grid`` or ``community`` filter, checked as the analytics API checks it: an
    unknown code is a 400 naming the parameter, not an empty file."""
    from webapp.analytics import check_area

    code = (request.args.get(level) or "").strip() or None
    if code is not None:
        check_area(level, code)
    return code


def _filters():
    from gis.exports import CaseFilters

    args = request.args
    return CaseFilters.parse(period=_period(), category=args.get("category"),
                             grid=_area("grid"), community=_area("community"),
                             status=args.get("status"))


def _locale() -> str:
    """The export's language: ``?lang=`` first, else the language the pages use for this
    request (the ``lang`` cookie the UI switch sets, else the configured default); the
    one selector, :func:`webapp.i18n.get_locale`."""
    from webapp.i18n import get_locale

    return get_locale()


#: What a download's name may hold: ASCII letters, digits, ``_`` and ``-`` in its parts,
#: one ``.`` before the extension; at most :data:`NAME_MAX` characters before it.
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
NAME_MAX = 120


def _period_part(period) -> list[str]:
    """A period as it reads in a file name: ``2026-10``, ``2026-10-01--2026-10-31`` (the
    ISO 8601 interval with ``--`` for ``/``), a relative period with the day it ends on
    (``30d-2026-11-27``), a period cut at now with ``asof`` that day
    (``2026-11-asof-2026-11-27``). Days are the planner's (Beijing) calendar."""
    from webapp.i18n import local_time

    if period is None:
        return []
    key = period.key.replace("..", "--")
    day = local_time(period.end, "%Y-%m-%d")
    if re.fullmatch(r"\d+d", key):
        return [key, day]
    return [key, "asof", day] if period.partial else [key]


def download_name(parts: list[str | None], ext: str) -> str:
    """``hemei-<part>-<part>….<ext>``: empty parts dropped, every run of characters other
    than ``[A-Za-z0-9_-]`` made a ``-`` (so an odd area code cannot break the header or
    leave the folder), the stem cut to :data:`NAME_MAX` characters."""
    words = [_UNSAFE.sub("-", str(p)).strip("-_") for p in ["hemei", *parts] if p]
    stem = "-".join(w for w in words if w)[:NAME_MAX].rstrip("-_")
    return f"{stem}.{_UNSAFE.sub('', ext)[:8]}"


def _case_name(filters, fmt: str) -> str:
    """``hemei-cases-<period>-<community>-<grid>-<category>-<status>.<fmt>``, the filters
    given; no period: the export day (``hemei-cases-2026-11-27.csv``)."""
    from gis.cases import utcnow
    from webapp.i18n import local_time

    period = _period_part(filters.period) or [local_time(utcnow(), "%Y-%m-%d")]
    areas = [f"{level}-{code}" for level, code in (("community", filters.community),
                                                   ("grid", filters.grid),
                                                   ("compound", filters.compound)) if code]
    return download_name(["cases", *period, *areas, filters.category, filters.status], fmt)


def _attachment(resp: Response, name: str) -> Response:
    # The name is ASCII-only (download_name), so the plain RFC 6266 form is enough.
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return resp


def _jobs():
    from gis.exports import BackgroundExports

    app = current_app
    if "hemei_exports" not in app.extensions:
        folder = app.config["HEMEI"]["INSTANCE"] + "/exports"
        app.extensions["hemei_exports"] = BackgroundExports(folder)
    return app.extensions["hemei_exports"]


@bp.get("/cases.<fmt>")
@document("Export cases with their grid chain (CSV and GeoJSON streamed; Excel and "
          "GeoPackage built in the background)", tags=[EXPORTS],
          params=[path("fmt", {"type": "string", "enum": ["csv", "geojson", "xlsx", "gpkg"]},
                       "the format", example="csv"), *_FILTERS],
          responses={200: Content({"type": "string"}, "text/csv",
                                  "the streamed file (text/csv or application/geo+json)"),
                     202: ref("ExportJob")},
          errors=(400, 401, 403, 404), security="optional")
def export_cases(fmt: str):
    """Stream CSV/GeoJSON, or start building an Excel/GeoPackage file (202 + job URL)."""
    from gis import exports

    _staff()
    store = current_app.extensions["hemei"].store
    filters = _filters()
    locale = _locale()
    if fmt in STREAMED:
        gen = (exports.cases_csv if fmt == "csv" else exports.cases_geojson)(
            store, filters, locale=locale)
        resp = Response(stream_with_context(s.encode("utf-8") for s in gen),
                        mimetype=STREAMED[fmt])
        return _attachment(resp, _case_name(filters, fmt))
    if fmt not in BUILT:
        raise NotFound(f"no export format {fmt!r}; csv, geojson, xlsx or gpkg", field="fmt")
    build = exports.cases_xlsx if fmt == "xlsx" else exports.cases_gpkg
    job = _jobs().submit(lambda p, progress: build(p, store, filters, locale=locale,
                                                   progress=progress),
                          _case_name(filters, fmt))
    url = url_for("exports.job", job_id=job.id)
    resp = jsonify({**job.to_dict(), "url": url})
    resp.status_code = 202
    resp.headers["Location"] = url
    return resp


@bp.get("/indicators.<fmt>")
@document("Export the indicators table of one level and period (CSV or Excel)",
          tags=[EXPORTS],
          params=[path("fmt", {"type": "string", "enum": ["csv", "xlsx"]}, "the format",
                       example="csv"),
                  query("level", {"type": "string", "default": "community"},
                        "grid, compound, community, street or org"),
                  query("period", {"type": "string"}, "default 30d"),
                  query("category", {"type": "string"},
                        "a catalogue code: only that category's cases"),
                  query("lang", {"type": "string"},
                        "zh or en (default: the page language, the UI switch's cookie)")],
          responses={200: Content({"type": "string"}, "text/csv", "the file (CSV or Excel)")},
          errors=(400, 401, 403, 404),
          security="optional")
def export_indicators(fmt: str):
    """An indicators table (small: one row per area), returned directly. The period is
    checked as ``/api/v1/indicators`` checks it (bounded years, not in the future, the
    current month to date); ``category`` narrows the cases as on the planner's page."""
    import tempfile

    from gis import exports
    from gis.catalogue import get_category
    from gis.indicators import indicators

    _staff()
    h = current_app.extensions["hemei"]
    period = _period("30d")
    category = (request.args.get("category") or "").strip() or None
    category = get_category(category).code if category else None
    level = request.args.get("level") or "community"
    df = indicators(h.store, level, period, category=category)
    locale = _locale()
    if fmt == "csv":
        body = "".join(exports.indicators_csv(df, locale=locale)).encode("utf-8")
        resp = Response(body, mimetype="text/csv")
    elif fmt == "xlsx":
        with tempfile.TemporaryDirectory() as tmp:
            out = f"{tmp}/indicators.xlsx"
            exports.indicators_xlsx(out, df, locale=locale)
            with open(out, "rb") as fh:
                resp = Response(fh.read(), mimetype=BUILT["xlsx"])
    else:
        raise NotFound(f"no indicators format {fmt!r}; csv or xlsx", field="fmt")
    # hemei-indicators-<level>-<period>[-<category>].<fmt>
    return _attachment(resp, download_name(["indicators", level, *_period_part(period),
                                            category], fmt))


@bp.get("/jobs/<job_id>")
@document("An export job: its state and progress; the file once it is done", tags=[EXPORTS],
          params=[path("job_id", {"type": "string"}, "the job id", example="0"),
                  query("download", {"type": "string"}, "1: send the file")],
          responses={200: ref("ExportJob")},
          errors=(401, 403, 404, 409), security="optional")
def job(job_id: str):
    """Poll a background export; ``?download=1`` sends the file when it is done."""
    from gis.errors import Conflict

    _staff()
    j = _jobs().get(job_id)
    if j is None:
        raise NotFound("no such export job", field="job_id")
    if request.args.get("download") == "1":
        if j.state != "done":
            raise Conflict(f"the export is {j.state}; try again when it is done")
        return send_file(j.path, as_attachment=True, download_name=j.path.name,
                         mimetype=BUILT.get(j.path.suffix.lstrip("."),
                                            "application/octet-stream"))
    return jsonify({**j.to_dict(), "download": url_for("exports.job", job_id=job_id,
                                                       download=1)})


__all__ = ["bp", "InvalidInput"]
