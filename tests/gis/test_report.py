"""The monthly report: its numbers on hand-built cases whose repairs are known, the PDF
(valid, the expected pages, Chinese that renders and can be searched), the English
version, the font fallback and ``hemei report``."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gis import report as rep
from gis.indicators import INDICATORS
from gis.report import monthly_report, report_data
from gis.settings import read_settings
from tests.conftest import INSIDE

PERIOD = "2020-10"  # long before the demo cases (the last 120 days): only ours count
PAGES_ZH = ["封面", "主要指标", "指标定义", "网格地图", "趋势与分类", "需求清单",
            "办结事项与维修成果"]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Book:
    """Cases with the events the workflow would have written."""

    def __init__(self, hemei):
        self.h = hemei
        self.rows, self.events = [], []

    def add(self, title, category, created, steps, *, lon=INSIDE[0], lat=INSIDE[1],
            needs=None, org=None, at_=None):
        if at_ is not None:  # steps of about 200 m from INSIDE: no two in one cluster
            lon, lat = INSIDE[0] + at_[0] * 0.002, INSIDE[1] + at_[1] * 0.002
        chain = self.h.locator.locate(lon, lat)
        created = at(created)
        evs = [{"at": created, "actor": "t", "from_status": None, "to_status": "reported",
                "note": "", "kind": "transition", "data": None, "lon": None, "lat": None}]
        status, resolved, closed = "reported", None, None
        for when, to, *data in steps:
            when = at(when)
            evs.append({"at": when, "actor": "t", "from_status": status, "to_status": to,
                        "note": "", "kind": "transition", "lon": None, "lat": None,
                        "data": json.dumps(data[0], ensure_ascii=False) if data else None})
            status = to
            resolved = when if to == "resolved" else resolved
            closed = when if to in ("closed", "rejected") else closed
        self.rows.append({
            "category": category, "title": title, "description": title, "lon": lon,
            "lat": lat, **{f"{k}_code": (chain[k] or {}).get("code") for k in
                           ("street", "community", "compound", "grid")},
            "status": status, "source": "patrol", "created_at": created,
            "updated_at": evs[-1]["at"], "due_at": created + timedelta(days=7),
            "resolved_at": resolved, "closed_at": closed, "row_version": len(evs),
            "published": False, "rework_count": sum(e["to_status"] == "reopened" for e in evs),
            "extension_count": 0, "needs_kind": needs, "assignee_org": org,
        })
        self.events.append(evs)

    def save(self):
        self.h.store.import_cases(self.rows, self.events)


def _flow(created_day: str, resolved: str, closed: str | None, data: dict | None):
    steps = [(f"{created_day}T09:00", "filed"), (f"{created_day}T10:00", "dispatched"),
             (f"{created_day}T11:00", "in_progress"),
             (resolved, "resolved", data) if data else (resolved, "resolved")]
    if closed:
        steps.append((closed, "closed"))
    return steps


@pytest.fixture(scope="module")
def hemei(seeded_template, tmp_path_factory):
    """The demo street, with hand-built cases in October 2020:

    A road, fixed on 5 Oct: 120 m of road, 30 m², 3 patches and a 118.4 m repair line;
       on the needs list (fix now), done by 城管维修队; closed 4 days after its report.
    B street light, fixed on 6 Oct: 5 lamps; closed after 3 days.
    C parking, fixed on 8 Oct (2 spaces), sent back, fixed again on 12 Oct (8 spaces):
       counts once, with the 8 spaces of the fix that stood; not closed.
    D road, fixed on 10 Oct with only a 45.5 m line drawn (no metres stated); closed after
       5 days.
    E street light reported and fixed in September (99 lamps: not October's work), closed
       on 2 Oct, 22 days after its report.
    F sanitation reported on 20 Oct, on the needs list (long term), still open.
    G–K sanitation, five reports within a few metres on 15–19 Oct: one cluster.
    """
    from gis.service import Hemei

    inst = tmp_path_factory.mktemp("report") / "instance"
    shutil.copytree(seeded_template, inst)
    h = Hemei(read_settings(env={}, INSTANCE=str(inst)))
    crew = json.loads((inst / "tokens.json").read_text(encoding="utf-8"))["orgs"]["crew"]
    b = Book(h)
    b.add("新兴南路人行道破损", "road_damage", "2020-10-02T08:00",
          _flow("2020-10-02", "2020-10-05T16:00", "2020-10-06T08:00",
                {"quantities": {"road_m": 120, "area_m2": 30, "patches": 3},
                 "line_length_m": 118.4}), needs="fix_now", org=crew, at_=(-3, 0))
    b.add("香槟城小区路灯不亮", "street_light", "2020-10-04T08:00",
          _flow("2020-10-04", "2020-10-06T12:00", "2020-10-07T08:00",
                {"quantities": {"lamps": 5}}), at_=(-2, -1))
    b.add("新兴南路停车乱", "parking", "2020-10-05T08:00",
          [("2020-10-05T09:00", "filed"), ("2020-10-05T10:00", "dispatched"),
           ("2020-10-05T11:00", "in_progress"),
           ("2020-10-08T10:00", "resolved", {"quantities": {"parking_spaces": 2}}),
           ("2020-10-09T10:00", "reopened"), ("2020-10-09T11:00", "in_progress"),
           ("2020-10-12T10:00", "resolved", {"quantities": {"parking_spaces": 8}})],
          at_=(2, 0))
    b.add("厦良社区背街小巷路面坑洼", "road_damage", "2020-10-06T08:00",
          _flow("2020-10-06", "2020-10-10T09:00", "2020-10-11T08:00",
                {"line_length_m": 45.5}), at_=(3, 0))
    b.add("九月的路灯", "street_light", "2020-09-10T08:00",
          _flow("2020-09-10", "2020-09-20T08:00", "2020-10-02T08:00",
                {"quantities": {"lamps": 99}}), at_=(-1, 1))
    b.add("垃圾清运不及时", "sanitation", "2020-10-20T08:00", [], needs="long_term",
          at_=(1, 1))
    for i in range(5):
        b.add(f"垃圾堆放{i + 1}", "sanitation", f"2020-10-{15 + i}T08:00", [],
              lon=INSIDE[0] + i * 1e-5, lat=INSIDE[1])
    b.save()
    yield h
    h.store.dispose()


@pytest.fixture(scope="module")
def data(hemei):
    return report_data(hemei, PERIOD)


@pytest.fixture(scope="module")
def pdf(hemei, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pdf") / "report.pdf"
    result = monthly_report(hemei, PERIOD, out, data=data)
    return out, result


# -- the numbers ---------------------------------------------------------------------------
def test_repairs_are_summed_from_the_last_resolution_in_the_period(data):
    r = data["fixed"]["repairs"]
    assert r["road_m"] == 120 and r["area_m2"] == 30 and r["patches"] == 3
    assert r["lamps"] == 5  # September's 99 lamps are not October's
    assert r["parking_spaces"] == 8  # the fix that stood, not 2 + 8
    assert r["line_length_m"] == pytest.approx(163.9)
    assert r["road_total_m"] == pytest.approx(165.5)  # 120 stated + 45.5 drawn
    assert r["cases"] == 4
    items = {i["title"]: i for i in data["fixed"]["repair_items"]}
    assert items["新兴南路人行道破损"]["summary"] == (
        "道路 120 米；修补 30 平方米；沥青补丁 3 处；线路 118.4 米")
    assert items["厦良社区背街小巷路面坑洼"]["line_length_m"] == 45.5


def test_counts_trend_categories_and_time_to_close(data):
    s = data["summary"]
    assert (s["reported"], s["resolved"], s["closed"]) == (10, 4, 4)
    assert data["street"] == {"code": "451102003", "name": "江南街道"}
    assert data["period"]["label"] == "2020年10月" and data["previous"]["key"] == "2020-09"
    weekly = data["weekly"]
    assert [w["label"] for w in weekly] == ["10/01–10/07", "10/08–10/14", "10/15–10/21",
                                            "10/22–10/28", "10/29–10/31"]
    assert [w["reported"] for w in weekly] == [4, 0, 6, 0, 0]
    assert [w["closed"] for w in weekly] == [3, 1, 0, 0, 0]
    cats = {c["code"]: c for c in data["categories"]}
    assert cats["sanitation"]["reported"] == 6 and data["categories"][0]["code"] == "sanitation"
    assert (cats["road_damage"]["resolved"], cats["road_damage"]["closed"]) == (2, 2)
    assert (cats["street_light"]["reported"], cats["street_light"]["closed"]) == (1, 2)
    assert (cats["parking"]["resolved"], cats["parking"]["closed"]) == (1, 0)
    assert cats["sanitation"]["label"] == "环境卫生"
    ttc = data["time_to_close"]
    assert ttc["count"] == 4 and ttc["median_days"] == pytest.approx(4.5, abs=0.05)
    assert {b["label"]: b["count"] for b in ttc["bins"]} == {
        "<1天": 0, "1–3天": 0, "3–7天": 3, "7–14天": 0, "14–30天": 1, "30–60天": 0, "≥60天": 0}
    assert sum(g["reported"] for g in data["grids"]) == 10
    assert sum(c["reported"] for c in data["communities"]) == 10
    assert len(data["grids"]) == 43 and len(data["communities"]) == 5
    assert data["highlights"][0].startswith("本期上报 10 件")
    assert any("维修成果" in h and "165.5" in h for h in data["highlights"])


def test_needs_clusters_and_indicators(data):
    n = data["needs"]
    assert (n["fix_now"], n["long_term"], n["claimed"], n["done"]) == (1, 1, 0, 1)
    assert [(u["org"], u["claimed"], u["finished"]) for u in n["by_unit"]] == [
        ("城管维修队", 1, 1)]
    assert [i["title"] for i in n["open_items"]] == ["垃圾清运不及时"]
    assert n["open_items"][0]["kind_label"] == "长期问题" and n["open_total"] == 1
    assert len(data["clusters"]) == 1 and data["clusters"][0]["count"] == 5
    assert data["clusters"][0]["geometry"]["type"] == "Polygon"
    ind = {i["key"]: i for i in data["indicators"]}
    assert list(ind) == list(INDICATORS)
    assert ind["closed"]["value"] == 4 and ind["closed"]["text"]["value"] == "4"
    assert ind["closure_rate"]["formula"].startswith("结案数 ÷ 应结案数")
    assert ind["reported"]["text"]["yoy_change"] == "无数据"  # nothing in October 2019
    json.dumps(data, allow_nan=False)  # JSON-able, no NaN: the HTML page can use it as is


def test_open_needs_items_show_their_status_at_the_period_end(hemei):
    # A (on the needs list) was in progress until it was resolved on 5 October and closed
    # on 6 October: in a period ending on 4 October it was open, and in progress, not
    # "closed" as it is today.
    d = report_data(hemei, "2020-10-01..2020-10-04")
    items = {i["title"]: i for i in d["needs"]["open_items"]}
    a = items["新兴南路人行道破损"]
    assert (a["status"], a["status_label"]) == ("in_progress", "处置中")
    assert d["needs"]["open_total"] == 1
    # F, listed on 20 October and never touched since, is "reported" then and now.
    f = {i["title"]: i for i in report_data(hemei, "2020-10-20..2020-10-31")["needs"][
        "open_items"]}["垃圾清运不及时"]
    assert f["status"] == "reported"


def test_a_period_that_includes_now_is_reported_to_date(hemei, tmp_path):
    now = datetime(2020, 10, 15)
    d = report_data(hemei, PERIOD, now=now)
    assert d["period"]["partial"] is True and d["period"]["end"] == "2020-10-15T00:00:00Z"
    # Labelled in Beijing time: 00:00 UTC is 08:00 in Beijing.
    assert d["period"]["label"] == "2020年10月（截至 2020-10-15 08:00 北京时间）"
    # A, B, C and D; G–K were reported from 15 October 08:00, after "now".
    assert d["summary"]["reported"] == 4
    # Overdue and open "at the period end" are now's: F and G–K, due 22–27 October,
    # are not overdue on 15 October (counted against a 1 November end they were 6).
    assert d["summary"]["overdue"] == 0
    assert d["previous"]["end"] == "2020-09-15T00:00:00Z"  # like with like
    en = report_data(hemei, PERIOD, now=now, locale="en")
    assert en["period"]["label"] == "October 2020 (to 2020-10-15 08:00 Beijing time)"
    assert report_data(hemei, PERIOD)["period"]["partial"] is False
    out = tmp_path / "partial.pdf"
    result = monthly_report(hemei, PERIOD, out, data=d)
    if result["font"] is not None and shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(out), "-"],
                              capture_output=True, text=True, check=True, timeout=60).stdout
        assert "截至 2020-10-15 08:00 北京时间" in text


def test_a_period_that_starts_after_now_is_refused(hemei, tmp_path):
    from gis.errors import InvalidInput

    with pytest.raises(InvalidInput) as exc:
        report_data(hemei, "2020-11", now=datetime(2020, 10, 15))
    assert exc.value.field == "period" and "starts after now" in exc.value.message
    with pytest.raises(InvalidInput):
        monthly_report(hemei, "2999-12", tmp_path / "future.pdf")
    assert not (tmp_path / "future.pdf").exists()


def test_english_labels(hemei):
    d = report_data(hemei, PERIOD, locale="en")
    assert d["period"]["label"] == "October 2020"
    assert {c["code"]: c["label"] for c in d["categories"]}["sanitation"] == \
        "Sanitation and litter"
    assert d["needs"]["open_items"][0]["kind_label"] == "Long term"
    assert d["highlights"][0].startswith("10 cases reported")


# -- the PDF -------------------------------------------------------------------------------
def _page_count(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", path.read_bytes()))


def test_pdf_is_valid_with_the_expected_pages(pdf):
    path, result = pdf
    raw = path.read_bytes()
    assert raw.startswith(b"%PDF-") and raw.rstrip().endswith(b"%%EOF")
    assert result["pages"] == PAGES_ZH
    assert _page_count(path) == len(PAGES_ZH)
    assert result["font"] is None or "CJK" in result["font"] or "Hei" in result["font"]
    assert not list(path.parent.glob(".report.pdf.*"))  # the temporary file was moved


def test_pdf_text_has_the_headings_and_repair_totals(pdf):
    path, result = pdf
    if result["font"] is None:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk)")
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils)")
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                          text=True, timeout=60, check=True).stdout
    for heading in ("江南街道", "网格化管理月度报告", "2020年10月", "主要指标", "环比", "同比",
                    "指标定义", "结案数 ÷ 应结案数", "网格地图", "各网格结案率",
                    "每周上报与结案", "结案用时分布", "需求清单", "立行立改", "城管维修队",
                    "办结事项与维修成果", "修复道路、人行道", "点亮路灯", "施划停车位",
                    "铺设沥青补丁", "垃圾清运不及时", "厦良社区"):
        assert heading in text, heading
    pages = text.split("\f")
    fixed = pages[PAGES_ZH.index("办结事项与维修成果")]
    for total in ("165.5", "120", "163.9"):
        assert total in fixed, total
    cover = pages[0]
    assert re.search(r"点亮路灯\s", cover) and "165.5" in cover


def test_page_one_renders_to_png(pdf, tmp_path):
    path, _ = pdf
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm is not installed (apt-get install poppler-utils)")
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "1", str(path),
                    str(tmp_path / "page")], check=True, timeout=60, capture_output=True)
    png = next(tmp_path.glob("page*.png"))
    from PIL import Image

    img = Image.open(png).convert("L")
    assert img.size[0] == pytest.approx(8.27 * 60, abs=2)
    # The dark title band and text on white: far from a blank page.
    hist = img.histogram()
    assert sum(hist[:80]) > 0.1 * img.size[0] * img.size[1]


def test_english_pdf(hemei, tmp_path):
    out = tmp_path / "en.pdf"
    result = monthly_report(hemei, PERIOD, out, locale="en")
    assert out.read_bytes().startswith(b"%PDF")
    assert result["pages"][:3] == ["Cover", "Indicators", "Definitions"]
    assert _page_count(out) == len(result["pages"])
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", str(out), "-"], capture_output=True, text=True,
                              check=True, timeout=60).stdout
        assert "Grid management monthly report" in text and "Street lights relit" in text


def test_cjk_font_is_found_and_its_absence_warns(monkeypatch):
    from matplotlib import font_manager as fm

    family, path = rep.cjk_font()
    if Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc").exists():
        assert family == "Noto Sans CJK SC" and path.endswith(".ttc")
        assert rep._is_cff(path)  # hence Type 3 embedding
    monkeypatch.setattr(fm.fontManager, "ttflist", [])
    with pytest.warns(RuntimeWarning, match="CJK"):
        assert rep.cjk_font() == (None, None)


def test_wrap_counts_cjk_and_keeps_punctuation_on_the_line():
    lines = rep._wrap("结案数除以应结案数。" * 3, 10)
    assert all(sum(rep._em(c) for c in line) <= 10.5 for line in lines)
    assert not any(line.startswith("。") for line in lines)
    assert "".join(lines) == "结案数除以应结案数。" * 3
    words = "closed divided by due for closure"
    lines = rep._wrap(words, 6)
    assert " ".join(lines) == words and len(lines) > 2  # broken at spaces only
    assert all(sum(rep._em(c) for c in line) <= 6 for line in lines)
    assert rep._wrap("", 10) == [""]
    assert math.isclose(rep._em("江"), 1.0)


def test_unknown_street_and_bad_period(hemei, tmp_path):
    from gis.errors import InvalidInput

    with pytest.raises(InvalidInput):
        report_data(hemei, PERIOD, street="999")
    with pytest.raises(InvalidInput):
        monthly_report(hemei, "2020-13", tmp_path / "x.pdf")
    assert not (tmp_path / "x.pdf").exists()


# -- the command ---------------------------------------------------------------------------
def _run(args, instance):
    env = {**os.environ, "HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8"}
    env.pop("HEMEI_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "webapp.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_report(instance, tmp_path):
    from gis.cases import utcnow

    month = f"{utcnow():%Y-%m}"  # the demo cases are from the last 120 days
    out = tmp_path / "monthly.pdf"
    r = _run(["report", "--period", month, "--out", str(out)], instance)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(b"%PDF") and "pages" in r.stderr
    assert _page_count(out) >= len(PAGES_ZH)
    # One language: the command speaks English, whatever the language of the PDF.
    assert f"building the report for {month} to date" in r.stderr
    assert not re.search(r"[\u4e00-\u9fff]", r.stderr), r.stderr
    bad = _run(["report", "--period", "2026-13", "--out", str(tmp_path / "x.pdf")], instance)
    assert bad.returncode != 0 and bad.stderr.startswith("error: ")
    assert "invalid period" in bad.stderr and "Traceback" not in bad.stderr
    # Years whose year before does not exist (year 0), and a month to come: one line each.
    for period, why in (("0001-01", "1900 to 2999"), ("0001-02", "1900 to 2999"),
                        ("2999-12", "starts after now")):
        r = _run(["report", "--period", period, "--out", str(tmp_path / "x.pdf")], instance)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and why in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.pdf").exists()
    nowhere = _run(["report", "--out", str(tmp_path / "no" / "x.pdf")], instance)
    assert nowhere.returncode != 0 and "error: cannot write" in nowhere.stderr


def test_a_month_without_cases_still_makes_a_report(hemei, tmp_path):
    out = tmp_path / "empty.pdf"
    result = monthly_report(hemei, "2019-01", out)
    d = result["data"]
    assert d["summary"]["reported"] == 0 and d["summary"]["closure_rate"] is None
    assert d["categories"] == [] and d["clusters"] == [] and d["time_to_close"]["count"] == 0
    assert d["fixed"]["repairs"]["road_total_m"] == 0 and d["fixed"]["repairs"]["cases"] == 0
    assert result["pages"] == PAGES_ZH and _page_count(out) == len(PAGES_ZH)
