"""Charts for the planner's page, drawn on the server as inline SVG with matplotlib.

Three charts a planner would rather look at than read: the weekly trend (cases reported
and closed per week), the category breakdown (horizontal bars) and the distribution of
the time it took to close a case (a histogram in days). Each function takes numbers that
are already counted (see :func:`weekly_counts` and :func:`close_days`) and the labels in
the reader's language, and returns one ``<svg>`` element as text, ready to be put into a
page as it is. Bars and points can carry a link (the cases behind the number).

Decisions
---------
matplotlib: a well-kept library that draws on the server, so the page needs no chart
script, works with no network at all (intranets) and prints as crisply as it shows. Only
the object-oriented API is used (``Figure``, never ``pyplot``): no global figure state,
so it is safe in a threaded server; the few global settings (:func:`rc_params`) are applied under
one lock while a chart is drawn and saved.

Text stays text (``svg.fonttype = "none"``) rather than glyph outlines (``"path"``):
a chart with twenty Chinese labels stays a few kilobytes instead of tens (every distinct
CJK glyph would otherwise be embedded as a path), its words can be selected, searched,
read by a screen reader and translated by the browser, and printing uses the printer's
font outlines. The price is that the reader's device draws the text with its own fonts;
the SVG names the same font stack as the page (Noto Sans CJK SC, PingFang SC, Microsoft
YaHei, Source Han Sans SC, sans-serif), so whoever can read the page's Chinese can read
the charts'. Layout is measured with the CJK font found on the server
(:func:`cjk_font`, Noto Sans CJK when installed); a device's font of slightly different
width moves a label by a few pixels, and the figures keep a margin for that. Without any
CJK font on the server the charts are still drawn (labels measured with DejaVu Sans, the
"missing glyph" warnings silenced) and the browser still shows the right characters.

What leaves here is self-contained: no XML prolog or DOCTYPE (the only ``http`` in a
matplotlib SVG besides the namespace names, which inline SVG in HTML does not need and
which are removed too), no external ``href`` (links are the relative paths given), no
images; element ids are prefixed with the chart's id and matplotlib's ``*{…}`` style rule
is scoped to the chart, so three charts on one page neither share ids nor restyle the
map's lines. ``svg.hashsalt`` is fixed, so the same numbers give the same bytes (page
caches and ETags stay stable).
"""

from __future__ import annotations

import io
import math
import re
import threading
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from html import escape, unescape

import numpy as np
import pandas as pd

from gis.localtime import BEIJING

__all__ = [
    "FONT_STACK", "category_breakdown", "cjk_font", "close_days", "day_bins", "rc_params",
    "time_to_close", "weekly_counts", "weekly_trend",
]

#: The font stack written into the SVG: the page's own (``webapp/static/hemei.css``).
FONT_STACK = ("'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', 'Source Han Sans SC', "
              "'Noto Sans SC', 'WenQuanYi Micro Hei', sans-serif")
#: CJK fonts to measure with, best first (the first one matplotlib knows is used).
CJK_CANDIDATES = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN",
                  "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "PingFang SC", "Microsoft YaHei",
                  "SimHei", "Noto Sans CJK JP", "Noto Sans CJK TC")
REPORTED = "#d95f02"  # orange: cases coming in
CLOSED = "#1b9e77"  # green: cases done
BAR = "#6a51a3"
HIGHLIGHT = "#b22222"  # the brand red, for the category chosen in the filters
INK = "#333333"
GRID = "#dddddd"
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The name of the first installed CJK font of :data:`CJK_CANDIDATES` that
    matplotlib's font manager knows, or None (the charts fall back to DejaVu Sans)."""
    from matplotlib import font_manager

    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for n in CJK_CANDIDATES if n in names), None)


def rc_params() -> dict:
    """The matplotlib settings every chart is drawn with (applied under a lock)."""
    family = [f for f in (cjk_font(), "DejaVu Sans") if f]
    return {
        "svg.fonttype": "none", "svg.hashsalt": "hemei-grid", "font.family": family,
        "font.size": 10, "axes.edgecolor": "#999999", "axes.labelcolor": INK,
        "xtick.color": INK, "ytick.color": INK, "axes.titlesize": 11,
        "axes.titleweight": "bold", "axes.spines.top": False, "axes.spines.right": False,
    }



# -- turning a figure into inline SVG --------------------------------------------------------
_PROLOG = re.compile(r"<\?xml[^>]*\?>\s*|<!DOCTYPE[^>]*>\s*", re.S)
_NS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')
_SIZE = re.compile(r'\s(width|height)="[\d.]+pt"')
_ID = re.compile(r'\bid="([^"]+)"')
_URL_REF = re.compile(r"url\(#([^)]+)\)")
_HREF = re.compile(r'\b(?:xlink:)?href="([^"]*)"')
_FONT = re.compile(r"font-family:[^;\"]*")
_SAFE_ID = re.compile(r"[A-Za-z][\w-]{0,40}")
_LINK = re.compile(r'<a href="([^"#][^"]*)">')


def _svg(fig, chart_id: str, title: str, description: str = "",
         link_labels: dict[str, str] | None = None) -> str:
    """``fig`` as one self-contained ``<svg>`` element (see the module docstring).
    ``link_labels`` names each link (by its target): an ``aria-label`` for screen
    readers and a ``<title>`` child (the tooltip), so no bar or point is an unnamed
    link."""
    if not _SAFE_ID.fullmatch(chart_id):
        raise ValueError(f"chart ids are letters, digits, - and _: {chart_id!r}")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.08,
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    s = _PROLOG.sub("", buf.getvalue())
    s = _NS.sub("", s)
    s = re.sub(r"<metadata>.*?</metadata>\s*", "", s, flags=re.S)
    s = _ID.sub(lambda m: f'id="{chart_id}-{m.group(1)}"', s)
    s = _URL_REF.sub(lambda m: f"url(#{chart_id}-{m.group(1)})", s)

    def href(m: re.Match) -> str:
        target = m.group(1)
        if target.startswith("#"):
            return f'href="#{chart_id}-{target[1:]}"'
        return f'href="{target}"'

    s = _HREF.sub(href, s)
    s = s.replace(' target="_blank"', "")
    if link_labels:
        def named(m: re.Match) -> str:
            label = link_labels.get(unescape(m.group(1)))
            if label is None:
                return m.group(0)
            text = escape(label)
            return f'<a href="{m.group(1)}" aria-label="{text}"><title>{text}</title>'

        s = _LINK.sub(named, s)
    s = s.replace("*{stroke-linejoin", f"#{chart_id} *{{stroke-linejoin")
    s = _FONT.sub(f"font-family: {FONT_STACK}", s)
    s = _SIZE.sub("", s)
    head = (f'<svg id="{chart_id}" class="chart" role="img" '
            f'aria-labelledby="{chart_id}-title{f" {chart_id}-desc" if description else ""}" '
            'preserveAspectRatio="xMinYMin meet"')
    s = re.sub(r"\s*\n\s*", " ", s)  # matplotlib indents and breaks path data: not needed
    s = re.sub(r">\s+<", "><", s)
    s = s.replace("<svg", head, 1)
    label = f'<title id="{chart_id}-title">{escape(title)}</title>'
    if description:
        label += f'<desc id="{chart_id}-desc">{escape(description)}</desc>'
    s = re.sub(r"(<svg[^>]*>)", lambda m: m.group(1) + label, s, count=1)
    return s.strip()


def _draw(chart_id: str, title: str, description: str, size: tuple[float, float],
          paint: Callable, link_labels: dict[str, str] | None = None) -> str:
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with _LOCK, rc_context(rc_params()), warnings.catch_warnings():
        # Without a CJK font on the server, matplotlib warns about every missing glyph;
        # the text is still written as text and the browser draws it.
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph.*missing.*")
        warnings.filterwarnings("ignore", message=r".*missing from (current )?font.*")
        fig = Figure(figsize=size, dpi=96)
        ax = fig.subplots()
        ax.set_axisbelow(True)
        paint(fig, ax)
        return _svg(fig, chart_id, title, description, link_labels)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#888888")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)


# -- the data --------------------------------------------------------------------------------
_BEIJING = pd.Timedelta(BEIJING)


def _monday(t: pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(t).normalize()
    return t - pd.Timedelta(days=t.weekday())


def weekly_counts(frame: pd.DataFrame, start, end, *, min_weeks: int = 12) -> pd.DataFrame:
    """Cases reported and closed per calendar week of the street office: Monday 00:00
    Beijing time (Sunday 16:00 UTC) to the next Monday (see :mod:`gis.localtime`).

    The buckets are computed vectorised: every time (naive UTC) is moved by the constant
    eight hours onto the Beijing clock before the whole days since the first Monday are
    divided by seven, so a case reported at 23:30 UTC on a Sunday (07:30 Beijing time on
    Monday) falls in the new week.

    Parameters
    ----------
    frame : DataFrame
        Cases with ``created_at``, ``closed_at`` and ``status`` (as from
        :func:`gis.analysis.load_cases_frame` without a period).
    start, end : datetime
        The period shown (naive UTC); the weeks run from the Beijing Monday on or before
        ``min(start, end − min_weeks weeks)`` to the week holding ``end``, so a short period
        still shows its context.
    min_weeks : int
        The fewest weeks shown.

    Returns
    -------
    DataFrame
        ``week`` (the Monday: the Beijing date, as a timestamp at midnight; it is what
        the chart labels and what the planner's ``week`` parameter takes), ``reported``
        (cases created that week, before ``end``),
        ``closed`` (cases whose status is ``closed`` and whose ``closed_at`` falls that week,
        before ``end``), ``in_period`` (whether the week overlaps ``[start, end)``) and
        ``partial`` (the week holding ``end``, not over yet).
    """
    # Everything on the Beijing clock (naive wall-clock times), so that days and Mondays
    # are the street office's.
    end = pd.Timestamp(end) + _BEIJING
    start = pd.Timestamp(start) + _BEIJING
    first = _monday(min(start, end - pd.Timedelta(weeks=min_weeks) + pd.Timedelta(days=1)))
    weeks = pd.date_range(first, _monday(end - pd.Timedelta(microseconds=1)), freq="7D")
    created = pd.to_datetime(frame["created_at"]) + _BEIJING
    closed_at = (pd.to_datetime(frame["closed_at"]) + _BEIJING).where(frame["status"] == "closed")

    def per_week(t: pd.Series) -> np.ndarray:
        t = t[(t >= weeks[0]) & (t < end)].dropna()
        idx = ((t - weeks[0]).dt.days // 7).to_numpy()
        return np.bincount(idx.astype(int), minlength=len(weeks))[:len(weeks)]

    return pd.DataFrame({
        "week": weeks,
        "reported": per_week(created),
        "closed": per_week(closed_at),
        "in_period": (weeks + pd.Timedelta(days=7) > start) & (weeks < end),
        "partial": weeks + pd.Timedelta(days=7) > end,
    })


def close_days(frame: pd.DataFrame, start, end) -> pd.Series:
    """Days from report to closure of the cases closed in ``[start, end)`` (status
    ``closed``), indexed by case id."""
    closed = pd.to_datetime(frame["closed_at"])
    keep = ((frame["status"] == "closed") & (closed >= pd.Timestamp(start))
            & (closed < pd.Timestamp(end))).to_numpy()
    sub = frame[keep]
    days = (pd.to_datetime(sub["closed_at"]) - pd.to_datetime(sub["created_at"]))
    return pd.Series((days.dt.total_seconds() / 86400).to_numpy(), index=sub["id"].to_numpy(),
                     name="days")


def day_bins(days: Sequence[float], max_bins: int = 16) -> np.ndarray:
    """Edges of whole-day bins for a histogram of ``days``: one day wide, or a few days
    when the longest case needs more than ``max_bins`` bins."""
    top = float(np.nanmax(days)) if len(days) else 1.0
    width = max(1, math.ceil(math.ceil(top + 1e-9) / max_bins))
    n = max(1, math.ceil((top + 1e-9) / width))
    return np.arange(0, (n + 1) * width, width, dtype=float)


# -- the charts ------------------------------------------------------------------------------
def weekly_trend(weeks: pd.DataFrame, *, title: str, reported_label: str, closed_label: str,
                 period_label: str = "", empty_label: str = "",
                 links: Callable[[str, pd.Timestamp], str] | None = None,
                 link_label: Callable[[str, pd.Timestamp, int], str] | None = None,
                 chart_id: str = "chart-trend") -> str:
    """Cases reported and closed per week as two lines (see :func:`weekly_counts`); the
    weeks of the chosen period are shaded, the week still running is joined by a dashed
    line, and ``links(kind, week)`` gives each point a
    link (``kind`` is ``"reported"`` or ``"closed"``), named by
    ``link_label(series label, week, count)`` (by default "New reports 2026-11-16: 12")."""
    desc = "; ".join(f"{w:%Y-%m-%d}: {reported_label} {r}, {closed_label} {c}"
                     for w, r, c in zip(weeks["week"], weeks["reported"], weeks["closed"],
                                        strict=True))
    name = link_label or (lambda lab, w, n: f"{lab} {w:%Y-%m-%d}: {n}")
    labels: dict[str, str] = {}
    if links is not None:
        for col, lab in (("reported", reported_label), ("closed", closed_label)):
            for w, n in zip(weeks["week"], weeks[col], strict=True):
                labels[links(col, w)] = name(lab, w, int(n))

    def paint(fig, ax):
        if weeks.empty or not (weeks["reported"].sum() or weeks["closed"].sum()):
            _empty(ax, empty_label)
            return
        x = np.arange(len(weeks))
        inside = np.flatnonzero(weeks["in_period"].to_numpy())
        if len(inside) and len(inside) < len(weeks):
            ax.axvspan(inside[0] - 0.5, inside[-1] + 0.5, color="#f3efe6", zorder=0,
                       label=period_label or None)
        partial = bool(weeks["partial"].iloc[-1]) if "partial" in weeks else False
        for col, colour, lab, marker in (("reported", REPORTED, reported_label, "o"),
                                         ("closed", CLOSED, closed_label, "s")):
            y = weeks[col].to_numpy()
            full = len(x) - 1 if partial else len(x)
            ax.plot(x[:full], y[:full], color=colour, lw=2, label=lab, zorder=2)
            if partial and len(x) > 1:  # the week still running: dashed, it is not over
                ax.plot(x[-2:], y[-2:], color=colour, lw=1.5, ls=(0, (3, 2)), zorder=2)
            pts = ax.scatter(x, y, color=colour, s=30, marker=marker, zorder=3,
                             edgecolors="white", linewidths=0.8)
            if links is not None:
                pts.set_urls([links(col, w) for w in weeks["week"]])
        ax.set_xticks(x)
        step = max(1, math.ceil(len(x) / 10))
        ax.set_xticklabels([f"{w:%m-%d}" if i % step == 0 else ""
                            for i, w in enumerate(weeks["week"])])
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_ylim(bottom=0)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="y", color=GRID, lw=0.8)
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, ncols=3,
                  fontsize=9, borderaxespad=0.2)
        ax.set_title(title, loc="left", pad=18)

    return _draw(chart_id, title, desc, (12.0, 2.9), paint, labels)


def category_breakdown(rows: Sequence[tuple[str, int, str | None]], *, title: str,
                       empty_label: str = "", highlight: int | None = None,
                       link_label: Callable[[str, int], str] | None = None,
                       chart_id: str = "chart-categories") -> str:
    """Horizontal bars, one per ``(label, count, link)``, largest on top; the bar at
    index ``highlight`` (the category chosen in the filters) in the brand colour. A
    bar's link is named ``link_label(label, count)`` (by default "label: count")."""
    rows = list(rows)
    desc = "; ".join(f"{lab}: {n}" for lab, n, _ in rows)
    name = link_label or (lambda lab, n: f"{lab}: {n}")
    labels = {link: name(lab, int(n)) for lab, n, link in rows if link}

    def paint(fig, ax):
        if not rows or not sum(n for _, n, _ in rows):
            _empty(ax, empty_label)
            return
        order = sorted(range(len(rows)), key=lambda i: (rows[i][1], -i))
        y = np.arange(len(order))
        counts = [rows[i][1] for i in order]
        colours = [HIGHLIGHT if i == highlight else BAR for i in order]
        bars = ax.barh(y, counts, color=colours, height=0.7)
        for bar, i in zip(bars, order, strict=True):
            if rows[i][2]:
                bar.set_url(rows[i][2])
        ax.bar_label(bars, padding=3, fontsize=9, color=INK)
        ax.set_yticks(y)
        ax.set_yticklabels([rows[i][0] for i in order])
        ax.set_xlim(0, max(counts) * 1.15 + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="x", color=GRID, lw=0.8)
        ax.set_title(title, loc="left")

    return _draw(chart_id, title, desc, (5.6, 0.7 + 0.3 * max(len(rows), 4)), paint, labels)


def time_to_close(days: pd.Series | Sequence[float], *, title: str, xlabel: str,
                  ylabel: str, median_label: str, empty_label: str = "",
                  links: Callable[[float, float], str] | None = None,
                  link_label: Callable[[float, float, int], str] | None = None,
                  chart_id: str = "chart-close") -> str:
    """A histogram of the days from report to closure (whole-day bins, see
    :func:`day_bins`) with the median marked; ``links(lo, hi)`` gives each bar a link
    to the cases closed within ``[lo, hi)`` days, named ``link_label(lo, hi, count)`` (by
    default "xlabel lo–hi: count"). ``median_label`` may hold ``{days}``."""
    d = np.asarray(days, dtype=float)
    d = d[np.isfinite(d)]
    edges = day_bins(d)
    counts, _ = np.histogram(d, bins=edges)
    desc = "; ".join(f"{lo:g}–{hi:g}: {n}" for lo, hi, n in zip(edges[:-1], edges[1:], counts,
                                                               strict=True))
    name = link_label or (lambda lo, hi, n: f"{xlabel} {lo:g}–{hi:g}: {n}")
    labels = ({links(float(lo), float(hi)): name(float(lo), float(hi), int(n))
               for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True) if n}
              if links is not None else {})

    def paint(fig, ax):
        if not len(d):
            _empty(ax, empty_label)
            return
        bars = ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=CLOSED,
                      edgecolor="white", linewidth=1)
        if links is not None:
            for bar, lo, hi, n in zip(bars, edges[:-1], edges[1:], counts, strict=True):
                if n:
                    bar.set_url(links(float(lo), float(hi)))
        med = float(np.median(d))
        ax.axvline(med, color=INK, lw=1.2, ls="--")
        ax.set_xlim(0, edges[-1])
        ax.set_ylim(0, max(counts.max(), 1) * 1.25)
        ax.text(med, ax.get_ylim()[1] * 0.98, median_label.format(days=f"{med:.1f}"),
                va="top", ha="left" if med < edges[-1] * 0.6 else "right", fontsize=9,
                color=INK, bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5})
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="y", color=GRID, lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left")

    return _draw(chart_id, title, desc, (5.6, 3.1), paint, labels)
