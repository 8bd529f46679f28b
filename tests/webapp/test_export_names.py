"""Export downloads a planner can file away: names that say what is in them
(``hemei-indicators-community-2026-10.xlsx``, ``hemei-cases-30d-2026-11-27-open.csv``),
safe whatever the filters, and the language of the page the planner switched to."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import openpyxl
import pytest
from werkzeug.http import parse_options_header

from gis.cases import utcnow
from tests.webapp.test_exports_web import _wait

SAFE = re.compile(r"[A-Za-z0-9_-]{1,120}\.[a-z]{3,7}")


def _today() -> str:
    """The planner's (Beijing) day."""
    return f"{utcnow() + timedelta(hours=8):%Y-%m-%d}"


def _months() -> tuple[str, str]:
    """(last month, this month) as ``YYYY-MM``."""
    now = utcnow()
    last = now.replace(day=1) - timedelta(days=1)
    return f"{last:%Y-%m}", f"{now:%Y-%m}"


def _name(r) -> str:
    """The file name a response is downloaded as (ASCII, no ``filename*``)."""
    value, opts = parse_options_header(r.headers["Content-Disposition"])
    assert value == "attachment" and "filename*" not in opts
    assert "\r" not in r.headers["Content-Disposition"]
    assert "\n" not in r.headers["Content-Disposition"]
    return opts["filename"]


def _named(client, url) -> tuple[str, bytes, set[str]]:
    """GET ``url`` (a whole streamed body: a half-read stream holds its request context)
    and return the download name with the body; the day may turn during the request."""
    before = _today()
    r = client.get(url)
    body = r.get_data()
    assert r.status_code == 200, body[:300]
    name = _name(r)
    assert SAFE.fullmatch(name), name
    return name, body, {before, _today()}


# -- cases --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "geojson"])
def test_case_exports_without_a_period_carry_the_export_day(client, fmt):
    name, _, days = _named(client, f"/api/v1/exports/cases.{fmt}")
    assert name in {f"hemei-cases-{d}.{fmt}" for d in days}


@pytest.mark.parametrize("form", ["relative", "last_month", "this_month", "range"])
def test_case_export_names_carry_the_period(client, form):
    last, this = _months()
    period, want = {
        "relative": ("30d", "hemei-cases-30d-{day}.csv"),
        "last_month": (last, f"hemei-cases-{last}.csv"),
        # The current month is cut at now: the name says up to which day.
        "this_month": (this, f"hemei-cases-{this}-asof-{{day}}.csv"),
        "range": (f"{last}-01..{last}-10", f"hemei-cases-{last}-01--{last}-10.csv"),
    }[form]
    name, _, days = _named(client, f"/api/v1/exports/cases.csv?period={period}")
    assert name in {want.format(day=d) for d in days}


def test_case_export_names_carry_the_filters(client, hemei):
    last, _ = _months()
    community = hemei.layers["community"]["code"].iloc[0]
    grid = hemei.layers["grid"]["code"].iloc[0]
    name, _, _ = _named(client, f"/api/v1/exports/cases.csv?period={last}&status=open"
                                f"&category=roof_leak&community={community}")
    assert name == f"hemei-cases-{last}-community-{community}-roof_leak-open.csv"
    name, _, _ = _named(client, f"/api/v1/exports/cases.geojson?period={last}"
                                f"&grid={grid}&status=closed")
    assert name == f"hemei-cases-{last}-grid-{grid}-closed.geojson"


@pytest.mark.parametrize("fmt", ["xlsx", "gpkg"])
def test_built_jobs_are_downloaded_under_their_name(client, hemei, fmt):
    last, _ = _months()
    grid = hemei.layers["grid"]["code"].iloc[0]
    r = client.get(f"/api/v1/exports/cases.{fmt}?period={last}&grid={grid}")
    assert r.status_code == 202
    want = f"hemei-cases-{last}-grid-{grid}.{fmt}"
    assert r.get_json()["file"] == want
    job = _wait(client, r.headers["Location"])
    assert job["state"] == "done" and job["file"] == want, job
    d = client.get(job["download"])
    assert d.status_code == 200 and d.data
    assert _name(d) == want


# -- indicators ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, level, form", [
    ("csv", "grid", "default"), ("xlsx", "community", "last_month"),
    ("csv", "community", "range"), ("xlsx", "grid", "category"),
])
def test_indicator_export_names(client, fmt, level, form):
    last, _ = _months()
    query, want = {
        # No period is the last 30 days: the name carries the day it ends on.
        "default": ("", f"hemei-indicators-{level}-30d-{{day}}.{fmt}"),
        "last_month": (f"&period={last}", f"hemei-indicators-{level}-{last}.{fmt}"),
        "range": (f"&period={last}-01..{last}-15",
                  f"hemei-indicators-{level}-{last}-01--{last}-15.{fmt}"),
        "category": ("&period=90d&category=drainage",
                     f"hemei-indicators-{level}-90d-{{day}}-drainage.{fmt}"),
    }[form]
    name, _, days = _named(client, f"/api/v1/exports/indicators.{fmt}?level={level}{query}")
    assert name in {want.format(day=d) for d in days}


# -- the language -------------------------------------------------------------------------
def _header(body: bytes) -> list[str]:
    return next(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def _xlsx_header(body: bytes, tmp_path) -> list[str]:
    f = tmp_path / "x.xlsx"
    f.write_bytes(body)
    return [c.value for c in next(openpyxl.load_workbook(f).worksheets[0].iter_rows())]


def test_the_ui_language_switch_gives_english_exports(web, tmp_path):
    planner = web("planner")
    assert planner.get("/planner?lang=en").status_code == 200  # the switch: a cookie
    _, body, _ = _named(planner, "/api/v1/exports/cases.csv")
    assert "Grid" in _header(body) and "网格" not in _header(body)
    _, body, _ = _named(planner, "/api/v1/exports/indicators.csv?level=community")
    assert "Community code" in _header(body)
    _, body, _ = _named(planner, "/api/v1/exports/indicators.xlsx?level=community")
    assert "Community code" in _xlsx_header(body, tmp_path)
    r = planner.get("/api/v1/exports/cases.xlsx?period=90d")
    assert r.status_code == 202
    job = _wait(planner, r.headers["Location"])
    assert job["state"] == "done", job
    assert "Grid" in _xlsx_header(planner.get(job["download"]).data, tmp_path)


def test_lang_zh_overrides_an_english_cookie(web, tmp_path):
    planner = web("planner")
    planner.get("/planner?lang=en")
    _, body, _ = _named(planner, "/api/v1/exports/cases.csv")
    assert "Grid" in _header(body)  # the cookie alone: English
    planner.get("/planner?lang=en")
    _, body, _ = _named(planner, "/api/v1/exports/cases.csv?lang=zh")
    assert "网格" in _header(body) and "Grid" not in _header(body)
    planner.get("/planner?lang=en")
    _, body, _ = _named(planner, "/api/v1/exports/indicators.xlsx?lang=zh")
    assert "社区编码" in _xlsx_header(body, tmp_path)


# -- safe names whatever the filters ------------------------------------------------------
def test_names_stay_safe_with_odd_area_codes(client, hemei):
    # Area codes come from imported boundary files: one may hold anything.
    odd = 'A/1 "东"..\\x;'
    long = "9" * 300
    grids = hemei.layers["grid"]
    grids.loc[grids.index[0], "code"] = odd
    grids.loc[grids.index[1], "code"] = long
    from urllib.parse import quote

    name, _, days = _named(client, f"/api/v1/exports/cases.csv?grid={quote(odd)}")
    assert name in {f"hemei-cases-{d}-grid-A-1-x.csv" for d in days}
    name, _, _ = _named(client, f"/api/v1/exports/cases.geojson?grid={long}&status=open")
    assert name.startswith("hemei-cases-") and "grid-999" in name and len(name) <= 128
    r = client.get(f"/api/v1/exports/cases.xlsx?grid={quote(odd)}&period=90d")
    assert r.status_code == 202
    job = _wait(client, r.headers["Location"])
    assert job["state"] == "done", job
    d = client.get(job["download"])
    assert d.status_code == 200 and SAFE.fullmatch(_name(d))
    assert _name(d).endswith("-grid-A-1-x.xlsx")
    # Odd values elsewhere are refused (400), never a 500 or a broken header.
    for url in ("/api/v1/exports/cases.csv?status=open%0D%0AX-Evil:%201",
                "/api/v1/exports/cases.csv?category=..%2F..%2Fetc",
                "/api/v1/exports/indicators.csv?level=..%2Fcommunity",
                "/api/v1/exports/indicators.csv?period=2026-10%22"):
        r = client.get(url)
        r.get_data()
        assert r.status_code == 400, url
