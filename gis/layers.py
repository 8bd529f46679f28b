"""Reading boundary layers (street, community, compound, grid) from real GIS files.

Boundary files come from survey offices, QGIS users and old ArcGIS projects. They are
GeoPackages, shapefiles (loose or zipped) or GeoJSON; they use CGCS2000 or a projected
Gauss–Krüger zone as often as WGS-84; their attribute tables are often GBK with no ``.cpg``;
and every office names its columns its own way. :func:`read_layer` turns any of them into
one shape the rest of ``gis`` relies on::

    code (str) | name (str) | parent_code (str or None) | households (Int64) | geometry

in EPSG:4326 with a fresh RangeIndex. It refuses what it cannot read with a
:class:`~gis.errors.LayerError` that names the file and says what to do. Content problems
(invalid or overlapping polygons, unknown parents, gaps) are not refused here: reading
keeps them so that :mod:`gis.validate` can report all of them at once.
"""

from __future__ import annotations

import codecs
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely
from pyogrio.errors import DataLayerError, DataSourceError

from gis.errors import LayerError

LEVELS = ("street", "community", "compound", "grid")
PARENT = {"street": None, "community": "street", "compound": "community", "grid": "community"}
COLUMNS = ("code", "name", "parent_code", "households", "geometry")
TARGETS = ("code", "name", "parent_code", "households")

# Column names seen in real boundary files, per target field. Matching ignores case,
# underscores, hyphens and spaces, and also accepts each name cut to 10 characters
# (the DBF limit that turns ``parent_code`` into ``parent_cod``).
# fmt: off
FIELD_VARIANTS: dict[str, tuple[str, ...]] = {
    "code": (
        "code", "bm", "编码", "代码", "id_code", "idcode", "area_code", "unit_code",
        "grid_code", "grid_id", "wgbm", "wg_code", "网格编码", "网格代码",
        "comm_code", "community_code", "sqbm", "社区编码", "社区代码",
        "compound_code", "xqbm", "小区编码", "小区代码",
        "street_code", "jdbm", "街道编码", "街道代码",
    ),
    "name": (
        "name", "mc", "名称", "area_name", "unit_name",
        "grid_name", "wgmc", "网格名称", "网格名",
        "comm_name", "community_name", "sqmc", "社区名称", "社区名",
        "compound_name", "xqmc", "小区名称", "小区名",
        "street_name", "jdmc", "街道名称", "街道名",
    ),
    "parent_code": (
        "parent_code", "parent", "parent_id", "pcode", "p_code", "sjbm", "上级编码",
        "上级代码", "所属编码",
    ),
    "households": ("households", "household", "househol", "hs", "hh", "户数", "住户数"),
}
# fmt: on

# Which level a level-specific code column belongs to. In a grid layer ``comm_code`` is
# the grid's parent, not its own code, so a variant tied to another level is only a
# ``code`` for that level and a ``parent_code`` for that level's children.
_LEVEL_CODE_VARIANTS: dict[str, tuple[str, ...]] = {
    "street": ("street_code", "jdbm", "街道编码", "街道代码"),
    "community": ("comm_code", "community_code", "sqbm", "社区编码", "社区代码"),
    "compound": ("compound_code", "xqbm", "小区编码", "小区代码"),
    "grid": ("grid_code", "grid_id", "wgbm", "wg_code", "网格编码", "网格代码"),
}
_LEVEL_NAME_VARIANTS: dict[str, tuple[str, ...]] = {
    "street": ("street_name", "jdmc", "街道名称", "街道名"),
    "community": ("comm_name", "community_name", "sqmc", "社区名称", "社区名"),
    "compound": ("compound_name", "xqmc", "小区名称", "小区名"),
    "grid": ("grid_name", "wgmc", "网格名称", "网格名"),
}

_SHAPEFILE_PARTS = (".shx", ".dbf")
# DBF records are scanned for encoding detection up to this many bytes: enough to see
# non-ASCII names in any boundary layer, bounded for a pathological upload.
_DBF_SCAN_BYTES = 16 * 1024 * 1024
# A .cpg holds one code page name; anything longer is not one.
_CPG_READ_BYTES = 4096
# Zip archives are checked against these before anything is extracted. A whole city's
# grid layer is a few tens of MB unpacked, so 1 GB in total is far beyond real data and
# still refuses a bomb (a 1.5 MB zip holding a 1.5 GB .dbf) before it costs memory.
_ZIP_MAX_TOTAL_BYTES = 1024**3
# Real .dbf files of blank-padded text compress up to a few dozen times; a member that
# unpacks to more than 100 times its size and is big as well is padding, not data.
# Small members may compress that well without harm.
_ZIP_MAX_RATIO = 100
_ZIP_RATIO_FLOOR_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Source:
    """What to hand to pyogrio: a GDAL path, the layer in it, the encoding to force."""

    gdal_path: str
    layer: str | None
    encoding: str | None


def read_layer(
    path: str | os.PathLike,
    level: str,
    *,
    crs: str | int | pyproj.CRS | None = None,
    encoding: str | None = None,
    fields: dict[str, str | None] | None = None,
    source_layer: str | None = None,
) -> gpd.GeoDataFrame:
    """Read one boundary layer from a GeoPackage, shapefile (``.shp`` or ``.zip``) or GeoJSON.

    Parameters
    ----------
    path : str or path-like
        The file. A ``.zip`` must hold a shapefile (``.shp`` with its ``.shx`` and ``.dbf``).
    level : {"street", "community", "compound", "grid"}
        The boundary level the layer holds; it picks the layer inside a multi-layer file
        and the level-specific column names (``comm_code`` is a community's own code but a
        grid's parent code).
    crs : str, int or pyproj.CRS, optional
        The coordinate reference system of the data, e.g. ``"EPSG:4547"``. Needed when the
        file carries none (a shapefile without ``.prj``); when given it overrides what the
        file says, like ``ogr2ogr -a_srs``.
    encoding : str, optional
        Force the attribute text encoding (e.g. ``"GBK"``). By default a shapefile's
        ``.cpg`` is honoured and, without one, UTF-8 or GB18030 is detected from the
        ``.dbf`` bytes.
    fields : dict, optional
        Explicit column mapping ``{target: column}`` for targets ``code``, ``name``,
        ``parent_code`` and ``households``; it wins over the recognised variants. Map a
        target to ``None`` to ignore a column that would otherwise be picked up.
    source_layer : str, optional
        Layer inside a GeoPackage, or ``.shp`` (stem or member name) inside a ``.zip``.
        Default: the layer named like ``level``, else the only layer.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``code``, ``name``, ``parent_code`` (object dtype, ``str`` or ``None``),
        ``households`` (``Int64``), ``geometry`` (Polygon/MultiPolygon, 2D), CRS EPSG:4326,
        RangeIndex. Invalid geometries and missing values are kept for validation.

    Raises
    ------
    LayerError
        If the file cannot be opened, has no features (an empty layer would remove every
        feature of its level), has no CRS and none is given, holds no polygons, lacks a
        code or name column, or lands outside the globe after reprojection; a ``.zip``
        also if it would unpack to more than 1 GB or holds a member compressed suspiciously
        well (a zip bomb).
    """
    level = _check_level(level)
    path = _check_path(path)
    forced_crs = _parse_crs(crs) if crs is not None else None
    iconv_encoding = _check_encoding(encoding) if encoding is not None else None
    fields = _check_fields(fields)

    source = _locate_source(path, level, source_layer, iconv_encoding)
    frame = _read_frame(source, path)
    _check_not_empty(frame, source, level, path)
    frame = _with_crs(frame, forced_crs, path)
    geometry = _polygonal_geometry(frame, path)
    mapping = _map_fields(list(frame.columns.drop(frame.geometry.name)), level, fields, path)
    table = _build_table(frame, mapping, geometry, path)
    return _to_wgs84(table, path)


def read_layer_set(
    path_gpkg: str | os.PathLike, *, crs: str | int | pyproj.CRS | None = None
) -> dict[str, gpd.GeoDataFrame]:
    """Read all four boundary levels from one GeoPackage with a layer per level.

    Parameters
    ----------
    path_gpkg : str or path-like
        A GeoPackage whose layers are named ``street``, ``community``, ``compound`` and
        ``grid`` (case does not matter).
    crs : str, int or pyproj.CRS, optional
        Passed to :func:`read_layer` for every level.

    Returns
    -------
    dict of str to geopandas.GeoDataFrame
        Level → layer as returned by :func:`read_layer`, in :data:`LEVELS` order.

    Raises
    ------
    LayerError
        If the file cannot be opened or a level has no layer (the message lists both the
        missing levels and the layers the file has).
    """
    path = _check_path(path_gpkg)
    names = [str(name) for name, _ in _list_layers(str(path), path)]
    by_lower = {name.casefold(): name for name in names}
    missing = [level for level in LEVELS if level not in by_lower]
    if missing:
        raise LayerError(
            f"{path} has no layer for {', '.join(missing)}; a layer set needs one layer per "
            f"level named {', '.join(LEVELS)} (layers found: {', '.join(names) or 'none'})",
            field="file",
            details={"path": str(path), "missing": missing, "layers": names},
        )
    return {
        level: read_layer(path, level, crs=crs, source_layer=by_lower[level]) for level in LEVELS
    }


# --- checking arguments -------------------------------------------------------------------


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise LayerError(
            f"unknown level {level!r}; expected one of {', '.join(LEVELS)}", field="level"
        )
    return level


def _check_path(path: str | os.PathLike | None) -> Path:
    if path is None or str(path).strip() == "":
        raise LayerError("no file given: pass the path of a boundary file", field="file")
    result = Path(path)
    if not result.exists():
        raise LayerError(f"{result}: file not found", field="file", details={"path": str(result)})
    if result.is_dir():
        raise LayerError(
            f"{result} is a directory; give the .gpkg, .shp, .zip or .geojson file itself",
            field="file",
            details={"path": str(result)},
        )
    return result


def _parse_crs(crs: str | int | pyproj.CRS) -> pyproj.CRS:
    try:
        return pyproj.CRS.from_user_input(crs)
    except (pyproj.exceptions.CRSError, TypeError, ValueError) as exc:
        raise LayerError(
            f"unknown coordinate reference system {crs!r}; use an EPSG code such as "
            "EPSG:4326, EPSG:4490 or EPSG:4547",
            field="crs",
            details={"crs": str(crs), "reason": str(exc)},
        ) from exc


def _check_encoding(encoding: str) -> str:
    """Return the name GDAL's iconv understands for a Python-known encoding."""
    try:
        python_name = codecs.lookup(encoding).name
    except (LookupError, TypeError) as exc:
        raise LayerError(
            f"unknown encoding {encoding!r}; use e.g. UTF-8 or GBK",
            field="encoding",
            details={"encoding": str(encoding)},
        ) from exc
    return _iconv_name(python_name)


def _iconv_name(python_name: str) -> str:
    # Python and iconv spell some encodings differently ("iso8859-1" vs "ISO-8859-1");
    # pyogrio hands the name to GDAL, which recodes through iconv.
    name = python_name.lower().replace("_", "-")
    if name in ("utf-8", "utf8"):
        return "UTF-8"
    match = re.fullmatch(r"(?:iso-?)?8859-(\d+)", name) or re.fullmatch(r"latin-?1()", name)
    if match:
        return f"ISO-8859-{match.group(1) or 1}"
    return name.upper()


def _check_fields(fields: dict[str, str | None] | None) -> dict[str, str | None]:
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise LayerError("fields must map target fields to column names", field="fields")
    unknown = [key for key in fields if key not in TARGETS]
    if unknown:
        raise LayerError(
            f"unknown target field(s) {', '.join(map(str, unknown))} in the field mapping; "
            f"targets are {', '.join(TARGETS)}",
            field="fields",
            details={"unknown": [str(key) for key in unknown], "targets": list(TARGETS)},
        )
    return dict(fields)


# --- finding the layer to read ------------------------------------------------------------


def _locate_source(
    path: Path, level: str, source_layer: str | None, encoding: str | None
) -> _Source:
    suffix = path.suffix.lower()
    if suffix == ".shp":
        return _shapefile_source(path, encoding)
    if suffix == ".zip":
        return _zip_source(path, level, source_layer, encoding)
    layers = _list_layers(str(path), path)
    names = [str(name) for name, geometry_type in layers if geometry_type is not None]
    everything = [str(name) for name, _ in layers]
    layer = _choose(path, level, source_layer, names, everything, kind="layer")
    return _Source(str(path), layer, encoding)


def _choose(
    path: Path,
    level: str,
    wanted: str | None,
    spatial: list[str],
    everything: list[str],
    *,
    kind: str,
) -> str:
    """Pick a layer: the one asked for, else the one named like the level, else the only one."""
    if wanted is not None:
        if wanted in everything:
            return wanted
        raise LayerError(
            f"{path} has no {kind} {wanted!r}; {kind}s found: {', '.join(everything) or 'none'}",
            field="source_layer",
            details={"path": str(path), "layers": everything},
        )
    for name in spatial:
        if name.casefold() == level or PurePosixPath(name).stem.casefold() == level:
            return name
    if len(spatial) == 1:
        return spatial[0]
    if not spatial:
        raise LayerError(
            f"{path} holds no layer with geometry", field="file", details={"path": str(path)}
        )
    raise LayerError(
        f"{path} has several {kind}s and none is named {level!r}; choose one with "
        f"--source-layer: {', '.join(spatial)}",
        field="source_layer",
        details={"path": str(path), "layers": spatial},
    )


def _list_layers(gdal_path: str, path: Path) -> list[tuple[str, str | None]]:
    try:
        return [(name, kind) for name, kind in pyogrio.list_layers(gdal_path)]
    except (DataSourceError, DataLayerError, OSError, RuntimeError) as exc:
        raise _unreadable(path, exc) from exc


def _companion(path: Path, suffix: str) -> Path | None:
    # Shapefile parts may differ in case (GRID.SHP next to grid.dbf), so look them up
    # case-insensitively instead of trusting with_suffix().
    wanted = (path.stem + suffix).casefold()
    for sibling in path.parent.iterdir():
        if sibling.name.casefold() == wanted:
            return sibling
    return None


def _shapefile_source(path: Path, encoding: str | None) -> _Source:
    missing = [suffix for suffix in _SHAPEFILE_PARTS if _companion(path, suffix) is None]
    if missing:
        raise _missing_parts(path, path.stem, missing)
    if encoding is None:
        cpg = _companion(path, ".cpg")
        cpg_encoding = _cpg_encoding(_head(cpg, _CPG_READ_BYTES)) if cpg is not None else None
        encoding = cpg_encoding or _detect_dbf_encoding(
            _head(_companion(path, ".dbf"), _dbf_read_bytes()))
    return _Source(str(path), None, encoding)


def _dbf_read_bytes() -> int:
    """How much of a .dbf encoding detection reads: the longest header (its length is a
    16-bit field) and the records it scans, never the whole file."""
    return 65_535 + _DBF_SCAN_BYTES


def _head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of a file: detection looks at no more, and a huge file
    must not be read whole into memory for it."""
    with path.open("rb") as fh:
        return fh.read(size)


def _zip_source(path: Path, level: str, source_layer: str | None, encoding: str | None) -> _Source:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise LayerError(
            f"cannot read {path}: not a valid zip archive",
            field="file",
            details={"path": str(path), "reason": str(exc)},
        ) from exc
    with archive:
        _check_zip_sizes(path, archive)
        members = {
            name.casefold(): name
            for name in archive.namelist()
            # Archives made on macOS carry resource forks (__MACOSX/, ._grid.shp): not data.
            if not name.startswith("__MACOSX/") and not PurePosixPath(name).name.startswith("._")
        }
        shapefiles = sorted(name for key, name in members.items() if key.endswith(".shp"))
        if not shapefiles:
            raise LayerError(
                f"{path} holds no shapefile (.shp); found: {', '.join(sorted(members.values()))}",
                field="file",
                details={"path": str(path), "members": sorted(members.values())},
            )
        wanted = source_layer
        if wanted is not None and wanted not in shapefiles:
            # Let people name the shapefile by its stem ("grid") as well as its member name.
            stems = [name for name in shapefiles if PurePosixPath(name).stem == wanted]
            wanted = stems[0] if len(stems) == 1 else wanted
        member = _choose(path, level, wanted, shapefiles, shapefiles, kind="shapefile")
        base = member[: -len(".shp")]
        missing = [s for s in _SHAPEFILE_PARTS if (base + s).casefold() not in members]
        if missing:
            raise _missing_parts(path, member, missing)
        if encoding is None:
            cpg = members.get((base + ".cpg").casefold())
            cpg_encoding = _cpg_encoding(_zip_head(archive, cpg, _CPG_READ_BYTES)) if cpg else None
            dbf = members[(base + ".dbf").casefold()]
            encoding = cpg_encoding or _detect_dbf_encoding(
                _zip_head(archive, dbf, _dbf_read_bytes()))
    gdal_path = f"/vsizip/{path.resolve().as_posix()}/{member}"
    return _Source(gdal_path, None, encoding)


def _check_zip_sizes(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse a zip bomb from its directory, before a byte is unpacked.

    The sizes checked are those the archive declares; reading never goes past them
    (:func:`_zip_head` reads a bounded prefix, and GDAL reads the records the ``.dbf``
    header counts), so a member that lies about its size cannot make either read more.
    """
    infos = [info for info in archive.infolist() if not info.is_dir()]
    total = sum(info.file_size for info in infos)
    if total > _ZIP_MAX_TOTAL_BYTES:
        raise LayerError(
            f"{path} would unpack to {_megabytes(total)} (limit "
            f"{_megabytes(_ZIP_MAX_TOTAL_BYTES)}); a boundary layer is far smaller, so this "
            "is not one (or the archive is damaged)",
            field="file",
            details={"path": str(path), "unpacked_bytes": total,
                     "limit_bytes": _ZIP_MAX_TOTAL_BYTES},
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _ZIP_RATIO_FLOOR_BYTES and ratio > _ZIP_MAX_RATIO:
            raise LayerError(
                f"{path}: member {info.filename} unpacks to {_megabytes(info.file_size)} from "
                f"{_megabytes(info.compress_size)} ({ratio:,.0f} times; real data compresses "
                f"at most ~{_ZIP_MAX_RATIO} times), so it is refused as a zip bomb; if the "
                "file is genuine, unzip it and import the .shp",
                field="file",
                details={"path": str(path), "member": info.filename,
                         "unpacked_bytes": info.file_size, "packed_bytes": info.compress_size},
            )


def _megabytes(size: int) -> str:
    """A byte count for a message, in MB."""
    return f"{size / 1024**2:,.1f} MB"


def _zip_head(archive: zipfile.ZipFile, member: str, size: int) -> bytes:
    """The first ``size`` unpacked bytes of ``member``: never the whole member, which may
    be far bigger than what detection looks at."""
    try:
        with archive.open(member) as fh:
            return fh.read(size)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        # RuntimeError: an encrypted member; the others: a damaged archive.
        raise LayerError(
            f"cannot read {member} in {archive.filename}: {exc}",
            field="file",
            details={"member": member, "reason": str(exc)},
        ) from exc


def _missing_parts(path: Path, what: str, missing: list[str]) -> LayerError:
    return LayerError(
        f"cannot read {path}: shapefile {what} is incomplete, missing its "
        f"{' and '.join(missing)} file; a shapefile needs .shp, .shx and .dbf together",
        field="file",
        details={"path": str(path), "missing": missing},
    )


# --- encodings ----------------------------------------------------------------------------


def _cpg_encoding(raw: bytes) -> str | None:
    """Read a ``.cpg`` file; ``None`` when it names nothing Python knows (then we detect)."""
    text = raw.decode("ascii", errors="ignore").strip().upper()
    if not text:
        return None
    # Esri writes code pages as bare numbers or "ANSI 936"; 65001 is UTF-8.
    number = re.fullmatch(r"(?:ANSI\s*|CP)?(\d+)", text)
    if number:
        digits = number.group(1)
        if digits == "65001":
            return "UTF-8"
        if digits.startswith("8859") and len(digits) > 4:
            text = f"ISO-8859-{digits[4:].lstrip('_')}"
        else:
            text = f"CP{digits}"
    try:
        return _iconv_name(codecs.lookup(text).name)
    except LookupError:
        return None


def _detect_dbf_encoding(dbf: bytes) -> str:
    """Decide how the DBF's text is encoded: UTF-8, else GB18030 (a superset of GBK).

    Valid UTF-8 almost never arises by chance from GBK bytes, so a strict UTF-8 decode is
    a reliable test; GB18030 comes next because that is what Chinese boundary files
    without a ``.cpg`` hold. Only if both fail is charset-normalizer asked.
    """
    cells = _dbf_text_cells(dbf)
    if not cells:
        return "UTF-8"
    for candidate in ("utf-8", "gb18030"):
        if all(_decodes(cell, candidate) for cell in cells):
            return _iconv_name(candidate)
    from charset_normalizer import from_bytes

    best = from_bytes(b"\n".join(cells)).best()
    return _iconv_name(codecs.lookup(best.encoding).name) if best is not None else "GB18030"


def _decodes(cell: bytes, encoding: str) -> bool:
    try:
        cell.decode(encoding)
    except UnicodeDecodeError as exc:
        # Writers cut text at the field width, sometimes inside a multi-byte character:
        # a sequence broken only at the very end still counts as this encoding.
        return exc.end == len(cell) and len(cell) - exc.start < 4
    return True


def _dbf_text_cells(dbf: bytes) -> list[bytes]:
    """The non-ASCII field names and character values of a DBF (dBase III layout)."""
    if len(dbf) < 32:
        return []
    n_records = int.from_bytes(dbf[4:8], "little")
    header_length = int.from_bytes(dbf[8:10], "little")
    record_length = int.from_bytes(dbf[10:12], "little")
    cells: list[bytes] = []
    text_fields: list[tuple[int, int]] = []
    offset = 1  # each record starts with a deletion flag byte
    for start in range(32, min(header_length, len(dbf)) - 31, 32):
        if dbf[start] == 0x0D:  # end of field descriptors
            break
        descriptor = dbf[start : start + 32]
        cells.append(descriptor[:11].split(b"\0", 1)[0])
        width = descriptor[16]
        if descriptor[11:12] == b"C":
            # Character fields may use the decimal-count byte as the high byte of the width.
            width += descriptor[17] * 256
            text_fields.append((offset, width))
        offset += width
    if record_length > 0:
        end = min(len(dbf), header_length + n_records * record_length)
        end = min(end, header_length + _DBF_SCAN_BYTES)
        for record in range(header_length, end - record_length + 1, record_length):
            for field_offset, width in text_fields:
                start = record + field_offset
                cells.append(dbf[start : start + width].rstrip(b" \0"))
    return [cell for cell in cells if not cell.isascii()]


# --- reading ------------------------------------------------------------------------------


def _read_frame(source: _Source, path: Path) -> gpd.GeoDataFrame:
    try:
        frame = pyogrio.read_dataframe(
            source.gdal_path, layer=source.layer, encoding=source.encoding
        )
    except UnicodeDecodeError as exc:
        raise LayerError(
            f"cannot read {path}: its attribute text is not {source.encoding or 'UTF-8'}; "
            "pass the right encoding (e.g. --encoding GBK)",
            field="encoding",
            details={"path": str(path), "encoding": source.encoding},
        ) from exc
    except (DataSourceError, DataLayerError, OSError, RuntimeError, ValueError) as exc:
        raise _unreadable(path, exc) from exc
    if not isinstance(frame, gpd.GeoDataFrame):
        raise LayerError(
            f"{path}: the layer has no geometry column; a boundary layer needs polygons",
            field="file",
            details={"path": str(path)},
        )
    return frame


def _check_not_empty(frame: pd.DataFrame, source: _Source, level: str, path: Path) -> None:
    """Refuse a layer with no features: imported, it would replace the active layer and
    leave every open case without its code at that level (so no validation could pass
    it, and ``--force`` must not either)."""
    if len(frame) == 0:
        which = f" (layer {source.layer!r})" if source.layer else ""
        raise LayerError(
            f"{path}{which}: the file has no features; an empty {level} layer would remove "
            f"every {level}, so it is not imported",
            field="file",
            details={"path": str(path), "layer": source.layer, "level": level},
        )


def _unreadable(path: Path, exc: Exception) -> LayerError:
    reason = str(exc).split("; It might help", 1)[0].strip() or type(exc).__name__
    # GDAL prefixes its message with the path it was given; the caller knows the path.
    reason = reason.replace(f"'{path}' ", "").replace(f"{path}: ", "")
    return LayerError(
        f"cannot read {path}: {reason}",
        field="file",
        details={"path": str(path), "reason": reason},
    )


def _with_crs(
    frame: gpd.GeoDataFrame, forced_crs: pyproj.CRS | None, path: Path
) -> gpd.GeoDataFrame:
    if forced_crs is not None:
        return frame.set_crs(forced_crs, allow_override=True)
    if frame.crs is None:
        raise LayerError(
            f"{path} has no coordinate reference system (a shapefile without its .prj?); "
            "pass --crs with the system the coordinates are in, e.g. --crs EPSG:4547 for "
            "CGCS2000 Gauss–Krüger or --crs EPSG:4326 for longitude/latitude",
            field="crs",
            details={"path": str(path)},
        )
    return frame


def _polygonal_geometry(frame: gpd.GeoDataFrame, path: Path) -> np.ndarray:
    """The geometries as a 2D array; refuse anything but polygons (missing ones are kept)."""
    geometry = shapely.force_2d(np.asarray(frame.geometry.array, dtype=object))
    present = ~(shapely.is_missing(geometry) | shapely.is_empty(geometry))
    types = shapely.get_type_id(geometry[present])
    polygonal = np.isin(types, [shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON])
    if not polygonal.all():
        found = pd.Series(shapely.get_type_id(geometry[present][~polygonal]))
        names = {int(t): shapely.GeometryType(int(t)).name.title() for t in found.unique()}
        counts = ", ".join(f"{n} {names[t]}" for t, n in found.value_counts().items())
        raise LayerError(
            f"{path} holds non-polygon geometries ({counts} of {len(frame)} features); "
            "a boundary layer needs Polygon or MultiPolygon features",
            field="file",
            details={"path": str(path), "geometry_types": sorted(names.values())},
        )
    return geometry


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name)).casefold()


def _variants(level: str) -> dict[str, list[str]]:
    """Variant names per target for a level, most specific first."""
    other_codes = {
        name for lvl, names in _LEVEL_CODE_VARIANTS.items() if lvl != level for name in names
    }
    other_names = {
        name for lvl, names in _LEVEL_NAME_VARIANTS.items() if lvl != level for name in names
    }
    parent = PARENT[level]
    parent_codes = list(_LEVEL_CODE_VARIANTS[parent]) if parent else []
    return {
        "code": list(_LEVEL_CODE_VARIANTS[level])
        + [v for v in FIELD_VARIANTS["code"] if v not in other_codes],
        "name": list(_LEVEL_NAME_VARIANTS[level])
        + [v for v in FIELD_VARIANTS["name"] if v not in other_names],
        "parent_code": list(FIELD_VARIANTS["parent_code"]) + parent_codes,
        "households": list(FIELD_VARIANTS["households"]),
    }


def _map_fields(
    columns: list[str], level: str, fields: dict[str, str | None], path: Path
) -> dict[str, str | None]:
    """Target field → source column (or None), explicit mapping first, then variants."""
    mapping: dict[str, str | None] = {}
    for target, column in fields.items():
        if column is None:
            mapping[target] = None
            continue
        exact = [c for c in columns if c == column]
        loose = [c for c in columns if str(c).casefold() == str(column).casefold()]
        if not (exact or loose):
            raise LayerError(
                f"{path} has no column {column!r} to use as {target}; columns: "
                f"{', '.join(map(str, columns)) or 'none'}",
                field="fields",
                details={"path": str(path), "target": target, "columns": list(map(str, columns))},
            )
        mapping[target] = (exact or loose)[0]

    taken = {c for c in mapping.values() if c is not None}
    by_key: dict[str, list[str]] = {}
    for column in columns:
        by_key.setdefault(_normalise(column), []).append(column)
    for target, variants in _variants(level).items():
        if target in mapping:
            continue
        mapping[target] = None
        for variant in variants:
            found = [c for c in by_key.get(_normalise(variant), []) if c not in taken]
            # A cut name is matched as cut, underscores and all: "community_code" cut to
            # "community_" must not claim a column called "community".
            found += [
                c for c in columns if c.casefold() == variant[:10].casefold() and c not in taken
            ]
            if found:
                mapping[target] = found[0]
                taken.add(found[0])
                break

    missing = [target for target in ("code", "name") if mapping.get(target) is None]
    if missing:
        raise LayerError(
            f"{path} has no {' or '.join(missing)} column for the {level} layer; columns: "
            f"{', '.join(map(str, columns)) or 'none'}. Rename the column or map it, e.g. "
            f"--field {missing[0]}=<column>",
            field=missing[0],
            details={"path": str(path), "missing": missing, "columns": list(map(str, columns))},
        )
    return mapping


def _build_table(
    frame: gpd.GeoDataFrame, mapping: dict[str, str | None], geometry: np.ndarray, path: Path
) -> gpd.GeoDataFrame:
    def column(target: str) -> pd.Series | None:
        source = mapping.get(target)
        return None if source is None else frame[source].reset_index(drop=True)

    empty = pd.Series([None] * len(frame), dtype=object)
    parent = column("parent_code")
    households = column("households")
    table = pd.DataFrame(
        {
            "code": _as_codes(column("code")),
            "name": _as_text(column("name")),
            "parent_code": empty if parent is None else _as_codes(parent),
            "households": (
                pd.array([pd.NA] * len(frame), dtype="Int64")
                if households is None
                else _as_counts(households, mapping["households"], path)
            ),
        }
    )
    return gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(geometry, crs=frame.crs))


def _as_text(values: pd.Series) -> pd.Series:
    """Trimmed text as ``str``, with blanks and missing values as ``None``."""

    def clean(value: object) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return None
        text = str(value).strip()
        return text or None

    return pd.Series([clean(v) for v in values], dtype=object)


def _as_codes(values: pd.Series) -> pd.Series:
    """Codes as strings; codes stored as numbers lose their ``.0`` (451102003001001.0)."""

    def clean(value: object) -> object:
        if isinstance(value, (float, np.floating)) and np.isfinite(value) and value == int(value):
            return int(value)
        return value

    text = _as_text(pd.Series([clean(v) for v in values], dtype=object))
    # Spreadsheet round trips turn numeric codes into "451102003001001.0" text.
    return pd.Series(
        [None if t is None else re.sub(r"^(\d+)\.0+$", r"\1", t) for t in text], dtype=object
    )


def _as_counts(values: pd.Series, source: str | None, path: Path) -> pd.Series:
    text = _as_text(values)
    numbers = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & (numbers.isna() | (numbers.fillna(0) % 1 != 0))
    if bad.any():
        examples = ", ".join(repr(v) for v in text[bad].head(5))
        raise LayerError(
            f"{path}: column {source!r} should hold whole household counts but has {examples}; "
            "fix the values or map households to another column",
            field="households",
            details={"path": str(path), "column": source, "examples": text[bad].head(5).tolist()},
        )
    return numbers.astype("Int64")


def _to_wgs84(table: gpd.GeoDataFrame, path: Path) -> gpd.GeoDataFrame:
    source_crs = table.crs
    try:
        result = table.to_crs(4326)
    except (pyproj.exceptions.ProjError, ValueError) as exc:
        raise LayerError(
            f"cannot reproject {path} from {source_crs.to_string()} to EPSG:4326: {exc}",
            field="crs",
            details={"path": str(path), "crs": source_crs.to_string()},
        ) from exc
    _check_bounds(result, source_crs, path)
    return result.reset_index(drop=True)


def _check_bounds(table: gpd.GeoDataFrame, source_crs: pyproj.CRS, path: Path) -> None:
    """Refuse coordinates that cannot be right: the usual sign of a wrong ``--crs``."""
    present = table.geometry[~(table.geometry.isna() | table.geometry.is_empty)]
    if present.empty:
        return
    coords = shapely.get_coordinates(present.array)
    lon, lat = coords[:, 0], coords[:, 1]
    hint = (
        f"after reprojecting from {source_crs.to_string()}; is that the right coordinate "
        "system? pass the correct one with --crs"
    )
    if not (np.isfinite(coords).all() and (np.abs(lon) <= 180).all() and (np.abs(lat) <= 90).all()):
        raise LayerError(
            f"{path}: coordinates fall outside longitude ±180 / latitude ±90 {hint}",
            field="crs",
            details={"path": str(path), "crs": source_crs.to_string()},
        )
    area = source_crs.area_of_use
    if area is None or area.west > area.east:
        return
    # Data read with a wrong projected CRS usually lands far from that CRS's zone (metres
    # taken for degrees end up near the equator). A wide margin keeps real data that spills
    # over a zone edge.
    margin = 5.0
    west, south, east, north = lon.min(), lat.min(), lon.max(), lat.max()
    if (
        east < area.west - margin
        or west > area.east + margin
        or north < area.south - margin
        or south > area.north + margin
    ):
        raise LayerError(
            f"{path}: coordinates ({west:.4f}, {south:.4f}) – ({east:.4f}, {north:.4f}) lie far "
            f"outside where {source_crs.to_string()} is used ({area.name}) {hint}",
            field="crs",
            details={"path": str(path), "crs": source_crs.to_string()},
        )
