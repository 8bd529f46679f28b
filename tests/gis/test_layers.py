"""Tests for gis.layers: every file is written in tmp_path from a layer whose content is known.

The reference layer is two grids of Xialiang community near lon 111.57, lat 24.40 (Hezhou),
built in EPSG:4326; files are written in the CRS and encoding under test and read back.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
import zipfile

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from shapely.geometry import LineString, Point, Polygon, box

from gis.errors import LayerError
from gis.layers import LEVELS, PARENT, read_layer, read_layer_set

NAMES = ["厦良社区第1网格", "厦良社区第2网格"]
CODES = [451102003001001, 451102003001002]
PARENT_CODE = "451102003001"
COLUMNS = ["code", "name", "parent_code", "households", "geometry"]


def grids(**columns) -> gpd.GeoDataFrame:
    """The reference layer in EPSG:4326, with file-style column names."""
    data = columns or {
        "grid_code": CODES,
        "grid_name": NAMES,
        "parent_code": [PARENT_CODE] * 2,  # becomes parent_cod in a shapefile
        "households": [120, 85],
    }
    shapes = [box(111.570, 24.400, 111.571, 24.401), box(111.571, 24.400, 111.572, 24.401)]
    return gpd.GeoDataFrame(data, geometry=shapes, crs=4326)


def write(frame: gpd.GeoDataFrame, path, **kwargs):
    with warnings.catch_warnings():
        # GDAL warns when it cuts "parent_code" to "parent_cod": that cut is under test.
        warnings.simplefilter("ignore", RuntimeWarning)
        pyogrio.write_dataframe(frame, path, **kwargs)
    return path


def gbk_shapefile(tmp_path, name="grids", crs=4547) -> object:
    """The reference layer as a GBK shapefile in CGCS2000 / Gauss–Krüger, with no .cpg."""
    path = write(grids().to_crs(crs), tmp_path / f"{name}.shp", encoding="GBK")
    path.with_suffix(".cpg").unlink(missing_ok=True)
    return path


def assert_reference(layer: gpd.GeoDataFrame):
    assert list(layer.columns) == COLUMNS
    assert layer.crs.to_epsg() == 4326
    assert list(layer.index) == [0, 1]
    assert layer["code"].tolist() == [str(c) for c in CODES]
    assert layer["name"].tolist() == NAMES
    assert layer["parent_code"].tolist() == [PARENT_CODE] * 2
    assert str(layer["households"].dtype) == "Int64"
    assert layer["households"].tolist() == [120, 85]
    expected = shapely.normalize(np.asarray(grids().geometry.array))
    actual = shapely.normalize(np.asarray(layer.geometry.array))
    assert shapely.equals_exact(actual, expected, tolerance=1e-6).all()


# EPSG:4547 is CGCS2000 Gauss–Krüger CM 114°E; 4546 (CM 111°E) is Hezhou's own zone.
@pytest.mark.parametrize("epsg", [4547, 4546])
def test_gbk_shapefile_in_gauss_kruger_without_cpg(tmp_path, epsg):
    path = gbk_shapefile(tmp_path, crs=epsg)
    assert pyogrio.read_info(path)["crs"] == f"EPSG:{epsg}"
    assert not path.with_suffix(".cpg").exists()
    dbf = path.with_suffix(".dbf").read_bytes()
    assert "厦良".encode("gbk") in dbf  # the file really is GBK, not UTF-8
    with pytest.raises(UnicodeDecodeError):
        dbf.decode("utf-8")
    assert "parent_cod" in pyogrio.read_info(path)["fields"]
    assert_reference(read_layer(path, "grid"))


def test_gbk_field_names_are_decoded(tmp_path):
    frame = grids(网格编码=CODES, 网格名称=NAMES, 上级编码=[PARENT_CODE] * 2, 户数=[120, 85])
    path = write(frame.to_crs(4547), tmp_path / "grids.shp", encoding="GBK")
    path.with_suffix(".cpg").unlink(missing_ok=True)
    assert_reference(read_layer(path, "grid"))


def test_utf8_cpg_is_honoured(tmp_path):
    path = write(grids().to_crs(4547), tmp_path / "grids.shp", encoding="UTF-8")
    assert path.with_suffix(".cpg").read_text().strip().upper() == "UTF-8"
    assert_reference(read_layer(path, "grid"))


@pytest.mark.parametrize("cpg", ["GBK", "936", "ANSI 936", "CP936", "GB18030"])
def test_gbk_cpg_spellings(tmp_path, cpg):
    path = gbk_shapefile(tmp_path)
    path.with_suffix(".cpg").write_text(cpg)
    assert_reference(read_layer(path, "grid"))


def test_utf8_shapefile_without_cpg_is_detected(tmp_path):
    path = write(grids().to_crs(4547), tmp_path / "grids.shp", encoding="UTF-8")
    path.with_suffix(".cpg").unlink()
    assert_reference(read_layer(path, "grid"))


def test_forced_encoding(tmp_path):
    path = gbk_shapefile(tmp_path)
    assert_reference(read_layer(path, "grid", encoding="gbk"))
    # A wrong .cpg loses to a forced encoding.
    path.with_suffix(".cpg").write_text("UTF-8")
    assert_reference(read_layer(path, "grid", encoding="GB18030"))


def test_forcing_the_wrong_encoding_is_a_layer_error(tmp_path):
    path = gbk_shapefile(tmp_path)
    with pytest.raises(LayerError, match="encoding") as info:
        read_layer(path, "grid", encoding="UTF-8")
    assert info.value.field == "encoding"


def test_unknown_encoding(tmp_path):
    with pytest.raises(LayerError, match="klingon") as info:
        read_layer(gbk_shapefile(tmp_path), "grid", encoding="klingon")
    assert info.value.field == "encoding"


def zip_parts(shp, zip_path, folder="", skip=()):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for part in shp.parent.glob(shp.stem + ".*"):
            if part.suffix not in skip:
                archive.write(part, folder + part.name)
    return zip_path


def test_zipped_shapefile(tmp_path):
    (tmp_path / "src").mkdir()
    shp = gbk_shapefile(tmp_path / "src")
    path = zip_parts(shp, tmp_path / "grids.zip", folder="边界/")
    with zipfile.ZipFile(path, "a") as archive:  # macOS junk that must be ignored
        archive.writestr("__MACOSX/边界/._grids.shp", b"\0\5\26\7")
    assert_reference(read_layer(path, "grid"))


def test_zip_with_several_shapefiles(tmp_path):
    (tmp_path / "a").mkdir()
    first = gbk_shapefile(tmp_path / "a", name="wangge")
    second = write(grids().iloc[:1], tmp_path / "a" / "other.shp", encoding="UTF-8")
    path = zip_parts(first, tmp_path / "two.zip")
    with zipfile.ZipFile(path, "a") as archive:
        for part in second.parent.glob("other.*"):
            archive.write(part, part.name)
    with pytest.raises(LayerError, match="other.shp, wangge.shp") as info:
        read_layer(path, "grid")
    assert info.value.details["layers"] == ["other.shp", "wangge.shp"]
    assert_reference(read_layer(path, "grid", source_layer="wangge"))
    assert len(read_layer(path, "grid", source_layer="other.shp")) == 1


def test_zip_shapefile_named_like_the_level_is_chosen(tmp_path):
    (tmp_path / "a").mkdir()
    shp = gbk_shapefile(tmp_path / "a", name="grid")
    path = zip_parts(shp, tmp_path / "layers.zip")
    with zipfile.ZipFile(path, "a") as archive:
        other = write(grids().iloc[:1], tmp_path / "a" / "community.shp", encoding="UTF-8")
        for part in other.parent.glob("community.*"):
            archive.write(part, part.name)
    assert_reference(read_layer(path, "grid"))


def test_zip_missing_dbf_or_without_shapefile(tmp_path):
    (tmp_path / "a").mkdir()
    shp = gbk_shapefile(tmp_path / "a")
    path = zip_parts(shp, tmp_path / "nodbf.zip", skip={".dbf"})
    with pytest.raises(LayerError, match=r"\.dbf"):
        read_layer(path, "grid")
    empty = tmp_path / "readme.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(LayerError, match="no shapefile"):
        read_layer(empty, "grid")


def test_geojson(tmp_path):
    path = write(grids(), tmp_path / "grids.geojson")
    assert_reference(read_layer(path, "grid"))


def test_geopackage_in_cgcs2000_with_other_layer_name(tmp_path):
    path = write(grids().to_crs(4490), tmp_path / "boundaries.gpkg", layer="网格_2024")
    assert_reference(read_layer(path, "grid"))


def test_geopackage_with_several_layers(tmp_path):
    path = tmp_path / "boundaries.gpkg"
    write(grids(), path, layer="wangge_2024")
    write(grids().iloc[:1], path, layer="draft")
    with pytest.raises(LayerError, match="wangge_2024") as info:
        read_layer(path, "grid")
    assert info.value.field == "source_layer"
    assert "draft" in info.value.message
    assert_reference(read_layer(path, "grid", source_layer="wangge_2024"))
    with pytest.raises(LayerError, match="nope"):
        read_layer(path, "grid", source_layer="nope")
    write(grids(), path, layer="Grid")  # named like the level: chosen without asking
    assert_reference(read_layer(path, "grid"))


def test_no_prj_needs_crs(tmp_path):
    path = gbk_shapefile(tmp_path)
    path.with_suffix(".prj").unlink()
    with pytest.raises(LayerError, match="--crs") as info:
        read_layer(path, "grid")
    assert info.value.field == "crs"
    assert_reference(read_layer(path, "grid", crs="EPSG:4547"))
    assert_reference(read_layer(path, "grid", crs=4547))


def test_unknown_crs(tmp_path):
    with pytest.raises(LayerError, match="EPSG:999999") as info:
        read_layer(gbk_shapefile(tmp_path), "grid", crs="EPSG:999999")
    assert info.value.field == "crs"


def test_wrong_crs_is_caught_by_the_coordinate_check(tmp_path):
    path = gbk_shapefile(tmp_path)  # metres in EPSG:4547
    with pytest.raises(LayerError, match="longitude ±180"):
        read_layer(path, "grid", crs="EPSG:4326")
    # Degrees taken for Gauss–Krüger metres land near the equator, far from the zone.
    degrees = write(grids(), tmp_path / "deg.shp", encoding="UTF-8")
    with pytest.raises(LayerError, match="far outside"):
        read_layer(degrees, "grid", crs="EPSG:4547")


def test_explicit_field_mapping_wins(tmp_path):
    # Both columns are recognised; grid_code ranks first unless told otherwise.
    frame = grids(grid_code=["old-1", "old-2"], GRID_ID=CODES, 名称=NAMES,
                  SJBM=[PARENT_CODE] * 2, HS=[120, 85])
    path = write(frame, tmp_path / "grids.gpkg")
    assert read_layer(path, "grid")["code"].tolist() == ["old-1", "old-2"]
    assert_reference(read_layer(path, "grid", fields={"code": "GRID_ID"}))
    assert_reference(read_layer(path, "grid", fields={"code": "grid_id"}))  # any case


def test_mapping_to_a_missing_column(tmp_path):
    path = write(grids(), tmp_path / "grids.gpkg")
    with pytest.raises(LayerError, match="BIANMA") as info:
        read_layer(path, "grid", fields={"code": "BIANMA"})
    assert info.value.field == "fields"
    assert "grid_code" in info.value.message  # the columns that do exist
    with pytest.raises(LayerError, match="colour"):
        read_layer(path, "grid", fields={"colour": "grid_code"})


def test_missing_name_column(tmp_path):
    path = write(grids(grid_code=CODES, remark=["a", "b"]), tmp_path / "grids.gpkg")
    with pytest.raises(LayerError, match="no name column") as info:
        read_layer(path, "grid")
    assert info.value.field == "name"
    assert info.value.details["columns"] == ["grid_code", "remark"]


@pytest.mark.parametrize(
    "columns",
    [
        ("wgbm", "mc", "sjbm", "hs"),
        ("GRIDCODE", "GRIDNAME", "PCODE", "HOUSEHOLD"),
        ("网格编码", "网格名称", "上级编码", "户数"),
        ("Grid Code", "Name", "parent", "househol"),
        ("id_code", "名称", "comm_code", "households"),
        ("CODE", "NAME", "PARENT_COD", "HOUSEHOLDS"),
    ],
)
def test_column_variants(tmp_path, columns):
    frame = grids(**dict(zip(columns, [CODES, NAMES, [PARENT_CODE] * 2, [120, 85]],
                             strict=True)))
    assert_reference(read_layer(write(frame, tmp_path / "g.gpkg"), "grid"))


def test_level_specific_codes(tmp_path):
    # comm_code is a community's own code but a grid's parent code.
    frame = grids(comm_code=["451102003001", "451102003002"], 社区名称=["厦良社区", "点灯社区"],
                  street_code=["451102003"] * 2)
    layer = read_layer(write(frame, tmp_path / "c.gpkg"), "community")
    assert layer["code"].tolist() == ["451102003001", "451102003002"]
    assert layer["name"].tolist() == ["厦良社区", "点灯社区"]
    assert layer["parent_code"].tolist() == ["451102003"] * 2
    assert layer["households"].isna().all()
    frame = grids(WGBM=CODES, WGMC=NAMES, COMM_CODE=[PARENT_CODE] * 2, Community=["厦良"] * 2)
    assert_reference(read_layer(write(frame, tmp_path / "g.gpkg"), "grid").assign(
        households=gpd.pd.array([120, 85], dtype="Int64")))


def test_street_without_parent(tmp_path):
    path = write(grids(code=["451102003", "451102004"], name=["江南街道", "西湾街道"]),
                 tmp_path / "s.geojson")
    layer = read_layer(path, "street")
    assert layer["parent_code"].tolist() == [None, None]
    assert list(layer.columns) == COLUMNS


def test_codes_stored_as_numbers_and_text_are_cleaned(tmp_path):
    frame = grids(code=[451102003001001.0, np.nan], name=[" 第1网格 ", ""],
                  parent_code=["451102003001.0", " 451102003001 "], households=[12.0, np.nan])
    layer = read_layer(write(frame, tmp_path / "g.gpkg"), "grid")
    assert layer["code"].tolist() == ["451102003001001", None]
    assert layer["name"].tolist() == ["第1网格", None]
    assert layer["parent_code"].tolist() == [PARENT_CODE, PARENT_CODE]
    assert layer["households"].tolist()[0] == 12 and layer["households"].isna().iloc[1]


def test_households_must_be_counts(tmp_path):
    frame = grids(code=["1", "2"], name=["a", "b"], households=["12", "很多"])
    path = write(frame, tmp_path / "g.gpkg")
    with pytest.raises(LayerError, match="很多") as info:
        read_layer(path, "grid")
    assert info.value.field == "households"
    layer = read_layer(path, "grid", fields={"households": None})
    assert layer["households"].isna().all()


def test_points_and_lines_are_refused(tmp_path):
    points = gpd.GeoDataFrame({"code": ["1"], "name": ["a"]}, geometry=[Point(111.57, 24.4)],
                              crs=4326)
    with pytest.raises(LayerError, match="1 Point"):
        read_layer(write(points, tmp_path / "p.geojson"), "grid")
    lines = points.set_geometry([LineString([(111.57, 24.4), (111.58, 24.41)])], crs=4326)
    with pytest.raises(LayerError, match="Polygon or MultiPolygon"):
        read_layer(write(lines, tmp_path / "l.gpkg"), "grid")


def test_z_is_dropped_and_invalid_geometry_kept(tmp_path):
    bow_tie = Polygon([(111.57, 24.40, 5), (111.571, 24.401, 5), (111.571, 24.40, 5),
                       (111.57, 24.401, 5)])
    frame = gpd.GeoDataFrame({"code": ["1"], "name": ["a"]}, geometry=[bow_tie], crs=4326)
    layer = read_layer(write(frame, tmp_path / "z.gpkg"), "grid")
    geom = layer.geometry.iloc[0]
    assert not geom.has_z
    assert not geom.is_valid  # validation repairs and reports it, not reading


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # GDAL's own complaint, before ours
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.gpkg", b"SQLite format 3\0" + b"\x13" * 500),
        ("broken.geojson", b'{"type": "FeatureCollection", "features": [ {'),
        ("notes.txt", "这不是地理文件".encode()),
        ("broken.shp", b"\0" * 10),
    ],
)
def test_corrupt_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    for part in (".shx", ".dbf") if name.endswith(".shp") else ():
        path.with_suffix(part).write_bytes(b"\0" * 10)
    with pytest.raises(LayerError, match="cannot read") as info:
        read_layer(path, "grid")
    assert str(path) in info.value.message
    assert info.value.field == "file"


def test_missing_or_empty_path(tmp_path):
    with pytest.raises(LayerError, match="not found"):
        read_layer(tmp_path / "nothing.shp", "grid")
    with pytest.raises(LayerError, match="no file"):
        read_layer("", "grid")
    with pytest.raises(LayerError, match="directory"):
        read_layer(tmp_path, "grid")
    with pytest.raises(LayerError, match="bad_zip.zip: not a valid zip"):
        (tmp_path / "bad_zip.zip").write_bytes(b"PK nope")
        read_layer(tmp_path / "bad_zip.zip", "grid")


@pytest.mark.parametrize("part", [".shx", ".dbf"])
def test_shapefile_missing_a_part(tmp_path, part):
    path = gbk_shapefile(tmp_path)
    path.with_suffix(part).unlink()
    with pytest.raises(LayerError, match=rf"missing its \{part}"):
        read_layer(path, "grid")


def test_unknown_level(tmp_path):
    with pytest.raises(LayerError, match="village"):
        read_layer(gbk_shapefile(tmp_path), "village")


def test_read_layer_set(tmp_path):
    path = tmp_path / "jiangnan.gpkg"
    sources = {
        "street": grids(code=["451102003"] * 2, name=["江南街道"] * 2),
        "community": grids(comm_code=[PARENT_CODE] * 2, name=["厦良社区"] * 2,
                           parent_code=["451102003"] * 2),
        "compound": grids(code=["c1", "c2"], name=["香槟城小区", "秀峰苑小区"],
                          parent_code=[PARENT_CODE] * 2),
    }
    for level, frame in sources.items():
        write(frame, path, layer=level)
    with pytest.raises(LayerError, match="no layer for grid") as info:
        read_layer_set(path)
    assert info.value.details["missing"] == ["grid"]
    write(grids(), path, layer="GRID")
    layers = read_layer_set(path)
    assert list(layers) == list(LEVELS)
    assert_reference(layers["grid"])
    assert layers["community"]["code"].tolist() == [PARENT_CODE] * 2
    assert layers["compound"]["name"].tolist() == ["香槟城小区", "秀峰苑小区"]


def test_hierarchy_constants():
    assert LEVELS == ("street", "community", "compound", "grid")
    assert PARENT == {"street": None, "community": "street", "compound": "community",
                      "grid": "community"}


def test_gis_does_not_import_flask():
    code = "import sys, gis.layers, gis.validate; assert 'flask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
