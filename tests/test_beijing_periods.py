"""Periods, charts, exports and the report on the street office's calendar: Beijing time.

Every stored time is naive UTC; a month, a day, a week and every time a person reads are
Beijing time (UTC+8, no daylight saving). Hand-built cases around the Beijing midnights
of November 2019 (long before the demo cases, which are the last 120 days, so only ours
count), each one's period known by construction:

====  =====================  ===========================  ==============================
case  reported (UTC)         Beijing time                 counts in
====  =====================  ===========================  ==============================
A     2019-10-31 17:00       Fri 1 Nov 2019 01:00         November (UTC would say October)
B     2019-10-31 15:59       Thu 31 Oct 2019 23:59        October
C     2019-09-30 16:30       Tue 1 Oct 2019 00:30         October (UTC: September)
D     2019-11-03 23:30       Mon 4 Nov 2019 07:30         November, the week of 4 November
                                                          (UTC: a Sunday, the week before)
E     2018-10-31 16:30       Thu 1 Nov 2018 00:30         November 2018, the 同比 of 2019-11
====  =====================  ===========================  ==============================
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from html import unescape

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa

from gis import charts
from gis.coverage import parse_period
from gis.indicators import year_before
from gis.localtime import BEIJING, beijing_midnight, from_beijing, to_beijing
from gis.storage import cases
from tests.conftest import INSIDE, PASSWORDS

CASES = {  # title: reported at (naive UTC)
    "A": datetime(2019, 10, 31, 17, 0),
    "B": datetime(2019, 10, 31, 15, 59),
    "C": datetime(2019, 9, 30, 16, 30),
    "D": datetime(2019, 11, 3, 23, 30),
    "E": datetime(2018, 10, 31, 16, 30),
}
# Where a month of November 2019 "to date" is cut: 19:48 UTC is 03:48 the next morning
# in Beijing.
CUT = datetime(2019, 11, 15, 19, 48)
CUT_EPOCH = int(CUT.replace(tzinfo=UTC).timestamp())
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def z(t: datetime) -> str:
    return t.isoformat(timespec="seconds") + "Z"


@pytest.fixture
def ids(hemei) -> dict[str, int]:
    """Cases A–E (status reported, in the demo street), their ids by title."""
    chain = hemei.locator.locate(*INSIDE)
    rows, events = [], []
    for title, created in CASES.items():
        rows.append({
            "category": "sanitation", "title": f"beijing-{title}", "description": title,
            "lon": INSIDE[0], "lat": INSIDE[1],
            **{f"{k}_code": (chain[k] or {}).get("code")
               for k in ("street", "community", "compound", "grid")},
            "status": "reported", "source": "patrol", "created_at": created,
            "updated_at": created, "due_at": created + timedelta(days=7),
            "resolved_at": None, "closed_at": None, "row_version": 1, "published": False,
            "rework_count": 0, "extension_count": 0, "needs_kind": None,
            "assignee_org": None,
        })
        events.append([{"at": created, "actor": "t", "from_status": None,
                        "to_status": "reported", "note": "", "kind": "transition",
                        "data": None, "lon": None, "lat": None}])
    hemei.store.import_cases(rows, events)
    with hemei.store.engine.connect() as conn:
        found = conn.execute(sa.select(cases.c.title, cases.c.id)
                             .where(cases.c.title.like("beijing-%"))).fetchall()
    return {title.removeprefix("beijing-"): int(i) for title, i in found}


@pytest.fixture
def planner(app):
    c = app.test_client()
    token = TOKEN.search(c.get("/login").get_data(as_text=True)).group(1)
    r = c.post("/login", data={"username": "planner", "password": PASSWORDS["planner"],
                               "csrf_token": token})
    assert r.status_code == 302
    return c


def street(client, query: str) -> dict:
    r = client.get(f"/api/v1/indicators?level=street&{query}")
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    body = r.get_json()
    assert len(body["rows"]) == 1
    return body


# -- the periods -----------------------------------------------------------------------------
def test_the_offset_lives_in_gis_and_the_pages_use_the_same():
    from webapp import i18n

    assert BEIJING == timedelta(hours=8) and i18n.BEIJING is BEIJING
    t = datetime(2019, 10, 31, 17, 0)
    assert to_beijing(t) == datetime(2019, 11, 1, 1, 0) and from_beijing(to_beijing(t)) == t
    assert beijing_midnight(datetime(2019, 11, 1).date()) == datetime(2019, 10, 31, 16, 0)
    assert i18n.local_time(t) == "2019-11-01 01:00"


def test_a_month_and_a_date_range_are_beijing_calendar_periods():
    p = parse_period("2026-10")
    assert (p.start, p.end) == (datetime(2026, 9, 30, 16), datetime(2026, 10, 31, 16))
    assert p.to_dict() == {"key": "2026-10", "start": "2026-09-30T16:00:00Z",
                           "end": "2026-10-31T16:00:00Z"}
    # 07:30 Beijing time on 1 November is November's, not October's.
    assert not p.contains(datetime(2026, 10, 31, 23, 30))
    assert parse_period("2026-11").contains(datetime(2026, 10, 31, 23, 30))
    r = parse_period("2026-10-01..2026-10-31")
    assert (r.start, r.end) == (p.start, p.end)
    assert parse_period("2026-12").end == datetime(2026, 12, 31, 16)  # across the year
    # Relative periods stay the last N × 24 hours.
    now = datetime(2026, 11, 27, 1, 46)
    assert parse_period("30d", now=now).start == now - timedelta(days=30)


def test_previous_and_year_before_are_beijing_months_and_days():
    nov = parse_period("2019-11")
    prev = nov.previous()
    assert (prev.key, prev.start, prev.end) == ("2019-10", datetime(2019, 9, 30, 16),
                                                 nov.start)
    yoy = year_before(nov)
    assert (yoy.key, yoy.start, yoy.end) == ("2018-11", datetime(2018, 10, 31, 16),
                                              datetime(2018, 11, 30, 16))
    days = parse_period("2019-11-01..2019-11-30")
    assert days.previous().key == "2019-10-02..2019-10-31"
    assert days.previous().start == datetime(2019, 10, 1, 16)
    assert year_before(days).key == "2018-11-01..2018-11-30"
    assert year_before(days).start == datetime(2018, 10, 31, 16)
    # 29 February (Beijing) becomes 28 February.
    leap = year_before(parse_period("2028-02-01..2028-02-29"))
    assert leap.key == "2027-02-01..2027-02-28" and leap.end == datetime(2027, 2, 28, 16)
    # January's 环比 is the December before, in Beijing time too.
    assert parse_period("2020-01").previous().key == "2019-12"


def test_cases_count_in_their_beijing_month_through_the_api(public_client, ids):
    body = street(public_client, "period=2019-11")
    row = body["rows"][0]
    assert body["period"] == {"key": "2019-11", "start": "2019-10-31T16:00:00Z",
                              "end": "2019-11-30T16:00:00Z"}
    assert body["previous"]["key"] == "2019-10"
    assert body["previous"]["start"] == "2019-09-30T16:00:00Z"
    assert body["year_before"] == {"key": "2018-11", "start": "2018-10-31T16:00:00Z",
                                   "end": "2018-11-30T16:00:00Z"}
    # November: A (1 Nov 01:00) and D; 环比 October: B (31 Oct 23:59) and C (1 Oct 00:30);
    # 同比 November 2018: E (1 Nov 2018 00:30).
    assert (row["reported"], row["reported_prev"], row["reported_yoy"]) == (2, 2, 1)
    october = street(public_client, "period=2019-10")["rows"][0]
    assert (october["reported"], october["reported_prev"]) == (2, 0)


def test_a_date_range_is_beijing_days_through_the_api(public_client, ids):
    # 31 October, Beijing time: B at 23:59, not A (1 November 01:00 in Beijing).
    body = street(public_client, "period=2019-10-31..2019-10-31")
    assert body["period"]["start"] == "2019-10-30T16:00:00Z"
    assert body["rows"][0]["reported"] == 1
    assert street(public_client, "period=2019-11-01..2019-11-01")["rows"][0]["reported"] == 1
    month = street(public_client, "period=2019-11-01..2019-11-30")
    row = month["rows"][0]
    # 环比: the 30 Beijing days before, 2 to 31 October (B, not C); 同比: E.
    assert month["previous"]["key"] == "2019-10-02..2019-10-31"
    assert (row["reported"], row["reported_prev"], row["reported_yoy"]) == (2, 1, 1)


def test_a_month_to_date_is_cut_in_beijing_time_and_compared_like_with_like(public_client,
                                                                              ids):
    body = street(public_client, f"period=2019-11&at={CUT_EPOCH}")
    assert body["period"] == {"key": "2019-11", "start": "2019-10-31T16:00:00Z",
                              "end": z(CUT), "partial": True}
    # As much of October as has passed of November: 1 October 00:00 to 16 October 03:48,
    # Beijing time.
    assert body["previous"]["start"] == "2019-09-30T16:00:00Z"
    assert body["previous"]["end"] == z(datetime(2019, 10, 15, 19, 48))
    assert body["rows"][0]["reported"] == 2 and body["rows"][0]["reported_prev"] == 1  # C


# -- the charts ------------------------------------------------------------------------------
def test_weeks_run_from_monday_00_00_beijing_time():
    frame = pd.DataFrame({
        "id": [1, 2, 3],
        # Sunday 3 November 23:30 UTC = Monday 07:30 in Beijing; Sunday 15:59 UTC is
        # still Sunday 23:59 in Beijing; Monday 4 November 17:00 UTC is Tuesday.
        "created_at": pd.to_datetime(["2019-11-03 23:30", "2019-11-03 15:59",
                                      "2019-11-04 17:00"]),
        "closed_at": pd.to_datetime(["2019-11-10 16:30", None, None]),
        "status": ["closed", "reported", "reported"]})
    p = parse_period("2019-11")
    weeks = charts.weekly_counts(frame, p.start, p.end).set_index("week")
    assert weeks.loc["2019-11-04", "reported"] == 2
    assert weeks.loc["2019-10-28", "reported"] == 1
    # Closed on Sunday 10 November 16:30 UTC = Monday 11 November 00:30 in Beijing.
    assert weeks.loc["2019-11-11", "closed"] == 1 and weeks["closed"].sum() == 1
    assert weeks.index[-1] == pd.Timestamp("2019-11-25")  # 30 November's week, Beijing
    assert bool(weeks.loc["2019-10-28", "in_period"])  # holds 1 November, Beijing


def test_the_planner_chart_and_its_week_drill_down_use_beijing_weeks(planner, ids):
    html = planner.get("/planner?period=2019-11&lang=en").get_data(as_text=True)
    desc = unescape(re.search(r'<desc id="chart-trend-desc">(.*?)</desc>', html, re.S)
                    .group(1))
    per_week = {w: int(n) for w, n in re.findall(r"(\d{4}-\d{2}-\d{2}): New reports (\d+)",
                                                 desc)}
    # D (Monday 4 November 07:30 Beijing) opens the week of 4 November; A and B are in
    # the week of 28 October; C (Tuesday 1 October 00:30) in the week of 30 September.
    assert per_week["2019-11-04"] == 1
    assert per_week["2019-10-28"] == 2
    assert per_week["2019-09-30"] == 1
    r = planner.get("/planner/cases?what=reported&period=2019-11&week=2019-11-04&lang=en")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    listed = {int(x) for x in re.findall(r'<tr[^>]*data-case-id="(\d+)"', page)}
    assert listed == {ids["D"]}
    assert "The week from 2019-11-04" in page


# -- the texts -------------------------------------------------------------------------------
def test_the_planners_to_date_label_is_beijing_time(planner, ids):
    html = planner.get(f"/planner?period=2019-11&at={CUT_EPOCH}").get_data(as_text=True)
    heading = html.split("</h1>")[0]
    assert "截至 2019-11-16 03:48（北京时间）" in heading and "UTC" not in heading
    spans = re.search(r'id="spans">(.*?)</p>', html, re.S).group(1)
    assert "2019-11-01 – 2019-11-16" in spans and "2019-10-01 – 2019-10-16" in spans
    en = planner.get(f"/planner?period=2019-11&at={CUT_EPOCH}&lang=en").get_data(as_text=True)
    assert "to date (2019-11-16 03:48, Beijing time)" in en.split("</h1>")[0]
    drill = planner.get(f"/planner/cases?what=reported&period=2019-11&at={CUT_EPOCH}&lang=en")
    period = re.search(r'id="drill-period">(.*?)</dd>', drill.get_data(as_text=True),
                       re.S).group(1)
    assert "(2019-11-01 – 2019-11-16)" in period and "Beijing time" in period


def test_csv_export_writes_beijing_times_and_says_so(client, ids):
    r = client.get("/api/v1/exports/cases.csv?period=2019-11")
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.get_data().decode("utf-8-sig"))))
    assert sorted(row["标题"] for row in rows) == ["beijing-A", "beijing-D"]
    a = next(row for row in rows if row["标题"] == "beijing-A")
    assert a["上报时间（北京时间）"] == "2019-11-01 01:00:00"
    assert a["处置时限（北京时间）"] == "2019-11-08 01:00:00"
    en = client.get("/api/v1/exports/cases.csv?period=2019-10-31..2019-10-31&lang=en")
    rows = list(csv.DictReader(io.StringIO(en.get_data().decode("utf-8-sig"))))
    assert [(row["Title"], row["Reported (Beijing time)"]) for row in rows] == [
        ("beijing-B", "2019-10-31 23:59:00")]


def test_geojson_export_keeps_exact_utc_instants(client, ids):
    fc = client.get("/api/v1/exports/cases.geojson?period=2019-11").get_json()
    times = {f["properties"]["title"]: f["properties"]["created_at"] for f in fc["features"]}
    assert times == {"beijing-A": "2019-10-31T17:00:00Z", "beijing-D": "2019-11-03T23:30:00Z"}


def _xlsx(client, tmp_path, query: str):
    r = client.get(f"/api/v1/exports/cases.xlsx?{query}")
    assert r.status_code == 202
    for _ in range(200):
        job = client.get(r.headers["Location"]).get_json()
        if job["state"] != "running":
            break
        time.sleep(0.05)
    assert job["state"] == "done", job
    f = tmp_path / "out.xlsx"
    f.write_bytes(client.get(job["download"]).data)
    return openpyxl.load_workbook(f)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_excel_export_writes_beijing_times_and_its_notes_say_so(client, ids, tmp_path, lang):
    wb = _xlsx(client, tmp_path, f"period=2019-11&lang={lang}")
    sheet = wb.worksheets[0]
    header = [c.value for c in sheet[1]]
    col = header.index("上报时间（北京时间）" if lang == "zh" else "Reported (Beijing time)")
    title = header.index("标题" if lang == "zh" else "Title")
    when = {row[title]: row[col] for row in sheet.iter_rows(min_row=2, values_only=True)}
    assert when == {"beijing-A": datetime(2019, 11, 1, 1, 0),
                    "beijing-D": datetime(2019, 11, 4, 7, 30)}
    notes = {a: b for a, b in wb.worksheets[1].iter_rows(values_only=True)}
    if lang == "zh":
        assert "时间为北京时间（UTC+8）" in notes["说明"] and "导出时间（北京时间）" in notes
        assert "2019-11-01 00:00 – 2019-12-01 00:00 北京时间" in notes["上报时间"]
    else:
        assert "Times are Beijing time (UTC+8)" in notes["Notes"]
        assert "Exported (Beijing time)" in notes
        assert "2019-11-01 00:00 – 2019-12-01 00:00 Beijing time" in notes["Period (reported)"]
    assert not any("UTC)" in str(v) for v in [*header, *notes])


def test_the_monthly_report_counts_beijing_weeks_and_prints_beijing_time(hemei, ids,
                                                                          tmp_path):
    from gis.report import monthly_report, report_data

    d = report_data(hemei, "2019-11")
    assert d["period"]["label"] == "2019年11月" and d["summary"]["reported"] == 2
    assert d["weekly"][0]["label"] == "11/01–11/07" and d["weekly"][0]["reported"] == 2
    assert d["weekly"][-1]["label"] == "11/29–11/30"
    assert d["previous"]["key"] == "2019-10"
    part = report_data(hemei, "2019-11", now=CUT)
    assert part["period"]["label"] == "2019年11月（截至 2019-11-16 03:48 北京时间）"
    en = report_data(hemei, "2019-11", now=CUT, locale="en")
    assert en["period"]["label"] == "November 2019 (to 2019-11-16 03:48 Beijing time)"
    out = tmp_path / "report.pdf"
    result = monthly_report(hemei, "2019-11", out, data=part)
    if result["font"] is None or shutil.which("pdftotext") is None:
        pytest.skip("the PDF's text needs a CJK font and pdftotext")
    text = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(out), "-"],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    assert "截至 2019-11-16 03:48 北京时间" in text
    assert "时间为北京时间（UTC+8）" in text and "UTC）" not in text.replace("UTC+8）", "")
