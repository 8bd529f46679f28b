"""Cases and indicator tables as CSV, Excel, GeoJSON and GeoPackage.

What an export holds
--------------------
:data:`CASE_COLUMNS` is the one list of what a case export holds, with its Chinese and
English headers: the case, its category and status as names (and their codes), the full
chain street → community → compound → grid as codes *and* names, the position, the
timestamps, overdue, rework and extension counts, the needs-list kind and the name of the
organisation it is dispatched to or claimed by. Never the reporter's name or phone number,
nor the resident's tracking code: those are selected by no query here (a test plants them
and searches every output for them).

- Timestamps are stored as naive UTC. What a person reads is Beijing time (UTC+8, the
  street office's clock, :mod:`gis.localtime`; headers and notes say so): real dates in
  Excel and ``YYYY-MM-DD HH:MM:SS`` in CSV, both Beijing wall-clock times. The machine
  formats stay exact instants: ISO 8601 UTC with ``Z`` in GeoJSON, UTC date-times in
  GeoPackage (the GeoPackage standard's; GIS software shows them in its own zone).
- ``overdue`` is "open and past its due time" at the moment the export started (what the
  case page shows), one moment for the whole file.
- Empty cells are missing values ("no data"), never 0.

Formats
-------
- CSV (:func:`cases_csv`, :func:`indicators_csv`): generators of text chunks for streaming
  (a web response, a file). The first chunk starts with a UTF-8 byte-order mark: without
  it Excel on a Chinese Windows opens a UTF-8 CSV as GBK and shows mojibake; with it
  Excel, WPS, LibreOffice and ``pandas.read_csv(encoding="utf-8-sig")`` all read the
  Chinese text. Encode the chunks as plain ``utf-8`` (the BOM is already in the text).
  Text that starts with ``= + - @``, a tab or a carriage return gets a leading ``'`` so a
  spreadsheet does not run a resident's title as a formula (CSV injection).
- Excel (:func:`cases_xlsx`, :func:`indicators_xlsx`): openpyxl *write-only* workbooks, so
  rows stream to disk and memory stays flat. Chinese headers in bold, the header row
  frozen, an auto-filter, dates as date cells, a second sheet ("说明") with the filters,
  the time of the export and notes. In write-only mode column widths must be written
  before the first row, so they are sized from the header and the first batch of rows
  (CJK characters count double, between 6 and 60 characters wide).
- GeoJSON (:func:`cases_geojson`): a streamed RFC 7946 FeatureCollection (WGS-84
  lon/lat), English property names.
- GeoPackage (:func:`cases_gpkg`): one layer ``cases``, points in EPSG:4326, English
  column names (QGIS, ogr2ogr and shapefile conversions prefer ASCII field names), the
  names in Chinese (GeoPackage text is UTF-8), timestamps as UTC date-times (exact
  instants, marked UTC). Written batch
  by batch with pyogrio in append mode.

Files are written to a temporary file beside the target and moved into place at the end,
so a failed or interrupted export never leaves a half-written file under the real name.

Size
----
Measured on the project's 2-core machine, 27 columns: CSV about 10,000 cases a second,
GeoJSON and GeoPackage 7–9,000, Excel about 2,000 (openpyxl serialises every cell in
Python; a sheet holds at most 1,048,575 rows, more is refused before anything is
written). Memory stays flat: the same peak for 50,000 and 200,000 cases.

Cases are read in batches of ``batch_size`` (5,000) rows by keyset pagination on ``id``
(``WHERE id > last ORDER BY id LIMIT n``), each batch in its own short read, so neither
memory nor a database transaction grows with the number of cases, and a streamed web
response holds no lock while the client reads. Every case present for the whole export
appears exactly once; a case added while a long export runs may or may not be in it.
``progress(done, total)`` is called with 0 first and after each batch.

Long exports on the web: stream the generators (``flask.Response(stream_with_context(
cases_csv(...)))``), or build a file with :class:`BackgroundExports` and offer the
download when it is done.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from gis.cases import NEEDS_KINDS, OPEN_STATUSES, status_label, utcnow
from gis.catalogue import get_category, load_catalogue
from gis.coverage import Period, parse_period
from gis.errors import InvalidInput
from gis.localtime import to_beijing
from gis.storage import boundaries, cases, layer_versions

__all__ = [
    "BATCH_SIZE", "CASE_COLUMNS", "SOURCE_LABELS", "BackgroundExports", "CaseFilters",
    "area_names", "atomic_path", "case_batches", "cases_csv", "cases_geojson", "cases_gpkg",
    "cases_xlsx", "count_cases", "display_width", "indicator_columns", "indicators_csv",
    "indicators_xlsx",
]

BATCH_SIZE = 5000
EXCEL_MAX_ROWS = 1_048_575  # an Excel sheet's 1,048,576 rows, less the header
Progress = Callable[[int, int], None] | None

# (key, zh header, en header). The key is the GeoJSON property and GeoPackage column name.
CASE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("id", "案件编号", "Case ID"),
    ("category", "类别", "Category"),
    ("category_code", "类别编码", "Category code"),
    ("title", "标题", "Title"),
    ("description", "描述", "Description"),
    ("status", "状态", "Status"),
    ("status_code", "状态编码", "Status code"),
    ("source", "来源", "Source"),
    ("street_code", "街道编码", "Street code"),
    ("street_name", "街道", "Street"),
    ("community_code", "社区编码", "Community code"),
    ("community_name", "社区", "Community"),
    ("compound_code", "小区编码", "Compound code"),
    ("compound_name", "小区", "Compound"),
    ("grid_code", "网格编码", "Grid code"),
    ("grid_name", "网格", "Grid"),
    ("lon", "经度", "Longitude"),
    ("lat", "纬度", "Latitude"),
    ("created_at", "上报时间（北京时间）", "Reported (Beijing time)"),
    ("due_at", "处置时限（北京时间）", "Due (Beijing time)"),
    ("resolved_at", "处置时间（北京时间）", "Resolved (Beijing time)"),
    ("closed_at", "结案时间（北京时间）", "Closed (Beijing time)"),
    ("overdue", "是否超期", "Overdue"),
    ("rework_count", "返工次数", "Reworks"),
    ("extension_count", "延期次数", "Extensions"),
    ("needs_kind", "需求清单", "Needs list"),
    ("assignee_org", "责任单位", "Assigned organisation"),
)
CASE_KEYS = tuple(c[0] for c in CASE_COLUMNS)
_TIMES = ("created_at", "due_at", "resolved_at", "closed_at")
_INTS = ("id", "rework_count", "extension_count")

SOURCE_LABELS = {
    "patrol": ("网格巡查", "Patrol"),
    "resident": ("居民上报", "Resident"),
    "hotline": ("12345热线", "Hotline"),
    "meeting": ("联席会议", "Residents' meeting"),
}
_YES_NO = {"zh": ("是", "否"), "en": ("yes", "no")}


def _en(locale: str) -> bool:
    return str(locale or "zh").startswith("en")


# -- filters -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseFilters:
    """Which cases an export holds. ``period``: cases *reported* within it (``created_at``
    in ``[start, end)``); the others match the stored value exactly."""

    period: Period | None = None
    category: str | None = None
    grid: str | None = None
    community: str | None = None
    compound: str | None = None
    status: str | None = None

    @classmethod
    def parse(cls, period: Period | str | None = None, category: str | None = None,
              grid: str | None = None, community: str | None = None,
              compound: str | None = None, status: str | None = None) -> CaseFilters:
        """Validate filters given as text (``InvalidInput`` naming the field)."""
        from gis.cases import STATUSES

        if isinstance(period, str):
            period = parse_period(period) if period.strip() else None
        if category not in (None, ""):
            category = get_category(category).code
        if status not in (None, "", "open") and status not in STATUSES:
            raise InvalidInput(f"unknown status {status!r}; expected open or one of: "
                               f"{', '.join(STATUSES)}", field="status")
        return cls(period=period, category=category or None, grid=grid or None,
                   community=community or None, compound=compound or None,
                   status=status or None)

    def conditions(self) -> list:
        c = cases.c
        conds = []
        if self.period is not None:
            conds += [c.created_at >= self.period.start, c.created_at < self.period.end]
        if self.category:
            conds.append(c.category == self.category)
        if self.grid:
            conds.append(c.grid_code == str(self.grid))
        if self.community:
            conds.append(c.community_code == str(self.community))
        if self.compound:
            conds.append(c.compound_code == str(self.compound))
        if self.status == "open":
            conds.append(c.status.in_(OPEN_STATUSES))
        elif self.status:
            conds.append(c.status == self.status)
        return conds

    def describe(self, locale: str = "zh") -> list[tuple[str, str]]:
        """The filters as (label, value) pairs for the notes sheet."""
        en = _en(locale)
        out = []
        if self.period is not None:
            start, end = to_beijing(self.period.start), to_beijing(self.period.end)
            out.append(("Period (reported)" if en else "上报时间",
                        f"{self.period.key} ({start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} "
                        + ("Beijing time, end excluded)" if en else "北京时间，不含结束时刻）")))
        if self.category:
            out.append(("Category" if en else "类别", get_category(self.category).label(locale)))
        for key, zh, en_label in (("grid", "网格", "Grid"), ("community", "社区", "Community"),
                                  ("compound", "小区", "Compound")):
            if getattr(self, key):
                out.append((en_label if en else zh, str(getattr(self, key))))
        if self.status:
            out.append(("Status" if en else "状态", "open" if self.status == "open"
                        else status_label(self.status, locale)))
        return out or [("Filters" if en else "筛选条件", "all cases" if en else "全部案件")]


def _filters(filters: CaseFilters | None, kw: dict) -> CaseFilters:
    if filters is not None and kw:
        raise TypeError("pass either filters= or filter keywords, not both")
    return filters if filters is not None else CaseFilters.parse(**kw)


# -- reading -------------------------------------------------------------------------------
def _case_select():
    from gis.accounts import organisations as o

    c = cases.c
    # Listed one by one: the reporter's name and phone and the tracking code are never read.
    cols = [c.id, c.category, c.title, c.description, c.status, c.source, c.street_code,
            c.community_code, c.compound_code, c.grid_code, c.lon, c.lat, c.created_at,
            c.due_at, c.resolved_at, c.closed_at, c.rework_count, c.extension_count,
            c.needs_kind, o.c.name.label("assignee_org_name")]
    return sa.select(*cols).select_from(cases.outerjoin(o, o.c.id == c.assignee_org))


def count_cases(store, filters: CaseFilters | None = None, **kw) -> int:
    """How many cases match the filters (one ``COUNT``)."""
    f = _filters(filters, kw)
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(cases)
                                .where(*f.conditions())).scalar() or 0)


def area_names(store) -> dict[str, dict[str, str]]:
    """level → code → name of the active boundary layers (no geometry read)."""
    q = (sa.select(boundaries.c.level, boundaries.c.code, boundaries.c.name)
         .join(layer_versions, layer_versions.c.id == boundaries.c.version_id)
         .where(layer_versions.c.active.is_(True)))
    out: dict[str, dict[str, str]] = {}
    with store.engine.connect() as conn:
        for level, code, name in conn.execute(q):
            out.setdefault(level, {})[str(code)] = name
    return out


def _raw_batches(store, f: CaseFilters, batch_size: int) -> Iterator[list]:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput("batch_size must be a positive integer", field="batch_size")
    base = _case_select().where(*f.conditions())
    last = 0
    while True:
        q = base.where(cases.c.id > last).order_by(cases.c.id).limit(batch_size)
        with store.engine.connect() as conn:  # one short read per batch
            rows = conn.execute(q).mappings().all()
        if not rows:
            return
        last = rows[-1]["id"]
        yield rows
        if len(rows) < batch_size:
            return


def case_batches(store, filters: CaseFilters | None = None, *, locale: str = "zh",
                 batch_size: int = BATCH_SIZE, progress: Progress = None,
                 now: datetime | None = None, **kw) -> Iterator[list[dict]]:
    """The matching cases, ordered by id, as lists of at most ``batch_size`` dicts keyed
    by :data:`CASE_KEYS` (Python values: ``datetime``, ``bool``, ``None`` for missing).
    Names are in ``locale``; ``progress(done, total)`` is called with 0 first and after
    each batch."""
    f = _filters(filters, kw)
    total = count_cases(store, f) if progress is not None else 0
    names = area_names(store)
    cats = load_catalogue()
    now = now or utcnow()
    en = _en(locale)
    done = 0
    if progress is not None:
        progress(0, total)
    for rows in _raw_batches(store, f, batch_size):
        out = []
        for r in rows:
            cat = cats.get(r["category"])
            needs = NEEDS_KINDS.get(r["needs_kind"]) if r["needs_kind"] else None
            src = SOURCE_LABELS.get(r["source"])
            out.append({
                "id": int(r["id"]),
                "category": cat.label(locale) if cat else r["category"],
                "category_code": r["category"],
                "title": r["title"],
                "description": r["description"],
                "status": status_label(r["status"], locale),
                "status_code": r["status"],
                "source": (src[1] if en else src[0]) if src else r["source"],
                **{f"{lvl}_{part}": (r[f"{lvl}_code"] if part == "code"
                                     else names.get(lvl, {}).get(r[f"{lvl}_code"] or ""))
                   for lvl in ("street", "community", "compound", "grid")
                   for part in ("code", "name")},
                "lon": float(r["lon"]),
                "lat": float(r["lat"]),
                **{t: r[t] for t in _TIMES},
                "overdue": bool(r["status"] in OPEN_STATUSES and r["due_at"] is not None
                                and r["due_at"] < now),
                "rework_count": int(r["rework_count"] or 0),
                "extension_count": int(r["extension_count"] or 0),
                "needs_kind": (needs[1] if en else needs[0]) if needs else None,
                "assignee_org": r["assignee_org_name"],
            })
        done += len(out)
        yield out
        if progress is not None:
            progress(done, max(total, done))


def _headers(locale: str) -> list[str]:
    return [en if _en(locale) else zh for _, zh, en in CASE_COLUMNS]


# -- text formatting -----------------------------------------------------------------------
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _safe_text(s: str) -> str:
    """Text a spreadsheet will not evaluate (OWASP's advice for CSV injection)."""
    return "'" + s if s.startswith(_FORMULA_START) else s


def _csv_value(v, locale: str):
    if v is None:
        return ""
    if isinstance(v, bool):
        yes, no = _YES_NO["en" if _en(locale) else "zh"]
        return yes if v else no
    if isinstance(v, datetime):  # a stored time (naive UTC), written in Beijing time
        return to_beijing(v).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, str):
        return _safe_text(v)
    return v


def _csv_chunk(rows: Iterable[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerows(rows)
    return buf.getvalue()


def cases_csv(store, filters: CaseFilters | None = None, *, locale: str = "zh",
              batch_size: int = BATCH_SIZE, progress: Progress = None,
              **kw) -> Iterator[str]:
    """The matching cases as CSV text chunks: the header (starting with a UTF-8 BOM, see
    the module docstring) and then one chunk per batch. Encode with ``utf-8``.

    Filters: ``period`` (``Period`` or text, cases reported in it), ``category``,
    ``grid``, ``community``, ``compound``, ``status`` (or ``open``) — or a
    :class:`CaseFilters` as ``filters``. They are validated before the first chunk."""
    f = _filters(filters, kw)
    batches = case_batches(store, f, locale=locale, batch_size=batch_size,
                           progress=progress)

    def gen():
        yield "\ufeff" + _csv_chunk([_headers(locale)])
        for batch in batches:
            yield _csv_chunk([[_csv_value(r[k], locale) for k in CASE_KEYS] for r in batch])

    return gen()


def _iso(v):
    return v.isoformat(timespec="seconds") + "Z" if isinstance(v, datetime) else v


def cases_geojson(store, filters: CaseFilters | None = None, *, locale: str = "zh",
                  batch_size: int = BATCH_SIZE, progress: Progress = None,
                  **kw) -> Iterator[str]:
    """The matching cases as a streamed GeoJSON FeatureCollection (RFC 7946: WGS-84
    lon/lat points), text chunks, English property names (:data:`CASE_KEYS`), names in
    ``locale``, times as ISO 8601 UTC with ``Z``. Filters as :func:`cases_csv`."""
    f = _filters(filters, kw)
    batches = case_batches(store, f, locale=locale, batch_size=batch_size,
                           progress=progress)

    def gen():
        yield '{"type": "FeatureCollection", "features": [\n'
        first = True
        for batch in batches:
            parts = []
            for r in batch:
                feat = {"type": "Feature", "id": r["id"],
                        "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                        "properties": {k: _iso(r[k]) for k in CASE_KEYS}}
                parts.append(json.dumps(feat, ensure_ascii=False))
            if parts:
                yield ("" if first else ",\n") + ",\n".join(parts)
                first = False
        yield "\n]}\n"

    return gen()


# -- files ---------------------------------------------------------------------------------
@contextmanager
def atomic_path(path, suffix: str):
    """A temporary path beside ``path``, moved onto it when the block succeeds."""
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(2, "no such directory", str(target.parent))
    # Not mkstemp: its 0600 file would keep those permissions after the move.
    tmp_path = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        for extra in ("-wal", "-shm", "-journal"):  # SQLite side files of a GeoPackage
            Path(str(tmp_path) + extra).unlink(missing_ok=True)


@contextmanager
def _workbook(Workbook):
    """A write-only workbook; on failure its half-written sheets (temporary files that
    openpyxl keeps until the save) are closed and deleted."""
    wb = Workbook(write_only=True)
    try:
        yield wb
    except BaseException:
        for ws in wb.worksheets:
            rows, writer = getattr(ws, "_rows", None), getattr(ws, "_writer", None)
            try:
                if rows is not None:
                    rows.close()
                if writer is not None:
                    writer.close()
                    os.remove(writer.out)
            except Exception:  # already broken: nothing more to tidy
                pass
        raise


def display_width(value) -> int:
    """How many character cells ``value`` takes as text: East Asian wide and full-width
    characters count 2 (the width Excel gives a CJK glyph), others 1."""
    if value is None:
        return 0
    if isinstance(value, datetime):
        return 19
    if isinstance(value, float):
        return len(f"{value:.6f}")
    return max((sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in line)
                for line in str(value).splitlines()), default=0)


def _widths(header: list[str], rows: Iterable[list], lo: int = 6, hi: int = 60) -> list[float]:
    widths = [display_width(h) for h in header]
    for row in rows:
        for i, v in enumerate(row):
            w = display_width(v)
            if w > widths[i]:
                widths[i] = w
    return [float(min(max(w + 2, lo), hi)) for w in widths]


def _xlsx_sheet(wb, title: str, header: list[str], widths: list[float]):
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    ws = wb.create_sheet(title)
    for i, w in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(i)].width = w
    ws.freeze_panes = "A2"
    bold, fill = Font(bold=True), PatternFill("solid", fgColor="DDE7F0")
    align = Alignment(vertical="center")
    cells = []
    for h in header:
        cell = WriteOnlyCell(ws, value=h)
        cell.font, cell.fill, cell.alignment = bold, fill, align
        cells.append(cell)
    ws.append(cells)
    return ws


def _xlsx_row(ws, values: list) -> list:
    from openpyxl.cell import WriteOnlyCell

    out = []
    for v in values:
        if isinstance(v, str) and v.startswith("="):
            # openpyxl would store it as a formula: keep residents' text as text.
            cell = WriteOnlyCell(ws, value=v)
            cell.data_type = "s"
            out.append(cell)
        elif isinstance(v, float) and math.isnan(v):
            out.append(None)
        else:
            out.append(v)
    return out


def _xlsx_finish(ws, n_cols: int, n_rows: int) -> None:
    from openpyxl.utils import get_column_letter

    ws.auto_filter.ref = f"A1:{get_column_letter(n_cols)}{n_rows + 1}"


def _notes_sheet(wb, locale: str, rows: list[tuple[str, str]]) -> None:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Alignment, Font

    ws = wb.create_sheet("Notes" if _en(locale) else "说明")
    ws.column_dimensions["A"].width = 22
    ws.column_dimensions["B"].width = 100
    wrap = Alignment(wrap_text=True, vertical="top")
    for label, value in rows:
        a = WriteOnlyCell(ws, value=label)
        a.font = Font(bold=True)
        b = WriteOnlyCell(ws, value=value)
        b.alignment = wrap
        if isinstance(value, str) and value.startswith("="):
            b.data_type = "s"
        ws.append([a, b])


def _xlsx_value(v, locale: str):
    if isinstance(v, bool):
        yes, no = _YES_NO["en" if _en(locale) else "zh"]
        return yes if v else no
    if isinstance(v, datetime):
        # A stored time (naive UTC) as a Beijing date cell, to the second as it shows.
        return to_beijing(v).replace(microsecond=0)
    return v


def cases_xlsx(path, store, filters: CaseFilters | None = None, *, locale: str = "zh",
               batch_size: int = BATCH_SIZE, progress: Progress = None, **kw) -> int:
    """Write the matching cases to an Excel workbook at ``path``; returns how many.

    Sheet "案件" ("Cases" in English): headers from :data:`CASE_COLUMNS` in ``locale``,
    bold, frozen, with an auto-filter; dates are date cells in Beijing time; "overdue" is
    是/否 (yes/no).
    Sheet "说明" ("Notes"): the filters, the time of the export and how to read it.
    Filters as :func:`cases_csv`."""
    from openpyxl import Workbook

    f = _filters(filters, kw)
    total = count_cases(store, f)
    if total > EXCEL_MAX_ROWS:
        raise InvalidInput(f"{total:,} cases do not fit in one Excel sheet (at most "
                           f"{EXCEL_MAX_ROWS:,} rows); narrow the filters or export CSV or "
                           "GeoPackage", field="format")
    header = _headers(locale)
    started = utcnow()
    batches = case_batches(store, f, locale=locale, batch_size=batch_size,
                           progress=progress, now=started)
    n = 0
    with atomic_path(path, ".xlsx") as tmp, _workbook(Workbook) as wb:
        first = next(batches, [])
        first_rows = [[_xlsx_value(r[k], locale) for k in CASE_KEYS] for r in first]
        ws = _xlsx_sheet(wb, "Cases" if _en(locale) else "案件", header,
                         _widths(header, first_rows))
        for row in first_rows:
            ws.append(_xlsx_row(ws, row))
        n += len(first_rows)
        for batch in batches:
            for r in batch:
                ws.append(_xlsx_row(ws, [_xlsx_value(r[k], locale) for k in CASE_KEYS]))
            n += len(batch)
        _xlsx_finish(ws, len(header), n)
        _notes_sheet(wb, locale, _case_notes(f, locale, started, n))
        wb.save(tmp)
    return n


def _case_notes(f: CaseFilters, locale: str, started: datetime, n: int):
    if _en(locale):
        return [("Exported (Beijing time)", f"{to_beijing(started):%Y-%m-%d %H:%M:%S}"),
                ("Cases", str(n)), *f.describe(locale),
                ("Notes", "Times are Beijing time (UTC+8). 'Overdue' = still open and past "
                          "the due time when the export was made. Empty cells are missing "
                          "values, not 0. "
                          "Reporters' names, phone numbers and tracking codes are never "
                          "exported.")]
    return [("导出时间（北京时间）", f"{to_beijing(started):%Y-%m-%d %H:%M:%S}"),
            ("案件数", str(n)), *f.describe(locale),
            ("说明", "时间为北京时间（UTC+8）。“是否超期”指导出时仍未结且已过"
                     "处置时限。空白单元格表示无数据，不是 0。不导出报告人姓名、电话和查询码。")]


def cases_gpkg(path, store, filters: CaseFilters | None = None, *, locale: str = "zh",
               batch_size: int = BATCH_SIZE, progress: Progress = None, **kw) -> int:
    """Write the matching cases to a GeoPackage at ``path`` (replaced if it exists);
    returns how many.

    One layer ``cases``: points in EPSG:4326, columns :data:`CASE_KEYS` (English names;
    names and labels in ``locale``, UTF-8), timestamps as UTC date-times, ``overdue`` a
    boolean. Written batch by batch (pyogrio, append mode). Filters as :func:`cases_csv`.
    """
    import geopandas as gpd
    import pyogrio

    f = _filters(filters, kw)
    batches = case_batches(store, f, locale=locale, batch_size=batch_size,
                           progress=progress)
    n = 0
    with atomic_path(path, ".gpkg") as tmp:
        wrote = False
        for batch in batches:
            if not batch:
                continue
            _write_gpkg(pyogrio, _gpkg_frame(batch, gpd), tmp, append=wrote)
            wrote = True
            n += len(batch)
        if not wrote:
            _write_gpkg(pyogrio, _gpkg_frame([], gpd), tmp, append=False)
    return n


def _write_gpkg(pyogrio, gdf, path: Path, *, append: bool) -> None:
    # GeoPackage 1.2: what the GDAL of QGIS LTR and Debian stable read without a warning
    # (pyogrio's newer GDAL would write 1.4, which GDAL 3.6 calls "partially supported").
    kw = {} if append else {"dataset_options": {"VERSION": "1.2"}}
    pyogrio.write_dataframe(gdf, path, layer="cases", driver="GPKG", append=append,
                            geometry_type="Point", promote_to_multi=False, **kw)


def _gpkg_frame(batch: list[dict], gpd):
    data = {}
    for k in CASE_KEYS:
        values = [r[k] for r in batch]
        if k in _TIMES:
            data[k] = pd.to_datetime(pd.Series(values, dtype="datetime64[ms]"), utc=True)
        elif k in _INTS:
            data[k] = pd.Series(values, dtype="int64")
        elif k in ("lon", "lat"):
            data[k] = pd.Series(values, dtype="float64")
        elif k == "overdue":
            data[k] = pd.Series(values, dtype="bool")
        else:
            data[k] = pd.Series(values, dtype=object)
    lon = [r["lon"] for r in batch]
    lat = [r["lat"] for r in batch]
    return gpd.GeoDataFrame(data, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")


# -- indicator tables ----------------------------------------------------------------------
_AREA_HEADERS = {
    "grid": ("网格", "Grid"), "compound": ("小区", "Compound"),
    "community": ("社区", "Community"), "street": ("街道", "Street"),
    "org": ("单位", "Organisation"),
}
_PARTS = (  # column suffix, zh, en
    ("", "", ""),
    ("_prev", "·上期", " (previous)"),
    ("_mom_change", "·环比", " MoM change"),
    ("_yoy", "·上年同期", " (year before)"),
    ("_yoy_change", "·同比", " YoY change"),
)


def indicator_columns(df: pd.DataFrame, locale: str = "zh", *, comparisons: bool = True,
                      ranks: bool = True) -> list[tuple[str, str, Callable]]:
    """The columns an indicator table is written with: ``(column of df, header, convert)``.

    Code and name first, then per indicator of :data:`gis.indicators.INDICATORS` its
    value, and with ``comparisons`` the previous period, 环比, the year before and 同比,
    and with ``ranks`` its rank. Headers carry the unit: rates are written as percentages
    (``83.33`` for 83.33 %), changes of rates in percentage points, changes of counts and
    hours in per cent; ``convert`` turns a cell into that number (None for no data)."""
    from gis.indicators import INDICATORS

    en = _en(locale)
    level = (df.attrs or {}).get("level") or str(df.index.name or "grid_code").rsplit("_", 1)[0]
    zh_area, en_area = _AREA_HEADERS.get(level, ("区域", "Area"))
    cols: list[tuple[str, str, Callable]] = [
        ("code", f"{en_area} {'ID' if level == 'org' else 'code'}" if en
         else f"{zh_area}{'编号' if level == 'org' else '编码'}", _plain),
        ("name", en_area if en else f"{zh_area}名称", _plain),
    ]
    for key, ind in INDICATORS.items():
        if key not in df.columns:
            continue
        unit = {"rate": "%", "hours": "h" if en else "小时", "count": ""}[ind.kind]
        parts = _PARTS if comparisons else _PARTS[:1]
        for suffix, zh_part, en_part in parts:
            col = key + suffix
            if col not in df.columns:
                continue
            if suffix.endswith("_change"):
                u = ("pp" if en else "百分点") if ind.kind == "rate" else "%"
                conv = _rounded
            else:
                u = unit
                conv = _percent if ind.kind == "rate" else (
                    _rounded if ind.kind == "hours" else _whole)
            name = (ind.en + en_part) if en else (ind.zh + zh_part)
            cols.append((col, f"{name} ({u})" if (u and en) else
                         (f"{name}（{u}）" if u else name), conv))
        if ranks and "rank_" + key in df.columns:
            cols.append(("rank_" + key, f"{ind.en} rank" if en else f"{ind.zh}·排名", _whole))
    return cols


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or (
        not isinstance(v, str) and pd.isna(v))


def _plain(v):
    if _missing(v):
        return None
    return v.item() if hasattr(v, "item") else v


def _whole(v):
    return None if _missing(v) else int(v)


def _rounded(v):
    return None if _missing(v) else round(float(v), 2)


def _percent(v):
    return None if _missing(v) else round(float(v) * 100, 2)


def _indicator_rows(df: pd.DataFrame, cols) -> Iterator[list]:
    for _, row in df.iterrows():
        yield [conv(row.get(col)) for col, _, conv in cols]


def indicators_csv(df: pd.DataFrame, *, locale: str = "zh", comparisons: bool = True,
                   ranks: bool = True) -> Iterator[str]:
    """An indicators table (:func:`gis.indicators.indicators`) as CSV text chunks with
    headers from :data:`gis.indicators.INDICATORS` in ``locale`` (UTF-8 with a BOM, as
    :func:`cases_csv`; columns as :func:`indicator_columns`; empty = no data)."""
    cols = indicator_columns(df, locale, comparisons=comparisons, ranks=ranks)

    def gen():
        yield "\ufeff" + _csv_chunk([[h for _, h, _ in cols]])
        rows = []
        for row in _indicator_rows(df, cols):
            rows.append([_csv_value(v, locale) for v in row])
            if len(rows) >= 1000:
                yield _csv_chunk(rows)
                rows = []
        if rows:
            yield _csv_chunk(rows)

    return gen()


def indicators_xlsx(path, df: pd.DataFrame, *, locale: str = "zh", comparisons: bool = True,
                    ranks: bool = True) -> int:
    """Write an indicators table to an Excel workbook at ``path``; returns the rows.

    Sheet "指标" ("Indicators"): columns as :func:`indicator_columns`, header frozen.
    Sheet "指标说明" ("Definitions"): every indicator's name, unit and formula, the
    comparison note and the three periods compared."""
    from openpyxl import Workbook

    from gis.indicators import CHANGE_NOTE, INDICATORS

    en = _en(locale)
    cols = indicator_columns(df, locale, comparisons=comparisons, ranks=ranks)
    header = [h for _, h, _ in cols]
    rows = list(_indicator_rows(df, cols))
    with atomic_path(path, ".xlsx") as tmp, _workbook(Workbook) as wb:
        widths = _widths(header, rows[:BATCH_SIZE], hi=40)
        ws = _xlsx_sheet(wb, "Indicators" if en else "指标", header, widths)
        for row in rows:
            ws.append(_xlsx_row(ws, row))
        _xlsx_finish(ws, len(header), len(rows))
        attrs = df.attrs or {}
        notes = []
        for key, zh, en_label in (("period", "统计期", "Period"), ("previous", "上期（环比）",
                                   "Previous period (MoM)"),
                                  ("year_before", "上年同期（同比）", "Year before (YoY)")):
            p = attrs.get(key)
            if p:
                # A period cut at now (the current month) is counted to date: say so.
                to_date = ((", to date" if en else "，截至导出时") if p.get("partial")
                           else "")
                start, end = (to_beijing(datetime.fromisoformat(p[k].rstrip("Z")))
                              for k in ("start", "end"))
                span = (f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} "
                        + ("Beijing time, end excluded" if en else "北京时间，不含结束时刻"))
                notes.append((en_label if en else zh, f"{p['key']} ({span}{to_date})"))
        if attrs.get("category"):
            notes.append(("Category" if en else "类别",
                          get_category(attrs["category"]).label(locale)))
        notes.append(("Comparisons" if en else "比较说明", CHANGE_NOTE["en" if en else "zh"]))
        notes.append(("No data" if en else "无数据",
                      "An empty cell is no data (nothing to divide by), not 0." if en
                      else "空白单元格表示无数据（分母为 0），不是 0。"))
        for key, ind in INDICATORS.items():
            if key in df.columns:
                unit = ind.unit_label(locale)
                notes.append((f"{ind.label(locale)} ({unit})" if en
                              else f"{ind.label(locale)}（{unit}）", ind.formula(locale)))
        _notes_sheet(wb, locale, notes)
        wb.worksheets[-1].title = "Definitions" if en else "指标说明"
        wb.save(tmp)
    return len(rows)


# -- background builds ---------------------------------------------------------------------
@dataclass
class ExportJob:
    """One file being built in the background."""

    id: str
    path: Path
    state: str = "running"  # running / done / failed
    done: int = 0
    total: int = 0
    result: object = None
    error: str | None = None
    started: datetime = field(default_factory=utcnow)
    finished: datetime | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "state": self.state, "done": self.done, "total": self.total,
                "error": self.error, "file": self.path.name,
                "started": _iso(self.started), "finished": _iso(self.finished)}


class BackgroundExports:
    """Builds export files in background threads, for a web request that must not wait:
    ``job = exports.submit(lambda path, progress: cases_xlsx(path, store,
    progress=progress), "cases.xlsx")`` returns at once; poll ``exports.get(job.id)``
    (state, done/total) and send ``job.path`` when its state is ``done``. Files go to
    ``folder``; :meth:`forget` deletes one. Framework-free (no Flask here)."""

    def __init__(self, folder, max_jobs: int = 50):
        self.folder = Path(folder)
        self.max_jobs = max_jobs
        self._jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()

    def submit(self, build: Callable[[Path, Progress], object], filename: str) -> ExportJob:
        safe = "".join(ch for ch in Path(filename).name if ch.isalnum() or ch in "._-")
        job_id = uuid.uuid4().hex
        job = ExportJob(id=job_id, path=self.folder / job_id / (safe or "export"))
        with self._lock:
            running = sum(j.state == "running" for j in self._jobs.values())
            if running >= self.max_jobs:
                raise InvalidInput("too many exports are running; try again shortly",
                                   field="export")
            self._jobs[job_id] = job

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        def run() -> None:
            try:
                job.path.parent.mkdir(parents=True, exist_ok=True)
                job.result = build(job.path, progress)
                job.state = "done"
            except Exception as exc:  # reported to whoever polls the job
                job.error = str(exc) or type(exc).__name__
                job.state = "failed"
            finally:
                job.finished = utcnow()

        threading.Thread(target=run, name=f"export-{job_id[:8]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> ExportJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> ExportJob | None:
        """Block until the job has finished (tests, the CLI)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job is None or job.state != "running":
                return job
            if deadline is not None and time.monotonic() > deadline:
                return job
            time.sleep(0.02)

    def forget(self, job_id: str) -> None:
        """Drop a finished job and delete its file."""
        import shutil

        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state == "running":
                return
            del self._jobs[job_id]
        shutil.rmtree(job.path.parent, ignore_errors=True)
