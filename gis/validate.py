"""Validating a set of boundary layers before it replaces the live one.

A boundary layer is only useful if it nests and tiles: every community lies in the street,
every compound and grid in its community, grids cover their community without gaps or
overlaps, and every feature has a unique code and a name. :func:`validate_layers` checks
all of that at once and returns a :class:`ValidationReport` that lists every problem a
person has to fix (not just the first), with the geometry repairs it could make itself.

Distances and areas are measured in metres in the UTM zone that fits the data
(``estimate_utm_crs``), whatever CRS the layers come in. All geometry work runs on whole
shapely 2 arrays (STRtree queries, vectorised set operations); nothing loops over
geometries in Python.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from gis.errors import InvalidInput, LayerError
from gis.layers import LEVELS, PARENT

CHECKS = (
    "empty_layer",
    "invalid_geometry",
    "empty_geometry",
    "missing_code",
    "duplicate_code",
    "missing_name",
    "unknown_parent",
    "parent_layer_missing",
    "outside_parent",
    "overlap",
    "gap",
)
#: The errors ``--force`` may override: the imperfections of real survey data it exists
#: for (slivers sticking out of a parent, overlaps, gaps), and parent codes that do not
#: match, which a street re-numbering its communities passes through between importing
#: one level and the next. Every other error refuses the layer even when forced: codes are
#: the keys of every table, map and case (a duplicate makes the overview 500), and a layer
#: or feature with no geometry or no name cannot be shown or located.
FORCEABLE = frozenset({"outside_parent", "overlap", "gap", "unknown_parent"})
# Levels whose features must cover their parent completely (DOMAIN: communities cover the
# street, grids tile their community); compounds do not, since not every place is in one.
TILING = {"community": "street", "grid": "community"}
# Below this an area is floating-point noise from the set operations, not a real sliver.
_TINY_AREA_M2 = 1e-4
_POLYGON = int(shapely.GeometryType.POLYGON)


@dataclass
class Problem:
    """One thing wrong with one feature (or one pair of features) of a layer.

    ``code`` is the feature's own code, except for ``gap`` where it is the code of the
    parent that is not covered; it is ``None`` when the feature has no code.
    """

    level: str
    code: str | None
    severity: Literal["error", "warning"]
    check: str
    message: str


@dataclass
class ValidationReport:
    """The problems found, and the validated layers after geometry repair."""

    problems: list[Problem] = field(default_factory=list)
    layers: dict[str, gpd.GeoDataFrame] = field(default_factory=dict)
    #: Set by an import that went ahead: a :class:`gis.storage.LayerSave` (new versions,
    #: re-assigned open cases).
    saved: object = None

    @property
    def errors(self) -> list[Problem]:
        """Problems that must be fixed before the layers can be used."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """Problems that were repaired automatically or that limit what was checked."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    @property
    def blocking(self) -> list[Problem]:
        """Errors that refuse the layers even when the import is forced (any check not in
        :data:`FORCEABLE`: empty layers, missing or duplicate codes …)."""
        return [p for p in self.errors if p.check not in FORCEABLE]

    @property
    def forceable(self) -> bool:
        """True when ``--force`` may activate the layers: every error is in
        :data:`FORCEABLE` (also true when there is no error)."""
        return not self.blocking

    def format_text(self) -> str:
        """A report a person can act on: one line per problem, errors first, then a summary.

        Returns
        -------
        str
            Lines ``SEVERITY  level  code  [check] message`` followed by a summary line.
        """
        order = {level: i for i, level in enumerate(LEVELS)}
        ranked = sorted(
            self.problems,
            key=lambda p: (p.severity != "error", order.get(p.level, len(LEVELS))),
        )
        lines = [
            f"{p.severity.upper():<7}  {p.level:<9}  {p.code or '-':<15}  [{p.check}] {p.message}"
            for p in ranked
        ]
        counts = ", ".join(f"{level} {len(gdf)}" for level, gdf in self.layers.items())
        verdict = "OK" if self.ok else "NOT OK"
        lines.append(
            f"{verdict}: {_plural(len(self.errors), 'error')}, "
            f"{_plural(len(self.warnings), 'warning')}"
            + (f" (features checked: {counts})" if counts else "")
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-able summary: verdict, counts, feature counts per level and the problems."""
        return {
            "ok": self.ok,
            "error_count": len(self.errors),
            "warning_count": len(self.warnings),
            "forceable": self.forceable,
            "features": {level: int(len(gdf)) for level, gdf in self.layers.items()},
            "problems": [asdict(p) for p in self.problems],
        }


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def validate_layers(
    layers: dict[str, gpd.GeoDataFrame],
    *,
    tolerance_m: float = 1.0,
    existing: dict[str, gpd.GeoDataFrame] | None = None,
) -> ValidationReport:
    """Check boundary layers for what would make them unusable, repairing what it can.

    Parameters
    ----------
    layers : dict of str to geopandas.GeoDataFrame
        Level → layer (columns ``code``, ``name``, ``parent_code``, ``geometry``, as from
        :func:`gis.layers.read_layer`). May hold only some levels, e.g. a new grid layer.
    tolerance_m : float, default 1.0
        Digitising tolerance in metres: children may stick out of their parent by up to
        this much, and overlaps and gaps narrower than this are ignored.
    existing : dict of str to geopandas.GeoDataFrame, optional
        The layers in use, consulted for the levels ``layers`` lacks (usually the parents
        of a new layer). Only their relations with the new layers are checked.

    Returns
    -------
    ValidationReport
        Every problem found (checks listed in :data:`CHECKS`) and ``layers`` after repair:
        invalid geometries replaced by the polygonal part of ``shapely.make_valid``. A new
        layer with no features is an ``empty_layer`` error: it would replace the active
        one and remove every feature of its level.

    Raises
    ------
    LayerError
        If a level is unknown or a layer lacks a required column or a CRS.
    InvalidInput
        If ``tolerance_m`` is negative or not a number.
    """
    tolerance = _check_tolerance(tolerance_m)
    new = {level: _check_layer(level, gdf, "layers") for level, gdf in layers.items()}
    old = {
        level: _check_layer(level, gdf, "existing")
        for level, gdf in (existing or {}).items()
        if level not in new
    }

    problems: list[Problem] = []
    repaired: dict[str, gpd.GeoDataFrame] = {}
    for level in _in_order(new):
        if len(new[level]) == 0:
            problems.append(Problem(
                level, None, "error", "empty_layer",
                f"the {level} layer has no features; it would remove every {level}",
            ))
        repaired[level] = _repair(level, new[level], problems)
        problems.extend(_attribute_problems(level, repaired[level]))
    context = {level: _repair(level, old[level], None) for level in _in_order(old)}
    context.update(repaired)

    measured = _metric_layers(context)
    utm, metric = measured if measured is not None else (None, {})
    for level in LEVELS[1:]:
        parent = PARENT[level]
        # Relations among existing layers alone were checked when they were loaded.
        if level not in context or not (level in new or parent in new):
            continue
        if parent not in context:
            if level in new:
                problems.append(_parent_layer_missing(level, parent))
            continue
        positions = _parent_positions(context[level], context[parent])
        problems.extend(_unknown_parents(level, context[level], positions))
        if measured is not None:
            problems.extend(_outside_parents(
                level, context[level], metric[level], metric[parent], positions, tolerance
            ))
    if measured is not None:
        for level in _in_order(new):
            problems.extend(
                _overlap_problems(level, context[level], metric[level], utm, tolerance)
            )
        for child, parent in TILING.items():
            if child in context and parent in context and (child in new or parent in new):
                problems.extend(_gap_problems(
                    child, context[child], metric[child], parent, context[parent],
                    metric[parent], utm, tolerance,
                ))
    return ValidationReport(problems=problems, layers=repaired)


# --- inputs -------------------------------------------------------------------------------


def _check_tolerance(tolerance_m: float) -> float:
    try:
        tolerance = float(tolerance_m)
    except (TypeError, ValueError):
        tolerance = math.nan
    if not math.isfinite(tolerance) or tolerance < 0:
        raise InvalidInput(
            f"tolerance_m must be a number of metres ≥ 0, got {tolerance_m!r}",
            field="tolerance_m",
        )
    return tolerance


def _check_layer(level: str, gdf: gpd.GeoDataFrame, argument: str) -> gpd.GeoDataFrame:
    if level not in LEVELS:
        raise LayerError(
            f"unknown level {level!r} in {argument}; expected one of {', '.join(LEVELS)}",
            field=argument,
        )
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise LayerError(f"the {level} layer is not a GeoDataFrame", field=argument)
    needed = ["code", "name", "geometry"] + (["parent_code"] if PARENT[level] else [])
    missing = [column for column in needed if column not in gdf.columns]
    if missing:
        raise LayerError(
            f"the {level} layer lacks column(s) {', '.join(missing)}",
            field=argument,
            details={"level": level, "missing": missing},
        )
    if gdf.crs is None:
        raise LayerError(f"the {level} layer has no CRS", field=argument)
    return gdf


def _in_order(layers: dict) -> list[str]:
    return [level for level in LEVELS if level in layers]


def _label(code: object, row: int) -> str:
    return str(code) if _present(code) else f"row {row + 1}"


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and (
        value is not pd.NA
    ) and str(value).strip() != ""


def _codes(gdf: gpd.GeoDataFrame, column: str = "code") -> list[str | None]:
    return [str(v).strip() if _present(v) else None for v in gdf[column]]


# --- per-feature checks -------------------------------------------------------------------


def _repair(
    level: str, gdf: gpd.GeoDataFrame, problems: list[Problem] | None
) -> gpd.GeoDataFrame:
    """A copy with invalid geometries made valid; report each repair when asked to."""
    result = gdf.copy().reset_index(drop=True)
    geoms = np.asarray(result.geometry.array, dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    invalid = np.flatnonzero(present & ~shapely.is_valid(geoms))
    codes = _codes(result)
    if invalid.size:
        reasons = shapely.is_valid_reason(geoms[invalid])
        geoms[invalid] = _polygonal(shapely.make_valid(geoms[invalid]))
        result = result.set_geometry(gpd.GeoSeries(geoms, crs=result.crs))
        if problems is not None:
            for row, reason, fixed in zip(invalid, reasons, geoms[invalid], strict=True):
                outcome = "repaired with make_valid" if not fixed.is_empty else (
                    "nothing polygonal is left after repair"
                )
                problems.append(Problem(
                    level, codes[row], "warning", "invalid_geometry",
                    f"{level} {_label(codes[row], row)} has an invalid geometry ({reason}); "
                    f"{outcome}",
                ))
    if problems is not None:
        now_empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        for row in np.flatnonzero(now_empty):
            problems.append(Problem(
                level, codes[row], "error", "empty_geometry",
                f"{level} {_label(codes[row], row)} has no geometry (or no area left)",
            ))
    return result


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep only the polygons of each geometry (make_valid may add lines and points)."""
    parts, index = _polygon_parts(geoms)
    result = np.array([shapely.Polygon()] * len(geoms), dtype=object)
    if parts.size:
        holders, dense = np.unique(index, return_inverse=True)
        multi = shapely.multipolygons(parts, indices=dense)
        single = shapely.get_num_geometries(multi) == 1
        multi[single] = shapely.get_geometry(multi[single], 0)
        result[holders] = multi
    return result


def _polygon_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every polygon inside each geometry, with the position of the geometry it came from."""
    # Two levels: a GeometryCollection from make_valid or intersection can hold MultiPolygons.
    outer, outer_index = shapely.get_parts(geoms, return_index=True)
    inner, inner_index = shapely.get_parts(outer, return_index=True)
    index = outer_index[inner_index]
    keep = (shapely.get_type_id(inner) == _POLYGON) & ~shapely.is_empty(inner)
    return inner[keep], index[keep]


def _attribute_problems(level: str, gdf: gpd.GeoDataFrame) -> list[Problem]:
    problems: list[Problem] = []
    codes = _codes(gdf)
    for row, code in enumerate(codes):
        if code is None:
            problems.append(Problem(
                level, None, "error", "missing_code",
                f"{level} row {row + 1} has no code",
            ))
        elif len(str(code)) > 32:
            # The store keeps codes in 32 characters (PostgreSQL enforces it).
            problems.append(Problem(
                level, str(code)[:32], "error", "missing_code",
                f"{level} row {row + 1}: code is {len(str(code))} characters; the limit is 32",
            ))
    series = pd.Series(codes, dtype=object)
    repeated = series[series.notna() & series.duplicated(keep=False)]
    for code, rows in repeated.groupby(repeated, sort=True).groups.items():
        listed = ", ".join(str(r + 1) for r in rows)
        problems.append(Problem(
            level, code, "error", "duplicate_code",
            f"{level} code {code} is used by {len(rows)} features (rows {listed})",
        ))
    for row, name in enumerate(gdf["name"]):
        if not _present(name):
            problems.append(Problem(
                level, codes[row], "error", "missing_name",
                f"{level} {_label(codes[row], row)} has no name",
            ))
        elif len(str(name)) > 200:
            problems.append(Problem(
                level, codes[row], "error", "missing_name",
                f"{level} {_label(codes[row], row)}: name is {len(str(name))} characters; "
                "the limit is 200",
            ))
    return problems


# --- spatial checks -----------------------------------------------------------------------


def _metric_layers(
    layers: dict[str, gpd.GeoDataFrame],
) -> tuple[CRS, dict[str, np.ndarray]] | None:
    """One UTM CRS for all layers and each layer's geometries in it; None if all are empty."""
    in_degrees = {level: gdf.geometry.to_crs(4326) for level, gdf in layers.items()}
    everything = pd.concat(list(in_degrees.values()), ignore_index=True) if in_degrees else None
    if everything is None:
        return None
    everything = everything[~(everything.isna() | everything.is_empty)]
    if everything.empty:
        return None
    # One zone for all levels, so that parents and children are measured alike.
    utm: CRS = gpd.GeoSeries(everything, crs=4326).estimate_utm_crs()
    return utm, {
        level: np.asarray(series.to_crs(utm).array, dtype=object)
        for level, series in in_degrees.items()
    }


def _has_area(geoms: np.ndarray) -> np.ndarray:
    return ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))


def _parent_positions(child: gpd.GeoDataFrame, parent: gpd.GeoDataFrame) -> np.ndarray:
    """Position in ``parent`` of each child's parent, -1 where there is none."""
    lookup = pd.Series(np.arange(len(parent)), index=pd.Index(_codes(parent), dtype=object))
    lookup = lookup[lookup.index.notna() & ~lookup.index.duplicated()]
    wanted = pd.Index(_codes(child, "parent_code"), dtype=object)
    return lookup.reindex(wanted).fillna(-1).to_numpy(dtype=np.int64)


def _parent_layer_missing(level: str, parent: str) -> Problem:
    return Problem(
        level, None, "warning", "parent_layer_missing",
        f"no {parent} layer given or in use, so {level} parents, containment and gaps "
        "were not checked",
    )


def _unknown_parents(
    level: str, child: gpd.GeoDataFrame, positions: np.ndarray
) -> list[Problem]:
    """Children whose parent code is missing or names no feature of the parent level."""
    parent_level = PARENT[level]
    problems: list[Problem] = []
    codes = _codes(child)
    wanted = _codes(child, "parent_code")
    for row in np.flatnonzero(positions < 0):
        what = (
            f"has no parent code (the {parent_level} it belongs to)"
            if wanted[row] is None
            else f"names parent {wanted[row]}, which is not a {parent_level} code"
        )
        problems.append(Problem(
            level, codes[row], "error", "unknown_parent",
            f"{level} {_label(codes[row], row)} {what}",
        ))
    return problems


def _outside_parents(
    level: str,
    child: gpd.GeoDataFrame,
    child_m: np.ndarray,
    parent_m: np.ndarray,
    positions: np.ndarray,
    tolerance: float,
) -> list[Problem]:
    """Children reaching further than the tolerance out of their parent."""
    parent_level = PARENT[level]
    problems: list[Problem] = []
    codes = _codes(child)
    wanted = _codes(child, "parent_code")
    rows = np.flatnonzero(positions >= 0)
    rows = rows[_has_area(child_m[rows]) & _has_area(parent_m[positions[rows]])]
    if rows.size == 0:
        return problems
    inner, outer = child_m[rows], parent_m[positions[rows]]
    # Buffering the parent by the tolerance forgives digitising slop along shared edges.
    beyond = shapely.difference(inner, shapely.buffer(outer, tolerance))
    out = shapely.area(beyond) > _TINY_AREA_M2
    if not out.any():
        return problems
    rows, inner, outer = rows[out], inner[out], outer[out]
    outside = shapely.difference(inner, outer)
    # How far: the farthest vertex of the part outside (a lower bound, exact for convex
    # parents), measured from the parent itself.
    coords, which = shapely.get_coordinates(outside, return_index=True)
    distances = shapely.distance(shapely.points(coords), outer[which])
    farthest = np.zeros(len(rows))
    np.maximum.at(farthest, which, distances)
    for row, distance, area in zip(rows, farthest, shapely.area(outside), strict=True):
        pcode = wanted[row]
        problems.append(Problem(
            level, codes[row], "error", "outside_parent",
            f"{level} {_label(codes[row], row)} extends up to {distance:.1f} m outside its "
            f"{parent_level} {pcode} ({area:.1f} m² outside; tolerance {tolerance:g} m)",
        ))
    return problems


def _significant(
    geoms: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which geometries hold a part wider than the tolerance.

    Returns the mask, the area of those parts (m²) and a point in the largest one. A part
    survives if eroding it by half the tolerance leaves something: slivers narrower than
    the tolerance are digitising noise, however long they are.
    """
    parts, index = _polygon_parts(geoms)
    areas = shapely.area(parts)
    keep = areas > max(tolerance**2, _TINY_AREA_M2)
    if tolerance > 0 and keep.any():
        keep[keep] = ~shapely.is_empty(shapely.buffer(parts[keep], -tolerance / 2))
    parts, index, areas = parts[keep], index[keep], areas[keep]
    total = np.bincount(index, weights=areas, minlength=len(geoms))
    points = np.array([None] * len(geoms), dtype=object)
    if parts.size:
        # Sort by (geometry, area): the last entry per geometry is its largest part.
        order = np.lexsort((areas, index))
        last = order[np.r_[index[order][1:] != index[order][:-1], True]]
        points[index[last]] = shapely.point_on_surface(parts[last])
    return total > 0, total, points


def _lonlat(points: np.ndarray, crs: CRS) -> list[str]:
    degrees = gpd.GeoSeries(points, crs=crs).to_crs(4326)
    return [f"{p.x:.6f}, {p.y:.6f}" for p in degrees]


def _overlap_problems(
    level: str, gdf: gpd.GeoDataFrame, geoms: np.ndarray, crs: CRS, tolerance: float
) -> list[Problem]:
    """Pairs of features of one level whose overlap is wider than the tolerance."""
    rows = np.flatnonzero(_has_area(geoms))
    if rows.size < 2:
        return []
    tree = shapely.STRtree(geoms[rows])
    # "intersects" and not "overlaps": overlaps is false when one polygon contains the
    # other or both are equal, and those are the worst overlaps of all.
    left, right = tree.query(geoms[rows], predicate="intersects")
    pair = left < right
    left, right = rows[left[pair]], rows[right[pair]]
    if left.size == 0:
        return []
    shared = shapely.intersection(geoms[left], geoms[right])
    significant, areas, points = _significant(shared, tolerance)
    if not significant.any():
        return []
    where = _lonlat(points[significant], crs)
    codes = _codes(gdf)
    problems = []
    for a, b, area, near in zip(left[significant], right[significant], areas[significant], where,
                                strict=True):
        problems.append(Problem(
            level, codes[a], "error", "overlap",
            f"{level} {_label(codes[a], a)} and {level} {_label(codes[b], b)} overlap by "
            f"{area:.1f} m² (near {near})",
        ))
    return problems


def _gap_problems(
    level: str,
    child: gpd.GeoDataFrame,
    child_m: np.ndarray,
    parent_level: str,
    parent: gpd.GeoDataFrame,
    parent_m: np.ndarray,
    crs: CRS,
    tolerance: float,
) -> list[Problem]:
    """Parts of each parent that none of its children covers."""
    positions = _parent_positions(child, parent)
    mine = (positions >= 0) & _has_area(child_m)
    covered = np.array([shapely.Polygon()] * len(parent), dtype=object)
    if mine.any():
        # One union per parent: the dissolve groups the children by parent position.
        children = gpd.GeoDataFrame({"parent": positions[mine]}, geometry=list(child_m[mine]))
        unions = children.dissolve(by="parent")
        covered[unions.index.to_numpy()] = np.asarray(unions.geometry.array, dtype=object)
    rows = np.flatnonzero(_has_area(parent_m))
    if rows.size == 0:
        return []
    uncovered = shapely.difference(parent_m[rows], covered[rows])
    significant, areas, points = _significant(uncovered, tolerance)
    if not significant.any():
        return []
    where = _lonlat(points[significant], crs)
    codes = _codes(parent)
    problems = []
    for row, area, near in zip(rows[significant], areas[significant], where, strict=True):
        label = f"{parent_level} {_label(codes[row], row)}"
        if covered[row].is_empty:
            what = f"{label} has no {level} at all ({area:.1f} m² uncovered)"
        else:
            whole = shapely.area(parent_m[row])
            what = f"{label}: {area:.1f} m² of its {whole:.1f} m² is covered by no {level}"
        problems.append(Problem(
            level, codes[row], "error", "gap", f"{what}, e.g. near {near}",
        ))
    return problems

