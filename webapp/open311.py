"""Open311 GeoReport v2 under ``/open311/v2/`` (http://wiki.open311.org/GeoReport_v2).

The published GeoReport v2 API, XML and JSON both, the format chosen by the extension
(``services.xml``, ``requests/42.json``). The JSON follows the spec's Spark convention
(a list root is an array; an empty element is ``null``); XML is UTF-8 with the
``<?xml version="1.0" encoding="UTF-8"?>`` declaration, no namespace, exactly the spec's
element names. A 12345 hotline system, a city's Open311 aggregator or a FixMyStreet-style
app can read the catalogue, post reports into the grid workflow and follow them.

Endpoints (``[fmt]`` is ``xml`` or ``json``):

===========================================  =================================================
``GET  discovery.[fmt]``                     Service Discovery (``/open311/v2/discovery`` with
                                             no extension: the same as an HTML page, with the
                                             notes below, as the discovery spec recommends)
``GET  services.[fmt]``                      the category catalogue as services
``GET  services/{service_code}.[fmt]``       a service definition (its attributes)
``POST requests.[fmt]``                      create a service request (needs ``api_key``)
``GET  requests.[fmt]``                      query service requests
``GET  requests/{service_request_id}.[fmt]`` one service request
``GET  tokens/{token}.[fmt]``                the service_request_id of a token
===========================================  =================================================

Mapping decisions
-----------------

- **jurisdiction_id**: one jurisdiction (the street) per instance, so it is optional and
  ignored, as the spec allows.
- **Services** are the catalogue categories (``gis/catalogue.json``): ``service_code`` =
  category code, ``service_name`` = its name, ``description`` = name, major class and time
  limit, ``group`` = the major class's name, ``keywords`` = the catalogue keywords
  comma-separated, ``type`` = ``realtime`` for every service. Names are Chinese unless
  ``?lang=en`` (the app's language switch; ``HEMEI_LOCALE`` decides by default).
- **Service attributes** (``metadata=true``): the catalogue has no per-category extra
  fields, so the attribute definitions live here, as data (:data:`ATTRIBUTES`):
  ``street_light`` has ``pole_number`` (string, optional, "灯杆编号") and ``road_damage``
  has ``size`` (singlevaluelist ``small``/``medium``/``large``, required). ``metadata`` is
  true exactly for the categories listed there; every other service has a definition with
  no attributes. Posted ``attribute[code]`` values are checked against the definition
  (unknown code, missing required value, value not in the list, a string with a line
  break … → 400).
- **api_key** = a Hemei API token (the same tokens as ``/api/v1``, ``hemei token create
  NAME``), sent as a form field (not in the URL, where logs would keep it). The role
  must be one that may
  report through the REST API (administrator, grid worker, field staff). A missing,
  unknown or revoked key, or a role that may not report, is **403** (the spec: "403 for
  errors because of wrong or missing api_key"). Only POST needs a key; every GET is public,
  like ``GET /api/v1/issues``.
- **POST requests**: form-encoded. The location must be ``lat`` + ``long`` (WGS-84); this
  server does not geocode, so ``address_string``/``address_id`` alone is a 400 saying so
  (an ``address_string`` sent with lat/long is kept as a note). A point outside the street
  is a **400** whose description says so. An unknown ``service_code`` is a **404** and a
  missing one a **400** (the spec's list for this method). The request goes through
  :meth:`gis.service.Hemei.report` like every other report: validated, located in its grid
  and compound, given its due date, status ``reported``, actor = the key's user. Its
  **source is** ``hotline``: Open311 posts come from integrations such as the 12345
  hotline, not from a grid worker's patrol or the residents' QR page.
- **description**: HTML is stripped (tags removed, ``<script>``/``<style>`` content
  dropped, entities decoded) and the plain text stored; over 4,000 characters (after
  stripping) is a 400. A request with no description gets the service name (the store
  needs a description).
- **attribute values, media_url, address_string** are stored in one history event of kind
  ``comment`` (补充情况, shown on the case page), added by the key's user through
  :meth:`gis.service.Hemei.add_comment` right after the report: its note lists them for
  people, its data holds ``{"open311": {"attributes": {code: value}, "media_url": …,
  "address_string": …}}`` for programs. (A second write: if it failed, the report would
  still stand and the failure be logged, rather than invite a duplicate re-post.)
- **first_name/last_name/phone** are stored as the case's reporter name and phone (staff
  only, as on the residents' page); **email**, **device_id** and **account_id** are not
  stored. No Open311 response ever contains a reporter's name or phone, a tracking code
  or a staff member's name.
- **service_request_id** = the case id, as a string. Every service is ``realtime``: POST
  answers with the ``service_request_id`` (201 Created, ``Location`` of the request) and
  no ``token``. ``tokens/{token}`` still works as the spec describes: the token of a case
  is its id, so ``tokens/42`` answers ``service_request_id`` 42 and ``token`` 42, and an
  unknown token is a 404. An id (ASCII digits) past the store's 32-bit ids is simply
  not found, like any unknown id: 404 for ``requests/{id}`` and ``tokens/{token}``, no
  match in ``GET requests``.
- **status**: ``closed`` for closed, rejected and closed_not_fixed (final statuses);
  ``open`` otherwise — a resolved case waiting for the grid worker's check is still open.
  The ``status`` filter maps the same way.
- **status_notes** = the note of the latest status change (the transition that set the
  current status, e.g. the reason a case was rejected), ``null`` when it has none.
- **agency_responsible** = the name of the organisation the case is dispatched to or
  claimed by, ``null`` before that.
- **expected_datetime** = the due date; **service_notice** = the category's time limit and
  that due date in words.
- **requested_datetime** = created, **updated_datetime** = last change (the closing time
  for a closed request). All datetimes are ISO 8601 in **UTC with a "Z"** (the store keeps
  UTC; the rest of the API writes the same).
- **address** = the compound (if any), community and street names, most specific first;
  ``address_id`` and ``zipcode`` are not returned (there is no address register).
- **media_url** = a URL posted with the request, else the absolute URL of the case's first
  photo on the photo route (``/m/photos/<key>``, which needs a staff login: photos may
  show people); omitted when there is neither.
- **GET requests**: ``service_request_id`` (comma list) overrides every other argument;
  ``service_code`` and ``status`` take comma lists; ``start_date``/``end_date`` are W3C
  datetimes with a timezone (or a bare date, read as UTC midnight) on the requested time
  and may not span more than 90 days; their year must be 1900–2999 (else a 400). Without
  dates the window is the most recent 90 days; with only one, 90 days from/to it. At
  most 1,000 requests, newest first.
- **Errors** are the spec's array of ``{code, description}`` (``<errors><error>``) with
  404 for a resource that does not exist, 403 for a missing or wrong api_key and 400 for
  anything else (a wrong method, a bad filter, a point outside the street); ``code`` is
  the HTTP status.

Extensions (not in the spec; ignored by clients that do not know them)
---------------------------------------------------------------------

On ``GET requests``: ``grid_code`` (a grid code, or a comma list) and
``bbox=minLon,minLat,maxLon,maxLat`` (WGS-84) filter by place; ``page`` (from 1) and
``page_size`` (1–1,000, default 1,000) page through the matches, whose total count is in
the ``X-Total-Count`` response header. They are listed on the HTML discovery page too.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, render_template_string, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BuildError

from gis import catalogue as catalogue_module
from gis.cases import FINAL_STATUSES, MAX_DESCRIPTION, Case, utcnow
from gis.catalogue import Category, load_catalogue
from gis.errors import HemeiError, OutsideJurisdiction
from webapp.api import MAX_ID

bp = Blueprint("open311", __name__, url_prefix="/open311/v2")

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
CONTENT_TYPES = {"xml": "text/xml; charset=utf-8", "json": "application/json; charset=utf-8"}
FMT = "<any(xml, json):fmt>"
#: Roles whose API token may post a request (those that may report: api.create_issue).
REPORTING_ROLES = ("admin", "grid_worker", "field_staff")
SOURCE = "hotline"
WINDOW = timedelta(days=90)
MAX_REQUESTS = 1000
MAX_STRING = 200
MAX_MEDIA_URL = 2000
#: The years a datetime argument may have: far enough inside datetime's own range (1–9999)
#: that the shift to UTC and the 90-day window can never overflow it, and wider than any
#: real case's dates.
YEARS = (1900, 2999)


class Open311Error(Exception):
    """An error in the spec's format: HTTP ``status`` and a description for the user."""

    def __init__(self, status: int, description: str):
        super().__init__(description)
        self.status = status
        self.description = description


# ------------------------------------------------------------------ service attributes

@dataclass(frozen=True)
class Attribute:
    """One attribute of a service definition (the spec's ``attribute`` element)."""

    code: str
    datatype: str  # string, number, datetime, text, singlevaluelist, multivaluelist
    required: bool
    order: int
    description: tuple[str, str]  # zh, en
    datatype_description: tuple[str, str] | None = None
    values: tuple[tuple[str, str, str], ...] = ()  # (key, zh name, en name)
    variable: bool = True

    def to_dict(self, locale: str) -> dict:
        en = locale.startswith("en")
        out = {"variable": self.variable, "code": self.code, "datatype": self.datatype,
               "required": self.required,
               "datatype_description": (self.datatype_description[en]
                                        if self.datatype_description else None),
               "order": self.order, "description": self.description[en]}
        if self.datatype in ("singlevaluelist", "multivaluelist"):
            out["values"] = [{"key": k, "name": en_name if en else zh_name}
                             for k, zh_name, en_name in self.values]
        return out


#: Extra attributes per category (the catalogue itself has none). ``metadata`` is true in
#: ``services`` exactly for these categories.
ATTRIBUTES: dict[str, tuple[Attribute, ...]] = {
    "street_light": (
        Attribute(code="pole_number", datatype="string", required=False, order=1,
                  description=("灯杆编号（灯杆上的铭牌）",
                               "Pole number (on the plate on the pole)"),
                  datatype_description=("如 JN-0123", "e.g. JN-0123")),
    ),
    "road_damage": (
        Attribute(code="size", datatype="singlevaluelist", required=True, order=1,
                  description=("破损面积", "Size of the damage"),
                  datatype_description=("选择最接近的一项", "Choose the closest"),
                  values=(("small", "小（不足 0.5 平方米）", "Small (under 0.5 m²)"),
                          ("medium", "中（0.5–2 平方米）", "Medium (0.5–2 m²)"),
                          ("large", "大（2 平方米以上）", "Large (over 2 m²)"))),
    ),
}


# ---------------------------------------------------------------------------- helpers

def hemei():
    return current_app.extensions["hemei"]


def _locale() -> str:
    from webapp.i18n import get_locale

    return get_locale()


def _iso(dt: datetime | None) -> str | None:
    """A stored (naive UTC) datetime in the spec's w3 format, UTC with a ``Z``."""
    return None if dt is None else dt.replace(microsecond=0).isoformat() + "Z"


def _external(endpoint: str, **values) -> str:
    """An absolute URL: under ``HEMEI_PUBLIC_URL`` when set, else the request's host."""
    base = str(current_app.config["HEMEI"].get("PUBLIC_URL") or "").rstrip("/")
    if base:
        return base + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)


def _fmt() -> str:
    """The format asked for: the ``fmt`` of the route, else the path's extension (XML, the
    spec's required format, when there is none)."""
    fmt = (request.view_args or {}).get("fmt")
    if fmt in CONTENT_TYPES:
        return fmt
    return "json" if request.path.endswith(".json") else "xml"


#: The element name of the items of each list (the spec's ⇊ containers).
ITEM_TAGS = {"services": "service", "service_requests": "request", "errors": "error",
             "attributes": "attribute", "values": "value", "endpoints": "endpoint",
             "formats": "format"}


#: Characters XML 1.0 cannot hold (a stored description could contain one).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _fill(el: ET.Element, value) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        el.text = "true" if value else "false"
    elif isinstance(value, dict):
        for k, v in value.items():
            _fill(ET.SubElement(el, k), v)
    elif isinstance(value, list):
        for item in value:
            _fill(ET.SubElement(el, ITEM_TAGS[el.tag]), item)
    else:
        el.text = _NOT_XML.sub("", str(value))


def to_xml(root: str, data) -> bytes:
    """``data`` as the spec's XML under ``<root>`` (lists become repeated item elements)."""
    el = ET.Element(root)
    _fill(el, data)
    ET.indent(el)
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            + ET.tostring(el, encoding="unicode").encode("utf-8") + b"\n")


def respond(root: str, data, status: int = 200, fmt: str | None = None) -> Response:
    """The response in the requested format: JSON (Spark convention: the root element is
    dropped, a list root is an array) or XML."""
    fmt = fmt or _fmt()
    if fmt == "json":
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    else:
        body = to_xml(root, data)
    return Response(body, status=status, content_type=CONTENT_TYPES[fmt])


def error_response(status: int, *descriptions: str) -> Response:
    return respond("errors", [{"code": status, "description": d} for d in descriptions],
                   status=status)


@bp.errorhandler(Open311Error)
def _open311_error(err: Open311Error):
    return error_response(err.status, err.description)


@bp.errorhandler(HemeiError)
def _hemei_error(err: HemeiError):
    # 404 stays 404, a credentials problem is the spec's 403, anything else 400 (a point
    # outside the street, a state conflict, a bad value).
    status = {404: 404, 401: 403, 403: 403}.get(err.status, 400)
    return error_response(status, err.message)


@bp.errorhandler(HTTPException)
def _http_error(err: HTTPException):
    status = err.code if err.code in (403, 404) else 400
    return error_response(status, f"{err.name}: {err.description}")


@bp.errorhandler(Exception)
def _unexpected(err: Exception):
    current_app.logger.exception("unhandled error on %s", request.path)
    return error_response(500, "internal error; it has been logged")


# --------------------------------------------------------------------------- discovery

def _changeset() -> str:
    """When the service list or a definition last changed: the catalogue file or this
    module (which holds the attribute definitions), whichever is later."""
    data = Path(catalogue_module.__file__).with_name("catalogue.json")
    mtime = max(data.stat().st_mtime, Path(__file__).stat().st_mtime)
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _endpoint_url() -> str:
    return _external("open311.root").rstrip("/")


def discovery_data() -> dict:
    changeset = _changeset()
    return {
        "changeset": changeset,
        "contact": ("和美网格 Hemei Grid, Open311 GeoReport v2 for the street's community grid "
                    "management: ask the street office's grid management centre. Extensions "
                    "to GET requests: grid_code, bbox=minLon,minLat,maxLon,maxLat, page, "
                    f"page_size (see {_external('open311.discovery_page')})."),
        "key_service": ("The api_key is a Hemei Grid API token of a staff account that may "
                        "report (administrator, grid worker, field staff): an administrator "
                        "creates one with `hemei token create USERNAME`."),
        "endpoints": [{
            "specification": SPECIFICATION,
            "url": _endpoint_url(),
            "changeset": changeset,
            "type": "production",
            "formats": ["text/xml", "application/json"],
        }],
    }


@bp.get(f"/discovery.{FMT}")
def discovery(fmt: str):
    """Service Discovery."""
    return respond("discovery", discovery_data())


_DISCOVERY_HTML = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>Open311 GeoReport v2 · 和美网格</title>
</head><body>
<h1>Open311 GeoReport v2 · 和美网格 Hemei Grid</h1>
<p>Specification: <a href="{{ d.endpoints[0].specification }}">{{
  d.endpoints[0].specification }}</a> ·
 endpoint <code>{{ d.endpoints[0].url }}</code> ({{ d.endpoints[0].type }}) ·
 formats {{ d.endpoints[0].formats | join(", ") }} · changeset {{ d.changeset }} ·
 <a href="{{ xml }}">discovery.xml</a> · <a href="{{ json }}">discovery.json</a></p>
<p>{{ d.key_service }}</p>
<h2>Notes</h2>
<ul>
<li>One jurisdiction: <code>jurisdiction_id</code> is optional and ignored.</li>
<li>POST <code>requests</code>: form-encoded, <code>api_key</code> required (403 when
 missing or wrong), location as <code>lat</code> + <code>long</code> only, inside the street
 (else 400); HTML is stripped from <code>description</code> (at most 4,000 characters).
 The request is located in its grid and enters the grid workflow with source
 <code>hotline</code>; its <code>service_request_id</code> is returned at once (no tokens).</li>
<li>Status <code>closed</code> = closed, rejected or closed not fixed; otherwise
 <code>open</code>. <code>agency_responsible</code> = the organisation handling it;
 <code>expected_datetime</code> = the due date. Datetimes are UTC (<code>Z</code>).</li>
<li>Services with attributes (<code>metadata</code> true): {{ with_attributes | join(", ") }}.</li>
</ul>
<h2>Extensions to GET requests</h2>
<dl>
<dt><code>grid_code</code></dt><dd>only requests in this grid (comma list allowed)</dd>
<dt><code>bbox=minLon,minLat,maxLon,maxLat</code></dt><dd>only requests inside the box
 (WGS-84)</dd>
<dt><code>page</code>, <code>page_size</code></dt><dd>page through the matches (page from
 1, page_size 1–1,000, default 1,000); the total is in the <code>X-Total-Count</code>
 header</dd>
</dl>
</body></html>
"""


@bp.get("/discovery")
def discovery_page():
    """The discovery file as HTML (the spec recommends one), with this server's notes."""
    return render_template_string(
        _DISCOVERY_HTML, d=discovery_data(), with_attributes=sorted(ATTRIBUTES),
        xml=url_for("open311.discovery", fmt="xml"),
        json=url_for("open311.discovery", fmt="json"))


# The endpoint root: also the HTML discovery page.
bp.add_url_rule("/", endpoint="root", view_func=discovery_page)


# ---------------------------------------------------------------------------- services

def _limit_text(cat: Category, locale: str) -> str:
    n, unit = cat.limit_value, cat.limit_unit
    if locale.startswith("en"):
        return f"{n} working day{'s' if n != 1 else ''}" if unit == "working_days" \
            else f"{n} hour{'s' if n != 1 else ''}"
    return f"{n}个工作日" if unit == "working_days" else f"{n}小时"


def service_data(cat: Category, locale: str) -> dict:
    en = locale.startswith("en")
    major = cat.major_en if en else cat.major_zh
    limit = _limit_text(cat, locale)
    description = (f"{cat.en} ({major}); time limit {limit}." if en
                   else f"{cat.zh}（{major}），办理时限{limit}。")
    return {"service_code": cat.code, "service_name": cat.label(locale),
            "description": description, "metadata": bool(ATTRIBUTES.get(cat.code)),
            "type": "realtime", "keywords": ", ".join(cat.keywords), "group": major}


def _category(code: str) -> Category:
    cats = load_catalogue()
    if code not in cats:
        raise Open311Error(404, f"service_code {code!r} was not found; the services are: "
                                f"{', '.join(cats)}")
    return cats[code]


@bp.get(f"/services.{FMT}")
def services(fmt: str):
    """GET Service List: every category of the catalogue."""
    locale = _locale()
    return respond("services", [service_data(c, locale) for c in load_catalogue().values()])


@bp.get(f"/services/<code>.{FMT}")
def service_definition(code: str, fmt: str):
    """GET Service Definition: a category's attributes (none for most)."""
    cat = _category(code)
    locale = _locale()
    attrs = sorted(ATTRIBUTES.get(cat.code, ()), key=lambda a: a.order)
    return respond("service_definition", {"service_code": cat.code,
                                          "attributes": [a.to_dict(locale) for a in attrs]})


# ------------------------------------------------------------------ service requests out

def _address(case: Case) -> str | None:
    loc = hemei().locator
    parts = [loc.name("compound", case.compound_code), loc.name("community",
             case.community_code), loc.name("street", case.street_code)]
    parts = [p for p in parts if p]
    return ", ".join(parts) if parts else None


def _service_notice(case: Case, cat: Category | None, locale: str) -> str | None:
    if cat is None:
        return None
    due = _iso(case.due_at)
    limit = _limit_text(cat, locale)
    if locale.startswith("en"):
        return f"Time limit {limit}" + (f"; to be dealt with by {due}." if due else ".")
    return f"办理时限{limit}" + (f"，应于 {due} 前办结。" if due else "。")


def _photo_url(key: str) -> str | None:
    try:
        return _external("field.photo", key=key)
    except BuildError:  # no photo route in this app: no media_url
        return None


def _chunks(ids: list[int], n: int = 500):
    for i in range(0, len(ids), n):
        yield ids[i:i + n]


def _extras(ids: list[int]) -> dict[int, dict]:
    """Per case id, what the list of cases does not carry: the note of its latest status
    change, a media_url posted through Open311, its first photo."""
    from gis.storage import case_events, photos

    out: dict[int, dict] = {i: {} for i in ids}
    store = hemei().store
    with store._read() as conn:
        for part in _chunks(ids):
            q = (sa.select(case_events.c.case_id, case_events.c.kind, case_events.c.note,
                           case_events.c.data)
                 .where(case_events.c.case_id.in_(part)).order_by(case_events.c.id))
            for cid, kind, note, data in conn.execute(q):
                if kind == "transition":
                    out[cid]["status_notes"] = note or None
                elif kind == "comment" and data and '"open311"' in data:
                    media = (json.loads(data).get("open311") or {}).get("media_url")
                    if media and "media_url" not in out[cid]:
                        out[cid]["media_url"] = media
            q = (sa.select(photos.c.case_id, photos.c.key)
                 .where(photos.c.case_id.in_(part)).order_by(photos.c.id))
            for cid, key in conn.execute(q):
                out[cid].setdefault("photo", key)
    return out


def request_data(cases: list[Case]) -> list[dict]:
    """Cases as the spec's ``request`` elements: no reporter, no staff names."""
    locale = _locale()
    cats = load_catalogue()
    orgs = {o["id"]: o["name"] for o in hemei().accounts.orgs()}
    extras = _extras([c.id for c in cases])
    out = []
    for case in cases:
        cat = cats.get(case.category)
        more = extras.get(case.id, {})
        closed = case.status in FINAL_STATUSES
        updated = case.closed_at if closed and case.closed_at else case.updated_at
        item = {
            "service_request_id": str(case.id),
            "status": "closed" if closed else "open",
            "status_notes": more.get("status_notes"),
            "service_name": cat.label(locale) if cat else case.category,
            "service_code": case.category,
            "description": case.description or None,
            "agency_responsible": orgs.get(case.assignee_org) if case.assignee_org else None,
            "service_notice": _service_notice(case, cat, locale),
            "requested_datetime": _iso(case.created_at),
            "updated_datetime": _iso(updated),
            "expected_datetime": _iso(case.due_at),
            "address": _address(case),
            "lat": case.lat,
            "long": case.lon,
        }
        media = more.get("media_url") or (_photo_url(more["photo"]) if more.get("photo")
                                          else None)
        if media:
            item["media_url"] = media
        out.append(item)
    return out


# ------------------------------------------------------------------------ GET requests

_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_w3(name: str, raw: str) -> datetime:
    """A W3C datetime with its timezone (``2010-01-01T00:00:00Z``, ``…+08:00``) or a bare
    date (UTC midnight), as naive UTC like the store; its year must be in :data:`YEARS`."""
    text = raw.strip()
    # "+08:00" sent unencoded in a query string arrives as " 08:00".
    text = re.sub(r" ([0-9]{2}:?[0-9]{2})$", r"+\1", text)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise Open311Error(400, f"{name} {raw!r} is not a w3 datetime like "
                                "2010-01-01T00:00:00Z") from None
    if dt.tzinfo is None and not _DATE_ONLY.fullmatch(text):
        raise Open311Error(400, f"{name} {raw!r} needs a timezone: Z or an offset "
                                "like +08:00 (e.g. 2010-01-01T00:00:00Z)")
    # Checked before any arithmetic: near year 1 or 9999 the shift to UTC, or the 90-day
    # window, would overflow datetime.
    if not YEARS[0] <= dt.year <= YEARS[1]:
        raise Open311Error(400, f"{name} {raw!r} is out of range: the year must be "
                                f"between {YEARS[0]} and {YEARS[1]}")
    return dt if dt.tzinfo is None else dt.astimezone(UTC).replace(tzinfo=None)


def _window() -> tuple[datetime | None, datetime | None]:
    start_raw = request.args.get("start_date") or ""
    end_raw = request.args.get("end_date") or ""
    start = parse_w3("start_date", start_raw) if start_raw.strip() else None
    end = parse_w3("end_date", end_raw) if end_raw.strip() else None
    if start is None and end is None:
        return utcnow() - WINDOW, None
    if start is None:
        return end - WINDOW, end
    if end is None:
        return start, start + WINDOW
    if end < start:
        raise Open311Error(400, "end_date is before start_date")
    if end - start > WINDOW:
        raise Open311Error(400, "start_date and end_date may not span more than 90 days")
    return start, end


def _csv(name: str) -> list[str]:
    """A comma-delimited argument, also when it is declared several times."""
    return [p.strip() for v in request.args.getlist(name) for p in v.split(",") if p.strip()]


#: An integer in ASCII digits. str.isdigit() and int() also take other scripts' digits:
#: int() refuses "²" (which isdigit() passes) and reads "٣" as 3.
_INTEGER = re.compile(r"([+-]?)0*([0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
#: What a number of more than 18 digits reads as: past every bound checked here, so the
#: range check refuses it (int() refuses over 4,300 digits, SQLite over 64 bits).
_HUGE = 10**18


def _ascii_int(raw: str) -> int | None:
    """``raw`` as an integer when it is one in ASCII digits (a sign and leading zeros
    allowed), else None; over 18 significant digits it reads as ±10**18."""
    m = _INTEGER.fullmatch(raw)
    if m is None:
        return None
    sign, digits = m.groups()
    value = int(digits) if len(digits) <= 18 else _HUGE
    return -value if sign == "-" else value


def _case_id(raw: str) -> int | None:
    """The case id ``raw`` (ASCII digits) names, None when it names none: not digits, or
    past the store's 32-bit ids, where no case can be (and SQLite cannot compare)."""
    if not _DIGITS.fullmatch(raw):
        return None
    value = _ascii_int(raw)
    return value if value <= MAX_ID else None


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return default
    v = _ascii_int(raw)
    if v is None:
        raise Open311Error(400, f"{name} must be an integer (digits 0-9), got {raw!r}")
    if not lo <= v <= hi:
        raise Open311Error(400, f"{name} must be between {lo} and {hi}, got {raw}")
    return v


def _conditions() -> list:
    from gis.storage import cases as t

    ids = _csv("service_request_id")
    if ids:  # "This overrides all other arguments."
        if not all(_DIGITS.fullmatch(i) for i in ids):
            raise Open311Error(400, "service_request_id must be a comma-delimited list of "
                                    "request ids (integers, digits 0-9)")
        # An id no case can have matches nothing, like any unknown id.
        return [t.c.id.in_([n for n in map(_case_id, ids) if n is not None])]
    conds = []
    start, end = _window()
    conds.append(t.c.created_at >= start)
    if end is not None:
        conds.append(t.c.created_at <= end)
    codes = _csv("service_code")
    if codes:
        cats = load_catalogue()
        unknown = [c for c in codes if c not in cats]
        if unknown:
            raise Open311Error(400, f"unknown service_code {', '.join(unknown)}; the services "
                                    f"are: {', '.join(cats)}")
        conds.append(t.c.category.in_(codes))
    statuses = set(_csv("status"))
    if statuses - {"open", "closed"}:
        raise Open311Error(400, "status must be open or closed (or both, comma-delimited)")
    if statuses == {"closed"}:
        conds.append(t.c.status.in_(FINAL_STATUSES))
    elif statuses == {"open"}:
        conds.append(t.c.status.not_in(FINAL_STATUSES))
    grids = _csv("grid_code")  # extension
    if grids:
        conds.append(t.c.grid_code.in_(grids))
    bbox_raw = request.args.get("bbox")  # extension
    if bbox_raw:
        minx, miny, maxx, maxy = hemei().parse_bbox(bbox_raw)
        conds.append(hemei().store.bbox_condition(minx, miny, maxx, maxy))  # GiST on PostGIS
    return conds


def query_cases(conds: list, limit: int, offset: int) -> tuple[list[Case], int]:
    """Cases matching ``conds``, newest first, and how many match in all."""
    from gis.storage import cases as t

    store = hemei().store
    q = (sa.select(t).where(*conds).order_by(t.c.created_at.desc(), t.c.id.desc())
         .limit(limit).offset(offset))
    with store._read() as conn:
        rows = conn.execute(q).mappings().all()
        total = conn.execute(sa.select(sa.func.count()).select_from(t).where(*conds)).scalar()
    return [store._row_to_case(r) for r in rows], int(total)


@bp.get(f"/requests.{FMT}")
def list_requests(fmt: str):
    """GET Service Requests (the last 90 days, at most 1,000, newest first by default)."""
    conds = _conditions()
    page = _int_arg("page", 1, 1, 10**6)
    page_size = _int_arg("page_size", MAX_REQUESTS, 1, MAX_REQUESTS)
    rows, total = query_cases(conds, page_size, (page - 1) * page_size)
    resp = respond("service_requests", request_data(rows))
    resp.headers["X-Total-Count"] = str(total)
    return resp


def _case_or_404(raw: str, what: str) -> Case:
    from gis.errors import NotFound

    case_id = _case_id(raw)
    if case_id is None:
        raise Open311Error(404, f"{what} {raw!r} was not found")
    try:
        return hemei().store.get_case(case_id)
    except NotFound:
        raise Open311Error(404, f"{what} {raw!r} was not found") from None


@bp.get(f"/requests/<rid>.{FMT}")
def get_request(rid: str, fmt: str):
    """GET Service Request."""
    return respond("service_requests", request_data([_case_or_404(rid, "service_request_id")]))


@bp.get(f"/tokens/<token>.{FMT}")
def get_token(token: str, fmt: str):
    """GET service_request_id from a token: a case's token is its id (requests are
    realtime, so POST never hands out tokens)."""
    case = _case_or_404(token, "token")
    return respond("service_requests", [{"service_request_id": str(case.id),
                                         "token": str(case.id)}])


# ----------------------------------------------------------------------- POST requests

class _PlainText(HTMLParser):
    """Collects the text of an HTML fragment, dropping script/style content."""

    BLOCKS = {"p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "br" or tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """Plain text: tags removed, script/style content dropped, entities decoded, blank
    runs tidied. Text without markup comes back as it was (trimmed)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "<" in text or "&" in text:
        parser = _PlainText()
        parser.feed(text)
        parser.close()
        text = "".join(parser.parts).replace("\xa0", " ")
        text = "\n".join(line.rstrip() for line in text.split("\n"))
        text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


_ATTR_KEY = re.compile(r"attribute\[([^\[\]]+)\](\[\])?")


def parse_attributes(cat: Category, form) -> dict[str, object]:
    """The posted ``attribute[code]`` (``attribute[code][]`` for a multivaluelist) values,
    checked against the service definition."""
    sent: dict[str, list[str]] = {}
    for key in form:
        m = _ATTR_KEY.fullmatch(key)
        if m:
            sent.setdefault(m.group(1), []).extend(
                v.strip() for v in form.getlist(key) if v.strip())
    definition = {a.code: a for a in ATTRIBUTES.get(cat.code, ())}
    unknown = sorted(set(sent) - set(definition))
    if unknown:
        known = ", ".join(definition) or "none"
        raise Open311Error(400, f"attribute[{unknown[0]}] is not an attribute of service "
                                f"{cat.code!r} (its attributes: {known})")
    out: dict[str, object] = {}
    for a in sorted(definition.values(), key=lambda a: a.order):
        values = sent.get(a.code, [])
        if not values:
            if a.required:
                raise Open311Error(400, f"attribute[{a.code}] is required for service "
                                        f"{cat.code!r} ({a.description[1]})")
            continue
        keys = [k for k, _, _ in a.values]
        if a.datatype == "multivaluelist":
            bad = [v for v in values if v not in keys]
            if bad:
                raise Open311Error(400, f"attribute[{a.code}] value {bad[0]!r} is not one "
                                        f"of: {', '.join(keys)}")
            out[a.code] = values
            continue
        if len(values) > 1:
            raise Open311Error(400, f"attribute[{a.code}] takes one value")
        value = values[0]
        if a.datatype == "singlevaluelist" and value not in keys:
            raise Open311Error(400, f"attribute[{a.code}] must be one of: {', '.join(keys)}; "
                                    f"got {value!r}")
        if a.datatype == "string" and ("\n" in value or len(value) > MAX_STRING):
            raise Open311Error(400, f"attribute[{a.code}] must be one line of at most "
                                    f"{MAX_STRING} characters")
        if a.datatype == "text" and len(value) > MAX_DESCRIPTION:
            raise Open311Error(400, f"attribute[{a.code}] is over {MAX_DESCRIPTION} "
                                    "characters")
        if a.datatype == "number":
            try:
                float(value)
            except ValueError:
                raise Open311Error(400, f"attribute[{a.code}] must be a number") from None
        if a.datatype == "datetime":
            parse_w3(f"attribute[{a.code}]", value)
        out[a.code] = value
    return out


def _attribute_note(cat: Category, attrs: dict[str, object]) -> list[str]:
    lines = []
    for a in ATTRIBUTES.get(cat.code, ()):
        if a.code not in attrs:
            continue
        names = {k: zh for k, zh, _ in a.values}
        value = attrs[a.code]
        shown = "、".join(names.get(v, v) for v in value) if isinstance(value, list) \
            else names.get(value, value)
        lines.append(f"{a.description[0]}：{shown}")
    return lines


def _api_key_user():
    key = (request.form.get("api_key") or "").strip()
    if not key:
        raise Open311Error(403, "api_key is missing: creating a request needs an api_key "
                                "(a Hemei Grid API token)")
    user = hemei().accounts.user_for_token(key)
    if user is None:
        raise Open311Error(403, "invalid api_key received: unknown or revoked -- can't "
                                "proceed with create_request")
    if user.role not in REPORTING_ROLES:
        raise Open311Error(403, f"the api_key belongs to a {user.role}, who may not create "
                                f"requests; it needs one of: {', '.join(REPORTING_ROLES)}")
    return user


def _coordinate(name: str, raw: str, limit: float) -> float:
    try:
        v = float(raw)
    except ValueError:
        raise Open311Error(400, f"{name} must be a number (WGS-84), got {raw!r}") from None
    if not -limit <= v <= limit:  # also refuses nan
        raise Open311Error(400, f"{name} must be between -{limit:g} and {limit:g}")
    return v


def _media_url(raw: str) -> str | None:
    url = raw.strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > MAX_MEDIA_URL \
            or any(c.isspace() for c in url):
        raise Open311Error(400, "media_url must be an http(s) URL of at most "
                                f"{MAX_MEDIA_URL} characters")
    return url


def _reporter(form) -> dict:
    first = (form.get("first_name") or "").strip()
    last = (form.get("last_name") or "").strip()
    cjk = re.search(r"[\u3400-\u9fff]", first + last)
    name = (last + first) if cjk else " ".join(p for p in (first, last) if p)
    phone = (form.get("phone") or "").strip()
    if len(name) > 100:
        raise Open311Error(400, "first_name and last_name are over 100 characters together")
    if len(phone) > 40:
        raise Open311Error(400, "phone is over 40 characters")
    return {k: v for k, v in (("reporter_name", name), ("reporter_phone", phone)) if v}


@bp.post(f"/requests.{FMT}")
def create_request(fmt: str):
    """POST Service Request: form-encoded, ``api_key`` required; the case is located in
    its grid and enters the workflow like any other report."""
    if request.mimetype not in ("application/x-www-form-urlencoded", "multipart/form-data") \
            and request.content_length:
        raise Open311Error(400, "send the request form-encoded "
                                "(Content-Type: application/x-www-form-urlencoded)")
    user = _api_key_user()
    form = request.form
    code = (form.get("service_code") or "").strip()
    if not code:
        raise Open311Error(400, "service_code was not provided")
    cat = _category(code)
    lat_raw, lon_raw = (form.get("lat") or "").strip(), (form.get("long") or "").strip()
    address = (form.get("address_string") or "").strip()
    if not lat_raw and not lon_raw:
        if address or (form.get("address_id") or "").strip():
            raise Open311Error(400, "this server locates requests by lat and long only; "
                                    "address_string and address_id cannot be geocoded")
        raise Open311Error(400, "a location is required: lat and long (WGS-84)")
    if not lat_raw or not lon_raw:
        raise Open311Error(400, "lat and long must both be sent")
    lat = _coordinate("lat", lat_raw, 90.0)
    lon = _coordinate("long", lon_raw, 180.0)
    description = strip_html(form.get("description") or "")
    if len(description) > MAX_DESCRIPTION:
        raise Open311Error(400, f"description is {len(description)} characters long; the "
                                f"limit is {MAX_DESCRIPTION:,}")
    attrs = parse_attributes(cat, form)
    media_url = _media_url(form.get("media_url") or "")
    if len(address) > MAX_STRING:
        raise Open311Error(400, f"address_string is over {MAX_STRING} characters")
    extra = _reporter(form)
    payload = {"category": cat.code, "lon": lon, "lat": lat,
               "description": description or cat.zh, "source": SOURCE}
    try:
        case = hemei().report(payload, actor=user.display_name, extra=extra or None)
    except OutsideJurisdiction:
        street = next(iter(hemei().layers["street"]["name"]), None) \
            if "street" in hemei().layers else None
        raise Open311Error(400, f"the location (lat {lat:g}, long {lon:g}) is outside the "
                                f"jurisdiction{' of ' + street if street else ''}: no grid "
                                "contains it") from None
    if attrs or media_url or address:
        note = _attribute_note(cat, attrs)
        if address:
            note.append(f"地址：{address}")
        if media_url:
            note.append(f"附件：{media_url}")
        data = {k: v for k, v in (("attributes", attrs), ("media_url", media_url),
                                  ("address_string", address)) if v}
        try:
            hemei().add_comment(user, case.id, "Open311 " + "；".join(note),
                                data={"open311": data})
        except Exception:  # the report stands; do not invite a duplicate re-post
            current_app.logger.exception("could not store the Open311 details of case %s",
                                         case.id)
    locale = _locale()
    body = [{"service_request_id": str(case.id),
             "service_notice": _service_notice(case, cat, locale)}]
    resp = respond("service_requests", body, status=201)
    resp.headers["Location"] = _external("open311.get_request", rid=case.id, fmt=fmt)
    return resp


# ------------------------------------------------------------------------- the rest

@bp.route("/<path:rest>", methods=["GET", "POST"])
def not_found(rest: str):
    """Anything else under the endpoint: the spec's error format, not an HTML page."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    other = "POST" if request.method == "GET" else "GET"
    try:
        endpoint, _ = adapter.match(request.path, method=other)
    except HTTPException:
        endpoint = None
    if endpoint and endpoint != "open311.not_found":
        raise Open311Error(400, f"{request.method} is not supported here; use {other}")
    raise Open311Error(404, f"no such resource: {request.path} (formats: .xml, .json)")
