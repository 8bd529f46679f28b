"""Coverage metrics per grid for a period, each defined once.

:data:`METRICS` is the single definition of every indicator (name, formula text in both
languages, unit, which way is good); the map legend, the tables and the API read it.
:func:`grid_metrics` computes them all in the database with one ``GROUP BY`` query over
``cases`` (portable SQLAlchemy Core: SQLite now, PostgreSQL later), so its cost does not
grow with the number of rows Python has to read.

Periods are half-open, ``start <= t < end``, in naive UTC like every stored timestamp:
"by the period end" means "before ``end``". A calendar month (``2026-10``) and a date
range are the street office's calendar, Beijing time (UTC+8, :mod:`gis.localtime`):
``2026-10`` is ``[2026-09-30 16:00, 2026-10-31 16:00)`` in naive UTC, and a case reported
at 07:30 Beijing time on 1 November counts in November. Relative periods (``30d``) are
the last N × 24 hours ending now.

How a case's history is read from its row (``cases`` keeps the latest timestamps only):

- a case is *open* at time T if it was reported before T and either its status is open
  now (any of gis.cases.OPEN_STATUSES) or it left the open statuses at or after T; it
  left them when it was (last) resolved, or else closed — ``coalesce(resolved_at,
  closed_at, updated_at)``. A case reopened for rework (返工) therefore counts as open
  from its report until it is resolved for good: its earlier resolution was not one;
- rejected cases (不予受理) are left out of every metric.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa

from gis.cases import OPEN_STATUSES, utcnow
from gis.errors import InvalidInput
from gis.i18n import label as _label
from gis.localtime import beijing_midnight, from_beijing, is_beijing_midnight, to_beijing
from gis.storage import cases

__all__ = [
    "MAX_YEAR", "METRICS", "MIN_YEAR", "Metric", "Period", "area_metrics", "check_year",
    "get_metric", "grid_metrics", "metrics_query", "parse_period", "up_to_now",
]

DONE_STATUSES = ("resolved", "closed")
MAX_DAYS = 3660
# The years a period (or a week in one) may fall in. The bound is what keeps every
# period derived from one in the range of ``datetime``: the previous period and the year
# before it (环比/同比, at most 2 × 3660 days and a year earlier) and a week after a day.
# Without it "0001-01" reached Period.previous() and overflowed (a 500), and "9999-12-31"
# overflowed when a week was added. Case data outside 1900–2999 does not exist.
MIN_YEAR, MAX_YEAR = 1900, 2999
HELPER_COLUMNS = ("reported_in_period", "resolved_of_reported", "closed_in_period",
                  "closed_with_due", "closed_on_time")

_UNITS = {
    "days": ("天", "days"),
    "cases": ("件", "cases"),
    "per_1000_households": ("件/千户", "per 1,000 households"),
    "share": ("%", "%"),
}


def format_value(kind: str, value, locale: str = "zh") -> str:
    """A number as text by its kind: counts whole, rates as a percentage with one decimal,
    anything else with one decimal; NaN/None as "no data" in ``locale``. Shared by the
    coverage metrics and the indicators."""
    if value is None or pd.isna(value):
        return _label("no_data", locale)
    v = float(value)
    if kind == "count":
        return f"{round(v):d}"
    if kind == "rate":
        return f"{v * 100:.1f}%"
    return f"{v:.1f}"


@dataclass(frozen=True)
class Metric:
    """One indicator: its names, its formula in words, and how to read it.

    ``unit`` is a language-neutral code (``cases``, ``per_1000_households``, ``share``);
    ``better`` is ``"lower"`` or ``"higher"``; ``kind`` is ``count`` (a whole number of
    cases), ``rate`` (a share in [0, 1], shown as a percentage) or ``ratio``.
    """

    key: str
    zh: str
    en: str
    formula_zh: str
    formula_en: str
    unit: str
    better: str
    kind: str

    def label(self, locale: str = "zh") -> str:
        """The name in ``locale`` (``zh`` unless it starts with ``en``)."""
        return self.en if locale.startswith("en") else self.zh

    def formula(self, locale: str = "zh") -> str:
        """The formula in words in ``locale``."""
        return self.formula_en if locale.startswith("en") else self.formula_zh

    def unit_label(self, locale: str = "zh") -> str:
        """The unit as shown to a reader in ``locale``."""
        zh, en = _UNITS.get(self.unit, (self.unit, self.unit))
        return en if locale.startswith("en") else zh

    def format(self, value, locale: str = "zh") -> str:
        """``value`` as text: counts whole, rates as a percentage with one decimal,
        ratios with one decimal; NaN/None as "no data" in ``locale``."""
        return format_value(self.kind, value, locale)

    def to_dict(self) -> dict:
        """A JSON-able description (API responses, legends)."""
        return {
            "key": self.key, "zh": self.zh, "en": self.en,
            "formula_zh": self.formula_zh, "formula_en": self.formula_en,
            "unit": self.unit, "unit_zh": self.unit_label("zh"),
            "unit_en": self.unit_label("en"), "better": self.better, "kind": self.kind,
        }


_NO_REJECTED_ZH = "不含不予受理的案件。"
_NO_REJECTED_EN = "Rejected cases are not counted."

METRICS: dict[str, Metric] = {m.key: m for m in (
    Metric(
        "open", "未结案件", "Open cases",
        "统计期末仍未处置（已上报、已核实、已立案、已派遣、已认领、处置中或返工）、且在期末前上报的案件数（期末时点数）。"
        "返工案件自上报起至最终处置前均算未结。" + _NO_REJECTED_ZH,
        "Cases reported before the period end and not yet resolved "
        "at the period end (a snapshot). A case sent back for rework counts as open from "
        "its report until its final resolution. " + _NO_REJECTED_EN,
        "cases", "lower", "count"),
    Metric(
        "new", "新增案件", "New cases",
        "统计期内上报的案件数。" + _NO_REJECTED_ZH,
        "Cases reported within the period. " + _NO_REJECTED_EN,
        "cases", "lower", "count"),
    Metric(
        "per_1000_households", "每千户案件", "Cases per 1,000 households",
        "新增案件 ÷ 网格户数 × 1000；户数缺失或为 0 时无数据。" + _NO_REJECTED_ZH,
        "New cases ÷ households in the grid × 1,000; no data when the household count is "
        "missing or 0. " + _NO_REJECTED_EN,
        "per_1000_households", "lower", "ratio"),
    Metric(
        "resolution_rate", "处置率", "Resolution rate",
        "统计期内上报的案件中，期末前已处置或已结案的比例（已处置数 ÷ 上报数）；返工后"
        "尚未再次处置的不算已处置；期内无上报时无数据。" + _NO_REJECTED_ZH,
        "Of the cases reported within the period, the share resolved or closed before the "
        "period end (resolved ÷ reported); a case reopened for rework and not yet resolved "
        "again is not resolved; no data when none were reported. " + _NO_REJECTED_EN,
        "share", "higher", "rate"),
    Metric(
        "on_time_rate", "按期结案率", "On-time closure rate",
        "统计期内结案且有处置时限的案件中，结案时间不晚于截止时间（结案时间 ≤ 截止时间）的"
        "比例；无时限的案件不参与计算；期内无结案时无数据。" + _NO_REJECTED_ZH,
        "Of the cases closed within the period that have a due time, the share closed on or "
        "before it (closed_at ≤ due_at); cases without a time limit are left out; no data "
        "when none were closed. " + _NO_REJECTED_EN,
        "share", "higher", "rate"),
    Metric(
        "overdue", "超期案件", "Overdue cases",
        "统计期末仍未结、且截止时间早于期末的案件数（期末时点数）。" + _NO_REJECTED_ZH,
        "Cases open at the period end whose due time is before the period end (a "
        "snapshot). " + _NO_REJECTED_EN,
        "cases", "lower", "count"),
    Metric(
        "days_since_patrol", "未巡查天数", "Days since last patrol",
        "统计期末距该网格最近一次网格员巡查签到的天数；期末前从未签到时无数据。",
        "Days from the grid's latest patrol check-in before the period end to the period "
        "end; no data when nobody has checked in there yet.",
        "days", "lower", "ratio"),
)}


def get_metric(key: object) -> Metric:
    """The metric ``key``, or ``InvalidInput`` (field ``metric``) naming the known keys."""
    if not isinstance(key, str) or key not in METRICS:
        raise InvalidInput(f"unknown metric {key!r}; expected one of: {', '.join(METRICS)}",
                           field="metric")
    return METRICS[key]


# -- periods -------------------------------------------------------------------------------
_FORMS = (f"Nd for the last N days ending now (7d, 30d, 90d, 365d; 1 ≤ N ≤ {MAX_DAYS}), "
          "a month YYYY-MM (e.g. 2026-10), or a date range YYYY-MM-DD..YYYY-MM-DD "
          "(end date included); empty means 30d")
_DAYS = re.compile(r"(\d{1,6})d")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_RANGE = re.compile(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})")


@dataclass(frozen=True)
class Period:
    """A half-open time span ``start <= t < end`` in naive UTC, with the text ``key`` it
    was parsed from (for links, caches and headings)."""

    start: datetime
    end: datetime
    key: str
    # The period had not ended when it was asked for, so it was cut at that moment
    # (:func:`up_to_now`): its figures are "to date" and pages say so.
    partial: bool = False

    def __post_init__(self):
        if not self.start < self.end:
            raise ValueError(f"a period must start before it ends: {self.start} .. {self.end}")

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    def contains(self, t: datetime) -> bool:
        """Whether the naive UTC time ``t`` falls in the period."""
        return self.start <= t < self.end

    def previous(self) -> Period:
        """The period immediately before, for 环比 comparisons.

        A calendar month gives the previous calendar month (September for October, although
        it is a day shorter: that is what a monthly 环比 compares), or for a month cut at
        now (``partial``) as much of the previous month as has passed of this one; any
        other period gives the span of the same length that ends where this one starts
        (keyed as a date range when it runs from midnight to midnight). Months and days
        are Beijing ones, like :func:`parse_period`'s.
        """
        if _MONTH.fullmatch(self.key):
            local = (to_beijing(self.start) - timedelta(days=1)).replace(day=1)
            first = from_beijing(local)
            # A month cut at now (partial) is compared with as much of the month before,
            # like with like: 1–26 November with 1–26 October, not with all of October.
            end = min(first + self.length, self.start) if self.partial else self.start
            return Period(first, end, f"{local:%Y-%m}")
        start = self.start - self.length
        if is_beijing_midnight(start) and is_beijing_midnight(self.start):
            first = to_beijing(start).date()
            last = (to_beijing(self.start) - timedelta(days=1)).date()
            return Period(start, self.start, f"{first.isoformat()}..{last.isoformat()}")
        return Period(start, self.start, f"{self.key}:previous")

    def to_dict(self) -> dict:
        """A JSON-able description: key, and start/end as ISO 8601 UTC (end excluded);
        ``"partial": true`` as well for a period cut at now (:func:`up_to_now`)."""
        out = {"key": self.key,
               "start": self.start.isoformat(timespec="seconds") + "Z",
               "end": self.end.isoformat(timespec="seconds") + "Z"}
        if self.partial:
            out["partial"] = True
        return out


def _bad(text, why: str = "") -> InvalidInput:
    lead = f"invalid period {text!r}" + (f" ({why})" if why else "")
    return InvalidInput(f"{lead}; use {_FORMS}", field="period")


def check_year(year: int, text, field: str = "period") -> None:
    """``InvalidInput`` naming ``field`` (and quoting ``text``) unless ``year`` is one of
    :data:`MIN_YEAR`–:data:`MAX_YEAR` (see there why periods are bounded). Shared by the
    periods and anything parsed beside them (the planner's ``week``)."""
    if not MIN_YEAR <= year <= MAX_YEAR:
        why = f"the year must be from {MIN_YEAR} to {MAX_YEAR}"
        if field == "period":
            raise _bad(text, why)
        raise InvalidInput(f"invalid {field} {text!r} ({why})", field=field)


def _naive_utc(t: datetime) -> datetime:
    return t if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)


def parse_period(text: str | None, now: datetime | None = None) -> Period:
    """Parse a period from a query string.

    Parameters
    ----------
    text : str or None
        ``None`` or ``""``: the last 30 days ending ``now`` (key ``30d``). ``"7d"``,
        ``"30d"``, ``"90d"``, ``"365d"`` or any ``Nd`` with 1 ≤ N ≤ 3660: the last N days
        ending ``now``. ``"2026-10"``: that calendar month. ``"2026-10-01..2026-10-31"``:
        those days, both included (at most 3660). Months and dates are Beijing calendar
        months and days (UTC+8, :mod:`gis.localtime`): ``"2026-10"`` is
        ``[2026-09-30 16:00, 2026-10-31 16:00)`` in naive UTC. Years are :data:`MIN_YEAR` to
        :data:`MAX_YEAR`, so the previous period, the year before and a week after any
        day of the period can always be computed. A period may lie in the future: see
        :func:`up_to_now` for refusing or cutting it.
    now : datetime, optional
        The end of relative periods; default :func:`gis.cases.utcnow`. An aware datetime is
        converted to naive UTC.

    Returns
    -------
    Period
        Half-open ``[start, end)`` in naive UTC; ``key`` is the normalised text.

    Raises
    ------
    InvalidInput
        With ``field="period"`` and a message listing the accepted forms.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise _bad(text, "not text")
    s = text.strip().lower()
    if not s:
        s = "30d"
    now = _naive_utc(now) if now is not None else utcnow()
    if m := _DAYS.fullmatch(s):
        n = int(m.group(1))
        if not 1 <= n <= MAX_DAYS:
            raise _bad(text, f"the number of days must be 1 to {MAX_DAYS}")
        check_year(now.year, text)
        return Period(now - timedelta(days=n), now, f"{n}d")
    if m := _MONTH.fullmatch(s):
        year, month = int(m.group(1)), int(m.group(2))
        if not 1 <= month <= 12:
            raise _bad(text, "the month must be 01 to 12")
        check_year(year, text)
        start = beijing_midnight(date(year, month, 1))
        end = beijing_midnight(date(year + (month == 12), month % 12 + 1, 1))
        return Period(start, end, f"{year:04d}-{month:02d}")
    if m := _RANGE.fullmatch(s):
        try:
            first, last = date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2))
        except ValueError as exc:
            raise _bad(text, "not a real date") from exc
        if last < first:
            raise _bad(text, "the end date is before the start date")
        days = (last - first).days + 1
        if days > MAX_DAYS:
            raise _bad(text, f"{days} days is longer than {MAX_DAYS}")
        check_year(first.year, text)
        check_year(last.year, text)
        end = beijing_midnight(last + timedelta(days=1))
        start = beijing_midnight(first)
        return Period(start, end, f"{first.isoformat()}..{last.isoformat()}")
    raise _bad(text)


def up_to_now(period: Period, now: datetime | None = None) -> Period:
    """``period`` as far as it has happened by ``now`` (default :func:`gis.cases.utcnow`).

    - A period that starts at or after ``now`` is refused (``InvalidInput``, field
      ``period``): there is nothing to count yet, and the snapshot figures (open, overdue
      at the period end) would be made up from today's cases.
    - A period that includes ``now`` (the current month) is cut at ``now`` and marked
      ``partial``: its figures are "to date", and a snapshot is taken now rather than at
      an end that has not come (a case due next week is not overdue yet). The key is
      kept, so a month stays a month for links, 环比 and 同比.
    - A period that has ended is returned unchanged.
    """
    now = _naive_utc(now) if now is not None else utcnow()
    if period.start >= now:
        raise InvalidInput(f"period {period.key!r} starts after now "
                           f"({to_beijing(now):%Y-%m-%d %H:%M} Beijing time); choose a "
                           "period that has begun",
                           field="period")
    if period.end > now:
        return Period(period.start, now, period.key, partial=True)
    return period


# -- computation ---------------------------------------------------------------------------
def _count(cond) -> sa.ColumnElement:
    return sa.func.sum(sa.case((cond, 1), else_=0))


def metrics_query(period: Period, level: str = "grid") -> sa.Select:
    """The one ``GROUP BY`` query behind :func:`area_metrics` (portable SQLAlchemy Core).

    Parameters
    ----------
    period : Period
        The half-open span ``[start, end)``.
    level : {"grid", "compound", "community", "street"}
        Which stored boundary code of a case to group by.

    Returns
    -------
    sqlalchemy.Select
        Columns ``code``, ``open``, ``overdue`` and the :data:`HELPER_COLUMNS` counts, one
        row per code that has at least one non-rejected case reported before the end.
    """
    code = cases.c[f"{level}_code"]
    c = cases.c
    start, end = period.start, period.end
    # When the case left the open statuses (see the module docstring).
    left_open = sa.func.coalesce(c.resolved_at, c.closed_at, c.updated_at)
    # The WHERE below already keeps only cases reported before the end.
    open_at_end = sa.or_(c.status.in_(OPEN_STATUSES), left_open >= end)
    reported = c.created_at >= start
    closed_in = sa.and_(c.status == "closed", c.closed_at >= start, c.closed_at < end)
    return (
        sa.select(
            code.label("code"),
            _count(open_at_end).label("open"),
            _count(sa.and_(open_at_end, c.due_at < end)).label("overdue"),
            _count(reported).label("reported_in_period"),
            _count(sa.and_(reported, c.status.in_(DONE_STATUSES), left_open < end))
            .label("resolved_of_reported"),
            _count(closed_in).label("closed_in_period"),
            _count(sa.and_(closed_in, c.due_at.is_not(None))).label("closed_with_due"),
            _count(sa.and_(closed_in, c.closed_at <= c.due_at)).label("closed_on_time"),
        )
        .where(code.is_not(None), c.status != "rejected", c.created_at < end,
               # Only rows that can count at all: still open, or reported, left the open
               # statuses or closed on or after the start. Every count above implies one
               # of these, so the answer is the same and old closed cases are skipped.
               sa.or_(c.status.in_(OPEN_STATUSES), c.created_at >= start,
                      left_open >= start, c.closed_at >= start))
        .group_by(code)
    )


def _days_since_patrol(store, codes: pd.Series, period: Period, level: str) -> pd.Series:
    """Days from each grid's latest check-in before the period end to the period end."""
    from gis.accounts import checkins

    if level != "grid":
        return pd.Series(float("nan"), index=codes.index)
    q = (sa.select(checkins.c.grid_code, sa.func.max(checkins.c.at))
         .where(checkins.c.at < period.end, checkins.c.grid_code.is_not(None))
         .group_by(checkins.c.grid_code))
    with store.engine.connect() as conn:
        last = dict(conn.execute(q).fetchall())
    ts = pd.to_datetime(codes.map(last))
    return ((period.end - ts).dt.total_seconds() / 86400).astype(float)


def area_metrics(store, areas: gpd.GeoDataFrame, period: Period,
                 level: str = "grid") -> gpd.GeoDataFrame:
    """Every metric of :data:`METRICS` for each area of one boundary level.

    Parameters
    ----------
    store : gis.storage.SqlCaseStore
        The case store (its ``engine`` is queried once).
    areas : GeoDataFrame
        The boundary layer: ``code``, ``name``, ``parent_code``, ``households`` (may be
        missing or null), ``geometry``.
    period : Period
        The span the metrics cover.
    level : str
        The level of ``areas``; cases are matched on their stored ``<level>_code``.

    Returns
    -------
    GeoDataFrame
        One row per area, in the order of ``areas``, indexed by its code (index name
        ``<level>_code``): the columns of ``areas``, one float column per metric key (NaN =
        no data, which is not 0) and the integer :data:`HELPER_COLUMNS` (numerators and
        denominators, so rates can be re-aggregated for larger areas). Cases whose code is
        not among ``areas`` are ignored.
    """
    with store.engine.connect() as conn:
        rows = conn.execute(metrics_query(period, level)).mappings().all()
    counts = pd.DataFrame(rows, columns=["code", "open", "overdue", *HELPER_COLUMNS])
    counts = counts.set_index("code")

    out = areas.copy()
    codes = out["code"].astype(str)
    for col in ("open", "overdue", *HELPER_COLUMNS):
        out[col] = codes.map(counts[col]).fillna(0).astype("int64").to_numpy()

    new = out["reported_in_period"].astype(float)
    hh = (pd.to_numeric(out["households"], errors="coerce").astype(float)
          if "households" in out else pd.Series(float("nan"), index=out.index))
    reported = out["reported_in_period"]
    with_due = out["closed_with_due"]
    metrics = {
        "open": out["open"].astype(float),
        "new": new,
        "per_1000_households": (new / hh * 1000).where(hh > 0),
        "resolution_rate": (out["resolved_of_reported"] / reported.where(reported > 0)),
        "on_time_rate": (out["closed_on_time"] / with_due.where(with_due > 0)),
        "overdue": out["overdue"].astype(float),
        "days_since_patrol": _days_since_patrol(store, codes, period, level),
    }
    for key in METRICS:
        out[key] = metrics[key].astype(float)

    geom = areas.geometry.name
    front = [c for c in areas.columns if c != geom and c not in METRICS
             and c not in HELPER_COLUMNS]
    cols = [*front, *METRICS, *HELPER_COLUMNS, geom]
    out = out[cols]
    out.index = pd.Index(codes.to_numpy(), name=f"{level}_code")
    return out


def grid_metrics(store, grids: gpd.GeoDataFrame, period: Period) -> gpd.GeoDataFrame:
    """Every metric of :data:`METRICS` for each grid over ``period``, from one database query.

    Parameters
    ----------
    store : gis.storage.SqlCaseStore
        The case store.
    grids : GeoDataFrame
        The grid layer (``code``, ``name``, ``parent_code``, ``households``, ``geometry``).
    period : Period
        From :func:`parse_period`.

    Returns
    -------
    GeoDataFrame
        A DataFrame (with its geometry) indexed by grid code (``grid_code``), one row for
        every grid, even one without cases: counts are then 0 and rates NaN. See
        :func:`area_metrics` for the columns.
    """
    return area_metrics(store, grids, period, level="grid")
