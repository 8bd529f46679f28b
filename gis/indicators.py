"""The national indicators per grid, compound, community, street or organisation and period,
each compared with the previous period (环比) and the same period a year before (同比).

:data:`INDICATORS` is the single definition of every indicator — names and formulas in
both languages, what kind of number it is, which way is good — and the page shows it next
to the numbers. :func:`indicators` computes them all for one level and period.

Periods are half-open, ``start <= t < end``, in naive UTC like every stored timestamp;
months and dates are Beijing calendar months and days (UTC+8, see :mod:`gis.coverage`
and :mod:`gis.localtime`). The comparison periods are :meth:`gis.coverage.Period.previous`
(环比: the previous Beijing calendar month for a month, else the span of the same length
just before) and :func:`year_before` (同比: the same Beijing dates one year earlier).

Definitions
-----------
"In the period" means ``start <= t < end``. Transitions are ``case_events`` rows of kind
``transition``; "cases" means distinct cases (a case moved twice into a status within the
period counts once). Rejected cases (不予立案) count only as *reported*.

Flows (counts of cases):

- ``reported`` 上报数: cases created in the period (rejected ones included).
- ``verified`` 核实数 / ``filed`` 立案数 / ``dispatched`` 派遣数 (re-dispatches and dispatches
  after a rework included) / ``resolved`` 处置数: cases with a transition into that status in
  the period.
- ``closed`` 结案数: cases closed (status ``closed``, ``closed_at`` in the period). Closing
  is final, so this is exactly the transitions into ``closed`` in the period; "closed, not
  fixed" (结案（未解决）) is not a closure here.
- ``due_for_closure`` 应结案数, the denominator of the closure rate as grid and city centres
  publish it (结案率 = 结案数 ÷ 应结案数): cases whose time limit ran out before the period
  end and that were not yet finished (closed, closed not fixed) when the period began, plus
  cases finished in the period ahead of a time limit that ends after the period (or without
  a time limit). Every case closed in the period is therefore in it, the rate is at most
  100 %, and a backlog of overdue cases keeps counting against the rate until it is closed.
  The time limit is the case's current ``due_at``, i.e. after any approved extension (延期).

Rates (a share in [0, 1]; NaN = no data, when the denominator is 0):

- ``closure_rate`` 结案率 = closed ÷ due_for_closure.
- ``on_time_closure_rate`` 按期结案率 = cases closed in the period on or before their due time
  (``closed_at <= due_at``) ÷ cases closed in the period that have a due time — the
  definition of the coverage map's 按期结案率 (:data:`gis.coverage.METRICS`), so both pages
  show the same number.
- ``on_time_handling_rate`` 按期处置率 = cases resolved in the period whose *last* resolution
  in the period was on or before the due time ÷ cases resolved in the period that have a due
  time. A case fixed in time, sent back and fixed again after the deadline was not handled
  on time; the rework itself is measured by the rework rate.
- ``rework_rate`` 返工率 = cases reopened for rework (a transition into ``reopened``, whether
  the grid worker's check failed or the resident was not satisfied) in the period ÷ cases
  checked in the period (a transition out of ``resolved``, into ``closed`` or
  ``reopened``). Checked work is the natural base: every rework is a failed check, so the
  rate stays within 100 %, unlike "÷ resolved in the period" when the fix was made in an
  earlier period.
- ``extension_rate`` 延期率 = cases given an extension (an ``extension`` event) in the period
  ÷ cases open at some time in the period (reported before the end and not yet resolved at
  the start, as :mod:`gis.coverage` reads a case's history from its row). Only open cases
  can be extended, so the rate stays within 100 %.
- ``satisfaction_rate`` 群众满意率 = residents' evaluations in the period whose verdict is
  "satisfied" ÷ all evaluations in the period (``case_events`` of kind ``evaluation``;
  each evaluation counts, so a case judged "not satisfied" and later "satisfied" counts
  once each way). The verdict is read in SQL from the event's JSON text with
  ``LIKE '%"verdict": "satisfied"%'`` (the writer's ``json.dumps`` default separators; the
  compact ``"verdict":"satisfied"`` is matched too) — portable, no JSON functions needed,
  and ``"not_satisfied"`` cannot match because of the quote before ``satisfied``.

Hours:

- ``avg_handling_hours`` 平均处置时长 and ``median_handling_hours`` 处置时长中位数: for each
  case resolved in the period, the hours from its report (``created_at``) to its last
  resolution in the period; the mean and the median (the mean of the two middle values when
  their number is even). A median is not portable SQL (SQLite has none), so one query
  returns the two timestamps per resolved case for all three periods and pandas computes
  both mean and median from the same exact durations.

Snapshot:

- ``overdue`` 超期案件: cases still open at the period end whose due time is before the end
  — the coverage map's 超期案件 (:data:`gis.coverage.METRICS`), computed the same way.

The needs list (清单), counts of cases:

- ``needs_fix_now`` 立行立改 / ``needs_long_term`` 长期问题: cases whose current needs-list
  kind is that kind and that came onto the list in the period — at their first ``needs``
  event, or, with none (put on the list at intake, e.g. from a residents' meeting), at their
  report.
- ``needs_claimed`` 清单认领: cases claimed from the published list (a transition into
  ``claimed``) in the period.
- ``needs_done`` 清单完成: cases on the needs list closed in the period.

Areas: the grid, compound, community and street of a case are the codes stored on it at
intake (so a redrawn boundary does not move old cases); the organisation (``org``) is the
organisation the case is dispatched to or claimed by now (``cases.assignee_org``).

Comparisons: ``<key>_prev`` (环比) and ``<key>_yoy`` (同比) are the same indicator for the
previous period and the period a year before; ``<key>_mom_change`` and ``<key>_yoy_change``
are the changes, ready to print: for rates the difference in percentage points
(``(now − then) × 100``), for counts and hours the relative change in per cent
(``(now − then) ÷ then × 100``; 0 when both are 0; NaN when ``then`` is 0 and ``now`` is
not, or either is missing).

Cost: five statements whatever the number of cases — the areas, one ``GROUP BY`` over
``cases``, one over ``case_events`` joined to ``cases``, one over the last resolution of
each case, and the resolution durations — each covering all three periods at once with
conditional aggregation (portable SQLAlchemy Core: SQLite now, PostgreSQL later).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from gis.cases import OPEN_STATUSES
from gis.coverage import Period, format_value
from gis.errors import InvalidInput
from gis.i18n import label as _label
from gis.localtime import beijing_midnight, from_beijing, is_beijing_midnight, to_beijing
from gis.storage import boundaries, case_events, cases, layer_versions

__all__ = [
    "CHANGE_NOTE", "HELPERS", "INDICATORS", "LEVELS", "Indicator", "get_indicator",
    "indicator_queries", "indicators", "year_before",
]

LEVELS = ("grid", "compound", "community", "street", "org")
KINDS = ("count", "rate", "hours")
FINISHED = ("closed", "closed_not_fixed")  # a case finished for good (besides rejected)

# Numerators and denominators of the rates (returned too, so a page can show "x / y").
HELPERS = ("closed_with_due", "closed_on_time", "resolved_with_due", "resolved_on_time",
           "checked", "reworked", "open_during", "extended", "evaluations", "satisfied")

CHANGE_NOTE = {
    "zh": "环比：与上一统计期比较（按月统计时为上月；本月尚未结束时为上月的相同天数）；"
          "同比：与上一年同期比较。比率的变化以百分点表示，件数和时长的变化以百分比表示。",
    "en": "Month on month (环比): against the previous period (the previous month for a "
          "month, as much of it as has passed of a month not yet over); year on year "
          "(同比): against the same period a year before. Changes in rates are in "
          "percentage points; changes in counts and hours in per cent.",
}

_KIND_UNITS = {"count": ("件", "cases"), "rate": ("%", "%"), "hours": ("小时", "hours")}


@dataclass(frozen=True)
class Indicator:
    """One indicator: its names, its formula in words, and how to read it.

    ``kind`` is ``count`` (whole cases), ``rate`` (a share in [0, 1], shown as a
    percentage) or ``hours``; ``better`` is ``"higher"``, ``"lower"`` or ``None`` (a volume,
    neither good nor bad; not ranked). For a rate, ``numerator`` and ``denominator`` name
    the columns of :func:`indicators` it is the quotient of.
    """

    key: str
    zh: str
    en: str
    formula_zh: str
    formula_en: str
    kind: str
    better: str | None
    numerator: str | None = None
    denominator: str | None = None

    def label(self, locale: str = "zh") -> str:
        """The name in ``locale`` (``zh`` unless it starts with ``en``)."""
        return self.en if locale.startswith("en") else self.zh

    def formula(self, locale: str = "zh") -> str:
        """The formula in words in ``locale``."""
        return self.formula_en if locale.startswith("en") else self.formula_zh

    def unit_label(self, locale: str = "zh") -> str:
        zh, en = _KIND_UNITS[self.kind]
        return en if locale.startswith("en") else zh

    def format(self, value, locale: str = "zh") -> str:
        """``value`` as text: counts whole, rates as a percentage and hours with one
        decimal; NaN/None as "no data"."""
        return format_value(self.kind, value, locale)

    def format_change(self, change, locale: str = "zh") -> str:
        """A ``_mom_change``/``_yoy_change`` value as text: ``+3.0 个百分点`` / ``+3.0 pp``
        for rates, ``+25.0%`` otherwise; NaN/None as "no data"."""
        if change is None or pd.isna(change):
            return _label("no_data", locale)
        if self.kind == "rate":
            return f"{float(change):+.1f} " + ("pp" if locale.startswith("en") else "个百分点")
        return f"{float(change):+.1f}%"

    def to_dict(self) -> dict:
        """A JSON-able description (API responses, the page's definitions)."""
        return {"key": self.key, "zh": self.zh, "en": self.en,
                "formula_zh": self.formula_zh, "formula_en": self.formula_en,
                "kind": self.kind, "better": self.better, "unit_zh": self.unit_label("zh"),
                "unit_en": self.unit_label("en"), "numerator": self.numerator,
                "denominator": self.denominator}


_ONCE_ZH = "同一案件只计一次。"
_ONCE_EN = "Each case counted once."
_DUE_ZH = "截止时间取延期后的时限。"
_DUE_EN = "The due time is the one after any extension."

INDICATORS: dict[str, Indicator] = {i.key: i for i in (
    Indicator(
        "reported", "上报数", "Reported",
        "统计期内上报（创建）的案件数，含不予立案的案件。",
        "Cases reported (created) within the period, rejected ones included.",
        "count", None),
    Indicator(
        "verified", "核实数", "Verified",
        "统计期内经现场核实（转为“已核实”）的案件数。" + _ONCE_ZH,
        "Cases verified on site (moved to 'verified') within the period. " + _ONCE_EN,
        "count", None),
    Indicator(
        "filed", "立案数", "Filed",
        "统计期内立案（转为“已立案”）的案件数。" + _ONCE_ZH,
        "Cases filed (moved to 'filed') within the period. " + _ONCE_EN,
        "count", None),
    Indicator(
        "dispatched", "派遣数", "Dispatched",
        "统计期内派遣（转为“已派遣”，含改派和返工后重新派遣）的案件数。" + _ONCE_ZH,
        "Cases dispatched (moved to 'dispatched', re-dispatches and dispatches after a "
        "rework included) within the period. " + _ONCE_EN,
        "count", None),
    Indicator(
        "resolved", "处置数", "Resolved",
        "统计期内处置完成（转为“已处置”）的案件数；返工后再次处置的" + _ONCE_ZH,
        "Cases resolved (moved to 'resolved') within the period; a case resolved again "
        "after a rework is counted once.",
        "count", None),
    Indicator(
        "closed", "结案数", "Closed",
        "统计期内核查结案（转为“已结案”）的案件数；“结案（未解决）”不算结案。",
        "Cases checked and closed (moved to 'closed') within the period; 'closed, not "
        "fixed' is not a closure.",
        "count", None),
    Indicator(
        "due_for_closure", "应结案数", "Due for closure",
        "期末前已到处置时限、且期初尚未了结（结案或结案未解决）的案件，加上统计期内提前了结、"
        "处置时限在期末之后或无时限的案件。期内结案的案件都在其中，超期积压案件在结案前每期"
        "都计入。" + _DUE_ZH + "不含不予立案的案件。",
        "Cases whose time limit ran out before the period end and that were not yet "
        "finished (closed, or closed not fixed) at the period start, plus cases finished "
        "within the period ahead of a time limit ending after the period (or with none). "
        "Every case closed within the period is among them; an overdue backlog counts in "
        "every period until it is closed. " + _DUE_EN + " Rejected cases are not counted.",
        "count", None),
    Indicator(
        "closure_rate", "结案率", "Closure rate",
        "结案数 ÷ 应结案数；应结案数为 0 时无数据。",
        "Closed ÷ due for closure; no data when nothing was due for closure.",
        "rate", "higher", "closed", "due_for_closure"),
    Indicator(
        "on_time_closure_rate", "按期结案率", "On-time closure rate",
        "统计期内结案且有处置时限的案件中，结案时间不晚于截止时间（结案时间 ≤ 截止时间）的"
        "比例；无时限的案件不参与计算；期内无结案时无数据。" + _DUE_ZH,
        "Of the cases closed within the period that have a due time, the share closed on "
        "or before it (closed_at ≤ due_at); cases without a time limit are left out; no "
        "data when none were closed. " + _DUE_EN,
        "rate", "higher", "closed_on_time", "closed_with_due"),
    Indicator(
        "on_time_handling_rate", "按期处置率", "On-time handling rate",
        "统计期内处置且有处置时限的案件中，期内最后一次处置时间不晚于截止时间的比例；返工后"
        "超过时限才再次处置的不算按期；期内无处置时无数据。" + _DUE_ZH,
        "Of the cases resolved within the period that have a due time, the share whose "
        "last resolution within the period was on or before it; a case fixed again after "
        "the deadline following a rework was not handled on time; no data when none were "
        "resolved. " + _DUE_EN,
        "rate", "higher", "resolved_on_time", "resolved_with_due"),
    Indicator(
        "rework_rate", "返工率", "Rework rate",
        "统计期内被退回返工的案件数 ÷ 统计期内经核查（已处置的案件被结案或退回返工）的案件数；"
        "居民评价不满意退回整改也算返工；期内无核查时无数据。",
        "Cases sent back for rework within the period ÷ cases checked within the period "
        "(a resolved case closed or sent back); a resident's 'not satisfied' sending a case "
        "back counts as a rework; no data when nothing was checked.",
        "rate", "lower", "reworked", "checked"),
    Indicator(
        "extension_rate", "延期率", "Extension rate",
        "统计期内获批延期的案件数 ÷ 统计期内曾处于未结状态（期末前上报、期初尚未处置）的"
        "案件数；不含不予立案的案件。",
        "Cases given an extension within the period ÷ cases open at some time in the "
        "period (reported before its end, not yet resolved at its start); rejected cases "
        "are not counted.",
        "rate", "lower", "extended", "open_during"),
    Indicator(
        "avg_handling_hours", "平均处置时长", "Average handling time",
        "统计期内处置的案件，从上报到期内最后一次处置的时长（小时）的平均值；期内无处置时"
        "无数据。",
        "For the cases resolved within the period, the mean of the hours from the report to "
        "the last resolution within the period; no data when none were resolved.",
        "hours", "lower"),
    Indicator(
        "median_handling_hours", "处置时长中位数", "Median handling time",
        "同上时长（小时）的中位数，件数为偶数时取中间两个的平均值；期内无处置时无数据。",
        "The median of the same hours (the mean of the two middle ones for an even "
        "number); no data when none were resolved.",
        "hours", "lower"),
    Indicator(
        "overdue", "超期案件", "Overdue cases",
        "统计期末仍未处置、且截止时间早于期末的案件数（期末时点数）；与覆盖地图的“超期案件”"
        "定义相同。" + _DUE_ZH + "不含不予立案的案件。",
        "Cases open at the period end whose due time is before the period end (a "
        "snapshot); the same as the coverage map's overdue cases. " + _DUE_EN
        + " Rejected cases are not counted.",
        "count", "lower"),
    Indicator(
        "satisfaction_rate", "群众满意率", "Resident satisfaction rate",
        "统计期内居民评价为“满意”的次数 ÷ 居民评价总次数；同一案件的每次评价都计入；期内"
        "无评价时无数据。",
        "Residents' evaluations within the period saying 'satisfied' ÷ all their "
        "evaluations within the period; every evaluation of a case counts; no data when "
        "there were none.",
        "rate", "higher", "satisfied", "evaluations"),
    Indicator(
        "needs_fix_now", "立行立改", "Fix now",
        "统计期内列入需求清单、当前类别为“立行立改”的案件数；列入时间为首次列入清单的时间，"
        "上报时即列入（如居民议事会提出）的取上报时间。",
        "Cases put on the needs list within the period whose kind is now 'fix now'; put on "
        "the list at their first needs-list entry, or at the report when they were listed "
        "at intake (e.g. raised at a residents' meeting).",
        "count", None),
    Indicator(
        "needs_long_term", "长期问题", "Long term",
        "统计期内列入需求清单、当前类别为“长期问题”的案件数；列入时间同上。",
        "Cases put on the needs list within the period whose kind is now 'long term'; "
        "listing time as above.",
        "count", None),
    Indicator(
        "needs_claimed", "清单认领", "Claimed from the list",
        "统计期内被共建单位从需求清单认领（转为“已认领”）的案件数。",
        "Cases claimed from the published needs list by a partner unit (moved to "
        "'claimed') within the period.",
        "count", None),
    Indicator(
        "needs_done", "清单完成", "Needs done",
        "需求清单上的案件中，统计期内结案的案件数。",
        "Cases on the needs list closed within the period.",
        "count", None),
)}


def get_indicator(key: object) -> Indicator:
    """The indicator ``key``, or ``InvalidInput`` (field ``indicator``)."""
    if not isinstance(key, str) or key not in INDICATORS:
        raise InvalidInput(f"unknown indicator {key!r}; expected one of: "
                           f"{', '.join(INDICATORS)}", field="indicator")
    return INDICATORS[key]


# -- periods -------------------------------------------------------------------------------
_MONTH = re.compile(r"\d{4}-\d{2}")


def _minus_year(t: datetime) -> datetime:
    """``t`` one calendar year earlier; 29 February becomes 28 February."""
    try:
        return t.replace(year=t.year - 1)
    except ValueError:
        return t.replace(year=t.year - 1, day=28)


def year_before(period: Period) -> Period:
    """The same period one year earlier, for 同比 comparisons.

    Dates are Beijing ones (:mod:`gis.localtime`): the year is taken off the Beijing
    wall-clock time. A month gives the same month a year before (``2026-10`` →
    ``2025-10``; a month cut at now ends at the same Beijing time a year before). Whole
    days (a date range, or any period from Beijing midnight to Beijing midnight) give the
    same first and last day a year before, 29 February becoming 28 February (so
    ``2028-02-01..2028-02-29`` → ``2027-02-01..2027-02-28``). Any other period (``30d``,
    ending now) is shifted by one calendar year at both ends, keyed
    ``<key>:year_before``.
    """
    def minus_year(t: datetime) -> datetime:
        return from_beijing(_minus_year(to_beijing(t)))

    if _MONTH.fullmatch(period.key):
        start = minus_year(period.start)
        end = minus_year(period.end)
        return Period(start, end, f"{to_beijing(start):%Y-%m}")
    if is_beijing_midnight(period.start) and is_beijing_midnight(period.end):
        first = _minus_year(to_beijing(period.start)).date()
        last = _minus_year(to_beijing(period.end) - timedelta(days=1)).date()
        start = beijing_midnight(first)
        end = beijing_midnight(last + timedelta(days=1))
        return Period(start, end, f"{first.isoformat()}..{last.isoformat()}")
    return Period(minus_year(period.start), minus_year(period.end),
                  f"{period.key}:year_before")


# -- queries -------------------------------------------------------------------------------
def _count(cond) -> sa.ColumnElement:
    return sa.func.sum(sa.case((cond, 1), else_=0))


def _distinct(cond, col) -> sa.ColumnElement:
    # COUNT(DISTINCT CASE WHEN cond THEN col END): NULLs are not counted (SQL-92).
    return sa.func.count(sa.distinct(sa.case((cond, col))))


def _within(col, p: Period):
    return sa.and_(col >= p.start, col < p.end)


def _code_col(level: str):
    return cases.c.assignee_org if level == "org" else cases.c[f"{level}_code"]


def _check_level(level: object) -> str:
    if level not in LEVELS:
        raise InvalidInput(f"unknown level {level!r}; expected one of: {', '.join(LEVELS)}",
                           field="level")
    return str(level)


def indicator_queries(level: str, periods: list[Period] | tuple[Period, ...],
                      codes: list | None = None, *, category: str | None = None,
                      community: str | None = None,
                      grid: str | None = None) -> dict[str, sa.Select]:
    """The statements behind :func:`indicators` (portable SQLAlchemy Core).

    Parameters
    ----------
    level : {"grid", "compound", "community", "street", "org"}
        What to group by: the case's stored ``<level>_code``, or ``assignee_org``.
    periods : sequence of Period
        Each aggregate is computed for every period; column ``<name>__<i>`` is the value
        for ``periods[i]``.
    codes : list, optional
        Only these area codes (organisation ids for ``org``).
    category, community, grid : str, optional
        Count only the cases of this category, or stored with this community or grid
        code (every statement, every period): the indicators of one kind of problem, or
        of the part of an area inside another (a compound's cases in one grid).

    Returns
    -------
    dict
        ``areas`` (code, name of every area of the level), ``cases`` (one ``GROUP BY``
        over ``cases``), ``events`` (over ``case_events`` joined to ``cases``),
        ``resolutions`` (over each case's last resolution per period) and ``durations``
        (code, ``created_at`` and the last resolution per period of each case resolved in
        any of the periods: one row per case, not per area).
    """
    level = _check_level(level)
    c, e = cases.c, case_events.c
    code = _code_col(level)
    first, last = min(p.start for p in periods), max(p.end for p in periods)
    base = [code.is_not(None)]
    if codes is not None:
        base.append(code.in_(list(codes)))
    # The filters narrow the cases, not the areas: every statement joins to ``cases``, so
    # one condition each on the case row filters flows, snapshots and events alike.
    if category is not None:
        base.append(c.category == str(category))
    if community is not None:
        base.append(c.community_code == str(community))
    if grid is not None:
        base.append(c.grid_code == str(grid))

    # -- areas
    if level == "org":
        from gis.accounts import organisations as o

        areas = sa.select(o.c.id.label("code"), o.c.name.label("name")).order_by(o.c.id)
        if codes is not None:
            areas = areas.where(o.c.id.in_(list(codes)))
    else:
        areas = (sa.select(boundaries.c.code, boundaries.c.name)
                 .join(layer_versions, layer_versions.c.id == boundaries.c.version_id)
                 .where(layer_versions.c.active.is_(True), boundaries.c.level == level)
                 .order_by(boundaries.c.code))
        if codes is not None:
            areas = areas.where(boundaries.c.code.in_([str(x) for x in codes]))

    # -- one GROUP BY over cases
    needs_first = (sa.select(e.case_id, sa.func.min(e.at).label("listed_at"))
                   .where(e.kind == "needs").group_by(e.case_id).subquery("needs_first"))
    listed_at = sa.func.coalesce(needs_first.c.listed_at, c.created_at)
    left_open = sa.func.coalesce(c.resolved_at, c.closed_at, c.updated_at)
    counted = c.status != "rejected"
    cols = [code.label("code")]
    for i, p in enumerate(periods):
        before_end = sa.and_(counted, c.created_at < p.end)
        closed = sa.and_(c.status == "closed", _within(c.closed_at, p))
        # closed_at is set when a case is finished (closed, closed not fixed, rejected).
        limit_ran_out = sa.and_(before_end, c.due_at < p.end,
                                sa.or_(c.closed_at.is_(None), c.closed_at >= p.start))
        early = sa.and_(counted, c.status.in_(FINISHED), _within(c.closed_at, p),
                        sa.or_(c.due_at.is_(None), c.due_at >= p.end))
        open_at_end = sa.and_(before_end, sa.or_(c.status.in_(OPEN_STATUSES),
                                                 left_open >= p.end))
        cols += [
            _count(_within(c.created_at, p)).label(f"reported__{i}"),
            _count(closed).label(f"closed__{i}"),
            _count(sa.and_(closed, c.due_at.is_not(None))).label(f"closed_with_due__{i}"),
            _count(sa.and_(closed, c.closed_at <= c.due_at)).label(f"closed_on_time__{i}"),
            _count(sa.or_(limit_ran_out, early)).label(f"due_for_closure__{i}"),
            _count(sa.and_(open_at_end, c.due_at < p.end)).label(f"overdue__{i}"),
            _count(sa.and_(before_end, sa.or_(c.status.in_(OPEN_STATUSES),
                                              left_open >= p.start)))
            .label(f"open_during__{i}"),
            _count(sa.and_(c.needs_kind == "fix_now", _within(listed_at, p)))
            .label(f"needs_fix_now__{i}"),
            _count(sa.and_(c.needs_kind == "long_term", _within(listed_at, p)))
            .label(f"needs_long_term__{i}"),
            _count(sa.and_(closed, c.needs_kind.is_not(None))).label(f"needs_done__{i}"),
        ]
    case_q = (sa.select(*cols)
              .select_from(cases.outerjoin(needs_first, needs_first.c.case_id == c.id))
              .where(*base, c.created_at < last).group_by(code))

    # -- one GROUP BY over the events of the periods
    transition = e.kind == "transition"
    satisfied = sa.or_(e.data.contains('"verdict": "satisfied"', autoescape=True),
                       e.data.contains('"verdict":"satisfied"', autoescape=True))
    cols = [code.label("code")]
    for i, p in enumerate(periods):
        inside = _within(e.at, p)
        to = {s: sa.and_(inside, transition, e.to_status == s)
              for s in ("verified", "filed", "dispatched", "reopened", "claimed")}
        evaluation = sa.and_(inside, e.kind == "evaluation")
        cols += [
            _distinct(to["verified"], e.case_id).label(f"verified__{i}"),
            _distinct(to["filed"], e.case_id).label(f"filed__{i}"),
            _distinct(to["dispatched"], e.case_id).label(f"dispatched__{i}"),
            _distinct(to["reopened"], e.case_id).label(f"reworked__{i}"),
            _distinct(sa.and_(inside, transition, e.from_status == "resolved",
                              e.to_status.in_(("closed", "reopened"))), e.case_id)
            .label(f"checked__{i}"),
            _distinct(sa.and_(inside, e.kind == "extension"), e.case_id)
            .label(f"extended__{i}"),
            _count(evaluation).label(f"evaluations__{i}"),
            _count(sa.and_(evaluation, satisfied)).label(f"satisfied__{i}"),
            _distinct(to["claimed"], e.case_id).label(f"needs_claimed__{i}"),
        ]
    event_q = (sa.select(*cols)
               .select_from(case_events.join(cases, cases.c.id == e.case_id))
               .where(*base, e.at >= first, e.at < last,
                      e.kind.in_(("transition", "extension", "evaluation")))
               .group_by(code))

    # -- each case's last resolution in each period
    last_res = (sa.select(e.case_id, *[sa.func.max(sa.case((_within(e.at, p), e.at)))
                                       .label(f"r{i}") for i, p in enumerate(periods)])
                .where(transition, e.to_status == "resolved", e.at >= first, e.at < last)
                .group_by(e.case_id).subquery("last_resolution"))
    joined = last_res.join(cases, cases.c.id == last_res.c.case_id)
    cols = [code.label("code")]
    for i in range(len(periods)):
        r = last_res.c[f"r{i}"]
        cols += [
            sa.func.count(r).label(f"resolved__{i}"),
            _count(sa.and_(r.is_not(None), c.due_at.is_not(None)))
            .label(f"resolved_with_due__{i}"),
            _count(r <= c.due_at).label(f"resolved_on_time__{i}"),
        ]
    res_q = sa.select(*cols).select_from(joined).where(*base).group_by(code)
    dur_q = (sa.select(code.label("code"), c.created_at,
                       *[last_res.c[f"r{i}"] for i in range(len(periods))])
             .select_from(joined).where(*base))
    return {"areas": areas, "cases": case_q, "events": event_q, "resolutions": res_q,
            "durations": dur_q}


# -- the table -----------------------------------------------------------------------------
_SUMMED = ("reported", "closed", "closed_with_due", "closed_on_time", "due_for_closure",
           "overdue", "open_during", "needs_fix_now", "needs_long_term", "needs_done",
           "verified", "filed", "dispatched", "reworked", "checked", "extended", "evaluations",
           "satisfied", "needs_claimed", "resolved", "resolved_with_due", "resolved_on_time")
_SUFFIXES = ("", "_prev", "_yoy")


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    return (num.astype(float) / den.astype(float).where(den > 0)).astype(float)


def _change(ind: Indicator, now: pd.Series, then: pd.Series) -> pd.Series:
    now, then = now.astype(float), then.astype(float)
    if ind.kind == "rate":
        return (now - then) * 100
    rel = (now - then) / then.where(then != 0) * 100
    return rel.mask((then == 0) & (now == 0), 0.0)


def indicators(store, level: str, period: Period, *, codes=None, category: str | None = None,
               community: str | None = None, grid: str | None = None) -> pd.DataFrame:
    """Every indicator of :data:`INDICATORS` for each area of ``level`` over ``period``,
    with 环比 and 同比.

    Parameters
    ----------
    store : gis.storage.SqlCaseStore
        The case store; five statements are run on its engine, whatever the number of
        cases or areas (see :func:`indicator_queries`).
    level : {"grid", "compound", "community", "street", "org"}
        The areas: boundary codes stored on the cases, or organisations (ids).
    period : Period
        From :func:`gis.coverage.parse_period`; compared with ``period.previous()`` and
        :func:`year_before`.
    codes : iterable, optional
        Only these areas, in this order, each one even without cases. Default: every
        area of the active boundary layer of ``level`` (every organisation for ``org``),
        in code order, then any other code found on cases in the three periods (a grid
        since redrawn).
    category, community, grid : str, optional
        Count only the cases of this category code, or stored with this community or
        grid code (see :func:`indicator_queries`); the areas listed stay the same.

    Returns
    -------
    pandas.DataFrame
        One row per area, indexed by code (index name ``<level>_code``), with columns
        ``code``, ``name`` (None when unknown) and, per indicator ``<key>`` in the order of
        :data:`INDICATORS`: ``<key>``, ``<key>_prev``, ``<key>_yoy``, ``<key>_mom_change``,
        ``<key>_yoy_change`` and, when it has a ``better`` direction, ``rank_<key>``
        (1 = best among the rows returned; ties share the better rank; no rank without
        data); then the :data:`HELPERS` with ``_prev``/``_yoy``. Counts are integers
        (0 without cases); rates and hours are floats, NaN = no data (not 0). ``attrs``
        holds the level, the three periods (``period``, ``previous``, ``year_before``
        as :meth:`Period.to_dict`) and the filters (``category``, ``community``,
        ``grid``; None when not given).
    """
    level = _check_level(level)
    periods = (period, period.previous(), year_before(period))
    if codes is not None:
        codes = [int(x) if level == "org" else str(x) for x in codes]
        codes = list(dict.fromkeys(codes))
    qs = indicator_queries(level, periods, codes, category=category, community=community,
                           grid=grid)
    with store.engine.connect() as conn:
        areas = conn.execute(qs["areas"]).fetchall()
        parts = [pd.DataFrame([dict(r) for r in conn.execute(qs[k]).mappings()])
                 for k in ("cases", "events", "resolutions")]
        dur = pd.DataFrame(conn.execute(qs["durations"]).fetchall(),
                           columns=["code", "created_at", *(f"r{i}" for i in range(3))])

    names = {row[0]: row[1] for row in areas}
    if codes is None:
        seen = set()
        for part in parts:
            if not part.empty:
                seen.update(part["code"].tolist())
        order = list(names) + sorted(seen - set(names))
    else:
        order = codes
    index = pd.Index(order, name=f"{level}_code", dtype=object)

    raw: dict[str, pd.Series] = {}
    for part in parts:
        if part.empty:
            continue
        part = part.set_index("code")
        for col in part.columns:
            raw[col] = part[col]
    n = {}
    for name in _SUMMED:
        for i, suffix in enumerate(_SUFFIXES):
            s = raw.get(f"{name}__{i}")
            values = (s.reindex(index) if s is not None
                      else pd.Series(0, index=index)).fillna(0)
            n[name + suffix] = values.astype("int64")

    hours: dict[str, pd.Series] = {}
    for i, suffix in enumerate(_SUFFIXES):
        d = dur[dur[f"r{i}"].notna()]
        h = ((pd.to_datetime(d[f"r{i}"]) - pd.to_datetime(d["created_at"]))
             .dt.total_seconds() / 3600)
        g = h.groupby(d["code"].to_numpy())
        hours["avg_handling_hours" + suffix] = g.mean().reindex(index).astype(float)
        hours["median_handling_hours" + suffix] = g.median().reindex(index).astype(float)

    values: dict[str, pd.Series] = {}
    for suffix in _SUFFIXES:
        for key, ind in INDICATORS.items():
            if ind.kind == "rate":
                values[key + suffix] = _ratio(n[ind.numerator + suffix],
                                              n[ind.denominator + suffix])
            elif ind.kind == "hours":
                values[key + suffix] = hours[key + suffix]
            else:
                values[key + suffix] = n[key + suffix]
    cols: dict[str, pd.Series] = {
        "code": pd.Series(list(order), index=index, dtype=object),
        "name": pd.Series([names.get(x) for x in order], index=index, dtype=object),
    }
    for key, ind in INDICATORS.items():
        now = values[key]
        cols[key] = now
        cols[key + "_prev"] = values[key + "_prev"]
        cols[key + "_yoy"] = values[key + "_yoy"]
        cols[key + "_mom_change"] = _change(ind, now, values[key + "_prev"])
        cols[key + "_yoy_change"] = _change(ind, now, values[key + "_yoy"])
        if ind.better is not None:
            rank = now.astype(float).rank(method="min", ascending=ind.better == "lower")
            cols["rank_" + key] = rank.astype("Int64")
    for name in HELPERS:
        for suffix in _SUFFIXES:
            cols[name + suffix] = n[name + suffix]
    out = pd.DataFrame(cols, index=index)
    out.attrs = {"level": level, "period": periods[0].to_dict(),
                 "previous": periods[1].to_dict(), "year_before": periods[2].to_dict(),
                 "category": category, "community": community, "grid": grid}
    return out
