"""Tests for gis.validate: each layer set is built by hand so the right answer is known.

Shapes are drawn in metres in UTM zone 49N (EPSG:32649, the zone the validator picks for
Hezhou) from an origin at lon 111.57, lat 24.40, then handed over in EPSG:4326 like
read_layer's output. So a box 10 m out of its community is 10 m out when measured.
"""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely import affinity
from shapely.geometry import Polygon, box

from gis.errors import InvalidInput, LayerError
from gis.validate import CHECKS, Problem, ValidationReport, validate_layers

UTM = "EPSG:32649"
X0, Y0 = Transformer.from_crs(4326, UTM, always_xy=True).transform(111.57, 24.40)
STREET = "451102003"
C1, C2 = "451102003001", "451102003002"


def local(geom):
    """Shift a shape drawn around (0, 0) in metres to the origin near Hezhou."""
    return affinity.translate(geom, X0, Y0)


def layer(rows):
    """A layer in EPSG:4326 from ``(code, name, parent_code, shape in local metres)`` rows."""
    codes, names, parents, geoms = zip(*rows, strict=True) if rows else ([], [], [], [])
    frame = gpd.GeoDataFrame(
        {"code": list(codes), "name": list(names), "parent_code": list(parents),
         "households": [None] * len(rows)},
        geometry=[None if g is None else local(g) for g in geoms],
        crs=UTM,
    )
    frame["households"] = frame["households"].astype("Int64")
    return frame.to_crs(4326)


def grid(seq, shape, parent=C1, name=None):
    code = f"{parent}{seq:03d}"
    return (code, name or f"第{seq}网格", parent, shape)


def street():
    return layer([(STREET, "江南街道", None, box(0, 0, 400, 200))])


def communities():
    return layer([
        (C1, "厦良社区", STREET, box(0, 0, 200, 200)),
        (C2, "点灯社区", STREET, box(200, 0, 400, 200)),
    ])


def clean_grids():
    """C1 cut 2×2 into 100 m squares; C2 cut into two 200×100 strips."""
    return [
        grid(1, box(0, 100, 100, 200)),
        grid(2, box(100, 100, 200, 200)),
        grid(3, box(0, 0, 100, 100)),
        grid(4, box(100, 0, 200, 100)),
        grid(1, box(200, 100, 400, 200), parent=C2),
        grid(2, box(200, 0, 400, 100), parent=C2),
    ]


def with_grids(rows, **kwargs):
    layers = {"street": street(), "community": communities(), "grid": layer(rows)}
    return validate_layers(layers, **kwargs)


def only(report, check):
    return [p for p in report.problems if p.check == check]


def test_clean_tiling_is_ok():
    report = with_grids(clean_grids())
    assert report.problems == []
    assert report.ok
    assert set(report.layers) == {"street", "community", "grid"}
    assert len(report.layers["grid"]) == 6


def test_new_grid_layer_checked_against_existing_parents():
    report = validate_layers(
        {"grid": layer(clean_grids())},
        existing={"street": street(), "community": communities()},
    )
    assert report.ok, report.format_text()
    assert list(report.layers) == ["grid"]  # existing layers are context, not output


def test_missing_parent_layer_is_a_warning():
    report = validate_layers({"grid": layer(clean_grids())})
    assert report.ok
    [warning] = report.warnings
    assert warning.check == "parent_layer_missing"
    assert "community" in warning.message


def test_bow_tie_is_repaired_with_a_warning():
    bow_tie = Polygon([(0, 100), (100, 200), (100, 100), (0, 200)])
    rows = clean_grids()
    rows[0] = grid(1, bow_tie)
    report = with_grids(rows)

    [warning] = only(report, "invalid_geometry")
    assert warning.severity == "warning"
    assert warning.code == f"{C1}001"
    assert "Self-intersection" in warning.message
    fixed = report.layers["grid"].geometry.iloc[0]
    assert fixed.is_valid
    assert fixed.geom_type == "MultiPolygon"
    assert len(fixed.geoms) == 2
    assert report.layers["grid"].to_crs(UTM).area.iloc[0] == pytest.approx(5000, rel=1e-6)
    # The repaired bow-tie covers only half of its square: the rest is a gap.
    [gap] = only(report, "gap")
    assert gap.code == C1
    assert "5000.0 m²" in gap.message


def test_repair_keeps_only_polygonal_parts():
    # A polygon with a zero-area spike: make_valid returns a polygon plus a line.
    spike = Polygon([(0, 100), (100, 100), (100, 200), (50, 200), (50, 250), (50, 200),
                     (0, 200)])
    rows = clean_grids()
    rows[0] = grid(1, spike)
    report = with_grids(rows)
    assert [p.check for p in report.warnings] == ["invalid_geometry"]
    fixed = report.layers["grid"].geometry.iloc[0]
    assert fixed.geom_type == "Polygon" and fixed.is_valid
    # The spike reaches 50 m out of the community, but it has no area: nothing is outside.
    assert report.ok, report.format_text()


def test_duplicate_codes():
    rows = clean_grids()
    rows[1] = (rows[0][0], "重复", C1, rows[1][3])
    report = with_grids(rows)
    [problem] = only(report, "duplicate_code")
    assert problem.severity == "error"
    assert problem.code == f"{C1}001"
    assert "rows 1, 2" in problem.message
    assert not report.ok


def test_missing_code_and_name():
    rows = clean_grids()
    rows[2] = (None, "无编码", C1, rows[2][3])
    rows[3] = (rows[3][0], "  ", C1, rows[3][3])
    report = with_grids(rows)
    [missing_code] = only(report, "missing_code")
    assert missing_code.code is None and "row 3" in missing_code.message
    [missing_name] = only(report, "missing_name")
    assert missing_name.code == f"{C1}004"


def test_grid_sticking_out_by_10_m():
    rows = clean_grids()
    rows[2] = grid(3, box(-10, 0, 100, 100))  # the west edge of C1 is x = 0
    report = with_grids(rows)
    [problem] = only(report, "outside_parent")
    assert problem.code == f"{C1}003"
    assert problem.level == "grid"
    assert "10.0 m" in problem.message
    assert "1000.0 m²" in problem.message
    assert C1 in problem.message


def test_half_a_metre_out_is_within_tolerance():
    rows = clean_grids()
    rows[2] = grid(3, box(-0.5, 0, 100, 100))
    assert with_grids(rows, tolerance_m=1.0).ok
    # The same shape fails a tighter tolerance: the check does look at it.
    strict = with_grids(rows, tolerance_m=0.2)
    assert [p.check for p in strict.errors] == ["outside_parent"]


def test_community_outside_street():
    comms = communities()
    comms.loc[1, "geometry"] = (
        gpd.GeoSeries([local(box(200, 0, 420, 200))], crs=UTM).to_crs(4326).iloc[0]
    )
    report = validate_layers({"community": comms}, existing={"street": street()})
    [problem] = only(report, "outside_parent")
    assert problem.level == "community" and problem.code == C2
    assert "20.0 m" in problem.message


def test_overlapping_grids_name_both():
    rows = clean_grids()
    rows[2] = grid(3, box(0, 0, 110, 100))  # 10 m over grid 4
    report = with_grids(rows)
    [problem] = only(report, "overlap")
    assert problem.severity == "error"
    assert f"{C1}003" in problem.message and f"{C1}004" in problem.message
    assert "1000.0 m²" in problem.message
    assert "near 111.57" in problem.message


def test_identical_and_contained_grids_overlap():
    # "overlaps" is false for equal or nested polygons; they must still be reported.
    rows = clean_grids() + [grid(5, box(0, 100, 100, 200)), grid(6, box(120, 20, 180, 80))]
    report = with_grids(rows)
    pairs = {tuple(sorted(c for c in (p.code, p.message.split(" and grid ")[1].split()[0])))
             for p in only(report, "overlap")}
    assert pairs == {(f"{C1}001", f"{C1}005"), (f"{C1}004", f"{C1}006")}


def test_overlap_sliver_within_tolerance_is_ignored():
    rows = clean_grids()
    rows[2] = grid(3, box(0, 0, 100.5, 100))  # 0.5 m wide, 50 m² in all
    assert with_grids(rows, tolerance_m=1.0).ok
    assert [p.check for p in with_grids(rows, tolerance_m=0.1).errors] == ["overlap"]


def test_overlapping_communities():
    comms = layer([
        (C1, "厦良社区", STREET, box(0, 0, 220, 200)),
        (C2, "点灯社区", STREET, box(200, 0, 400, 200)),
    ])
    report = validate_layers({"community": comms}, existing={"street": street()})
    [problem] = only(report, "overlap")
    assert problem.level == "community"
    assert "4000.0 m²" in problem.message


def test_hole_left_uncovered_is_a_gap():
    rows = clean_grids()
    with_hole = Polygon(box(0, 0, 100, 100).exterior, [box(40, 40, 60, 60).exterior.coords])
    rows[2] = grid(3, with_hole)
    report = with_grids(rows)
    [problem] = only(report, "gap")
    assert problem.code == C1
    assert problem.level == "grid"
    assert "400.0 m²" in problem.message
    assert report.errors == [problem]


def test_gap_narrower_than_tolerance_is_ignored():
    rows = clean_grids()
    rows[2] = grid(3, box(0, 0, 99.5, 100))
    assert with_grids(rows).ok
    assert [p.check for p in with_grids(rows, tolerance_m=0.1).errors] == ["gap"]


def test_community_without_grids_is_a_gap():
    rows = [r for r in clean_grids() if r[2] == C1]
    report = with_grids(rows)
    [problem] = only(report, "gap")
    assert problem.code == C2
    assert "40000.0 m²" in problem.message


def test_communities_must_cover_the_street():
    comms = layer([(C1, "厦良社区", STREET, box(0, 0, 200, 200))])
    report = validate_layers({"community": comms}, existing={"street": street()})
    [problem] = only(report, "gap")
    assert problem.level == "community" and problem.code == STREET
    assert "40000.0 m²" in problem.message


def test_unknown_and_missing_parent():
    rows = clean_grids()
    rows[0] = (rows[0][0], rows[0][1], "451102003999", rows[0][3])
    rows[1] = (rows[1][0], rows[1][1], None, rows[1][3])
    report = with_grids(rows)
    problems = only(report, "unknown_parent")
    assert [p.code for p in problems] == [f"{C1}001", f"{C1}002"]
    assert "451102003999" in problems[0].message
    assert "no parent code" in problems[1].message
    # Without a known parent the two grids belong to no community: their area is a gap.
    [gap] = only(report, "gap")
    assert "20000.0 m²" in gap.message


def test_empty_and_missing_geometry():
    rows = clean_grids() + [grid(5, Polygon()), grid(6, None)]
    report = with_grids(rows)
    problems = only(report, "empty_geometry")
    assert [p.code for p in problems] == [f"{C1}005", f"{C1}006"]
    assert all(p.severity == "error" for p in problems)
    assert report.errors == problems


def test_street_needs_no_parent():
    report = validate_layers({"street": street()})
    assert report.problems == []


def test_report_text_and_dict():
    rows = clean_grids()
    rows[2] = grid(3, box(-10, 0, 100, 100))
    rows[0] = grid(1, Polygon([(0, 100), (100, 200), (100, 100), (0, 200)]))
    report = with_grids(rows)
    text = report.format_text()
    lines = text.splitlines()
    assert len(lines) == len(report.problems) + 1
    assert lines[0].startswith("ERROR")  # errors come first
    assert any(line.startswith("WARNING") and "invalid_geometry" in line for line in lines)
    assert f"{C1}003" in text and "outside_parent" in text
    assert lines[-1] == (
        "NOT OK: 2 errors, 1 warning (features checked: street 1, community 2, grid 6)"
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["error_count"] == 2 and data["warning_count"] == 1
    assert data["features"] == {"street": 1, "community": 2, "grid": 6}
    assert {p["check"] for p in data["problems"]} == {"invalid_geometry", "outside_parent", "gap"}
    assert all(p["check"] in CHECKS for p in data["problems"])


def test_report_properties():
    report = ValidationReport(
        problems=[Problem("grid", "1", "warning", "invalid_geometry", "x")], layers={}
    )
    assert report.ok and report.errors == [] and len(report.warnings) == 1
    assert report.format_text().startswith("WARNING")


def test_input_is_not_modified():
    grids = layer(clean_grids()[:1] + [grid(9, Polygon([(0, 0), (1, 1), (1, 0), (0, 1)]))])
    before = grids.geometry.copy()
    validate_layers({"grid": grids})
    assert grids.geometry.geom_equals_exact(before, tolerance=0).all()
    assert not grids.geometry.iloc[1].is_valid


def test_other_crs_inputs_are_measured_in_metres():
    # The same layers in CGCS2000 projected (EPSG:4547) give the same answer.
    rows = clean_grids()
    rows[2] = grid(3, box(-10, 0, 100, 100))
    layers = {"street": street(), "community": communities(), "grid": layer(rows)}
    report = validate_layers({k: v.to_crs(4547) for k, v in layers.items()})
    [problem] = only(report, "outside_parent")
    assert "10.0 m" in problem.message
    assert report.layers["grid"].crs.to_epsg() == 4547


@pytest.mark.parametrize("tolerance", [-1, float("nan"), "abc"])
def test_bad_tolerance(tolerance):
    with pytest.raises(InvalidInput) as info:
        validate_layers({"street": street()}, tolerance_m=tolerance)
    assert info.value.field == "tolerance_m"


def test_bad_layers_are_refused():
    with pytest.raises(LayerError, match="village"):
        validate_layers({"village": street()})
    with pytest.raises(LayerError, match="parent_code"):
        validate_layers({"grid": layer(clean_grids()).drop(columns="parent_code")})
    with pytest.raises(LayerError, match="no CRS"):
        validate_layers({"street": street().set_crs(None, allow_override=True)})


@settings(max_examples=15, deadline=None)
@given(
    columns=st.integers(1, 5),
    rows=st.integers(1, 5),
    shift=st.sampled_from([0.0, 5.0, 30.0]),
)
def test_any_regular_tiling_is_ok_and_a_shifted_cell_is_not(columns, rows, shift):
    width, height = 200 / columns, 200 / rows
    cells = [
        grid(i * columns + j + 1, box(j * width, i * height, (j + 1) * width, (i + 1) * height))
        for i in range(rows)
        for j in range(columns)
    ]
    cells += [grid(1, box(200, 0, 400, 200), parent=C2)]
    if shift:
        # Moving the south-west cell east opens a gap behind it and overlaps its eastern
        # neighbour: the next cell, or C2's grid when C1 is a single column.
        code, name, parent, shape = cells[0]
        cells[0] = (code, name, parent, affinity.translate(shape, shift, 0))
    report = with_grids(cells)
    if not shift:
        assert report.problems == []
    else:
        checks = {p.check for p in report.errors}
        assert {"gap", "overlap"} <= checks
        assert ("outside_parent" in checks) == (columns == 1)


# --- what --force may override --------------------------------------------------------------


def test_a_layer_with_no_features_is_an_error_no_force_overrides():
    report = validate_layers({"grid": layer([])},
                             existing={"street": street(), "community": communities()})
    [empty] = only(report, "empty_layer")
    assert empty.severity == "error" and "remove every grid" in empty.message
    assert not report.ok and not report.forceable
    assert report.blocking == [empty]
    assert report.to_dict()["forceable"] is False


@pytest.mark.parametrize("change, check", [
    (lambda rows: rows.__setitem__(1, (rows[0][0],) + rows[1][1:]), "duplicate_code"),
    (lambda rows: rows.__setitem__(1, (None,) + rows[1][1:]), "missing_code"),
    (lambda rows: rows.__setitem__(1, rows[1][:1] + (None,) + rows[1][2:]), "missing_name"),
    (lambda rows: rows.__setitem__(1, rows[1][:3] + (Polygon(),)), "empty_geometry"),
])
def test_codes_names_and_geometry_are_not_forceable(change, check):
    rows = clean_grids()
    change(rows)
    report = with_grids(rows)
    assert check in {p.check for p in report.blocking}
    assert not report.forceable


@pytest.mark.parametrize("change, check", [
    (lambda rows: rows.__setitem__(0, grid(1, box(0, 100, 130, 200))), "overlap"),
    (lambda rows: rows.__setitem__(0, grid(1, box(0, 100, 80, 200))), "gap"),
    (lambda rows: rows.__setitem__(2, grid(3, box(-10, 0, 100, 100))), "outside_parent"),
    (lambda rows: rows.__setitem__(0, grid(1, box(0, 100, 100, 200), parent="451102003009")),
     "unknown_parent"),
])
def test_geometric_and_parent_errors_are_forceable(change, check):
    rows = clean_grids()
    change(rows)
    report = with_grids(rows)
    assert check in {p.check for p in report.errors}
    assert report.blocking == [] and report.forceable and not report.ok
