"""Coverage metrics: hand-built cases whose answers are known by construction, period
parsing, and a bounded number of SQL statements whatever the number of cases."""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import box
from sqlalchemy.dialects import postgresql

from gis.cases import OPEN_STATUSES, STATUSES
from gis.coverage import (
    HELPER_COLUMNS,
    METRICS,
    Metric,
    Period,
    area_metrics,
    check_year,
    get_metric,
    grid_metrics,
    metrics_query,
    parse_period,
    up_to_now,
)
from gis.errors import InvalidInput
from gis.storage import open_store

G1, G2, G3 = "451102003001001", "451102003001002", "451102003001003"
OCT = parse_period("2026-10")


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/t.sqlite3")
    yield s
    s.dispose()


def grids_frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": [G1, G2, G3], "name": ["一网格", "二网格", "三网格"],
         "parent_code": ["451102003001"] * 3,
         "households": pd.array([200, None, 100], dtype="Int64")},
        geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1), box(2, 0, 3, 1)], crs="EPSG:4326")


def case_row(grid, status, created, *, due=None, resolved=None, closed=None, updated=None,
             title="t"):
    """A ``cases`` row; timestamps as ISO text (``updated`` defaults to the latest)."""
    created = dt(created)
    stamps = [dt(x) for x in (resolved, closed) if x]
    return {
        "category": "roof_leak", "title": title, "description": "d", "lon": 0.5, "lat": 0.5,
        "street_code": "451102003", "community_code": "451102003001", "compound_code": None,
        "grid_code": grid, "status": status, "source": "patrol", "created_at": created,
        "updated_at": dt(updated) if updated else max([created, *stamps]),
        "due_at": dt(due) if due else None,
        "resolved_at": dt(resolved) if resolved else None,
        "closed_at": dt(closed) if closed else None, "row_version": 1,
    }


def insert(store, rows):
    events = [[{"at": r["created_at"], "actor": "test", "from_status": None,
                "to_status": "reported", "note": ""}] for r in rows]
    store.import_cases(rows, events)


# Grid 1 (200 households). Each case notes what it should count in October 2026.
G1_CASES = [
    # a: reported in September, still in progress, due in September -> open, overdue.
    case_row(G1, "in_progress", "2026-09-20 09:00", due="2026-09-25 09:00", title="a"),
    # b: reported in September, still in progress, due in November -> open only.
    case_row(G1, "in_progress", "2026-09-20 10:00", due="2026-11-05 09:00", title="b"),
    # c: new, resolved, closed exactly on its due time -> on time.
    case_row(G1, "closed", "2026-10-05 08:00", due="2026-10-10 12:00:00",
             resolved="2026-10-08 08:00", closed="2026-10-10 12:00:00", title="c"),
    # d: new, resolved, closed one second after its due time -> late.
    case_row(G1, "closed", "2026-10-06 08:00", due="2026-10-10 12:00:00",
             resolved="2026-10-09 08:00", closed="2026-10-10 12:00:01", title="d"),
    # e: new, resolved only after the period end -> not resolved for October, open and
    #    overdue (due 25 October) at the period end.
    case_row(G1, "resolved", "2026-10-20 08:00", due="2026-10-25 08:00",
             resolved="2026-11-02 08:00", title="e"),
    # f: rejected in October -> nothing at all.
    case_row(G1, "rejected", "2026-10-15 08:00", due="2026-10-16 08:00",
             closed="2026-10-17 08:00", title="f"),
    # g: reported and closed in September -> nothing.
    case_row(G1, "closed", "2026-09-01 08:00", due="2026-09-05 08:00",
             resolved="2026-09-04 08:00", closed="2026-09-10 08:00", title="g"),
    # h: new, still reported, no due time -> open, not overdue.
    case_row(G1, "reported", "2026-10-25 08:00", title="h"),
    # i: reported after the period -> nothing.
    case_row(G1, "reported", "2026-11-03 08:00", due="2026-11-04 08:00", title="i"),
    # j: reported in September, closed in October after its due time -> closed late only.
    case_row(G1, "closed", "2026-09-15 08:00", due="2026-10-01 08:00",
             resolved="2026-09-30 08:00", closed="2026-10-02 08:00", title="j"),
    # k: new, closed in October, no time limit -> resolved and closed, but not in the
    #    on-time rate.
    case_row(G1, "closed", "2026-10-02 08:00", resolved="2026-10-02 12:00",
             closed="2026-10-03 08:00", title="k"),
    # m: new, resolved then sent back for rework (in progress again) -> open, overdue,
    #    not resolved.
    case_row(G1, "in_progress", "2026-10-10 08:00", due="2026-10-20 08:00",
             resolved="2026-10-12 08:00", title="m"),
]
# Grid 2 (households unknown): the edges of the period. October is the Beijing month, so
# its edges are 16:00 UTC (00:00 Beijing time): 2026-09-30 16:00 to 2026-10-31 16:00.
G2_CASES = [
    # p: the last second of October, due at the period end itself -> new, open, not overdue.
    case_row(G2, "reported", "2026-10-31 15:59:59", due="2026-10-31 16:00:00", title="p"),
    # q: the first instant of November -> nothing.
    case_row(G2, "reported", "2026-10-31 16:00:00", title="q"),
    # r: the first instant of October, closed on its due time -> new, resolved, on time.
    case_row(G2, "closed", "2026-09-30 16:00:00", due="2026-10-01 08:00",
             resolved="2026-10-01 07:00", closed="2026-10-01 08:00", title="r"),
    # s: new, resolved at the very instant the period ends -> still open, not resolved.
    case_row(G2, "resolved", "2026-10-03 08:00", resolved="2026-10-31 16:00:00", title="s"),
    # t: new, closed without a resolved_at (imported), edited in November -> resolved and
    #    closed on time in October, not open (it left the open statuses when closed).
    case_row(G2, "closed", "2026-10-03 08:00", due="2026-10-05 08:00",
             closed="2026-10-04 08:00", updated="2026-11-05 08:00", title="t"),
]
# Cases that belong to no grid of the layer: ignored.
STRAY = [
    case_row(None, "reported", "2026-10-05 08:00", title="no grid"),
    case_row("999999999999999", "reported", "2026-10-05 08:00", title="other grid"),
]

EXPECTED = {
    G1: {"open": 5, "new": 6, "per_1000_households": 30.0, "resolution_rate": 0.5,
         "on_time_rate": 1 / 3, "overdue": 3, "reported_in_period": 6,
         "resolved_of_reported": 3, "closed_in_period": 4, "closed_with_due": 3,
         "closed_on_time": 1},
    G2: {"open": 2, "new": 4, "per_1000_households": math.nan, "resolution_rate": 0.5,
         "on_time_rate": 1.0, "overdue": 0, "reported_in_period": 4,
         "resolved_of_reported": 2, "closed_in_period": 2, "closed_with_due": 2,
         "closed_on_time": 2},
    G3: {"open": 0, "new": 0, "per_1000_households": 0.0, "resolution_rate": math.nan,
         "on_time_rate": math.nan, "overdue": 0, "reported_in_period": 0,
         "resolved_of_reported": 0, "closed_in_period": 0, "closed_with_due": 0,
         "closed_on_time": 0},
}


def same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) if math.isnan(b) else a == pytest.approx(b)


# -- metric definitions ----------------------------------------------------------------------
def test_metrics_are_defined_once_with_both_languages():
    assert list(METRICS)[:6] == ["open", "new", "per_1000_households", "resolution_rate",
                                 "on_time_rate", "overdue"]
    for key, m in METRICS.items():
        assert isinstance(m, Metric) and m.key == key
        assert m.better in ("lower", "higher") and m.kind in ("count", "rate", "ratio")
        assert m.zh and m.en and m.formula_zh and m.formula_en and m.unit
        # Rejected cases are excluded from every case metric, and its formula says so.
        if m.unit != "days":
            assert "不予受理" in m.formula_zh and "Rejected" in m.formula_en
        d = m.to_dict()
        assert d["key"] == key and d["zh"] == m.zh and d["better"] == m.better
    assert METRICS["open"].zh == "未结案件" and METRICS["on_time_rate"].zh == "按期结案率"
    assert METRICS["resolution_rate"].better == "higher"
    assert METRICS["overdue"].better == "lower"


def test_metric_label_format_and_lookup():
    m = METRICS["on_time_rate"]
    assert m.label("zh") == "按期结案率" and m.label("en-GB") == "On-time closure rate"
    assert m.format(1 / 3, "zh") == "33.3%"
    assert m.format(math.nan, "zh") == "无数据" and m.format(None, "en") == "No data"
    assert METRICS["open"].format(5.0) == "5"
    assert METRICS["per_1000_households"].format(30) == "30.0"
    assert get_metric("overdue") is METRICS["overdue"]
    with pytest.raises(InvalidInput) as exc:
        get_metric("bogus")
    assert exc.value.field == "metric" and "resolution_rate" in exc.value.message


# -- computation -----------------------------------------------------------------------------
def test_every_metric_on_hand_built_cases(store):
    insert(store, G1_CASES + G2_CASES + STRAY)
    got = grid_metrics(store, grids_frame(), OCT)
    assert list(got.index) == [G1, G2, G3] and got.index.name == "grid_code"
    assert {"code", "name", "parent_code", "households", "geometry"} <= set(got.columns)
    for code, expected in EXPECTED.items():
        for col, want in expected.items():
            assert same(float(got.loc[code, col]), want), (code, col, got.loc[code, col])
    for key in METRICS:
        assert got[key].dtype == "float64"
    for col in HELPER_COLUMNS:
        assert got[col].dtype == "int64"
    assert got.loc[G1, "name"] == "一网格" and got.geometry.iloc[2].equals(box(2, 0, 3, 1))


def test_grid_without_cases_has_zero_counts_and_no_rates(store):
    got = grid_metrics(store, grids_frame(), OCT)  # an empty store
    assert (got[["open", "new", "overdue"]] == 0).all().all()
    assert got["resolution_rate"].isna().all() and got["on_time_rate"].isna().all()
    assert got.loc[G1, "per_1000_households"] == 0.0
    assert math.isnan(got.loc[G2, "per_1000_households"])  # households unknown


def test_zero_households_is_no_data(store):
    insert(store, [case_row(G1, "reported", "2026-10-05 08:00")])
    grids = grids_frame()
    grids["households"] = pd.array([0, 0, None], dtype="Int64")
    got = grid_metrics(store, grids, OCT)
    assert got["per_1000_households"].isna().all() and got.loc[G1, "new"] == 1


def test_snapshot_metrics_depend_on_the_period_end(store):
    insert(store, G1_CASES)
    sept = grid_metrics(store, grids_frame(), parse_period("2026-09"))
    # At the end of September a and b are open; j was resolved on 30 September (closed
    # only on 2 October), g closed on 10 September.
    assert sept.loc[G1, "open"] == 2 and sept.loc[G1, "overdue"] == 1
    assert sept.loc[G1, "new"] == 4  # a, b, g, j
    assert sept.loc[G1, "resolution_rate"] == pytest.approx(2 / 4)  # g, j
    assert sept.loc[G1, "on_time_rate"] == 0.0  # g closed 10 Sept, due 5 Sept
    nov = grid_metrics(store, grids_frame(), parse_period("2026-11"))
    # e was resolved on 2 November; i reported on 3 November; a, b, h, i, m are open.
    assert nov.loc[G1, "open"] == 5 and nov.loc[G1, "new"] == 1
    assert nov.loc[G1, "overdue"] == 4  # a, m, i (due 4 Nov), b (due 5 Nov)


def test_other_levels_and_unknown_codes(store):
    insert(store, G1_CASES + G2_CASES + STRAY)
    communities = gpd.GeoDataFrame(
        {"code": ["451102003001", "451102003002"], "name": ["甲", "乙"],
         "parent_code": ["451102003"] * 2, "households": [300, None]},
        geometry=[box(0, 0, 3, 1), box(3, 0, 4, 1)], crs="EPSG:4326")
    got = area_metrics(store, communities, OCT, level="community")
    assert got.index.name == "community_code"
    # Both stray cases carry the community code, so they count at that level.
    assert got.loc["451102003001", "new"] == 6 + 4 + 2
    assert got.loc["451102003001", "per_1000_households"] == pytest.approx(12 / 300 * 1000)
    assert got.loc["451102003002", "new"] == 0


def test_statement_count_does_not_grow_with_the_cases(store):
    def count_statements(n):
        insert(store, [case_row(G1 if i % 2 else G2, "reported",
                                f"2026-10-{1 + i % 28:02d} 08:00") for i in range(n)])
        seen = []

        def listener(conn, cursor, statement, *args):
            seen.append(statement)

        sa.event.listen(store.engine, "before_cursor_execute", listener)
        try:
            got = grid_metrics(store, grids_frame(), OCT)
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", listener)
        return got, seen

    small, few = count_statements(10)
    large, many = count_statements(990)
    assert large.loc[G1, "new"] + large.loc[G2, "new"] == 1000
    assert len(few) == len(many) <= 4  # BEGIN, the cases query, the check-ins query
    assert sum("GROUP BY" in s for s in many) == 2  # cases, check-ins


def test_the_query_is_portable_sql():
    sql = str(metrics_query(OCT).compile(dialect=postgresql.dialect()))
    assert "GROUP BY cases.grid_code" in sql
    for sqlite_only in ("julianday", "strftime", "datetime(", "IFNULL", "||"):
        assert sqlite_only.lower() not in sql.lower()


# A reference implementation over plain rows, for random cases.
def reference(rows, period):
    out = {}
    s, e = period.start, period.end
    for r in rows:
        if r["status"] == "rejected" or r["created_at"] >= e:
            continue
        o = out.setdefault(r["grid_code"], dict.fromkeys(
            ["open", "overdue", "rep", "res", "closed", "due", "ontime"], 0))
        left = r["resolved_at"] or r["closed_at"] or r["updated_at"]
        is_open = r["status"] in OPEN_STATUSES or left >= e
        o["open"] += is_open
        o["overdue"] += is_open and r["due_at"] is not None and r["due_at"] < e
        if r["created_at"] >= s:
            o["rep"] += 1
            o["res"] += r["status"] in ("resolved", "closed") and left < e
        if r["status"] == "closed" and s <= r["closed_at"] < e:
            o["closed"] += 1
            o["due"] += r["due_at"] is not None
            o["ontime"] += r["due_at"] is not None and r["closed_at"] <= r["due_at"]
    return out


BASE = datetime(2026, 10, 1)
hours = st.integers(-24 * 45, 24 * 45)


@st.composite
def random_case(draw):
    status = draw(st.sampled_from(STATUSES))
    created = BASE + timedelta(hours=draw(hours))
    due = draw(st.none() | hours.map(lambda h: BASE + timedelta(hours=h)))
    resolved = closed = None
    if status in ("resolved", "closed") or (status == "in_progress" and draw(st.booleans())):
        resolved = created + timedelta(hours=draw(st.integers(0, 24 * 40)))
    if status in ("closed", "rejected"):
        closed = (resolved or created) + timedelta(hours=draw(st.integers(0, 24 * 10)))
    grid = draw(st.sampled_from([G1, G2, G3]))
    row = case_row(grid, status, created.isoformat(), due=due and due.isoformat(),
                   resolved=resolved and resolved.isoformat(),
                   closed=closed and closed.isoformat())
    return row


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(random_case(), max_size=25), st.sampled_from(["2026-10", "2026-09",
                                                             "2026-10-10..2026-10-20"]))
def test_matches_a_reference_on_random_cases(rows, key):
    period = parse_period(key)
    with tempfile.TemporaryDirectory() as tmp:
        s = open_store(f"sqlite:///{Path(tmp)}/r.sqlite3")
        try:
            if rows:
                insert(s, rows)
            got = grid_metrics(s, grids_frame(), period)
        finally:
            s.dispose()
    ref = reference(rows, period)
    for code in (G1, G2, G3):
        r = ref.get(code, dict.fromkeys(["open", "overdue", "rep", "res", "closed", "due",
                                         "ontime"], 0))
        row = got.loc[code]
        assert (row["open"], row["overdue"], row["new"]) == (r["open"], r["overdue"], r["rep"])
        assert (row["resolved_of_reported"], row["closed_in_period"], row["closed_with_due"],
                row["closed_on_time"]) == (r["res"], r["closed"], r["due"], r["ontime"])
        assert same(row["resolution_rate"], r["res"] / r["rep"] if r["rep"] else math.nan)
        assert same(row["on_time_rate"], r["ontime"] / r["due"] if r["due"] else math.nan)


# -- periods ---------------------------------------------------------------------------------
NOW = datetime(2026, 10, 15, 9, 30)


@pytest.mark.parametrize("text", [None, "", "  "])
def test_default_period_is_the_last_30_days(text):
    p = parse_period(text, now=NOW)
    assert (p.start, p.end, p.key) == (NOW - timedelta(days=30), NOW, "30d")


@pytest.mark.parametrize("n", [1, 7, 30, 90, 365, 3660])
def test_last_n_days(n):
    p = parse_period(f"{n}d", now=NOW)
    assert (p.start, p.end, p.key) == (NOW - timedelta(days=n), NOW, f"{n}d")
    assert parse_period(f" {n}D ", now=NOW) == p


def test_now_may_be_aware_and_defaults_to_utc_now():
    aware = datetime(2026, 10, 15, 17, 30, tzinfo=UTC).astimezone()
    assert parse_period("7d", now=aware).end == datetime(2026, 10, 15, 17, 30)
    p = parse_period("7d")
    assert p.end.tzinfo is None and abs(p.end - datetime.now(UTC).replace(tzinfo=None)) < \
        timedelta(minutes=1)


def test_month_is_a_beijing_calendar_month():
    # Beijing midnight is 16:00 UTC the day before (UTC+8, no daylight saving).
    p = parse_period("2026-10")
    assert (p.start, p.end, p.key) == (datetime(2026, 9, 30, 16), datetime(2026, 10, 31, 16),
                                       "2026-10")
    dec = parse_period("2026-12")
    assert (dec.start, dec.end) == (datetime(2026, 11, 30, 16), datetime(2026, 12, 31, 16))
    assert parse_period("2028-02").length == timedelta(days=29)


def test_range_includes_its_end_date():
    p = parse_period("2026-10-01..2026-10-31")
    assert (p.start, p.end, p.key) == (datetime(2026, 9, 30, 16), datetime(2026, 10, 31, 16),
                                       "2026-10-01..2026-10-31")
    one = parse_period("2026-10-05..2026-10-05")  # Beijing days: 16:00 UTC to 16:00 UTC
    assert one.length == timedelta(days=1)
    assert one.contains(datetime(2026, 10, 5, 15, 59, 59))
    assert not one.contains(datetime(2026, 10, 5, 16))


@pytest.mark.parametrize("text", [
    "0d", "3661d", "-7d", "7", "d", "7days", "last week", "2026-13", "2026-00", "2026-1",
    "26-10", "2026-10-32..2026-11-01", "2026-11-01..2026-10-01", "2026-10-01..",
    "2026-10-01...2026-10-31", "2000-01-01..2026-01-01", "9999-12-31..9999-12-31",
    "0000-01", "2026-10-01/2026-10-31", 30,
])
def test_bad_periods_are_invalid_input_listing_the_forms(text):
    with pytest.raises(InvalidInput) as exc:
        parse_period(text, now=NOW)
    err = exc.value
    assert err.field == "period" and err.status == 400
    for form in ("7d", "30d", "YYYY-MM", "YYYY-MM-DD..YYYY-MM-DD"):
        assert form in err.message


def test_previous_period():
    assert parse_period("2026-10").previous() == Period(datetime(2026, 8, 31, 16),
                                                         datetime(2026, 9, 30, 16), "2026-09")
    assert parse_period("2026-01").previous().key == "2025-12"
    r = parse_period("2026-10-11..2026-10-20").previous()
    assert r == Period(datetime(2026, 9, 30, 16), datetime(2026, 10, 10, 16),
                       "2026-10-01..2026-10-10")
    assert parse_period(r.key) == r  # a day-aligned previous period can be asked for again
    d = parse_period("30d", now=NOW).previous()
    assert (d.start, d.end) == (NOW - timedelta(days=60), NOW - timedelta(days=30))
    assert d.key == "30d:previous"


def test_period_must_start_before_it_ends_and_serialises():
    with pytest.raises(ValueError):
        Period(NOW, NOW, "x")
    assert parse_period("2026-10").to_dict() == {
        "key": "2026-10", "start": "2026-09-30T16:00:00Z", "end": "2026-10-31T16:00:00Z"}


# -- the bounds of a period: its years, and now --------------------------------------------
@pytest.mark.parametrize("text", [
    "0001-01", "0001-02", "1899-12", "3000-01", "9999-12", "0001-01-01..0001-01-31",
    "1899-12-31..1900-01-01", "2999-12-31..3000-01-01", "9999-12-01..9999-12-31",
])
def test_years_outside_1900_to_2999_are_invalid_naming_the_period(text):
    # 0001-01 reached Period.previous() and overflowed (a 500 from the indicators export);
    # 0001-02's year before was year 0 (a traceback from `hemei report`).
    with pytest.raises(InvalidInput) as exc:
        parse_period(text, now=NOW)
    assert exc.value.field == "period" and "1900 to 2999" in exc.value.message


@pytest.mark.parametrize("text", ["1900-01", "1900-01-01..1910-01-08", "2999-12",
                                  "2990-01-05..2999-12-31"])
def test_every_period_derived_from_an_accepted_one_exists(text):
    from gis.indicators import year_before

    p = parse_period(text, now=NOW)
    for q in (p, p.previous(), year_before(p), year_before(p.previous())):
        assert q.start < q.end
    # a week from the last day of the period (the planner's weekly drill-down)
    assert p.end + timedelta(days=7) > p.end


def test_a_relative_period_ends_at_a_now_within_the_years():
    assert parse_period("3660d", now=datetime(1900, 1, 1)).start.year == 1889
    with pytest.raises(InvalidInput) as exc:
        parse_period("30d", now=datetime(3000, 1, 1))
    assert exc.value.field == "period"


def test_check_year_names_the_field_it_is_given():
    check_year(1900, "1900-01-01")
    with pytest.raises(InvalidInput) as exc:
        check_year(9999, "9999-12-31", field="week")
    assert exc.value.field == "week" and "'9999-12-31'" in exc.value.message


def test_a_period_that_starts_after_now_is_refused():
    now = datetime(2026, 11, 26, 19, 48)  # 27 November 03:48 in Beijing
    for text in ("2030-01", "2026-12", "2026-11-28..2026-11-30"):
        with pytest.raises(InvalidInput) as exc:
            up_to_now(parse_period(text), now)
        assert exc.value.field == "period" and "starts after now" in exc.value.message


def test_the_current_month_is_cut_at_now_and_marked_partial():
    now = datetime(2026, 11, 26, 19, 48)
    p = up_to_now(parse_period("2026-11"), now)
    assert (p.start, p.end, p.key, p.partial) == (datetime(2026, 10, 31, 16), now, "2026-11",
                                                  True)
    assert p.to_dict() == {"key": "2026-11", "start": "2026-10-31T16:00:00Z",
                           "end": "2026-11-26T19:48:00Z", "partial": True}
    # 环比: as much of October as has passed of November (like with like), still "2026-10"
    prev = p.previous()
    assert (prev.start, prev.end, prev.key) == (datetime(2026, 9, 30, 16),
                                                datetime(2026, 10, 26, 19, 48), "2026-10")
    r = up_to_now(parse_period("2026-11-20..2026-11-30"), now)
    assert r.partial and r.end == now and r.key == "2026-11-20..2026-11-30"
    # An aware now is taken in UTC (03:48 in Beijing is 19:48 UTC the day before).
    aware = datetime(2026, 11, 27, 3, 48, tzinfo=timezone(timedelta(hours=8)))
    assert up_to_now(parse_period("2026-11"), aware).end == now


def test_a_period_that_has_ended_is_unchanged():
    now = datetime(2026, 11, 26, 19, 48)
    oct_ = parse_period("2026-10")
    assert up_to_now(oct_, now) is oct_ and not oct_.partial
    last30 = parse_period("30d", now=now)
    assert up_to_now(last30, now) == last30  # ends now: complete, not partial
    assert "partial" not in oct_.to_dict()
