"""The monthly report for the street office: the numbers, and a PDF made without a browser.

:func:`report_data` computes everything the report shows — the street's indicators with
环比/同比 and their definitions, per-community and per-grid figures for the maps, problem
clusters, the weekly trend, the category breakdown, time to close, the needs list, and
what was fixed including the physical repairs — as a JSON-able dict. :func:`monthly_report`
renders that dict into an A4 PDF with matplotlib (``PdfPages``), geopandas drawing the maps;
a web page can render the same dict as HTML for printing from the browser. Computing and
drawing are kept apart so the page and the PDF always show the same numbers.

Definitions (periods are half-open ``[start, end)`` in naive UTC, as everywhere; months,
days and every time printed are Beijing time, UTC+8, see :mod:`gis.localtime`)
------------------------------------------------------------------------------
- Indicators: :func:`gis.indicators.indicators` at street level (and community / grid
  level for the tables and maps) — the definitions printed are :data:`INDICATORS`' own.
- Open cases per grid and community: the coverage metric 未结案件 at the period end
  (:mod:`gis.coverage`), the same number the overview map shows for that period.
- Clusters: :func:`gis.analysis.clusters` (DBSCAN, 50 m radius, at least 5 cases) on the
  cases reported in the period, drawn as hulls on the maps.
- Weekly trend: 7-day bins from the period start (a Beijing midnight for a month; the last
  bin may be shorter), labelled with Beijing dates; *reported*
  counts cases created in the bin (rejected ones included, as 上报数), *closed* counts
  cases closed in the bin (as 结案数).
- Time to close: for each case closed in the period, the days from its report to its
  closure.
- What was fixed: per category, cases resolved in the period (处置数: a transition into
  ``resolved``) and closed in the period (结案数).
- Physical repairs: for every case resolved in the period, the quantities
  (``data.quantities``: ``road_m``, ``area_m2``, ``lamps``, ``parking_spaces``,
  ``patches``) and the repair line length (``data.line_length_m``) recorded on its
  *last* resolution in the period, summed. A case sent back and fixed again within the
  period counts once, with the quantities of the fix that stood; one fixed in September
  and again in October counts in both months (the work was done twice).
  ``road_total_m`` is the best single figure for "metres of road repaired": per case the
  metres stated (``road_m``), or, when none were stated, the length of the line drawn on
  the map; ``road_m`` and ``line_length_m`` are also given on their own.
- The needs list: 立行立改 / 长期问题 / 清单认领 / 清单完成 are the street's indicators for
  the period; the per-unit table is :meth:`gis.service.Hemei.needs_summary` (to date), and
  the open items are the needs-list cases open at the period end (as the coverage metric
  reads "open"), with their status at the period end: the status their last transition
  before the end moved them to (``case_events``), not today's (a case closed after the
  period was still open in it).
- The period: one that starts after now is refused; the current month is reported to
  date (:func:`gis.coverage.up_to_now`: cut at now, so "open" and "overdue at the period
  end" are today's, not guesses about an end that has not come) and labelled so, in
  Beijing time (``（截至 2026-11-27 03:48 北京时间）`` / ``(to 2026-11-27 03:48 Beijing
  time)``). The data keep exact instants (ISO 8601 UTC with ``Z``); the PDF prints
  Beijing times and says so.

Fonts: Chinese needs a CJK font. :func:`cjk_font` looks for one matplotlib knows (Noto
Sans CJK SC from ``fonts-noto-cjk`` first) and warns when there is none, in which case
Chinese characters come out as empty boxes. Noto CJK's outlines are CFF, which
matplotlib's Type 42 embedding labels as TrueType (poppler warns, strict viewers may
refuse), so such fonts are embedded as Type 3 (every viewer draws them; text stays
searchable and extractable); TrueType fonts are embedded as Type 42.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from gis.cases import NEEDS_KINDS, OPEN_STATUSES, status_label, utcnow
from gis.catalogue import load_catalogue
from gis.coverage import Period, area_metrics, parse_period, up_to_now
from gis.localtime import to_beijing
from gis.storage import case_events, cases

__all__ = ["QUANTITY_KEYS", "REPAIR_LABELS", "cjk_font", "monthly_report", "report_data"]

QUANTITY_KEYS = ("road_m", "area_m2", "lamps", "parking_spaces", "patches")
REPAIR_LABELS = {  # the repair totals, as the report names them
    "road_total_m": {"zh": "修复道路、人行道", "en": "Road and footpath repaired",
                     "unit_zh": "米", "unit_en": "m", "short_zh": "道路", "short_en": "road"},
    "area_m2": {"zh": "修补路面面积", "en": "Surface patched", "unit_zh": "平方米",
                "unit_en": "m²", "short_zh": "修补", "short_en": "patched"},
    "lamps": {"zh": "点亮路灯", "en": "Street lights relit", "unit_zh": "盏",
              "unit_en": "lights", "short_zh": "路灯", "short_en": "lights"},
    "parking_spaces": {"zh": "施划停车位", "en": "Parking spaces marked", "unit_zh": "个",
                       "unit_en": "spaces", "short_zh": "停车位", "short_en": "parking"},
    "patches": {"zh": "铺设沥青补丁", "en": "Asphalt patches laid", "unit_zh": "处",
                "unit_en": "patches", "short_zh": "沥青补丁", "short_en": "patches"},
    "line_length_m": {"zh": "地图上绘制的维修线路", "en": "Repair lines drawn on the map",
                      "unit_zh": "米", "unit_en": "m", "short_zh": "线路",
                      "short_en": "line"},
}
CLUSTER_RADIUS_M = 50
CLUSTER_MIN_CASES = 5
TIME_BINS = (0, 1, 3, 7, 14, 30, 60, math.inf)
MAX_OPEN_NEEDS = 15
MAX_REPAIR_ITEMS = 15

# Words of the report in both languages.
_T = {
    "title": ("网格化管理月度报告", "Grid management monthly report"),
    "period": ("统计期", "Period"),
    "generated": ("生成时间", "Generated"),
    "time_note": ("时间为北京时间（UTC+8）。", "Times are Beijing time (UTC+8)."),
    "key_numbers": ("本期概况", "At a glance"),
    "highlights": ("本期要点", "Highlights"),
    "cover": ("封面", "Cover"),
    "open_end": ("期末未结案件", "Open at period end"),
    "indicators": ("主要指标", "Indicators"),
    "indicator": ("指标", "Indicator"),
    "this": ("本期", "This period"),
    "prev": ("上期", "Previous"),
    "mom": ("环比", "MoM"),
    "yoy_value": ("上年同期", "Year before"),
    "yoy": ("同比", "YoY"),
    "communities": ("各社区情况", "Communities"),
    "community": ("社区", "Community"),
    "definitions": ("指标定义", "Definitions"),
    "maps": ("网格地图", "Grid maps"),
    "map_open": ("各网格期末未结案件", "Open cases per grid at the period end"),
    "map_rate": ("各网格结案率", "Closure rate per grid"),
    "no_data": ("无数据", "no data"),
    "clusters_note": ("虚线圈标出本期案件聚集区（{r} 米内至少 {k} 件），数字为件数。",
                      "Dashed rings mark clusters of this period's cases (at least {k} "
                      "within {r} m); the number is how many."),
    "no_clusters": ("本期无案件聚集区", "No clusters of cases this period"),
    "charts": ("趋势与分类", "Trend and categories"),
    "weekly": ("每周上报与结案", "Reported and closed per week"),
    "reported": ("上报", "Reported"),
    "closed": ("结案", "Closed"),
    "resolved": ("处置", "Resolved"),
    "by_category": ("各类别上报数", "Reported by category"),
    "ttc": ("结案用时分布", "Time to close"),
    "cases_unit": ("件", "cases"),
    "days": ("天", "days"),
    "median": ("中位数", "median"),
    "needs": ("需求清单", "Needs list"),
    "needs_units": ("包保包联单位认领情况（累计）", "Partner units (to date)"),
    "unit": ("单位", "Unit"),
    "claimed_n": ("认领/承接", "Claimed"),
    "finished_n": ("已完成", "Finished"),
    "finish_rate": ("完成率", "Done"),
    "open_needs": ("期末尚未完成的清单事项", "Needs-list items open at the period end"),
    "none": ("无", "None"),
    "fixed": ("办结事项与维修成果", "What was fixed"),
    "repairs": ("本期维修成果", "Repairs this period"),
    "repair_cases": ("（{n} 件案件填报了工程量或维修线路）",
                     "({n} cases recorded quantities or a repair line)"),
    "fixed_by_category": ("各类别处置、结案数", "Resolved and closed by category"),
    "category": ("类别", "Category"),
    "repair_items": ("维修明细", "Repairs in detail"),
    "case": ("案件", "Case"),
    "place": ("位置", "Place"),
    "work": ("工程量", "Work done"),
    "id": ("编号", "ID"),
    "kind": ("类型", "Kind"),
    "status": ("状态", "Status"),
    "page": ("第 {n} 页", "Page {n}"),
    "more": ("另有 {n} 项未列出", "{n} more not listed"),
    "total": ("合计", "Total"),
}
_MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December")


def _t(key: str, locale: str, **kw) -> str:
    zh, en = _T[key]
    text = en if _en(locale) else zh
    return text.format(**kw) if kw else text


def _en(locale: str) -> bool:
    return str(locale or "zh").startswith("en")


def _num(v):
    """A JSON-able number: None for NaN/None, int for whole counts."""
    if v is None or v is pd.NA:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if math.isnan(f):
        return None
    if isinstance(v, int | np.integer):
        return int(v)
    return f


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="seconds") + "Z"


def period_label(period: Period, locale: str = "zh") -> str:
    """``2026年10月`` / ``October 2026`` for a month; else the (Beijing) dates. A period cut
    at now (``partial``) says how far it goes, in Beijing time:
    ``2026年11月（截至 2026-11-27 03:48 北京时间）`` /
    ``November 2026 (to 2026-11-27 03:48 Beijing time)``."""
    import re

    start = to_beijing(period.start)
    if re.fullmatch(r"\d{4}-\d{2}", period.key):
        if _en(locale):
            text = f"{_MONTHS_EN[start.month - 1]} {start.year}"
        else:
            text = f"{start.year}年{start.month}月"
    else:
        last = to_beijing(period.end - timedelta(seconds=1))
        sep = " – " if _en(locale) else " 至 "
        text = f"{start:%Y-%m-%d}{sep}{last:%Y-%m-%d}"
    if period.partial:
        when = f"{to_beijing(period.end):%Y-%m-%d %H:%M}"
        text += f" (to {when} Beijing time)" if _en(locale) else f"（截至 {when} 北京时间）"
    return text


# -- the numbers ---------------------------------------------------------------------------
def _pick_street(layers: dict, street: str | None) -> dict:
    st = layers.get("street")
    if st is None or st.empty:
        return {"code": street, "name": street or ""}
    if street is None:
        row = st.iloc[0]
    else:
        match = st[st["code"].astype(str) == str(street)]
        if match.empty:
            from gis.errors import InvalidInput

            raise InvalidInput(f"unknown street {street!r}; known: "
                               f"{', '.join(st['code'].astype(str))}", field="street")
        row = match.iloc[0]
    return {"code": str(row["code"]), "name": str(row["name"])}


def _indicator_rows(row: pd.Series, locale: str) -> list[dict]:
    from gis.indicators import INDICATORS

    out = []
    for key, ind in INDICATORS.items():
        vals = {s: row.get(key + s) for s in ("", "_prev", "_yoy", "_mom_change",
                                                "_yoy_change")}
        out.append({
            "key": key, "label": ind.label(locale), "zh": ind.zh, "en": ind.en,
            "formula": ind.formula(locale), "kind": ind.kind, "better": ind.better,
            "unit": ind.unit_label(locale),
            "value": _num(vals[""]), "prev": _num(vals["_prev"]), "yoy": _num(vals["_yoy"]),
            "mom_change": _num(vals["_mom_change"]), "yoy_change": _num(vals["_yoy_change"]),
            "text": {"value": ind.format(vals[""], locale),
                     "prev": ind.format(vals["_prev"], locale),
                     "yoy": ind.format(vals["_yoy"], locale),
                     "mom_change": ind.format_change(vals["_mom_change"], locale),
                     "yoy_change": ind.format_change(vals["_yoy_change"], locale)},
        })
    return out


def _within(col, p: Period):
    return sa.and_(col >= p.start, col < p.end)


def _street_cond(street_code):
    return [cases.c.street_code == street_code] if street_code else []


def _weekly(conn, p: Period, where: list, locale: str) -> list[dict]:
    c = cases.c
    created = [r[0] for r in conn.execute(
        sa.select(c.created_at).where(*where, _within(c.created_at, p)))]
    closed = [r[0] for r in conn.execute(
        sa.select(c.closed_at).where(*where, c.status == "closed", _within(c.closed_at, p)))]
    out = []
    start = p.start
    while start < p.end:
        end = min(start + timedelta(days=7), p.end)
        first, last = to_beijing(start), to_beijing(end - timedelta(seconds=1))
        out.append({"start": _iso(start), "end": _iso(end),
                    "label": f"{first:%m/%d}–{last:%m/%d}" if last.date() != first.date()
                    else f"{first:%m/%d}",
                    "reported": sum(start <= t < end for t in created),
                    "closed": sum(start <= t < end for t in closed)})
        start = end
    return out


def _resolutions(conn, p: Period, where: list):
    """Each case's last resolution event in the period: case id → (category, data)."""
    e, c = case_events.c, cases.c
    q = (sa.select(e.case_id, e.at, e.id, e.data, c.category, c.title, c.compound_code,
                   c.grid_code)
         .select_from(case_events.join(cases, c.id == e.case_id))
         .where(*where, e.kind == "transition", e.to_status == "resolved", _within(e.at, p))
         .order_by(e.case_id, e.at, e.id))
    last = {}
    for r in conn.execute(q):
        last[r.case_id] = r
    return last


def _status_at(conn, ids: list[int], end: datetime) -> dict[int, str]:
    """Each case's status at ``end``: where its last transition before ``end`` (by time,
    then event id) took it. ``cases.status`` is today's; a report on a past period must
    not show a case closed since as closed then. One statement for all ``ids``."""
    if not ids:
        return {}
    e = case_events.c
    last = (sa.select(e.case_id, sa.func.max(e.at).label("at"))
            .where(e.case_id.in_(ids), e.kind == "transition", e.at < end)
            .group_by(e.case_id).subquery("last_before_end"))
    q = (sa.select(e.case_id, e.to_status)
         .select_from(case_events.join(last, sa.and_(last.c.case_id == e.case_id,
                                                     last.c.at == e.at)))
         .where(e.kind == "transition")
         .order_by(e.case_id, e.id))
    # Two transitions at the same instant: the later row (higher id) wins.
    return {int(cid): status for cid, status in conn.execute(q)}


def _repairs(last: dict, names: dict, locale: str) -> tuple[dict, list[dict]]:
    totals = dict.fromkeys((*QUANTITY_KEYS, "line_length_m", "road_total_m"), 0.0)
    items = []
    n = 0
    for cid, r in last.items():
        try:
            data = json.loads(r.data) if r.data else {}
        except ValueError:
            data = {}
        q = data.get("quantities") if isinstance(data, dict) else None
        q = q if isinstance(q, dict) else {}
        got = {k: float(q[k]) for k in QUANTITY_KEYS
               if isinstance(q.get(k), int | float) and not isinstance(q.get(k), bool)}
        line = data.get("line_length_m") if isinstance(data, dict) else None
        line = float(line) if isinstance(line, int | float) and not isinstance(line, bool) \
            else None
        if not got and line is None:
            continue
        n += 1
        for k, v in got.items():
            totals[k] += v
        if line is not None:
            totals["line_length_m"] += line
        road = got.get("road_m", line if line is not None else 0.0)
        totals["road_total_m"] += road
        items.append({"case_id": int(cid), "title": r.title, "category": r.category,
                      "at": _iso(r.at),
                      "place": names.get("compound", {}).get(r.compound_code or "")
                      or names.get("grid", {}).get(r.grid_code or "") or "",
                      "quantities": got, "line_length_m": line})
    totals = {k: round(v, 1) for k, v in totals.items()}
    totals["cases"] = n
    items.sort(key=lambda i: (-(i["quantities"].get("road_m") or i["line_length_m"] or 0),
                              i["case_id"]))
    return totals, items


def report_data(hemei, period: Period | str, *, locale: str = "zh",
                street: str | None = None, now: datetime | None = None) -> dict:
    """Every number of the monthly report, as a JSON-able dict (NaN → None).

    Parameters
    ----------
    hemei : gis.service.Hemei
        The instance (its store, boundary layers and needs summary).
    period : Period or str
        The period (``"2026-10"`` or anything :func:`gis.coverage.parse_period` takes).
    locale : {"zh", "en"}
        The language of labels and formatted values.
    street : str, optional
        The street's code; default the (first) street of the boundary layer.
    now : datetime, optional
        The moment of the report (default now, naive UTC): a period that starts after it
        is refused (``InvalidInput``, field ``period``), one that includes it is cut at it
        and marked ``partial`` (see the module docstring).

    Returns
    -------
    dict
        ``street`` {code, name}; ``period``/``previous``/``year_before`` (key, start, end,
        and ``label`` for the period); ``generated_at``; ``summary`` (reported, resolved,
        closed, closure_rate, on_time_closure_rate, overdue, open_at_end,
        satisfaction_rate); ``indicators`` (one dict per indicator: label, formula, unit,
        value, prev, yoy, mom_change, yoy_change and their ``text``); ``change_note``;
        ``communities`` and ``grids`` (code, name, reported, resolved, closed,
        closure_rate, overdue, open at the end; grids also ``community_code``);
        ``clusters`` (id, count, categories, compounds, GeoJSON geometry); ``weekly``
        (start, end, label, reported, closed); ``categories`` (code, label, reported,
        resolved, closed); ``time_to_close`` (count, median/mean/p90 days, bins);
        ``needs`` (fix_now, long_term, claimed, done, by_unit, open_items, open_total);
        ``fixed`` (resolved, closed, by_category, repairs totals, repair_items).
        See the module docstring for the definitions.
    """
    from gis.analysis import clusters, load_cases_frame
    from gis.exports import area_names
    from gis.indicators import CHANGE_NOTE, indicators

    now = now or utcnow()
    p = up_to_now(parse_period(period) if isinstance(period, str) else period, now)
    store = hemei.store
    layers = hemei.layers
    st = _pick_street(layers, street)
    code = st["code"]
    names = area_names(store)
    cats = load_catalogue()

    def cat_label(c):
        return cats[c].label(locale) if c in cats else c

    # Areas of this street.
    comm = layers.get("community")
    if comm is not None and code:
        comm = comm[comm["parent_code"].astype(str) == code]
    grids = layers["grid"]
    if comm is not None:
        grids = grids[grids["parent_code"].astype(str).isin(comm["code"].astype(str))]

    # Indicators: street, communities, grids (three calls, five statements each).
    srow = indicators(store, "street", p, codes=[code] if code else None)
    s = srow.iloc[0] if len(srow) else pd.Series(dtype=object)
    ind_rows = _indicator_rows(s, locale)
    by_key = {r["key"]: r for r in ind_rows}

    def area_table(level: str, gdf) -> list[dict]:
        if gdf is None or gdf.empty:
            return []
        codes = gdf["code"].astype(str).tolist()
        ind = indicators(store, level, p, codes=codes)
        cov = area_metrics(store, gdf, p, level=level)
        out = []
        for cd, nm in zip(codes, gdf["name"], strict=True):
            r = ind.loc[cd]
            out.append({"code": cd, "name": nm,
                        "reported": int(r["reported"]), "resolved": int(r["resolved"]),
                        "closed": int(r["closed"]), "closure_rate": _num(r["closure_rate"]),
                        "overdue": int(r["overdue"]), "open": int(cov.loc[cd, "open"])})
        return out

    communities = area_table("community", comm)
    grid_rows = area_table("grid", grids)
    parents = dict(zip(grids["code"].astype(str), grids["parent_code"].astype(str),
                       strict=True))
    for g in grid_rows:
        g["community_code"] = parents.get(g["code"])
    street_gdf = layers.get("street")
    open_end = None
    if street_gdf is not None and code:
        cov = area_metrics(store, street_gdf[street_gdf["code"].astype(str) == code], p,
                           level="street")
        open_end = int(cov["open"].iloc[0]) if len(cov) else 0

    # Clusters of the period's cases in this street.
    frame = load_cases_frame(store, p)
    frame = frame[frame["grid_code"].isin(set(grids["code"].astype(str)))]
    cl = clusters(frame, radius_m=CLUSTER_RADIUS_M, min_cases=CLUSTER_MIN_CASES)
    cluster_rows = [{"cluster_id": int(r.cluster_id), "count": int(r.count),
                     "categories": dict(r.categories), "compounds": list(r.compounds),
                     "geometry": r.geometry.__geo_interface__} for r in cl.itertuples()]

    where = _street_cond(code)
    c = cases.c
    with store.engine.connect() as conn:
        weekly = _weekly(conn, p, where, locale)
        reported_by = dict(conn.execute(
            sa.select(c.category, sa.func.count()).where(*where, _within(c.created_at, p))
            .group_by(c.category)).fetchall())
        closed_rows = conn.execute(
            sa.select(c.category, c.created_at, c.closed_at)
            .where(*where, c.status == "closed", _within(c.closed_at, p))).fetchall()
        last_res = _resolutions(conn, p, where)
        # Open at the period end, read from the row as gis.coverage does.
        left_open = sa.func.coalesce(c.resolved_at, c.closed_at, c.updated_at)
        open_needs_q = (
            sa.select(c.id, c.title, c.category, c.compound_code, c.grid_code, c.needs_kind,
                      c.status, c.assignee_org, c.created_at)
            .where(*where, c.needs_kind.is_not(None), c.status != "rejected",
                   c.created_at < p.end,
                   sa.or_(c.status.in_(OPEN_STATUSES), left_open >= p.end))
            .order_by(c.created_at, c.id))
        open_needs = conn.execute(open_needs_q.limit(MAX_OPEN_NEEDS)).fetchall()
        status_at_end = _status_at(conn, [r.id for r in open_needs], p.end)
        open_needs_total = int(conn.execute(
            sa.select(sa.func.count()).select_from(open_needs_q.subquery())).scalar() or 0)
        from gis.accounts import organisations

        orgs = dict(conn.execute(sa.select(organisations.c.id, organisations.c.name))
                    .fetchall())

    closed_by: dict[str, int] = {}
    days = []
    for cat, created, closed in closed_rows:
        closed_by[cat] = closed_by.get(cat, 0) + 1
        days.append((closed - created).total_seconds() / 86400)
    resolved_by: dict[str, int] = {}
    for r in last_res.values():
        resolved_by[r.category] = resolved_by.get(r.category, 0) + 1
    all_cats = sorted(set(reported_by) | set(closed_by) | set(resolved_by),
                      key=lambda k: (-reported_by.get(k, 0), -resolved_by.get(k, 0), k))
    categories = [{"code": k, "label": cat_label(k), "reported": int(reported_by.get(k, 0)),
                   "resolved": int(resolved_by.get(k, 0)), "closed": int(closed_by.get(k, 0))}
                  for k in all_cats]

    d = np.asarray(days, dtype=float)
    bins = []
    for lo, hi in zip(TIME_BINS[:-1], TIME_BINS[1:], strict=True):
        n = int(((d >= lo) & (d < hi)).sum())
        unit = "d" if _en(locale) else "天"
        label = (f"<{hi:g}{unit}" if lo == 0 else f"≥{lo:g}{unit}" if math.isinf(hi)
                 else f"{lo:g}–{hi:g}{unit}")
        bins.append({"from": lo, "to": None if math.isinf(hi) else hi, "label": label,
                     "count": n})
    ttc = {"count": len(d),
           "median_days": _num(np.median(d)) if len(d) else None,
           "mean_days": _num(d.mean()) if len(d) else None,
           "p90_days": _num(np.percentile(d, 90)) if len(d) else None, "bins": bins}

    repairs, repair_items = _repairs(last_res, names, locale)
    for item in repair_items:
        item["category_label"] = cat_label(item["category"])
        item["summary"] = _repair_summary(item["quantities"], item["line_length_m"], locale)
    summary_rows = hemei.needs_summary()
    needs = {
        "fix_now": by_key["needs_fix_now"]["value"],
        "long_term": by_key["needs_long_term"]["value"],
        "claimed": by_key["needs_claimed"]["value"],
        "done": by_key["needs_done"]["value"],
        "by_unit": [{**u, "finish_rate": (u["finished"] / u["claimed"]) if u["claimed"]
                     else None} for u in summary_rows],
        "open_items": [{
            "id": int(r.id), "title": r.title, "category": r.category,
            "category_label": cat_label(r.category),
            "place": names.get("compound", {}).get(r.compound_code or "")
            or names.get("grid", {}).get(r.grid_code or "") or "",
            "kind": r.needs_kind,
            "kind_label": NEEDS_KINDS.get(r.needs_kind, (r.needs_kind, r.needs_kind))[
                1 if _en(locale) else 0],
            "status": status_at_end.get(r.id, r.status),
            "status_label": status_label(status_at_end.get(r.id, r.status), locale),
            "org": orgs.get(r.assignee_org), "reported_at": _iso(r.created_at),
        } for r in open_needs],
        "open_total": open_needs_total,
    }

    prev, yb = srow.attrs.get("previous"), srow.attrs.get("year_before")
    out = {
        "locale": "en" if _en(locale) else "zh",
        "street": st,
        "period": {**p.to_dict(), "label": period_label(p, locale), "partial": p.partial},
        "previous": prev, "year_before": yb,
        "generated_at": _iso(now.replace(microsecond=0)),
        "summary": {
            "reported": by_key["reported"]["value"], "resolved": by_key["resolved"]["value"],
            "closed": by_key["closed"]["value"],
            "closure_rate": by_key["closure_rate"]["value"],
            "on_time_closure_rate": by_key["on_time_closure_rate"]["value"],
            "overdue": by_key["overdue"]["value"], "open_at_end": open_end,
            "satisfaction_rate": by_key["satisfaction_rate"]["value"],
        },
        "indicators": ind_rows,
        "change_note": CHANGE_NOTE["en" if _en(locale) else "zh"],
        "communities": communities,
        "grids": grid_rows,
        "clusters": cluster_rows,
        "cluster_params": {"radius_m": CLUSTER_RADIUS_M, "min_cases": CLUSTER_MIN_CASES},
        "weekly": weekly,
        "categories": categories,
        "time_to_close": ttc,
        "needs": needs,
        "fixed": {"resolved": by_key["resolved"]["value"], "closed": by_key["closed"]["value"],
                  "by_category": [c for c in categories if c["resolved"] or c["closed"]],
                  "repairs": repairs, "repair_items": repair_items},
    }
    out["highlights"] = _highlights(out, locale)
    return out


def _highlights(d: dict, locale: str) -> list[str]:
    """A few sentences for the cover: the headline numbers and where to look."""
    en = _en(locale)
    ind = {i["key"]: i for i in d["indicators"]}
    s = d["summary"]
    out = []
    rep, res, clo = ind["reported"], ind["resolved"], ind["closed"]
    rate, ontime = ind["closure_rate"], ind["on_time_closure_rate"]
    if en:
        out.append(f"{rep['text']['value']} cases reported ({rep['text']['mom_change']} on "
                   f"the previous period), {res['text']['value']} resolved and "
                   f"{clo['text']['value']} closed.")
        out.append(f"Closure rate {rate['text']['value']} ({rate['text']['mom_change']}); "
                   f"on-time closure rate {ontime['text']['value']}.")
        if s["open_at_end"] is not None:
            out.append(f"{s['open_at_end']} cases open at the period end, "
                       f"{ind['overdue']['text']['value']} of them overdue.")
    else:
        out.append(f"本期上报 {rep['text']['value']} 件，环比 {rep['text']['mom_change']}；"
                   f"处置 {res['text']['value']} 件，结案 {clo['text']['value']} 件。")
        out.append(f"结案率 {rate['text']['value']}，环比 {rate['text']['mom_change']}；"
                   f"按期结案率 {ontime['text']['value']}。")
        if s["open_at_end"] is not None:
            out.append(f"期末未结案件 {s['open_at_end']} 件，其中超期 "
                       f"{ind['overdue']['text']['value']} 件。")
    cats = [c for c in d["categories"] if c["reported"]]
    if cats:
        c = cats[0]
        out.append(f"Most reported category: {c['label']} ({c['reported']})." if en
                   else f"上报最多的类别：{c['label']}（{c['reported']} 件）。")
    comms = sorted((c for c in d["communities"] if c["open"]), key=lambda c: -c["open"])
    if comms:
        c = comms[0]
        out.append(f"Most open cases at the period end: {c['name']} ({c['open']})." if en
                   else f"期末未结案件最多的社区：{c['name']}（{c['open']} 件）。")
    if d["clusters"]:
        big = d["clusters"][0]
        out.append(f"{len(d['clusters'])} cluster(s) of cases; the largest holds "
                   f"{big['count']} cases." if en else
                   f"发现 {len(d['clusters'])} 处案件聚集区，最大一处 {big['count']} 件。")
    r = d["fixed"]["repairs"]
    done = [(k, r[k]) for k in ("road_total_m", "lamps", "parking_spaces", "patches",
                                "area_m2") if r.get(k)]
    if done:
        lab = [(REPAIR_LABELS[k], v) for k, v in done]
        if en:
            out.append("Repairs: " + ", ".join(f"{a['en'].lower()} {_fmt_num(v)} "
                                               f"{a['unit_en']}" for a, v in lab) + ".")
        else:
            out.append("维修成果：" + "，".join(f"{a['zh']} {_fmt_num(v)} {a['unit_zh']}"
                                              for a, v in lab) + "。")
    return out


# -- fonts ---------------------------------------------------------------------------------
_CJK_FAMILIES = (
    "Noto Sans CJK SC", "Source Han Sans SC", "Source Han Sans CN", "Noto Sans SC",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Microsoft YaHei", "SimHei", "PingFang SC",
    "Hiragino Sans GB", "Heiti SC", "Noto Sans CJK TC", "Noto Sans CJK JP",
    "AR PL UMing CN", "AR PL UKai CN", "Droid Sans Fallback",
)


def cjk_font() -> tuple[str | None, str | None]:
    """The family name and file of a CJK font matplotlib can use, or ``(None, None)``
    (with a warning: Chinese will render as empty boxes)."""
    from matplotlib import font_manager as fm

    known = {f.name: f.fname for f in fm.fontManager.ttflist}
    for family in _CJK_FAMILIES:
        if family in known:
            return family, known[family]
    for name, fname in sorted(known.items()):
        if "CJK" in name or "Han" in name:
            return name, fname
    warnings.warn("no CJK font found (install fonts-noto-cjk): Chinese text in the report "
                  "will render as empty boxes", RuntimeWarning, stacklevel=2)
    return None, None


def _is_cff(path: str | None) -> bool:
    if not path:
        return False
    try:
        from fontTools.ttLib import TTFont

        font = TTFont(path, fontNumber=0, lazy=True)
        return "CFF " in font or "CFF2" in font
    except Exception:
        return str(path).lower().endswith((".otf", ".ttc"))


# -- drawing -------------------------------------------------------------------------------
A4 = (8.27, 11.69)
MARGIN = 0.6  # inches
INK, MUTED, ACCENT, RULE, BAND = "#1d2733", "#5b6675", "#b3261e", "#c9d1db", "#eef2f6"
C_REPORTED, C_CLOSED = "#4a78b0", "#3f9b5f"


_NO_LINE_START = set("，。、；：？！）」』》〉】,.;:!?)%")


def _em(ch: str) -> float:
    """The advance of ``ch`` in ems, roughly, for Noto Sans CJK (wrapping needs no more)."""
    import unicodedata

    if unicodedata.east_asian_width(ch) in ("W", "F"):
        return 1.0
    if ch == " ":
        return 0.25
    if ch in "il.,:;'|!()[]":
        return 0.3
    if ch.isupper() or ch.isdigit() or ch in "mwMW%":
        return 0.62
    return 0.54


def _wrap(text: str, max_em: float) -> list[str]:
    """Lines at most ``max_em`` ems wide: English breaks at spaces, Chinese between any
    two characters, and no line starts with closing punctuation."""
    import unicodedata

    lines: list[str] = []
    for para in str(text).split("\n"):
        tokens: list[str] = []
        word = ""
        for ch in para:
            if unicodedata.east_asian_width(ch) in ("W", "F") or ch == " ":
                if word:
                    tokens.append(word)
                    word = ""
                tokens.append(ch)
            else:
                word += ch
        if word:
            tokens.append(word)
        line, w = "", 0.0
        for tok in tokens:
            tw = sum(_em(c) for c in tok)
            if w + tw > max_em and line.strip() and tok[0] not in _NO_LINE_START:
                lines.append(line.rstrip())
                line, w = "", 0.0
                if tok == " ":
                    continue
            while tw > max_em and len(tok) > 1:  # a word longer than the line
                cut, cw = 0, 0.0
                while cut < len(tok) - 1 and cw + _em(tok[cut]) <= max_em:
                    cw += _em(tok[cut])
                    cut += 1
                lines.append(tok[:max(cut, 1)])
                tok = tok[max(cut, 1):]
                tw = sum(_em(c) for c in tok)
            line += tok
            w += tw
        lines.append(line.rstrip())
    return lines


def _ems(width_in: float, size: float) -> float:
    """How many ems of a ``size``-point font fit in ``width_in`` inches."""
    return max(4.0, width_in / (size / 72) * 0.97)


class _Doc:
    """A4 pages with a header and footer, and a cursor flowing content down them."""

    def __init__(self, pdf, data: dict, locale: str):
        self.pdf, self.data, self.locale = pdf, data, locale
        self.fig = None
        self.page = 0
        self.titles: list[str] = []
        self.y = 0.0  # inches from the top
        self.section: str | None = None  # the title repeated on a continuation page

    @property
    def width(self) -> float:
        return A4[0] - 2 * MARGIN

    def new_page(self, title: str | None = None, *, band: bool = True):
        from matplotlib.figure import Figure

        self.finish()
        self.fig = Figure(figsize=A4)
        self.page += 1
        self.titles.append(title or "")
        self.section = title
        loc = self.locale
        if band:
            self.text(MARGIN, 0.3, f"{self.data['street']['name']} · {_t('title', loc)} · "
                      f"{self.data['period']['label']}", size=8, color=MUTED)
            self.rule(0.5, color=RULE)
        self.text(A4[0] / 2, A4[1] - 0.3, _t("page", loc, n=self.page), size=8,
                  color=MUTED, ha="center")
        self.text(A4[0] - MARGIN, A4[1] - 0.3, "和美网格 Hemei Grid", size=8, color=MUTED,
                  ha="right")
        self.y = 0.75
        if title:
            self.heading(title)

    def finish(self):
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.fig = None

    # -- primitives (inches from the top-left corner)
    def text(self, x: float, y: float, s: str, *, size: float = 9, color: str = INK,
             weight: str = "normal", ha: str = "left", va: str = "top"):
        self.fig.text(x / A4[0], 1 - y / A4[1], s, fontsize=size, color=color,
                      fontweight=weight, ha=ha, va=va)

    def rule(self, y: float, *, color: str = INK, lw: float = 0.6):
        from matplotlib.lines import Line2D

        yy = 1 - y / A4[1]
        self.fig.add_artist(Line2D([MARGIN / A4[0], 1 - MARGIN / A4[0]], [yy, yy],
                                   color=color, lw=lw, transform=self.fig.transFigure))

    def rect(self, x: float, y: float, w: float, h: float, *, color: str, round_: bool = False,
             edge: str | None = None, hatch: str | None = None):
        from matplotlib.patches import FancyBboxPatch, Rectangle

        xy = (x / A4[0], 1 - (y + h) / A4[1])
        kw = {"transform": self.fig.transFigure, "facecolor": color,
              "edgecolor": edge or "none", "lw": 0.6, "hatch": hatch}
        if round_:
            patch = FancyBboxPatch(xy, w / A4[0], h / A4[1],
                                   boxstyle="round,pad=0,rounding_size=0.008", **kw)
        else:
            patch = Rectangle(xy, w / A4[0], h / A4[1], **kw)
        self.fig.add_artist(patch)

    def axes(self, x: float, y: float, w: float, h: float):
        return self.fig.add_axes((x / A4[0], 1 - (y + h) / A4[1], w / A4[0], h / A4[1]))

    # -- flowing content
    def room(self, h: float) -> bool:
        return self.y + h <= A4[1] - 0.6

    def ensure(self, h: float, title: str | None = None):
        if not self.room(h):
            self.new_page(title or self.section)

    def heading(self, s: str, size: float = 15):
        self.ensure(0.5)
        self.text(MARGIN, self.y, s, size=size, weight="bold")
        self.y += size / 72 * 1.45
        self.rule(self.y, color=ACCENT, lw=1.2)
        self.y += 0.15

    def subheading(self, s: str, size: float = 11):
        self.ensure(0.6)
        self.text(MARGIN, self.y, s, size=size, weight="bold")
        self.y += size / 72 * 1.6

    def paragraph(self, s: str, *, size: float = 8.5, color: str = INK, indent: float = 0.0,
                  weight: str = "normal", gap: float = 0.06, bullet: str = ""):
        """Wrapped text; with ``bullet`` the lines after the first hang under the text."""
        lh = size / 72 * 1.45
        hang = (sum(_em(c) for c in bullet) * size / 72) if bullet else 0.0
        for i, line in enumerate(_wrap(s, _ems(self.width - indent - hang, size))):
            self.ensure(lh)
            if bullet and i == 0:
                self.text(MARGIN + indent, self.y, bullet, size=size, color=color)
            self.text(MARGIN + indent + hang, self.y, line, size=size, color=color,
                      weight=weight)
            self.y += lh
        self.y += gap

    def table(self, headers: list[str], rows: list[list[str]], widths: list[float], *,
              aligns: list[str] | None = None, size: float = 8.5, title: str | None = None,
              bold_first: bool = False):
        """A table across the page; ``widths`` are fractions of the text width. Rows
        wrap inside their cells; the header is repeated on a new page."""
        aligns = aligns or ["left"] + ["right"] * (len(headers) - 1)
        total = sum(widths)
        ws = [w / total * self.width for w in widths]
        xs = np.cumsum([MARGIN, *ws[:-1]])
        lh = size / 72 * 1.4
        pad = 0.05

        def cell_lines(row, bold=False):
            return [_wrap(str(v), _ems(w - 2 * pad, size * (1.05 if bold else 1)))
                    for v, w in zip(row, ws, strict=True)]

        def draw_row(row, fill=None, bold=False, color=INK):
            lines = cell_lines(row, bold)
            h = max(len(c) for c in lines) * lh + 2 * pad
            if fill:
                self.rect(MARGIN, self.y, self.width, h, color=fill)
            for x, w, a, cl in zip(xs, ws, aligns, lines, strict=True):
                tx = x + pad if a == "left" else (x + w - pad if a == "right" else x + w / 2)
                for i, line in enumerate(cl):
                    self.text(tx, self.y + pad + i * lh, line, size=size, ha=a,
                              weight="bold" if bold else "normal", color=color)
            self.y += h

        def header():
            draw_row(headers, fill=BAND, bold=True)
            self.rule(self.y, color=RULE, lw=0.5)

        head_h = max(len(c) for c in cell_lines(headers, True)) * lh + 2 * pad
        self.ensure(head_h + lh + 2 * pad, title)
        header()
        for i, row in enumerate(rows):
            h = max(len(c) for c in cell_lines(row)) * lh + 2 * pad
            if not self.room(h):
                self.new_page(title or self.section)
                header()
            draw_row(row, fill="#f8fafc" if i % 2 else None, bold=bold_first and i == 0)
        self.rule(self.y, color=RULE, lw=0.5)
        self.y += 0.15

    def tiles(self, items: list[tuple[str, str, str]], *, per_row: int = 4,
              h: float = 0.85):
        """Big numbers in boxes: (value, unit, label)."""
        gap = 0.12
        w = (self.width - gap * (per_row - 1)) / per_row
        for start in range(0, len(items), per_row):
            self.ensure(h + gap)
            for j, (value, unit, label) in enumerate(items[start:start + per_row]):
                x = MARGIN + j * (w + gap)
                self.rect(x, self.y, w, h, color=BAND, round_=True)
                self.text(x + 0.12, self.y + 0.1, label, size=8, color=MUTED)
                self.fig.text((x + 0.12) / A4[0], 1 - (self.y + h - 0.12) / A4[1],
                              value, fontsize=20, fontweight="bold", color=INK,
                              ha="left", va="bottom")
                if unit:
                    self.fig.text((x + w - 0.12) / A4[0], 1 - (self.y + h - 0.14) / A4[1],
                                  unit, fontsize=9, color=MUTED, ha="right", va="bottom")
            self.y += h + gap
        self.y += 0.05


def _fmt_num(v, digits: int = 1) -> str:
    """Whole numbers without decimals, others with ``digits``; None as a dash."""
    if v is None:
        return "—"
    if float(v).is_integer():
        return f"{int(v):,d}"
    return f"{v:,.{digits}f}"


def _pct(v, locale: str) -> str:
    return _t("no_data", locale) if v is None else f"{v * 100:.1f}%"


# -- pages ---------------------------------------------------------------------------------
def _page_cover(doc: _Doc, d: dict):
    loc = doc.locale
    doc.new_page(None, band=False)
    doc.titles[-1] = _t("cover", loc)
    doc.rect(0, 0, A4[0], 3.1, color="#1f3a5f")
    doc.fig.text(MARGIN / A4[0], 1 - 0.9 / A4[1], d["street"]["name"], fontsize=30,
                 color="white", fontweight="bold", va="top")
    doc.fig.text(MARGIN / A4[0], 1 - 1.65 / A4[1], _t("title", loc), fontsize=22,
                 color="white", va="top")
    doc.fig.text(MARGIN / A4[0], 1 - 2.3 / A4[1],
                 f"{_t('period', loc)}：{d['period']['label']}" if not _en(loc)
                 else f"{_t('period', loc)}: {d['period']['label']}", fontsize=13,
                 color="#dbe6f3", va="top")
    gen = f"{to_beijing(datetime.fromisoformat(d['generated_at'].rstrip('Z'))):%Y-%m-%d %H:%M:%S}"
    sep = ": " if _en(loc) else "："
    doc.fig.text(MARGIN / A4[0], 1 - 2.7 / A4[1],
                 f"{_t('generated', loc)}{sep}{gen}   ·   {_t('time_note', loc)}",
                 fontsize=8.5, color="#dbe6f3", va="top")
    doc.y = 3.5
    doc.heading(_t("key_numbers", loc))
    s = d["summary"]
    unit = _t("cases_unit", loc)
    doc.tiles([
        (_fmt_num(s["reported"]), unit, _t("reported", loc)),
        (_fmt_num(s["resolved"]), unit, _t("resolved", loc)),
        (_fmt_num(s["closed"]), unit, _t("closed", loc)),
        (_pct(s["closure_rate"], loc), "", _ind_label(d, "closure_rate")),
        (_pct(s["on_time_closure_rate"], loc), "", _ind_label(d, "on_time_closure_rate")),
        (_fmt_num(s["overdue"]), unit, _ind_label(d, "overdue")),
        (_fmt_num(s["open_at_end"]), unit, _t("open_end", loc)),
        (_pct(s["satisfaction_rate"], loc), "", _ind_label(d, "satisfaction_rate")),
    ])
    doc.subheading(_t("repairs", loc))
    doc.tiles(_repair_tiles(d, loc), per_row=3, h=0.75)
    n = d["needs"]
    doc.subheading(_t("needs", loc))
    doc.tiles(_needs_tiles(d, loc, n), h=0.75)
    doc.subheading(_t("highlights", loc))
    for line in d["highlights"]:
        doc.paragraph(line, size=9, gap=0.03, bullet="•  ")


def _ind_label(d: dict, key: str) -> str:
    return next(i["label"] for i in d["indicators"] if i["key"] == key)


def _repair_tiles(d: dict, loc: str):
    r = d["fixed"]["repairs"]
    en = _en(loc)
    return [(_fmt_num(r.get(key, 0)), lab["unit_en" if en else "unit_zh"],
             lab["en" if en else "zh"]) for key, lab in REPAIR_LABELS.items()]


def _repair_summary(quantities: dict, line: float | None, locale: str) -> str:
    """``道路 40 米；修补 15 平方米；线路 33.3 米`` for one repair."""
    en = _en(locale)
    parts = []
    for k in QUANTITY_KEYS:
        if k in quantities:
            lab = REPAIR_LABELS["road_total_m" if k == "road_m" else k]
            parts.append(f"{lab['short_en' if en else 'short_zh']} "
                         f"{_fmt_num(quantities[k])} {lab['unit_en' if en else 'unit_zh']}")
    if line is not None:
        lab = REPAIR_LABELS["line_length_m"]
        parts.append(f"{lab['short_en' if en else 'short_zh']} {_fmt_num(line)} "
                     f"{lab['unit_en' if en else 'unit_zh']}")
    return ("; " if en else "；").join(parts)


def _needs_tiles(d: dict, loc: str, n: dict):
    unit = _t("cases_unit", loc)
    return [(_fmt_num(n["fix_now"]), unit, _ind_label(d, "needs_fix_now")),
            (_fmt_num(n["long_term"]), unit, _ind_label(d, "needs_long_term")),
            (_fmt_num(n["claimed"]), unit, _ind_label(d, "needs_claimed")),
            (_fmt_num(n["done"]), unit, _ind_label(d, "needs_done"))]


def _page_indicators(doc: _Doc, d: dict):
    loc = doc.locale
    title = _t("indicators", loc)
    doc.new_page(title)
    prev = (d.get("previous") or {}).get("key", "")
    yb = (d.get("year_before") or {}).get("key", "")
    headers = [_t("indicator", loc), f"{_t('this', loc)}\n{d['period']['key']}",
               f"{_t('prev', loc)}\n{prev}", _t("mom", loc), f"{_t('yoy_value', loc)}\n{yb}",
               _t("yoy", loc)]
    rows = []
    for i in d["indicators"]:
        unit = f" ({i['unit']})" if i["kind"] != "rate" and _en(loc) else (
            f"（{i['unit']}）" if i["kind"] != "rate" else "")
        rows.append([i["label"] + unit, i["text"]["value"], i["text"]["prev"],
                     i["text"]["mom_change"], i["text"]["yoy"], i["text"]["yoy_change"]])
    doc.table(headers, rows, [3.2, 1.3, 1.3, 1.6, 1.3, 1.6], size=8.5, title=title)
    doc.paragraph(d["change_note"], size=7.5, color=MUTED)
    if d["communities"]:
        doc.subheading(_t("communities", loc))
        headers = [_t("community", loc), _t("reported", loc), _t("resolved", loc),
                   _t("closed", loc), _ind_label(d, "closure_rate"),
                   _ind_label(d, "overdue"), _t("open_end", loc)]
        rows = [[c["name"], _fmt_num(c["reported"]), _fmt_num(c["resolved"]),
                 _fmt_num(c["closed"]), _pct(c["closure_rate"], loc), _fmt_num(c["overdue"]),
                 _fmt_num(c["open"])] for c in d["communities"]]
        doc.table(headers, rows, [2.4, 1, 1, 1, 1.2, 1, 1.3], title=title)


def _page_definitions(doc: _Doc, d: dict):
    loc = doc.locale
    title = _t("definitions", loc)
    doc.new_page(title)
    doc.paragraph(d["change_note"] + " " + _t("time_note", loc), size=8, color=MUTED,
                  gap=0.12)
    for i in d["indicators"]:
        lh = 8.5 / 72 * 1.45
        doc.ensure(lh * 3)
        head = f"{i['label']}（{i['unit']}）" if not _en(loc) else f"{i['label']} ({i['unit']})"
        doc.paragraph(head, size=8.5, weight="bold", gap=0.0)
        doc.paragraph(i["formula"], size=7.8, indent=0.15, gap=0.08)


def _page_maps(doc: _Doc, d: dict, hemei):
    import geopandas as gpd
    from matplotlib import cm, colors
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    loc = doc.locale
    doc.new_page(_t("maps", loc))
    layers = hemei.layers
    codes = [g["code"] for g in d["grids"]]
    grids = layers["grid"]
    grids = grids[grids["code"].astype(str).isin(codes)].copy()
    by = {g["code"]: g for g in d["grids"]}
    grids["open"] = [by[c]["open"] for c in grids["code"].astype(str)]
    grids["rate"] = [by[c]["closure_rate"] for c in grids["code"].astype(str)]
    grids["rate"] = grids["rate"].astype(float)
    comm = layers.get("community")
    if comm is not None:
        comm = comm[comm["code"].astype(str).isin({g["community_code"] for g in d["grids"]})]
    hulls = (gpd.GeoDataFrame([{"count": c["count"]} for c in d["clusters"]],
                              geometry=[_shape(c["geometry"]) for c in d["clusters"]],
                              crs="EPSG:4326") if d["clusters"] else None)
    cp = d["cluster_params"]
    note = (_t("clusters_note", loc, r=cp["radius_m"], k=cp["min_cases"]) if d["clusters"]
            else _t("no_clusters", loc))
    h = 4.55
    vmax = max(1, int(grids["open"].max()) if len(grids) else 1)
    panels = [
        (_t("map_open", loc), "open", "OrRd", colors.Normalize(0, vmax),
         FuncFormatter(lambda v, _p: f"{v:.0f}")),
        (_t("map_rate", loc), "rate", "RdYlGn", colors.Normalize(0, 1),
         FuncFormatter(lambda v, _p: f"{v * 100:.0f}%")),
    ]
    for title, col, cmap, norm, fmt in panels:
        doc.subheading(title, size=10.5)
        ax = doc.axes(MARGIN, doc.y, doc.width - 0.7, h)
        cax = doc.axes(MARGIN + doc.width - 0.45, doc.y + 0.5, 0.14, h - 1.0)
        if len(grids):
            grids.plot(column=col, cmap=cmap, norm=norm, ax=ax, edgecolor="white",
                       linewidth=0.5,
                       missing_kwds={"color": "#d5d9de", "edgecolor": "white",
                                     "hatch": "///", "linewidth": 0.5})
        if comm is not None and len(comm):
            comm.boundary.plot(ax=ax, color="#2b3440", linewidth=1.1)
            for _, r in comm.iterrows():
                pt = r.geometry.representative_point()
                ax.annotate(r["name"], (pt.x, pt.y), ha="center", va="center", fontsize=7.5,
                            color=INK, fontweight="bold",
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                  "alpha": 0.7})
        if hulls is not None:
            # The hull itself (tens of metres) is lost at the scale of a street: a ring
            # sized by the count marks each cluster too, with the count beside it.
            hulls.boundary.plot(ax=ax, color="#1b4fa0", linewidth=1.3, linestyle="--")
            centre = hulls.geometry.representative_point()
            ax.scatter(centre.x, centre.y, s=[60 + 8 * c for c in hulls["count"]],
                       facecolors="none", edgecolors="#1b4fa0", linewidths=1.4,
                       linestyles="--", zorder=5)
            for pt, count in zip(centre, hulls["count"], strict=True):
                ax.annotate(str(count), (pt.x, pt.y), xytext=(7, 5),
                            textcoords="offset points", fontsize=7.5, color="#1b4fa0",
                            fontweight="bold", zorder=6)
        ax.set_axis_off()
        sm = cm.ScalarMappable(norm=norm, cmap=cmap)
        cb = doc.fig.colorbar(sm, cax=cax, format=fmt)
        if col == "open":
            cb.locator = MaxNLocator(integer=True, nbins=6)
            cb.update_ticks()
        cb.ax.tick_params(labelsize=7)
        cb.outline.set_linewidth(0.4)
        if grids[col].isna().any():
            doc.rect(MARGIN + doc.width - 0.62, doc.y + h - 0.3, 0.16, 0.12, color="#d5d9de",
                     hatch="///")
            doc.text(MARGIN + doc.width - 0.42, doc.y + h - 0.32, _t("no_data", loc), size=7)
        doc.y += h + 0.08
    doc.paragraph(note, size=7.5, color=MUTED)


def _shape(geojson: dict):
    from shapely.geometry import shape

    return shape(geojson)


def _page_charts(doc: _Doc, d: dict):
    loc = doc.locale
    doc.new_page(_t("charts", loc))

    def style(ax, values, axis="y"):
        top = max([0, *values])
        (ax.set_ylim if axis == "y" else ax.set_xlim)(0, max(1, top * 1.15))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(labelsize=7.5)
        ax.grid(axis="y", color="#e3e7ec", lw=0.6)
        ax.set_axisbelow(True)

    # Weekly trend.
    doc.subheading(_t("weekly", loc), size=10.5)
    ax = doc.axes(MARGIN + 0.45, doc.y + 0.05, doc.width - 0.5, 2.35)
    weeks = d["weekly"]
    x = np.arange(len(weeks))
    ax.bar(x - 0.2, [w["reported"] for w in weeks], 0.4, color=C_REPORTED,
           label=_t("reported", loc))
    ax.bar(x + 0.2, [w["closed"] for w in weeks], 0.4, color=C_CLOSED,
           label=_t("closed", loc))
    ax.set_xticks(x, [w["label"] for w in weeks], fontsize=7)
    ax.legend(fontsize=7.5, frameon=False, loc="upper left", ncols=2)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(_t("cases_unit", loc), fontsize=7.5)
    style(ax, [w[k] for w in weeks for k in ("reported", "closed")])
    doc.y += 2.85

    # Categories (top 12 by reports).
    doc.subheading(_t("by_category", loc), size=10.5)
    cats = [c for c in d["categories"] if c["reported"]][:12][::-1]
    h = max(1.2, 0.22 * len(cats) + 0.4)
    ax = doc.axes(MARGIN + 1.9, doc.y + 0.05, doc.width - 2.2, h)
    y = np.arange(len(cats))
    bars = ax.barh(y, [c["reported"] for c in cats], 0.65, color=C_REPORTED)
    ax.set_yticks(y, [c["label"] for c in cats], fontsize=7.5)
    ax.bar_label(bars, fontsize=7, padding=2)
    ax.xaxis.get_major_locator().set_params(integer=True)
    style(ax, [c["reported"] for c in cats], axis="x")
    ax.grid(axis="y", visible=False)
    ax.grid(axis="x", color="#e3e7ec", lw=0.6)
    if not cats:
        ax.text(0.5, 0.5, _t("none", loc), transform=ax.transAxes, ha="center", fontsize=9)
    doc.y += h + 0.45

    # Time to close.
    ttc = d["time_to_close"]
    med = ttc["median_days"]
    extra = (f"（{_t('median', loc)} {med:.1f} {_t('days', loc)}，n = {ttc['count']}）"
             if med is not None and not _en(loc) else
             f" ({_t('median', loc)} {med:.1f} {_t('days', loc)}, n = {ttc['count']})"
             if med is not None else "")
    doc.subheading(_t("ttc", loc) + extra, size=10.5)
    h = min(2.2, A4[1] - 0.9 - doc.y - 0.3)
    ax = doc.axes(MARGIN + 0.45, doc.y + 0.05, doc.width - 0.5, h)
    bins = ttc["bins"]
    x = np.arange(len(bins))
    bars = ax.bar(x, [b["count"] for b in bins], 0.7, color="#8a6bb8")
    ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, [b["label"] for b in bins], fontsize=7.5)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(_t("cases_unit", loc), fontsize=7.5)
    style(ax, [b["count"] for b in bins])
    doc.y += h + 0.45


def _page_needs(doc: _Doc, d: dict):
    loc = doc.locale
    title = _t("needs", loc)
    doc.new_page(title)
    n = d["needs"]
    doc.tiles(_needs_tiles(d, loc, n))
    doc.subheading(_t("needs_units", loc))
    if n["by_unit"]:
        rows = [[u["org"], _fmt_num(u["claimed"]), _fmt_num(u["finished"]),
                 _pct(u["finish_rate"], loc)] for u in n["by_unit"]]
        doc.table([_t("unit", loc), _t("claimed_n", loc), _t("finished_n", loc),
                   _t("finish_rate", loc)], rows, [4, 1.2, 1.2, 1.2], title=title)
    else:
        doc.paragraph(_t("none", loc), color=MUTED)
    doc.subheading(_t("open_needs", loc))
    if n["open_items"]:
        rows = [[str(i["id"]), i["title"], i["category_label"], i["place"], i["kind_label"],
                 i["status_label"], i["org"] or "—"] for i in n["open_items"]]
        doc.table([_t("id", loc), _t("case", loc), _t("category", loc), _t("place", loc),
                   _t("kind", loc), _t("status", loc), _t("unit", loc)], rows,
                  [0.6, 3.2, 1.6, 1.6, 1.1, 1, 1.5],
                  aligns=["right", "left", "left", "left", "left", "left", "left"],
                  size=7.8, title=title)
        if n["open_total"] > len(n["open_items"]):
            doc.paragraph(_t("more", loc, n=n["open_total"] - len(n["open_items"])), size=8,
                          color=MUTED)
    else:
        doc.paragraph(_t("none", loc), color=MUTED)


def _page_fixed(doc: _Doc, d: dict):
    loc = doc.locale
    title = _t("fixed", loc)
    doc.new_page(title)
    f = d["fixed"]
    doc.subheading(_t("repairs", loc))
    doc.tiles(_repair_tiles(d, loc), per_row=3)
    doc.paragraph(_t("repair_cases", loc, n=f["repairs"]["cases"]), size=8, color=MUTED)
    doc.subheading(_t("fixed_by_category", loc))
    if f["by_category"]:
        rows = [[c["label"], _fmt_num(c["resolved"]), _fmt_num(c["closed"])]
                for c in f["by_category"]]
        rows.append([_t("total", loc), _fmt_num(sum(c["resolved"] for c in f["by_category"])),
                     _fmt_num(sum(c["closed"] for c in f["by_category"]))])
        doc.table([_t("category", loc), _t("resolved", loc), _t("closed", loc)], rows,
                  [4, 1.5, 1.5], title=title)
    else:
        doc.paragraph(_t("none", loc), color=MUTED)
    if f["repair_items"]:
        doc.subheading(_t("repair_items", loc))
        rows = [[str(i["case_id"]), i["title"], i["place"], i["summary"]]
                for i in f["repair_items"][:MAX_REPAIR_ITEMS]]
        doc.table([_t("id", loc), _t("case", loc), _t("place", loc), _t("work", loc)], rows,
                  [0.6, 2.6, 1.5, 3.8], aligns=["right", "left", "left", "left"], size=7.8,
                  title=title)
        extra = len(f["repair_items"]) - MAX_REPAIR_ITEMS
        if extra > 0:
            doc.paragraph(_t("more", loc, n=extra), size=8, color=MUTED)


def monthly_report(hemei, period: Period | str, out_path, locale: str = "zh", *,
                   street: str | None = None, data: dict | None = None) -> dict:
    """Write the monthly report for ``period`` as an A4 PDF at ``out_path``.

    Pages: cover with the key numbers, the repairs and the needs list at a glance; the
    street's indicators with 环比/同比 and a table per community; the definitions; two
    maps of the grids (open cases at the period end, closure rate) with community outlines
    and the period's case clusters; charts (weekly reported vs closed, reports by
    category, time to close); the needs list (counts, partner units, open items); what
    was fixed (the physical repairs, resolved and closed by category, repairs in detail).
    Long tables flow onto further pages.

    ``data`` is :func:`report_data`'s result if already computed. Returns ``{"path",
    "pages" (the page titles), "font" (the CJK font used, or None), "data"}``. The file is
    written beside the target and moved into place when complete.
    """
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    from gis.exports import atomic_path

    p = parse_period(period) if isinstance(period, str) else period
    d = data if data is not None else report_data(hemei, p, locale=locale, street=street)
    family, fname = cjk_font()
    rc = {
        "font.family": [family, "DejaVu Sans"] if family else ["DejaVu Sans"],
        "axes.unicode_minus": False,
        "pdf.fonttype": 3 if (family and _is_cff(fname)) else 42,
        "pdf.compression": 6,
        "hatch.color": "#ffffff",
        "hatch.linewidth": 0.6,
    }
    meta = {"Title": f"{d['street']['name']} {_t('title', locale)} {d['period']['label']}",
            "Author": "和美网格 Hemei Grid", "Subject": _t("title", locale),
            "Creator": "Hemei Grid (matplotlib)"}
    with matplotlib.rc_context(rc), atomic_path(out_path, ".pdf") as tmp:
        with PdfPages(tmp, metadata=meta) as pdf:
            doc = _Doc(pdf, d, locale)
            _page_cover(doc, d)
            _page_indicators(doc, d)
            _page_definitions(doc, d)
            _page_maps(doc, d, hemei)
            _page_charts(doc, d)
            _page_needs(doc, d)
            _page_fixed(doc, d)
            doc.finish()
    return {"path": str(out_path), "pages": doc.titles, "font": family, "data": d}
