"""Exports over HTTP: streamed CSV/GeoJSON, background Excel/GeoPackage with a download."""

from __future__ import annotations

import csv
import io
import time

import openpyxl
import pyogrio
import pytest


def test_csv_is_streamed_with_chinese_headers_and_every_case(client):
    r = client.get("/api/v1/exports/cases.csv")
    assert r.status_code == 200 and r.is_streamed
    text = r.get_data().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    total = client.get("/api/v1/issues?limit=1").get_json()["numberMatched"]
    assert len(rows) == total + 1
    assert any("网格" in h for h in rows[0])


def test_geojson_export_filters_by_grid(client, hemei):
    code = hemei.grid_summary().sort_values("total").iloc[-1]["code"]
    fc = client.get(f"/api/v1/exports/cases.geojson?grid={code}").get_json()
    want = client.get(f"/api/v1/issues?grid={code}&limit=1").get_json()["numberMatched"]
    assert len(fc["features"]) == want > 0


def _wait(client, url):
    for _ in range(200):
        job = client.get(url).get_json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError("export did not finish")


@pytest.mark.parametrize("fmt", ["xlsx", "gpkg"])
def test_excel_and_geopackage_are_built_in_the_background(client, tmp_path, fmt):
    r = client.get(f"/api/v1/exports/cases.{fmt}?period=90d")
    assert r.status_code == 202
    job = _wait(client, r.headers["Location"])
    assert job["state"] == "done", job
    f = tmp_path / f"out.{fmt}"
    f.write_bytes(client.get(job["download"]).data)
    if fmt == "xlsx":
        ws = openpyxl.load_workbook(f).worksheets[0]
        assert ws.max_row == job["total"] + 1
    else:
        df = pyogrio.read_dataframe(f)
        assert len(df) == job["total"] and df.crs.to_epsg() == 4326


def test_exports_are_for_staff(public_client, client, auth):
    assert public_client.get("/api/v1/exports/cases.csv").status_code == 401
    crew = client.get("/api/v1/exports/cases.csv", headers=auth("crew"))
    assert crew.status_code == 403
    assert client.get("/api/v1/exports/cases.csv", headers=auth("planner")).status_code == 200


def test_bad_export_requests(client):
    assert client.get("/api/v1/exports/cases.pdf").status_code == 404
    r = client.get("/api/v1/exports/cases.csv?period=someday")
    assert r.status_code == 400 and r.get_json()["error"]["field"] == "period"
    assert client.get("/api/v1/exports/jobs/nope").status_code == 404


def test_indicators_export(client, tmp_path):
    r = client.get("/api/v1/exports/indicators.xlsx?level=community&period=90d")
    assert r.status_code == 200
    (tmp_path / "i.xlsx").write_bytes(r.data)
    ws = openpyxl.load_workbook(tmp_path / "i.xlsx").worksheets[0]
    assert ws.max_row == 6  # header + 5 communities


# -- bad filters are a 400 naming the parameter, never a 500 or an empty file ---------------
@pytest.mark.parametrize("fmt", ["csv", "xlsx", "geojson", "gpkg"])
@pytest.mark.parametrize("param, value", [("grid", "999"), ("community", "abc")])
def test_an_unknown_area_is_refused_not_an_empty_file(client, fmt, param, value):
    # Was 200 with no rows, while /api/v1/clusters?grid=999 said "unknown grid '999'".
    r = client.get(f"/api/v1/exports/cases.{fmt}?{param}={value}")
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["field"] == param and f"unknown {param} '{value}'" == err["message"]


@pytest.mark.parametrize("period, why", [
    ("0001-01", "1900 to 2999"),  # was a 500: OverflowError in Period.previous
    ("0001-01-01..0001-01-31", "1900 to 2999"),
    ("0001-02", "1900 to 2999"),
    ("2030-01", "starts after now"),
])
@pytest.mark.parametrize("path", ["indicators.csv", "indicators.xlsx", "cases.csv",
                                  "cases.xlsx"])
def test_extreme_and_future_periods_are_refused(client, path, period, why):
    r = client.get(f"/api/v1/exports/{path}?period={period}")
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["field"] == "period" and why in err["message"]


def test_the_indicators_export_follows_a_category(client, tmp_path):
    api = client.get("/api/v1/indicators?level=community&period=90d&category=roof_leak"
                     ).get_json()
    r = client.get("/api/v1/exports/indicators.csv?level=community&period=90d"
                   "&category=roof_leak")
    assert r.status_code == 200
    rows = list(csv.reader(io.StringIO(r.get_data().decode("utf-8-sig"))))
    col = rows[0].index("上报数")
    assert [int(x[col]) for x in rows[1:]] == [row["reported"] for row in api["rows"]]
    every = client.get("/api/v1/indicators?level=community&period=90d").get_json()
    assert sum(row["reported"] for row in api["rows"]) < sum(
        row["reported"] for row in every["rows"])
    x = client.get("/api/v1/exports/indicators.xlsx?level=community&period=90d"
                   "&category=roof_leak")
    (tmp_path / "i.xlsx").write_bytes(x.data)
    notes = openpyxl.load_workbook(tmp_path / "i.xlsx").worksheets[1]
    assert ("类别", "房屋漏水") in [(a.value, b.value) for a, b in notes.iter_rows()]
    assert client.get("/api/v1/exports/indicators.csv?category=nothing").status_code == 400
