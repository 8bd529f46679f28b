"""The choropleth legend: every class labelled with the values it really holds, on
hand-built values whose classes are known."""

from __future__ import annotations

import re

import geopandas as gpd
import numpy as np
from shapely.geometry import box

from gis import maps
from gis.tiles import tile_config


def rows(ch: maps.Choropleth) -> list[str]:
    """The legend's class labels, 'no data' last."""
    return re.findall(r'<div class="legend-row">.*?</span>([^<]*)</div>',
                      maps.legend_html(ch, "zh"))


def classed(values, bins=None, **kw) -> maps.Choropleth:
    """A choropleth of ``values`` as the maps class them: by ``bins`` (upper bounds)
    given by hand, or :func:`gis.maps.classify`'s."""
    ch = maps.Choropleth(column="v", title="t", fmt="{:.3g}", **kw)
    ch.bins = list(bins) if bins is not None else maps.classify(values)
    ch.lows = maps.class_lows(values, ch.bins)
    return ch


def test_the_first_class_of_counts_starts_at_the_smallest_value():
    # The tester's classes of /?metric=new&period=90d: 0 and 4 share the first.
    values = [0, 0, 3, 4, 6, 9, 12, 15, 17, 19, 22, 26, np.nan]
    ch = classed(values, bins=[4, 9, 15, 19, 26], integer=True)
    # Was "4, 5 – 9, …" although the grids with 0 are in the first class.
    assert rows(ch) == ["0 – 4", "5 – 9", "10 – 15", "16 – 19", "20 – 26", "无数据"]


def test_a_class_reads_as_one_value_only_when_it_holds_one():
    ch = classed([0, 0, 0, 2, 3, 7], integer=True)  # four distinct values: one class each
    assert ch.bins == [0.0, 2.0, 3.0, 7.0]
    assert rows(ch)[:4] == ["0", "2", "3", "7"]
    mixed = classed([0, 0, 1, 2, 5, 7], bins=[0, 2, 7], integer=True)
    assert rows(mixed)[:3] == ["0", "1 – 2", "3 – 7"]
    ones = classed([5, 5, 5], integer=True)
    assert rows(ones)[:1] == ["5"]


def test_values_that_are_not_counts_read_from_their_own_smallest_value():
    # Cases per 1,000 households: was "7.73, 7.73 – 15.9, …" with grids at 0 in the first.
    values = [0.0, 0.0, 7.73, 12.3, 15.9, 22.2, 25.9, 35.8, 41.7, 48.6, 78.3, 86.1]
    ch = classed(values, bins=[7.73, 15.9, 35.8, 48.6, 86.1])
    assert rows(ch)[:5] == ["0 – 7.73", "12.3 – 15.9", "22.2 – 35.8", "41.7 – 48.6",
                            "78.3 – 86.1"]
    # Classes of the maps' own classification read the same way.
    labels = rows(classed(values))
    assert labels[0].startswith("0 – ") or labels[0] == "0"


def test_class_lows_are_the_smallest_value_of_each_class():
    lows = maps.class_lows([3, 1, 2, 10, 7, np.nan], [2.0, 7.0, 10.0])
    assert lows == [1.0, 3.0, 10.0]
    empty = maps.class_lows([1.0], [1.0, 5.0])
    assert empty[0] == 1.0 and np.isnan(empty[1])
    assert maps.class_lows([], []) == []


def test_without_the_values_the_first_class_says_up_to():
    ch = maps.Choropleth(column="v", title="t", fmt="{:.3g}", integer=True,
                         bins=[4.0, 9.0])
    assert rows(ch)[:2] == ["≤ 4", "5 – 9"]


def test_the_overview_map_legend_uses_the_data():
    values = [0.0, 1, 5, 9, 14, 20, 30, 31, np.nan]
    n = len(values)
    grids = gpd.GeoDataFrame(
        {"code": [f"g{i}" for i in range(n)], "name": [f"g{i}" for i in range(n)],
         "v": values, "open": [0] * n, "total": [0] * n},
        geometry=[box(i, 0, i + 1, 1) for i in range(n)], crs="EPSG:4326")
    ch = maps.Choropleth(column="v", title="t", fmt="{:.3g}", integer=True)
    m = maps.overview_map(grids, {}, ch, tiles=tile_config("none"))
    html = m.get_root().render()
    assert ch.bins == [1.0, 9.0, 14.0, 20.0, 31.0]  # Fisher–Jenks: 0 and 1 together
    legend = html[html.index('id="map-legend"'):]
    assert re.findall(r'</span>([^<]*)</div>', legend)[:5] == [
        "0 – 1", "2 – 9", "14", "20", "21 – 31"]  # 14 and 20 alone in theirs
