"""National indicators: hand-built cases and histories whose every indicator is known by
construction (worked out case by case in the comments), 环比/同比 periods, every level,
and a bounded number of SQL statements whatever the number of cases."""

from __future__ import annotations

import json
import math
from datetime import datetime

import geopandas as gpd
import pandas as pd
import pytest
import sqlalchemy as sa
from shapely.geometry import box
from sqlalchemy.dialects import postgresql

from gis.accounts import Accounts
from gis.coverage import Period, area_metrics, parse_period
from gis.errors import InvalidInput
from gis.indicators import (
    CHANGE_NOTE,
    HELPERS,
    INDICATORS,
    Indicator,
    get_indicator,
    indicator_queries,
    indicators,
    year_before,
)
from gis.storage import open_store

S = "451102003"
C1, C2 = S + "001", S + "002"
G1, G2, G3, G4 = C1 + "001", C1 + "002", C2 + "001", C2 + "002"
K1 = "451102003001901"
OCT = parse_period("2026-10")


def dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


# Steps of a case's history after its report: (kind, at, argument).
def T(at, to):
    return ("transition", at, to)


def X(at, new_due):
    return ("extension", at, new_due)


def E(at, verdict, compact=False):
    return ("evaluation", at, (verdict, compact))


def N(at, kind):
    return ("needs", at, kind)


class Book:
    """Cases and their events, built the way the workflow writes them."""

    def __init__(self):
        self.rows: list[dict] = []
        self.events: list[list[dict]] = []

    def add(self, grid, created, due, *steps, org=None, compound=None, needs=None):
        created, due_at = dt(created), dt(due)
        status, resolved, closed, rework, ext, verdict = "reported", None, None, 0, 0, None
        # Every event carries every key: import_cases inserts them as one executemany, whose
        # columns are those of the first row.
        evs = [{"at": created, "actor": "t", "from_status": None, "to_status": "reported",
                "note": "", "kind": "transition", "data": None}]
        last = created
        for kind, at, arg in steps:
            at = last = dt(at)
            ev = {"at": at, "actor": "t", "from_status": status, "to_status": status,
                  "note": "", "kind": kind, "data": None}
            if kind == "transition":
                ev["to_status"] = status = arg
                resolved = at if arg == "resolved" else resolved
                closed = at if arg in ("closed", "rejected", "closed_not_fixed") else closed
                rework += arg == "reopened"
            elif kind == "extension":
                ev["data"] = json.dumps({"from": due_at.isoformat(), "to": arg},
                                        ensure_ascii=False)
                due_at, ext = dt(arg), ext + 1
            elif kind == "evaluation":
                verdict, compact = arg
                seps = (",", ":") if compact else None
                ev["data"] = json.dumps({"verdict": verdict}, ensure_ascii=False,
                                        separators=seps)
            else:
                needs = arg
                ev["data"] = json.dumps({"kind": arg, "published": True}, ensure_ascii=False)
            evs.append(ev)
        self.rows.append({
            "category": "roof_leak", "title": "t", "description": "d", "lon": 0.5,
            "lat": 0.5, "street_code": grid[:9], "community_code": grid[:12],
            "compound_code": compound, "grid_code": grid, "status": status,
            "source": "patrol", "created_at": created, "updated_at": last, "due_at": due_at,
            "resolved_at": resolved, "closed_at": closed, "row_version": len(evs),
            "assignee_org": org, "needs_kind": needs, "published": False,
            "rework_count": rework, "extension_count": ext, "satisfaction": verdict,
        })
        self.events.append(evs)

    def save(self, store):
        store.import_cases(self.rows, self.events)


def layers() -> dict:
    def frame(codes, parent):
        return gpd.GeoDataFrame(
            {"code": codes, "name": [f"名{c[-3:]}" for c in codes], "parent_code": parent,
             "households": pd.array([100] * len(codes), dtype="Int64")},
            geometry=[box(i, 0, i + 1, 1) for i in range(len(codes))], crs="EPSG:4326")
    return {"community": frame([C1, C2], S), "grid": frame([G1, G2, G3, G4], C1)}


def full_path(day):
    """filed → dispatched → in progress on ``day`` (01:00, 02:00, 03:00)."""
    return [T(f"{day}T01:00", "filed"), T(f"{day}T02:00", "dispatched"),
            T(f"{day}T03:00", "in_progress")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = open_store(f"sqlite:///{tmp_path_factory.mktemp('ind')}/t.sqlite3")
    s.save_layers(layers(), "test")
    acc = Accounts(s)
    a, b = acc.add_org("A", "crew"), acc.add_org("B", "partner")
    acc.add_org("C", "property")  # holds no case
    k = Book()
    # ---- grid 1, October 2026 ------------------------------------------------------
    # c1: verified, resolved on time (72 h), evaluated satisfied, closed exactly at due.
    k.add(G1, "2026-10-02T09:00", "2026-10-10T09:00",
          T("2026-10-02T10:00", "verified"), T("2026-10-02T11:00", "filed"),
          T("2026-10-03T09:00", "dispatched"), T("2026-10-04T09:00", "in_progress"),
          T("2026-10-05T09:00", "resolved"), E("2026-10-06T09:00", "satisfied"),
          T("2026-10-10T09:00", "closed"), org=a, compound=K1)
    # c2: resolved on time (100 h), closed one second after its due time.
    k.add(G1, "2026-10-03T08:00", "2026-10-08T08:00",
          T("2026-10-03T09:00", "filed"), T("2026-10-03T10:00", "dispatched"),
          T("2026-10-04T09:00", "in_progress"), T("2026-10-07T12:00", "resolved"),
          T("2026-10-08T08:00:01", "closed"), org=a)
    # c3: reported at the very start (1 October 00:00 Beijing time = 30 September 16:00
    # UTC; its steps at Beijing midnights too); resolved, resident not satisfied →
    # reworked; resolved again after the due time (480 h from report), closed late.
    k.add(G1, "2026-09-30T16:00", "2026-10-19T16:00", *full_path("2026-10-01"),
          T("2026-10-03T16:00", "resolved"), E("2026-10-04T16:00", "not_satisfied"),
          T("2026-10-04T16:00:01", "reopened"), T("2026-10-05T16:00", "in_progress"),
          T("2026-10-20T16:00", "resolved"), T("2026-10-21T16:00", "closed"),
          org=b, compound=K1)
    # c4: September case, extended on 1 October, still open at the end: overdue in October.
    k.add(G1, "2026-09-20T10:00", "2026-09-30T10:00", T("2026-09-20T11:00", "filed"),
          T("2026-09-21T09:00", "dispatched"), T("2026-09-22T09:00", "in_progress"),
          X("2026-10-01T12:00", "2026-10-15T10:00"), org=a)
    # c5: reported late in October, not due yet: open, not overdue.
    k.add(G1, "2026-10-30T10:00", "2026-11-05T10:00")
    # c6: resolved at 23:00 on 31 October Beijing time (15:00 UTC; 144 h), closed exactly
    # at the period end (1 November 00:00 Beijing time = 31 October 16:00 UTC).
    k.add(G1, "2026-10-25T15:00", "2026-11-01T16:00", T("2026-10-25T15:30", "filed"),
          T("2026-10-26T09:00", "dispatched"), T("2026-10-27T09:00", "in_progress"),
          T("2026-10-31T15:00", "resolved"), T("2026-10-31T16:00", "closed"), org=a)
    # c7: rejected: only "reported" counts it.
    k.add(G1, "2026-10-05T08:00", "2026-10-12T08:00", T("2026-10-05T09:00", "rejected"))
    # c8: needs list (fix now), claimed by B, resolved (48 h) and closed on time.
    k.add(G1, "2026-10-06T00:00", "2026-10-16T00:00", T("2026-10-06T09:00", "filed"),
          N("2026-10-06T10:00", "fix_now"), T("2026-10-07T09:00", "claimed"),
          T("2026-10-07T10:00", "in_progress"), T("2026-10-08T00:00", "resolved"),
          T("2026-10-09T00:00", "closed"), org=b)
    # ---- grid 1, September 2026 (环比) -------------------------------------------------
    # c10: resolved (72 h), satisfied, closed on time.
    k.add(G1, "2026-09-05T00:00", "2026-09-10T00:00", *full_path("2026-09-05"),
          T("2026-09-08T00:00", "resolved"), E("2026-09-09T00:00", "satisfied"),
          T("2026-09-09T01:00", "closed"), org=a)
    # c16: due 5 October but closed in September (48 h): early closure in September's
    # due-for-closure, not in October's.
    k.add(G1, "2026-09-25T00:00", "2026-10-05T00:00", *full_path("2026-09-25"),
          T("2026-09-27T00:00", "resolved"), T("2026-09-28T00:00", "closed"), org=a)
    # c17: August backlog, never resolved: overdue and due for closure every period.
    k.add(G1, "2026-08-01T00:00", "2026-08-10T00:00", T("2026-08-01T01:00", "filed"),
          T("2026-08-01T02:00", "dispatched"), org=a)
    # ---- grid 1, October 2025 (同比) ---------------------------------------------------
    k.add(G1, "2025-10-02T00:00", "2025-10-09T00:00", *full_path("2025-10-02"),
          T("2025-10-05T00:00", "resolved"), T("2025-10-06T00:00", "closed"), org=b)
    k.add(G1, "2025-10-03T00:00", "2025-10-08T00:00", *full_path("2025-10-03"),
          T("2025-10-09T00:00", "resolved"), T("2025-10-10T00:00", "closed"), org=b)
    k.add(G1, "2025-10-20T00:00", "2025-10-25T00:00", *full_path("2025-10-20"),
          T("2025-11-03T00:00", "resolved"), T("2025-11-05T00:00", "closed"), org=b)
    k.add(G1, "2025-10-15T00:00", None, T("2025-10-15T01:00", "rejected"))
    # ---- grid 2 --------------------------------------------------------------------
    # c9: long term on the list; c14: overdue; c19: on the list at intake (fix now);
    # c20: reported in September, listed (long term) in October.
    k.add(G2, "2026-10-10T00:00", "2026-12-31T00:00", T("2026-10-10T01:00", "filed"),
          N("2026-10-11T00:00", "long_term"))
    k.add(G2, "2026-10-12T00:00", "2026-10-14T00:00", T("2026-10-12T01:00", "filed"),
          T("2026-10-12T02:00", "dispatched"), org=a)
    k.add(G2, "2026-10-20T00:00", "2026-11-10T00:00", needs="fix_now")
    k.add(G2, "2026-09-28T00:00", "2026-12-01T00:00", T("2026-09-28T01:00", "filed"),
          N("2026-10-02T00:00", "long_term"))
    # ---- grid 3 (community 2): one clean case, evaluation written compactly -----------
    k.add(G3, "2026-10-15T00:00", "2026-10-20T00:00", *full_path("2026-10-15"),
          T("2026-10-16T00:00", "resolved"), E("2026-10-16T12:00", "satisfied", True),
          T("2026-10-17T00:00", "closed"), org=b)
    k.save(s)
    s.orgs = {"A": a, "B": b}
    yield s
    s.dispose()


@pytest.fixture(scope="module")
def grids(store):
    return indicators(store, "grid", OCT)


def check(row, expected: dict):
    """Compare exactly: counts as integers, rates/hours as floats (NaN = no data)."""
    for key, want in expected.items():
        got = row[key]
        if want is None or (isinstance(want, float) and math.isnan(want)):
            assert pd.isna(got), (key, got)
        else:
            assert got == want, (key, got, want)


G1_OCT = {
    "reported": 7, "verified": 1, "filed": 5, "dispatched": 4, "resolved": 5, "closed": 4,
    # c1, c2, c3, c8 (due in October), c4 (due after its extension), c17 (backlog).
    "due_for_closure": 6, "closure_rate": 4 / 6,
    "closed_with_due": 4, "closed_on_time": 2, "on_time_closure_rate": 2 / 4,
    # c3's last resolution was a day late; c2 resolved on time although closed late.
    "resolved_with_due": 5, "resolved_on_time": 4, "on_time_handling_rate": 4 / 5,
    "checked": 4, "reworked": 1, "rework_rate": 1 / 4,
    # open in October: c1, c2, c3, c4, c5, c6, c8, c17.
    "open_during": 8, "extended": 1, "extension_rate": 1 / 8,
    "avg_handling_hours": (72 + 100 + 480 + 144 + 48) / 5, "median_handling_hours": 100.0,
    "overdue": 2, "evaluations": 2, "satisfied": 1, "satisfaction_rate": 1 / 2,
    "needs_fix_now": 1, "needs_long_term": 0, "needs_claimed": 1, "needs_done": 1,
}
G1_SEP = {
    "reported": 3, "verified": 0, "filed": 3, "dispatched": 3, "resolved": 2, "closed": 2,
    # c10 and c17 ran out of time; c16 closed early.
    "due_for_closure": 3, "closure_rate": 2 / 3, "on_time_closure_rate": 1.0,
    "on_time_handling_rate": 1.0, "rework_rate": 0.0, "extension_rate": 0 / 4,
    "avg_handling_hours": 60.0, "median_handling_hours": 60.0,
    # c4's due time is now 15 October (after the extension): not overdue at September's end.
    "overdue": 1, "satisfaction_rate": 1.0, "needs_fix_now": 0, "needs_claimed": 0,
}
G1_YOY = {
    "reported": 4, "verified": 0, "filed": 3, "dispatched": 3, "resolved": 2, "closed": 2,
    "due_for_closure": 3, "closure_rate": 2 / 3, "on_time_closure_rate": 1 / 2,
    "on_time_handling_rate": 1 / 2, "rework_rate": 0.0, "extension_rate": 0.0,
    "avg_handling_hours": 108.0, "median_handling_hours": 108.0,
    "overdue": 1, "satisfaction_rate": float("nan"),
}


def suffixed(d: dict, suffix: str) -> dict:
    return {k + suffix: v for k, v in d.items() if k in INDICATORS}


def test_grid_one_october_every_indicator(grids):
    check(grids.loc[G1], G1_OCT)


def test_grid_one_previous_month_and_year_before(grids):
    check(grids.loc[G1], suffixed(G1_SEP, "_prev"))
    check(grids.loc[G1], suffixed(G1_YOY, "_yoy"))
    assert grids.attrs["previous"]["key"] == "2026-09"
    assert grids.attrs["year_before"]["key"] == "2025-10"


def test_changes(grids):
    r = grids.loc[G1]
    approx = pytest.approx
    # counts: relative change in per cent
    assert r["reported_mom_change"] == approx((7 - 3) / 3 * 100)
    assert r["reported_yoy_change"] == approx((7 - 4) / 4 * 100)
    assert r["overdue_mom_change"] == approx(100.0)
    assert pd.isna(r["verified_mom_change"])  # from 0 to 1: no base
    assert r["needs_long_term_mom_change"] == 0.0  # 0 and 0: no change
    # rates: percentage points
    assert r["on_time_closure_rate_mom_change"] == approx((0.5 - 1.0) * 100)
    assert r["on_time_closure_rate_yoy_change"] == approx(0.0)
    assert r["on_time_handling_rate_yoy_change"] == approx((0.8 - 0.5) * 100)
    assert r["rework_rate_mom_change"] == approx(25.0)
    assert pd.isna(r["satisfaction_rate_yoy_change"])
    # hours: relative change
    assert r["avg_handling_hours_mom_change"] == approx((168.8 - 60) / 60 * 100)
    assert r["median_handling_hours_yoy_change"] == approx((100 - 108) / 108 * 100)


def test_other_grids(grids):
    check(grids.loc[G2], {
        "reported": 3, "filed": 2, "dispatched": 1, "resolved": 0, "closed": 0,
        "due_for_closure": 1, "closure_rate": 0.0, "on_time_closure_rate": None,
        "on_time_handling_rate": None, "rework_rate": None, "extension_rate": 0.0,
        "open_during": 4, "avg_handling_hours": None, "median_handling_hours": None,
        "overdue": 1, "satisfaction_rate": None,
        # c19 at its report, c9 and c20 at their needs-list entries.
        "needs_fix_now": 1, "needs_long_term": 2, "needs_claimed": 0, "needs_done": 0,
        "reported_prev": 1, "filed_prev": 1, "needs_long_term_prev": 0,
        "closure_rate_prev": None,
    })
    check(grids.loc[G3], {
        "reported": 1, "filed": 1, "dispatched": 1, "resolved": 1, "closed": 1,
        "due_for_closure": 1, "closure_rate": 1.0, "on_time_closure_rate": 1.0,
        "on_time_handling_rate": 1.0, "rework_rate": 0.0, "extension_rate": 0.0,
        "avg_handling_hours": 24.0, "median_handling_hours": 24.0, "overdue": 0,
        "satisfaction_rate": 1.0,  # the compact JSON form is read too
    })
    check(grids.loc[G4], {"reported": 0, "closed": 0, "overdue": 0, "closure_rate": None,
                          "avg_handling_hours": None, "reported_mom_change": 0.0})


def test_rows_names_and_ranks(grids):
    assert list(grids.index) == [G1, G2, G3, G4]  # the layer, even a grid without cases
    assert grids.index.name == "grid_code"
    assert list(grids["code"]) == [G1, G2, G3, G4]
    assert grids.loc[G1, "name"] == "名001"
    # closure rate: G3 100 %, G1 67 %, G2 0 %, G4 no data
    assert grids["rank_closure_rate"].tolist()[:3] == [2, 3, 1]
    assert pd.isna(grids.loc[G4, "rank_closure_rate"])
    # overdue (lower is better): G3 and G4 share first place
    assert grids["rank_overdue"].tolist() == [4, 3, 1, 1]
    assert "rank_reported" not in grids  # a volume, not ranked


def test_columns_and_types(grids):
    for key, ind in INDICATORS.items():
        for suffix in ("", "_prev", "_yoy", "_mom_change", "_yoy_change"):
            assert key + suffix in grids
        assert ("rank_" + key in grids) == (ind.better is not None)
        if ind.kind == "count":
            assert grids[key].dtype == "int64"
        else:
            assert grids[key].dtype == "float64"
    for h in HELPERS:
        assert h in grids and h + "_prev" in grids and h + "_yoy" in grids


def test_counts_agree_with_the_coverage_map(store, grids):
    """按期结案率 and 超期案件 are defined once: the map's numbers are the same."""
    areas = gpd.GeoDataFrame({"code": [G1, G2, G3], "name": ["a", "b", "c"],
                              "parent_code": [C1, C1, C2]},
                             geometry=[box(0, 0, 1, 1)] * 3, crs="EPSG:4326")
    cov = area_metrics(store, areas, OCT)
    for g in (G1, G2, G3):
        assert cov.loc[g, "overdue"] == grids.loc[g, "overdue"]
        a, b = cov.loc[g, "on_time_rate"], grids.loc[g, "on_time_closure_rate"]
        assert (pd.isna(a) and pd.isna(b)) or a == b


def test_community_and_street(store):
    com = indicators(store, "community", OCT)
    assert list(com.index) == [C1, C2]
    check(com.loc[C1], {
        "reported": 10, "closed": 4, "due_for_closure": 7, "closure_rate": 4 / 7,
        "overdue": 3, "open_during": 12, "extension_rate": 1 / 12,
        "median_handling_hours": 100.0, "avg_handling_hours": 168.8,
        "needs_fix_now": 2, "needs_long_term": 2, "reported_prev": 4, "reported_yoy": 4,
    })
    check(com.loc[C2], {"reported": 1, "closed": 1, "closure_rate": 1.0,
                        "avg_handling_hours": 24.0, "reported_prev": 0})
    assert com["rank_closure_rate"].tolist() == [2, 1]
    street = indicators(store, "street", OCT)
    assert list(street.index) == [S]
    assert street.loc[S, "name"] is None  # no street layer stored
    check(street.loc[S], {
        "reported": 11, "closed": 5, "due_for_closure": 8, "closure_rate": 5 / 8,
        "resolved": 6, "median_handling_hours": (72 + 100) / 2,
        "avg_handling_hours": (72 + 100 + 480 + 144 + 48 + 24) / 6,
        "satisfaction_rate": 2 / 3, "overdue": 3,
    })


def test_compound(store):
    comp = indicators(store, "compound", OCT)
    assert list(comp.index) == [K1]  # no compound layer: the codes found on cases
    check(comp.loc[K1], {"reported": 2, "closed": 2, "due_for_closure": 2,
                         "closure_rate": 1.0, "rework_rate": 1 / 2, "reported_prev": 0})


def test_organisations(store):
    org = indicators(store, "org", OCT)
    a, b = store.orgs["A"], store.orgs["B"]
    assert list(org["name"]) == ["A", "B", "C"]
    # A: c1, c2, c6, c14 reported; c1, c2 closed; due: c1, c2, c4, c14, c17.
    check(org.loc[a], {"reported": 4, "closed": 2, "due_for_closure": 5,
                       "closure_rate": 2 / 5, "overdue": 3, "on_time_closure_rate": 1 / 2,
                       "extension_rate": 1 / 6, "reported_prev": 3, "reported_yoy": 0})
    # B: c3, c8, c15 — all closed in October, c3 late and reworked.
    check(org.loc[b], {"reported": 3, "closed": 3, "due_for_closure": 3,
                       "closure_rate": 1.0, "on_time_closure_rate": 2 / 3,
                       "rework_rate": 1 / 3, "satisfaction_rate": 1 / 2, "needs_claimed": 1,
                       "reported_yoy": 3, "closed_yoy": 2})
    c = org[org["name"] == "C"].iloc[0]
    check(c, {"reported": 0, "closure_rate": None})
    assert org["rank_closure_rate"].tolist()[:2] == [2, 1]


def test_selected_codes(store):
    sel = indicators(store, "grid", OCT, codes=[G3, "999", G3, G1])
    assert list(sel.index) == [G3, "999", G1]
    check(sel.loc["999"], {"reported": 0, "closure_rate": None})
    assert sel.loc["999", "name"] is None
    check(sel.loc[G1], {"reported": 7, "closure_rate": 4 / 6})
    assert sel.loc[G3, "rank_closure_rate"] == 1 and sel.loc[G1, "rank_closure_rate"] == 2
    assert pd.isna(sel.loc["999", "rank_closure_rate"])  # ranked among the rows returned
    org = indicators(store, "org", OCT, codes=[str(store.orgs["B"])])
    assert list(org.index) == [store.orgs["B"]]


def test_unknown_level():
    with pytest.raises(InvalidInput) as e:
        indicators(None, "district", OCT)
    assert e.value.field == "level"


# -- periods ------------------------------------------------------------------------------
def test_year_before():
    # Beijing months and days: each begins at 16:00 UTC the day before.
    assert year_before(OCT) == Period(datetime(2025, 9, 30, 16), datetime(2025, 10, 31, 16),
                                      "2025-10")
    dec = year_before(parse_period("2026-12"))
    assert (dec.start, dec.end, dec.key) == (datetime(2025, 11, 30, 16),
                                             datetime(2025, 12, 31, 16), "2025-12")
    feb = year_before(parse_period("2028-02"))
    assert (feb.start, feb.end) == (datetime(2027, 1, 31, 16), datetime(2027, 2, 28, 16))
    leap = year_before(parse_period("2028-02-01..2028-02-29"))
    assert leap.key == "2027-02-01..2027-02-28"
    assert (leap.start, leap.end) == (datetime(2027, 1, 31, 16), datetime(2027, 2, 28, 16))
    last_day = year_before(parse_period("2028-02-01..2028-02-28"))
    assert last_day.key == "2027-02-01..2027-02-28"
    rel = year_before(parse_period("30d", now=datetime(2026, 10, 15, 12, 30)))
    assert (rel.start, rel.end) == (datetime(2025, 9, 15, 12, 30),
                                    datetime(2025, 10, 15, 12, 30))
    assert rel.key == "30d:year_before"


def test_period_for_relative_key(store):
    p = parse_period("30d", now=datetime(2026, 11, 1))
    out = indicators(store, "grid", p, codes=[G1])
    assert out.loc[G1, "reported"] == 7 - 1  # c3 was reported at 1 Oct 00:00, 31 days before
    assert out.attrs["period"]["key"] == "30d"


# -- definitions --------------------------------------------------------------------------
def test_definitions_written_once_in_both_languages():
    assert len(INDICATORS) >= 20
    for key, ind in INDICATORS.items():
        assert isinstance(ind, Indicator) and ind.key == key
        assert ind.zh and ind.en and ind.formula_zh and ind.formula_en
        assert ind.kind in ("count", "rate", "hours")
        assert ind.better in ("higher", "lower", None)
        if ind.kind == "rate":
            for part in (ind.numerator, ind.denominator):
                assert part in HELPERS or part in INDICATORS
        d = ind.to_dict()
        assert d["formula_en"] == ind.formula("en") and d["zh"] == ind.label("zh")
    assert get_indicator("closure_rate").zh == "结案率"
    with pytest.raises(InvalidInput):
        get_indicator("nope")
    assert "环比" in CHANGE_NOTE["zh"] and "同比" in CHANGE_NOTE["zh"]


def test_formatting():
    rate, count, hours = (INDICATORS[k] for k in ("closure_rate", "reported",
                                                  "avg_handling_hours"))
    assert rate.format(2 / 3) == "66.7%" and count.format(7) == "7"
    assert hours.format(168.8) == "168.8" and rate.format(float("nan"), "en") == "No data"
    assert rate.format_change(-50.0) == "-50.0 个百分点"
    assert rate.format_change(5, "en") == "+5.0 pp"
    assert count.format_change(75.0) == "+75.0%"
    assert count.format_change(None) == "无数据"


# -- cost and portability -----------------------------------------------------------------
def _bulk_store(tmp_path, n: int):
    s = open_store(f"sqlite:///{tmp_path}/bulk{n}.sqlite3")
    k = Book()
    for i in range(n):
        grid = (G1, G2, G3)[i % 3]
        for month in ("2026-10", "2026-09", "2025-10"):
            k.add(grid, f"{month}-02T00:00", f"{month}-09T00:00", *full_path(f"{month}-02"),
                  X(f"{month}-03T00:00", f"{month}-10T00:00"),
                  T(f"{month}-04T00:00", "resolved"), E(f"{month}-05T00:00", "satisfied"),
                  T(f"{month}-06T00:00", "closed"), org=None, needs="fix_now")
    k.save(s)
    return s


@pytest.mark.parametrize("level", ["grid", "community", "org"])
def test_statement_count_is_bounded(tmp_path, level):
    counts = []
    for n in (3, 90):
        s = _bulk_store(tmp_path / level, n)
        seen: list[str] = []

        def count(conn, cursor, statement, *args, _seen=seen):
            _seen.append(statement)

        sa.event.listen(s.engine, "before_cursor_execute", count)
        out = indicators(s, level, OCT)
        sa.event.remove(s.engine, "before_cursor_execute", count)
        selects = [x for x in seen if x.lstrip().upper().startswith("SELECT")]
        counts.append((len(seen), len(selects)))
        if level == "grid":
            assert out.loc[G1, "reported"] == n // 3 and out.loc[G1, "closure_rate"] == 1.0
            assert out.loc[G1, "reported_yoy"] == n // 3
        s.dispose()
    assert counts[0] == counts[1]
    assert counts[0][1] == 5


@pytest.mark.parametrize("level", ["grid", "street", "org"])
def test_sql_is_portable(level):
    periods = (OCT, OCT.previous(), year_before(OCT))
    for name, q in indicator_queries(level, periods, codes=None).items():
        sql = str(q.compile(dialect=postgresql.dialect())).lower()
        for fn in ("julianday", "strftime", "json_extract", "group_concat", "datetime("):
            assert fn not in sql, (name, fn)


# -- filters: a category, and the part of an area inside another ----------------------------
@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Five October cases of two categories; compound K1 straddles grids 1 and 2:

    a  G1  roof_leak     in K1, due 10 Oct, closed 5 Oct
    b  G1  street_light  in K1, due 8 Oct, still filed: overdue at the end
    c  G2  roof_leak     in K1, due 10 Nov, still filed: neither due nor overdue
    d  G1  roof_leak     no compound, rejected (counts only as reported)
    e  G3  roof_leak     community 2, due 20 Oct, closed 9 Oct
    """
    s = open_store(f"sqlite:///{tmp_path_factory.mktemp('mixed')}/t.sqlite3")
    s.save_layers(layers(), "test")
    k = Book()
    k.add(G1, "2026-10-02T00:00", "2026-10-10T00:00", T("2026-10-02T01:00", "filed"),
          T("2026-10-05T00:00", "closed"), compound=K1)
    k.add(G1, "2026-10-03T00:00", "2026-10-08T00:00", T("2026-10-03T01:00", "filed"),
          compound=K1)
    k.rows[-1]["category"] = "street_light"
    k.add(G2, "2026-10-04T00:00", "2026-11-10T00:00", T("2026-10-04T01:00", "filed"),
          compound=K1)
    k.add(G1, "2026-10-06T00:00", "2026-10-13T00:00", T("2026-10-07T00:00", "rejected"))
    k.add(G3, "2026-10-08T00:00", "2026-10-20T00:00", T("2026-10-08T01:00", "filed"),
          T("2026-10-09T00:00", "closed"))
    k.save(s)
    yield s
    s.dispose()


def test_a_category_narrows_every_indicator(mixed):
    every = indicators(mixed, "street", OCT).loc[S]
    check(every, {"reported": 5, "closed": 2, "overdue": 1, "due_for_closure": 3})
    leak = indicators(mixed, "street", OCT, category="roof_leak")
    check(leak.loc[S], {"reported": 4, "closed": 2, "overdue": 0, "filed": 3,
                        "due_for_closure": 2, "closure_rate": 1.0})
    assert leak.attrs["category"] == "roof_leak"
    light = indicators(mixed, "street", OCT, category="street_light").loc[S]
    check(light, {"reported": 1, "closed": 0, "overdue": 1, "filed": 1,
                  "due_for_closure": 1, "closure_rate": 0.0})
    # The same areas are listed whatever the category: a grid without its cases shows 0.
    by_grid = indicators(mixed, "grid", OCT, category="street_light")
    assert list(by_grid.index) == [G1, G2, G3, G4]
    assert by_grid["reported"].tolist() == [1, 0, 0, 0]


def test_a_compound_counts_only_its_cases_inside_the_grid(mixed):
    whole = indicators(mixed, "compound", OCT, codes=[K1]).loc[K1]
    check(whole, {"reported": 3, "closed": 1, "overdue": 1})
    in_g1 = indicators(mixed, "compound", OCT, codes=[K1], grid=G1)
    check(in_g1.loc[K1], {"reported": 2, "closed": 1, "overdue": 1})
    assert in_g1.attrs["grid"] == G1
    check(indicators(mixed, "compound", OCT, codes=[K1], grid=G2).loc[K1],
          {"reported": 1, "closed": 0, "overdue": 0})
    check(indicators(mixed, "compound", OCT, codes=[K1], grid=G1,
                     category="roof_leak").loc[K1], {"reported": 1, "closed": 1})
    by_grid = indicators(mixed, "grid", OCT, community=C2)
    assert by_grid["reported"].tolist() == [0, 0, 1, 0]
