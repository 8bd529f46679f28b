"""What gis.layers refuses before it can do harm: layers with no features (imported, they
would replace the live layer and empty it), and zip archives that unpack to far more than
a boundary layer could be (zip bombs), refused from the archive's directory before any
extraction; and encoding detection reads a bounded prefix of a .dbf, never the whole file.

Every file is built here, from the reference layer of tests/gis/test_layers.py.
"""

from __future__ import annotations

import os
import tracemalloc
import zipfile

import geopandas as gpd
import pytest

from gis import layers
from gis.errors import LayerError
from gis.layers import LEVELS, read_layer
from tests.gis.test_layers import assert_reference, grids, write, zip_parts

MB = 1024 * 1024


def _empty(level: str) -> gpd.GeoDataFrame:
    frame = grids().iloc[0:0]
    return frame.rename(columns={"grid_code": "code", "grid_name": "name"})


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".shp"])
def test_a_file_with_no_features_is_refused_for_every_level(tmp_path, level, suffix):
    path = write(_empty(level), tmp_path / f"{level}{suffix}",
                 **({"layer": level} if suffix == ".gpkg" else {}))
    with pytest.raises(LayerError, match="the file has no features") as info:
        read_layer(path, level)
    assert info.value.field == "file"
    assert f"empty {level} layer" in info.value.message


def test_an_empty_layer_beside_a_full_one_is_refused_by_name(tmp_path):
    path = tmp_path / "two.gpkg"
    write(grids(), path, layer="grid")
    write(_empty("compound"), path, layer="compound", append=False)
    assert len(read_layer(path, "grid")) == 2
    with pytest.raises(LayerError, match=r"layer 'compound'.*the file has no features"):
        read_layer(path, "compound")


def _padded_zip(tmp_path, padding: bytes, repeat: int, name="padded.zip"):
    """The reference shapefile zipped with its .dbf followed by ``padding * repeat``
    (bytes GDAL never reads: the .dbf header counts the records)."""
    (tmp_path / "src").mkdir(exist_ok=True)
    shp = write(grids(), tmp_path / "src" / "grids.shp", encoding="UTF-8")
    dbf = shp.with_suffix(".dbf").read_bytes()
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for part in shp.parent.glob("grids.*"):
            # No .cpg: without one the encoding is detected from the .dbf's bytes.
            if part.suffix not in (".dbf", ".cpg"):
                archive.write(part, part.name)
        with archive.open("grids.dbf", "w", force_zip64=True) as out:
            out.write(dbf)
            for _ in range(repeat):
                out.write(padding)
    return path


def test_a_zip_bomb_is_refused_by_its_compression_ratio(tmp_path):
    # 40 MB of zeros behind the .dbf: ~40 KB in the archive, a ratio of about 1,000.
    path = _padded_zip(tmp_path, b"\0" * MB, 40)
    assert path.stat().st_size < MB
    with pytest.raises(LayerError, match="zip bomb") as info:
        read_layer(path, "grid")
    assert info.value.field == "file"
    assert info.value.details["member"] == "grids.dbf"
    assert "unzip it and import the .shp" in info.value.message


def test_a_zip_that_declares_more_than_the_total_limit_is_refused(tmp_path, monkeypatch):
    # The limit (1 GB) scaled down, so that the archive need not be that big: what is
    # under test is that the declared sizes are added up before anything is unpacked.
    monkeypatch.setattr(layers, "_ZIP_MAX_TOTAL_BYTES", 2 * MB)
    path = _padded_zip(tmp_path, os.urandom(MB), 3)  # incompressible: ratio 1
    with pytest.raises(LayerError, match="would unpack to") as info:
        read_layer(path, "grid")
    assert info.value.details["unpacked_bytes"] > 3 * MB
    assert info.value.field == "file"


def test_the_real_limits_let_an_ordinary_zip_through(tmp_path):
    (tmp_path / "src").mkdir()
    shp = write(grids(), tmp_path / "src" / "grids.shp", encoding="UTF-8")
    assert_reference(read_layer(zip_parts(shp, tmp_path / "ok.zip"), "grid"))
    assert layers._ZIP_MAX_TOTAL_BYTES == 1024**3 and layers._ZIP_MAX_RATIO == 100


def _peak_while(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_encoding_detection_reads_a_bounded_prefix_of_a_zipped_dbf(tmp_path, monkeypatch):
    # Detection scans at most _DBF_SCAN_BYTES of records; scaled down to 1 MB, reading a
    # 12 MB .dbf must not take 12 MB (it did: archive.read() of the whole member).
    monkeypatch.setattr(layers, "_DBF_SCAN_BYTES", MB)
    path = _padded_zip(tmp_path, os.urandom(MB), 12)
    peak = _peak_while(lambda: assert_reference(read_layer(path, "grid")))
    assert peak < 6 * MB, f"peak {peak / MB:.1f} MB"


def test_encoding_detection_reads_a_bounded_prefix_of_a_loose_dbf(tmp_path, monkeypatch):
    monkeypatch.setattr(layers, "_DBF_SCAN_BYTES", MB)
    shp = write(grids(), tmp_path / "grids.shp", encoding="UTF-8")
    shp.with_suffix(".cpg").unlink(missing_ok=True)  # no .cpg: the .dbf is scanned
    with shp.with_suffix(".dbf").open("ab") as f:
        f.write(os.urandom(12 * MB))
    peak = _peak_while(lambda: assert_reference(read_layer(shp, "grid")))
    assert peak < 6 * MB, f"peak {peak / MB:.1f} MB"
