"""Exports: cases as CSV, Excel, GeoJSON and GeoPackage, indicator tables, batching,
background builds and the ``hemei export`` command — on a small hand-built store (every
value known) and on the demo instance. No reporter's name, phone or tracking code may
leave the database in any format."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta

import geopandas as gpd
import openpyxl
import pandas as pd
import pyogrio
import pytest
import sqlalchemy as sa
from shapely.geometry import box

from gis import exports
from gis.accounts import Accounts
from gis.coverage import parse_period
from gis.errors import InvalidInput
from gis.exports import CASE_COLUMNS, CASE_KEYS, CaseFilters
from gis.indicators import INDICATORS, indicators
from gis.settings import read_settings
from gis.storage import cases as cases_table
from gis.storage import open_store

S = "451102003"
C1, C2 = S + "001", S + "002"
K1 = C1 + "C01"
G1, G2, G3 = C1 + "001", C1 + "002", C2 + "001"
NAME, PHONE, CODE = "张秘密", "13912345678", "TRKSECRET42"
LONG = "香槟城小区7栋顶楼连日下雨后天花板渗水、墙皮脱落，住户多次反映，请求尽快维修屋面防水层。"
NOW = datetime(2026, 11, 20, 12, 0, 0)
HEADERS_ZH = [zh for _, zh, _ in CASE_COLUMNS]


def _layers() -> dict:
    def frame(rows, level):
        return gpd.GeoDataFrame(
            {"code": [r[0] for r in rows], "name": [r[1] for r in rows],
             "parent_code": [r[2] for r in rows],
             "households": pd.array([120] * len(rows), dtype="Int64")},
            geometry=[r[3] for r in rows], crs="EPSG:4326")
    return {
        "street": frame([(S, "江南街道", "451102", box(0, 0, 3, 1))], "street"),
        "community": frame([(C1, "厦良社区", S, box(0, 0, 2, 1)),
                            (C2, "点灯社区", S, box(2, 0, 3, 1))], "community"),
        "compound": frame([(K1, "香槟城小区", C1, box(0, 0, 0.5, 0.5))], "compound"),
        "grid": frame([(G1, "厦良社区第1网格", C1, box(0, 0, 1, 1)),
                       (G2, "厦良社区第2网格", C1, box(1, 0, 2, 1)),
                       (G3, "点灯社区第1网格", C2, box(2, 0, 3, 1))], "grid"),
    }


def _row(i: int, *, grid=G1, category="roof_leak", status="reported", created=None,
         title=None, **extra) -> dict:
    created = created or datetime(2026, 10, 1, 8, 0, 0) + timedelta(hours=i)
    community = grid[:12]
    return {
        "category": category, "title": title or f"第{i}号案件", "description": f"描述{i}",
        "lon": {G1: 0.25, G2: 1.5, G3: 2.5}[grid] + i * 1e-4, "lat": 0.25,
        "street_code": S, "community_code": community,
        "compound_code": K1 if grid == G1 else None, "grid_code": grid,
        "status": status, "source": "resident", "created_at": created,
        "updated_at": created, "due_at": created + timedelta(days=5), "row_version": 1,
        "published": False, "rework_count": 0, "extension_count": 0,
        "reporter_name": NAME, "reporter_phone": PHONE,
        "tracking_code": f"{CODE}{i:03d}", **extra,
    }


def _events(row: dict) -> list[dict]:
    return [{"at": row["created_at"], "actor": "t", "from_status": None,
             "to_status": "reported", "note": "", "kind": "transition", "data": None}]


@pytest.fixture
def store(tmp_path):
    """Five cases with every kind of value, reporters planted on each."""
    st = open_store(f"sqlite:///{tmp_path / 'small.sqlite3'}")
    st.save_layers(_layers(), "test")
    org = Accounts(st).add_org("城管维修队", "crew")
    rows = [
        _row(1, title="=1+1", description=LONG, needs_kind="fix_now", assignee_org=org,
             status="dispatched", created=datetime(2026, 10, 2, 9, 30, 15),
             due_at=datetime(2026, 10, 9, 9, 30, 15)),
        _row(2, grid=G2, category="street_light", status="closed",
             resolved_at=datetime(2026, 10, 5, 10, 0), closed_at=datetime(2026, 10, 6, 11, 0),
             rework_count=1, extension_count=2),
        _row(3, grid=G3, category="drainage", created=datetime(2026, 9, 20, 7, 0)),
        _row(4, grid=G3, category="parking", status="rejected",
             closed_at=datetime(2026, 10, 4, 8, 0)),
        _row(5, title="-危险标题", due_at=None),
    ]
    st.import_cases(rows, [_events(r) for r in rows])
    return st


def _csv_frame(chunks) -> pd.DataFrame:
    data = "".join(chunks).encode("utf-8")
    return pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", dtype=str,
                       keep_default_na=False)


# -- the columns ---------------------------------------------------------------------------
def test_columns_are_the_brief_and_never_the_reporter():
    keys = set(CASE_KEYS)
    for needed in ("id", "category", "title", "description", "status", "source",
                   "street_code", "street_name", "community_code", "community_name",
                   "compound_code", "compound_name", "grid_code", "grid_name", "lon", "lat",
                   "created_at", "due_at", "resolved_at", "closed_at", "overdue",
                   "rework_count", "extension_count", "needs_kind", "assignee_org"):
        assert needed in keys
    assert not keys & {"reporter_name", "reporter_phone", "tracking_code"}
    assert all("\u4e00" <= zh[0] <= "\u9fff" for _, zh, _ in CASE_COLUMNS)
    sql = str(exports._case_select())
    assert "reporter" not in sql and "tracking" not in sql


# -- CSV -----------------------------------------------------------------------------------
def test_csv_round_trips_through_pandas_with_chinese_text(store):
    chunks = list(exports.cases_csv(store))
    assert chunks[0].startswith("\ufeff案件编号,")
    df = _csv_frame(chunks)
    assert list(df.columns) == HEADERS_ZH
    assert df["案件编号"].tolist() == ["1", "2", "3", "4", "5"]
    first = df.iloc[0]
    assert first["描述"] == LONG
    assert first["类别"] == "房屋漏水" and first["类别编码"] == "roof_leak"
    assert first["状态"] == "已派遣" and first["来源"] == "居民上报"
    assert first["街道"] == "江南街道" and first["社区"] == "厦良社区"
    assert first["小区"] == "香槟城小区" and first["网格"] == "厦良社区第1网格"
    assert first["网格编码"] == G1 and first["小区编码"] == K1
    assert first["需求清单"] == "立行立改" and first["责任单位"] == "城管维修队"
    # Written in Beijing time (stored 09:30:15 UTC).
    assert first["上报时间（北京时间）"] == "2026-10-02 17:30:15"
    assert first["是否超期"] == "是"  # dispatched and due on 9 October
    # A resident's formula is text, not a formula (CSV injection).
    assert first["标题"] == "'=1+1" and df.iloc[4]["标题"] == "'-危险标题"
    second = df.iloc[1]
    assert second["状态"] == "已结案" and second["是否超期"] == "否"
    assert second["返工次数"] == "1" and second["延期次数"] == "2"
    assert second["结案时间（北京时间）"] == "2026-10-06 19:00:00"
    third = df.iloc[2]
    assert third["小区"] == "" and third["小区编码"] == "" and third["社区"] == "点灯社区"
    assert df.iloc[4]["处置时限（北京时间）"] == ""  # missing, not 0


def test_csv_english_headers_and_labels(store):
    df = _csv_frame(exports.cases_csv(store, locale="en"))
    assert list(df.columns) == [en for _, _, en in CASE_COLUMNS]
    assert df.iloc[0]["Category"] == "Leaking roof" and df.iloc[0]["Status"] == "Dispatched"
    assert df.iloc[0]["Overdue"] == "yes" and df.iloc[0]["Needs list"] == "Fix now"
    assert df.iloc[0]["Community"] == "厦良社区"  # names stay as they are


def test_filters(store):
    ids = _csv_frame(exports.cases_csv(store, period="2026-10"))["案件编号"].tolist()
    assert ids == ["1", "2", "4", "5"]  # case 3 was reported in September
    assert _csv_frame(exports.cases_csv(store, category="drainage"))["案件编号"].tolist() == ["3"]
    assert _csv_frame(exports.cases_csv(store, grid=G3))["案件编号"].tolist() == ["3", "4"]
    assert _csv_frame(exports.cases_csv(store, community=C1))["案件编号"].tolist() == [
        "1", "2", "5"]
    assert _csv_frame(exports.cases_csv(store, status="open"))["案件编号"].tolist() == [
        "1", "3", "5"]
    f = CaseFilters.parse(period=parse_period("2026-10"), community=C1)
    assert exports.count_cases(store, f) == 3
    with pytest.raises(InvalidInput) as e:
        exports.cases_csv(store, category="nope")
    assert e.value.field == "category"
    with pytest.raises(InvalidInput) as e:
        exports.cases_csv(store, period="2026-13")
    assert e.value.field == "period"
    with pytest.raises(InvalidInput):
        exports.cases_csv(store, status="lost")
    with pytest.raises(TypeError):
        exports.cases_csv(store, f, grid=G1)


# -- GeoJSON -------------------------------------------------------------------------------
def test_geojson_parses_with_the_right_count(store):
    fc = json.loads("".join(exports.cases_geojson(store)))
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 5
    f = fc["features"][0]
    assert f["id"] == 1 and f["geometry"]["type"] == "Point"
    assert f["geometry"]["coordinates"] == pytest.approx([0.2501, 0.25])
    p = f["properties"]
    assert set(p) == set(CASE_KEYS)
    assert p["grid_name"] == "厦良社区第1网格" and p["category"] == "房屋漏水"
    assert p["created_at"] == "2026-10-02T09:30:15Z" and p["overdue"] is True
    assert p["title"] == "=1+1"  # data, not a spreadsheet: kept as written
    assert fc["features"][2]["properties"]["compound_code"] is None
    empty = json.loads("".join(exports.cases_geojson(store, category="public_toilet")))
    assert empty["features"] == []


# -- Excel ---------------------------------------------------------------------------------
def test_xlsx_opens_with_chinese_headers_dates_and_widths(store, tmp_path):
    path = tmp_path / "cases.xlsx"
    assert exports.cases_xlsx(path, store) == 5
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["案件", "说明"]
    ws = wb["案件"]
    rows = list(ws.iter_rows(values_only=True))
    assert list(rows[0]) == HEADERS_ZH
    assert len(rows) == 6
    col = {h: i for i, h in enumerate(HEADERS_ZH)}
    first = rows[1]
    assert first[col["案件编号"]] == 1
    assert first[col["描述"]] == LONG
    # A Beijing-time date cell (stored 09:30:15 UTC).
    assert first[col["上报时间（北京时间）"]] == datetime(2026, 10, 2, 17, 30, 15)
    assert isinstance(first[col["处置时限（北京时间）"]], datetime)
    assert first[col["经度"]] == pytest.approx(0.2501)
    assert first[col["是否超期"]] == "是"
    assert first[col["网格"]] == "厦良社区第1网格"
    assert rows[2][col["结案时间（北京时间）"]] == datetime(2026, 10, 6, 19, 0)
    assert rows[5][col["处置时限（北京时间）"]] is None
    # "=1+1" is stored as text, never as a formula.
    cell = ws.cell(row=2, column=col["标题"] + 1)
    assert cell.value == "=1+1" and cell.data_type == "s"
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == "A1:AA6"
    assert ws.cell(row=1, column=1).font.b
    assert ws.cell(row=2, column=col["上报时间（北京时间）"] + 1).is_date

    def width(header):
        return ws.column_dimensions[openpyxl.utils.get_column_letter(col[header] + 1)].width

    # Sized to the content, CJK counting double: the description is capped at 60, the
    # names are wider than Excel's default 8.43, the id column stays narrow.
    assert width("描述") == 60
    assert width("网格") > 8.43 and width("网格") >= exports.display_width("厦良社区第1网格")
    assert width("标题") > 8.43
    assert width("案件编号") < width("网格")
    notes = dict(wb["说明"].iter_rows(values_only=True))
    assert notes["案件数"] == "5" and "时间为北京时间（UTC+8）" in notes["说明"]
    assert "导出时间（北京时间）" in notes


def test_display_width_counts_cjk_double():
    assert exports.display_width("abc") == 3
    assert exports.display_width("江南街道") == 8
    assert exports.display_width("第1网格（北）") == 13
    assert exports.display_width("短\n长长长") == 6
    assert exports.display_width(None) == 0


# -- GeoPackage ----------------------------------------------------------------------------
def test_gpkg_opens_with_pyogrio_and_ogrinfo(store, tmp_path):
    path = tmp_path / "cases.gpkg"
    assert exports.cases_gpkg(path, store) == 5
    assert pyogrio.list_layers(path)[0][0] == "cases"
    gdf = pyogrio.read_dataframe(path, layer="cases")
    assert len(gdf) == 5 and gdf.crs.to_epsg() == 4326
    assert set(CASE_KEYS) <= set(gdf.columns)
    first = gdf.iloc[0]
    assert first["grid_name"] == "厦良社区第1网格" and first["category"] == "房屋漏水"
    assert first["street_name"] == "江南街道" and first["assignee_org"] == "城管维修队"
    assert first["description"] == LONG
    assert first.geometry.x == pytest.approx(0.2501) and first.geometry.y == 0.25
    assert pd.Timestamp(first["created_at"]) == pd.Timestamp("2026-10-02 09:30:15", tz="UTC")
    assert bool(first["overdue"]) is True and int(gdf.iloc[1]["rework_count"]) == 1
    if shutil.which("ogrinfo") is None:
        pytest.skip("GDAL's ogrinfo is not installed (apt-get install gdal-bin)")
    r = subprocess.run(["ogrinfo", "-so", str(path), "cases"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Layer name: cases" in r.stdout and "Feature Count: 5" in r.stdout
    assert "EPSG\",4326" in r.stdout or "WGS 84" in r.stdout
    assert "grid_name: String" in r.stdout
    assert "partially supported" not in r.stderr  # GeoPackage 1.2, readable by older GDAL
    listing = subprocess.run(["ogrinfo", "-so", str(path)], capture_output=True, text=True,
                             timeout=60)
    assert "cases (Point)" in listing.stdout


def test_empty_exports_are_valid(store, tmp_path):
    f = CaseFilters.parse(category="public_toilet")
    assert exports.cases_gpkg(tmp_path / "e.gpkg", store, f) == 0
    gdf = pyogrio.read_dataframe(tmp_path / "e.gpkg")
    assert len(gdf) == 0 and gdf.crs.to_epsg() == 4326
    assert exports.cases_xlsx(tmp_path / "e.xlsx", store, f) == 0
    rows = list(openpyxl.load_workbook(tmp_path / "e.xlsx")["案件"].values)
    assert list(rows[0]) == HEADERS_ZH and len(rows) == 1
    assert len(_csv_frame(exports.cases_csv(store, f))) == 0


def test_a_failed_export_leaves_no_file(store, tmp_path, monkeypatch):
    path = tmp_path / "boom.xlsx"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(exports, "_notes_sheet", boom)
    with pytest.raises(RuntimeError):
        exports.cases_xlsx(path, store)
    assert not path.exists() and not list(tmp_path.glob(".boom.xlsx.*"))
    with pytest.raises(FileNotFoundError):
        exports.cases_xlsx(tmp_path / "no" / "such" / "dir.xlsx", store)
    monkeypatch.setattr(exports, "EXCEL_MAX_ROWS", 4)
    with pytest.raises(InvalidInput, match="do not fit in one Excel sheet"):
        exports.cases_xlsx(tmp_path / "big.xlsx", store)
    assert not (tmp_path / "big.xlsx").exists()


# -- privacy -------------------------------------------------------------------------------
def test_no_reporter_name_phone_or_tracking_code_in_any_format(store, tmp_path):
    with sqlite3.connect(tmp_path / "small.sqlite3") as db:  # they are there to be leaked
        assert db.execute("select count(*) from cases where reporter_phone = ?",
                          (PHONE,)).fetchone()[0] == 5
    secrets = [NAME, PHONE, CODE]
    texts = {"csv": "".join(exports.cases_csv(store)),
             "csv-en": "".join(exports.cases_csv(store, locale="en")),
             "geojson": "".join(exports.cases_geojson(store))}
    exports.cases_xlsx(tmp_path / "p.xlsx", store)
    with zipfile.ZipFile(tmp_path / "p.xlsx") as z:
        texts["xlsx"] = "".join(z.read(n).decode("utf-8") for n in z.namelist()
                                if n.endswith(".xml"))
    exports.cases_gpkg(tmp_path / "p.gpkg", store)
    raw = (tmp_path / "p.gpkg").read_bytes()
    assert "厦良社区第1网格".encode() in raw  # the search would find text if it were there
    for secret in secrets:
        assert secret.encode() not in raw
        for fmt, text in texts.items():
            assert secret not in text, fmt
    gdf = pyogrio.read_dataframe(tmp_path / "p.gpkg")
    assert not any(PHONE in str(v) for v in gdf.drop(columns="geometry").to_numpy().ravel())


# -- batching ------------------------------------------------------------------------------
def test_batches_of_seven_give_every_one_of_fifty_cases_exactly_once(tmp_path):
    st = open_store(f"sqlite:///{tmp_path / 'fifty.sqlite3'}")
    st.save_layers(_layers(), "test")
    rows = [_row(i, grid=(G1, G2, G3)[i % 3]) for i in range(50)]
    st.import_cases(rows, [_events(r) for r in rows])
    # Ids with gaps: keyset pagination must not assume consecutive ids.
    with st.engine.begin() as conn:
        conn.execute(sa.delete(sa.table("case_events")).where(
            sa.column("case_id").in_([10, 11, 30])))
        conn.execute(sa.delete(cases_table).where(cases_table.c.id.in_([10, 11, 30])))
    want = sorted(set(range(1, 51)) - {10, 11, 30})
    calls = []
    batches = list(exports.case_batches(st, batch_size=7,
                                        progress=lambda d, t: calls.append((d, t))))
    assert [len(b) for b in batches] == [7] * 6 + [5]
    assert calls[0] == (0, 47) and calls[-1] == (47, 47) and len(calls) == 8
    assert [r["id"] for b in batches for r in b] == want

    csv_ids = _csv_frame(exports.cases_csv(st, batch_size=7))["案件编号"].astype(int).tolist()
    geo_ids = [f["id"] for f in json.loads("".join(exports.cases_geojson(st, batch_size=7)))[
        "features"]]
    exports.cases_xlsx(tmp_path / "b.xlsx", st, batch_size=7)
    xlsx_ids = [r[0] for r in openpyxl.load_workbook(tmp_path / "b.xlsx")["案件"].iter_rows(
        min_row=2, values_only=True)]
    exports.cases_gpkg(tmp_path / "b.gpkg", st, batch_size=7)
    gpkg_ids = pyogrio.read_dataframe(tmp_path / "b.gpkg")["id"].tolist()
    for got in (csv_ids, geo_ids, xlsx_ids, gpkg_ids):
        assert got == want
    with pytest.raises(InvalidInput):
        list(exports.case_batches(st, batch_size=0))


# -- indicator tables ----------------------------------------------------------------------
def test_indicator_tables_have_the_indicator_names(store, tmp_path):
    df = indicators(store, "grid", parse_period("2026-10"))
    csv_df = _csv_frame(exports.indicators_csv(df))
    cols = list(csv_df.columns)
    assert cols[:2] == ["网格编码", "网格名称"]
    assert "上报数" in cols and "结案率（%）" in cols and "结案率·环比（百分点）" in cols
    assert "上报数·同比（%）" in cols and "平均处置时长（小时）" in cols
    assert "结案率·排名" in cols
    for ind in INDICATORS.values():
        assert any(c.startswith(ind.zh) for c in cols)
    g2 = csv_df.set_index("网格编码").loc[G2]
    assert g2["网格名称"] == "厦良社区第2网格"
    assert g2["结案数"] == "1" and g2["上报数"] == "1"
    assert float(g2["结案率（%）"]) == 100.0
    g3 = csv_df.set_index("网格编码").loc[G3]
    assert g3["结案率（%）"] == "0.0"  # September's case is overdue and not closed
    assert g3["按期结案率（%）"] == ""  # nothing closed: no data, not 0
    en = _csv_frame(exports.indicators_csv(df, locale="en"))
    assert list(en.columns)[:2] == ["Grid code", "Grid"]
    assert "Closure rate (%)" in en.columns and "Closure rate MoM change (pp)" in en.columns

    path = tmp_path / "ind.xlsx"
    assert exports.indicators_xlsx(path, df) == len(df)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["指标", "指标说明"]
    ws = wb["指标"]
    header = [c.value for c in ws[1]]
    assert header == cols and ws.freeze_panes == "A2"
    row = {h: v for h, v in zip(header, [c.value for c in ws[3]], strict=True)}
    assert row["网格编码"] == G2 and row["结案率（%）"] == 100.0 and row["结案数"] == 1
    defs = dict(wb["指标说明"].iter_rows(values_only=True))
    assert defs["结案率（%）"] == INDICATORS["closure_rate"].formula_zh
    assert defs["统计期"].startswith("2026-10")
    org = indicators(store, "org", parse_period("2026-10"))
    org_cols = list(_csv_frame(exports.indicators_csv(org)).columns)
    assert org_cols[:2] == ["单位编号", "单位名称"]


# -- background builds ---------------------------------------------------------------------
def test_background_exports_build_a_file_and_report_progress(store, tmp_path):
    jobs = exports.BackgroundExports(tmp_path / "jobs")
    job = jobs.submit(lambda path, progress: exports.cases_xlsx(path, store, batch_size=2,
                                                                progress=progress),
                      "案件 cases.xlsx")
    done = jobs.wait(job.id, timeout=60)
    assert done.state == "done" and done.result == 5, done.error
    assert (done.done, done.total) == (5, 5)
    assert done.path.name == "案件cases.xlsx" and done.path.exists()  # no spaces or slashes
    assert openpyxl.load_workbook(done.path)["案件"].max_row == 6
    assert done.to_dict()["state"] == "done"

    def fail(path, progress):
        raise InvalidInput("bad period", field="period")

    bad = jobs.wait(jobs.submit(fail, "x.csv").id, timeout=10)
    assert bad.state == "failed" and "bad period" in bad.error
    jobs.forget(job.id)
    assert jobs.get(job.id) is None and not done.path.exists()


# -- the demo instance ---------------------------------------------------------------------
def test_demo_instance_exports_match_the_database(instance, tmp_path):
    from gis.service import Hemei

    h = Hemei(read_settings(env={}, INSTANCE=str(instance)))
    h.ensure_initialised()
    total = exports.count_cases(h.store)
    assert total > 300
    path = tmp_path / "demo.xlsx"
    seen = []
    assert exports.cases_xlsx(path, h.store, progress=lambda d, t: seen.append((d, t))) == total
    assert seen[-1] == (total, total)
    ws = openpyxl.load_workbook(path)["案件"]
    rows = list(ws.iter_rows(values_only=True))
    assert list(rows[0]) == HEADERS_ZH and len(rows) == total + 1
    col = {hd: i for i, hd in enumerate(HEADERS_ZH)}
    for r in rows[1::97]:
        case = h.store.get_case(r[col["案件编号"]])
        assert r[col["标题"]] == case.title
        assert r[col["网格编码"]] == case.grid_code
        assert r[col["网格"]] == h.locator.name("grid", case.grid_code)
        assert r[col["上报时间（北京时间）"]] == (case.created_at
                                            + timedelta(hours=8)).replace(microsecond=0)
        assert r[col["状态编码"]] == case.status

    gpkg = tmp_path / "demo.gpkg"
    assert exports.cases_gpkg(gpkg, h.store, batch_size=1000) == total
    gdf = pyogrio.read_dataframe(gpkg)
    assert len(gdf) == total and gdf.crs.to_epsg() == 4326
    assert set(gdf["street_name"]) == {"江南街道"}
    assert gdf["community_name"].str.endswith("社区").all()
    assert math.isclose(gdf.geometry.x.mean(), gdf["lon"].mean())


# -- the command ---------------------------------------------------------------------------
def _run(args, instance):
    env = {**os.environ, "HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8"}
    env.pop("HEMEI_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "webapp.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_export_cases_xlsx_and_errors(instance, tmp_path):
    out = tmp_path / "cli.xlsx"
    r = _run(["export", "cases", "--format", "xlsx", "--out", str(out), "--batch-size",
              "100"], instance)
    assert r.returncode == 0, r.stderr
    assert "exporting cases" in r.stderr and "wrote" in r.stderr  # one language: English
    ws = openpyxl.load_workbook(out)["案件"]
    assert [c.value for c in ws[1]] == HEADERS_ZH and ws.max_row > 300

    csv_out = tmp_path / "lights.csv"
    r = _run(["export", "cases", "--out", str(csv_out), "--category", "street_light"],
             instance)
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(csv_out, encoding="utf-8-sig", dtype=str)
    assert len(df) > 0 and set(df["类别"]) == {"路灯不亮"}

    r = _run(["export", "indicators", "--level", "community", "--period", "30d",
              "--out", "-"], instance)
    assert r.returncode == 0, r.stderr
    assert r.stdout.lstrip("\ufeff").startswith("社区编码,社区名称,上报数")

    for args, message in (
        (["export", "cases", "--out", str(tmp_path / "x.csv"), "--period", "2026-13"],
         "invalid period"),
        (["export", "cases", "--out", str(tmp_path / "x.csv"), "--grid", "nope"],
         "unknown grid"),
        (["export", "cases", "--out", str(tmp_path / "x.txt")], "cannot tell the format"),
        (["export", "cases", "--out", str(tmp_path / "no" / "x.csv")], "cannot write"),
        (["export", "indicators", "--period", "soon", "--out", str(tmp_path / "i.csv")],
         "invalid period"),
    ):
        r = _run(args, instance)
        assert r.returncode != 0, args
        assert r.stderr.strip().splitlines()[-1].startswith("error: ")
        assert message in r.stderr and "Traceback" not in r.stderr
