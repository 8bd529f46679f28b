"""Folium maps, built in one place from GeoDataFrames.

Views only embed what these functions return. Every string that may come from a user
(case titles, descriptions, and boundary names from imported files) goes through
:func:`gis.escape.html_text` before it reaches a popup or tooltip.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import folium
import mapclassify
import numpy as np
from branca.element import Element
from folium.plugins import Fullscreen, MarkerCluster

from gis.assets import DEFAULT_BASE_URL, localise
from gis.escape import html_text
from gis.geojson import feature_collection
from gis.i18n import label

# Sequential palette (ColorBrewer YlOrRd, 5 classes): light = few, dark = many.
PALETTE = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]
NO_DATA = "#d9d9d9"
STATUS_COLOURS = {
    "reported": "#e6550d", "accepted": "#fd8d3c", "in_progress": "#3182bd",
    "resolved": "#31a354", "closed": "#636363", "rejected": "#969696",
}
LINE = {"street": ("#252525", 3), "community": ("#54278f", 2), "compound": ("#2171b5", 1)}


@dataclass(frozen=True)
class TileSource:
    """What ``folium.Map`` needs to show a base layer (``tiles=None`` for none)."""

    tiles: str | None
    attr: str | None = None


def tile_source(setting: str, attribution: str = "") -> TileSource:
    """Resolve the ``HEMEI_TILES`` setting: ``none``, ``osm`` or an XYZ URL template."""
    s = (setting or "none").strip()
    if s.lower() == "none":
        return TileSource(None)
    if s.lower() == "osm":
        return TileSource("OpenStreetMap")
    if "{z}" in s and "{x}" in s and "{y}" in s:
        return TileSource(s, attribution or "Tiles")
    raise ValueError(f"HEMEI_TILES must be none, osm or an XYZ URL template, got {setting!r}")


def classify(values, k: int = 5) -> list[float]:
    """Upper bounds of up to ``k`` classes for ``values`` (Fisher–Jenks natural breaks,
    which suit skewed counts better than equal intervals)."""
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    uniq = np.unique(y)
    if len(uniq) == 0:
        return []
    if len(uniq) <= k:
        return [float(u) for u in uniq]
    with warnings.catch_warnings():
        # Without numba mapclassify warns that it uses pure Python; fine at grid counts,
        # and large layers are sampled.
        warnings.simplefilter("ignore")
        if len(y) <= 2000:
            bins = mapclassify.FisherJenks(y, k=k).bins
        else:
            bins = mapclassify.FisherJenksSampled(y, k=k, pct=2000 / len(y)).bins
    return [float(b) for b in bins]


def _colour_for(value: float | None, bins: list[float]) -> str:
    if value is None or not np.isfinite(value) or not bins:
        return NO_DATA
    idx = int(np.searchsorted(bins, value, side="left"))
    idx = min(idx, len(bins) - 1)
    # Spread the classes over the palette so 2 classes still span light→dark.
    pos = round(idx * (len(PALETTE) - 1) / max(len(bins) - 1, 1))
    return PALETTE[pos]


def legend_html(title: str, bins: list[float], direction: str, locale: str) -> str:
    """A legend: one swatch per class (value ranges), the 'no data' swatch, and which
    way is good."""
    rows = []
    lower = None
    for b in bins:
        rng = f"{b:g}" if lower is None or lower == b else f"{lower:g}–{b:g}"
        if lower is None and bins[0] != 0:
            rng = f"≤ {b:g}"
        rows.append(
            f'<div class="legend-row"><span class="swatch" style="background:'
            f'{_colour_for(b, bins)}"></span>{html_text(rng)}</div>'
        )
        lower = b + 1 if float(b).is_integer() else b
    rows.append(f'<div class="legend-row"><span class="swatch" style="background:{NO_DATA}">'
                f'</span>{html_text(label("no_data", locale))}</div>')
    return (
        '<div id="map-legend" class="map-legend" role="region" aria-label="legend">'
        f'<div class="legend-title">{html_text(title)}</div>'
        f'<div class="legend-direction">{html_text(direction)}</div>' + "".join(rows) + "</div>"
    )


def _features(gdf, props: list[str], precision: int = 6) -> dict:
    """GeoJSON for ``gdf`` with only ``props``, every string escaped for HTML, and the
    feature code as its id."""
    return feature_collection(gdf, props, precision=precision, text=html_text, id_col="code")


def base_map(bounds, tiles: TileSource, *, zoom_control: bool = True) -> folium.Map:
    """An empty map fitted to ``bounds`` (minx, miny, maxx, maxy) with the tile source."""
    minx, miny, maxx, maxy = bounds
    m = folium.Map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=14,
                   tiles=None, control_scale=True, zoom_control=zoom_control,
                   prefer_canvas=False)
    if tiles.tiles is not None:
        folium.TileLayer(tiles.tiles, attr=tiles.attr, name="basemap",
                         control=False).add_to(m)
    # Leaflet needs a maxZoom on the map itself when there is no tile layer (marker
    # clusters refuse to start without one).
    m.options["maxZoom"] = 19
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    Fullscreen(position="topleft").add_to(m)
    return m


def _outline_layer(m, gdf, level: str, locale: str, show: bool = True):
    colour, weight = LINE[level]
    data = _features(gdf, ["code", "name"])
    folium.GeoJson(
        data, name=label(level, locale), show=show,
        style_function=lambda _f, c=colour, w=weight: {
            "color": c, "weight": w, "fill": False, "opacity": 0.9},
        tooltip=folium.GeoJsonTooltip(fields=["name", "code"],
                                      aliases=[label("name", locale), label("code", locale)],
                                      sticky=True),
    ).add_to(m)


def _case_layer(m, cases: list[dict], locale: str, case_url: str):
    """Cases as clustered circle markers coloured by status, with escaped popups."""
    if not cases:
        return
    cluster = MarkerCluster(name=label("cases", locale), control=True,
                            options={"maxClusterRadius": 40, "disableClusteringAtZoom": 18})
    feats = []
    for c in cases:
        link = case_url.format(id=int(c["id"]))
        popup = (
            f'<div class="case-popup"><b>{html_text(c["title"])}</b><br>'
            f'{html_text(label("category", locale))}: {html_text(c["category_label"])}<br>'
            f'{html_text(label("status", locale))}: {html_text(c["status_label"])}<br>'
            f'{html_text(label("age", locale))}: {int(c["age_days"])} '
            f'{html_text(label("days", locale))}<br>'
            f'<a href="{html_text(link)}">{html_text(label("details", locale))}</a></div>'
        )
        feats.append({
            "type": "Feature", "id": int(c["id"]),
            "geometry": {"type": "Point",
                         "coordinates": [round(c["lon"], 6), round(c["lat"], 6)]},
            "properties": {"popup": popup, "status": c["status"],
                           "colour": STATUS_COLOURS.get(c["status"], "#333")},
        })
    folium.GeoJson(
        {"type": "FeatureCollection", "features": feats},
        marker=folium.CircleMarker(radius=6, fill=True, fill_opacity=0.9, weight=1),
        style_function=lambda f: {"color": "#ffffff", "fillColor": f["properties"]["colour"]},
        popup=folium.GeoJsonPopup(fields=["popup"], labels=False),
    ).add_to(cluster)
    cluster.add_to(m)


def overview_map(grids, layers: dict, cases: list[dict], *, tiles: TileSource,
                 locale: str = "zh", case_url: str = "/cases/{id}",
                 grid_url: str = "/grids/{code}") -> folium.Map:
    """The street overview: grids coloured by open cases (natural-breaks classes, with a
    legend and a 'no data' class), community and compound outlines, clustered cases, a
    tooltip per grid with its name, code and counts, and a layer control."""
    m = base_map(tuple(grids.total_bounds), tiles)
    bins = classify(grids["open"])
    g = grids.copy()
    g["fill"] = [_colour_for(v, bins) for v in g["open"]]
    g["link"] = [grid_url.format(code=c) for c in g["code"]]
    data = _features(g, ["code", "name", "open", "total", "households", "fill", "link"])
    folium.GeoJson(
        data, name=label("choropleth_open", locale),
        style_function=lambda f: {"fillColor": f["properties"]["fill"], "fillOpacity": 0.65,
                                  "color": "#555", "weight": 1},
        highlight_function=lambda _f: {"weight": 3, "color": "#000"},
        tooltip=folium.GeoJsonTooltip(
            fields=["name", "code", "open", "total"],
            aliases=[label("grid", locale), label("code", locale), label("open", locale),
                     label("total", locale)], sticky=True),
    ).add_to(m)
    for level in ("street", "community", "compound"):
        if level in layers and len(layers[level]):
            _outline_layer(m, layers[level], level, locale, show=True)
    _case_layer(m, cases, locale, case_url)
    folium.LayerControl(collapsed=True).add_to(m)
    m.get_root().html.add_child(Element(legend_html(
        label("choropleth_open", locale), bins, label("fewer_better", locale), locale)))
    return m


def grid_map(grid_row, compounds, cases: list[dict], *, tiles: TileSource, locale: str = "zh",
             case_url: str = "/cases/{id}") -> folium.Map:
    """One grid zoomed in: its outline, the compounds that touch it and its cases."""
    import geopandas as gpd

    gdf = gpd.GeoDataFrame([grid_row], geometry="geometry", crs="EPSG:4326")
    m = base_map(tuple(gdf.total_bounds), tiles)
    folium.GeoJson(
        _features(gdf, ["code", "name"]), name=label("grid", locale),
        style_function=lambda _f: {"color": "#bd0026", "weight": 3, "fillOpacity": 0.05},
        tooltip=folium.GeoJsonTooltip(fields=["name", "code"],
                                      aliases=[label("grid", locale), label("code", locale)]),
    ).add_to(m)
    if len(compounds):
        _outline_layer(m, compounds, "compound", locale)
    _case_layer(m, cases, locale, case_url)
    folium.LayerControl(collapsed=True).add_to(m)
    return m


def point_map(lon: float, lat: float, title: str, *, tiles: TileSource) -> folium.Map:
    """A small map of one case."""
    m = base_map((lon - 0.002, lat - 0.0015, lon + 0.002, lat + 0.0015), tiles)
    folium.CircleMarker([lat, lon], radius=8, color="#bd0026", fill=True,
                        tooltip=folium.Tooltip(html_text(title))).add_to(m)
    return m


def render_parts(m: folium.Map, vendor_url: str = DEFAULT_BASE_URL) -> dict[str, str]:
    """Render a map into the pieces a page template embeds: ``header`` (scripts and
    styles), ``html`` (the map div) and ``script``. Every script and stylesheet is
    pointed at the app's own copy under ``vendor_url`` (no CDN: intranets have none)."""
    localise(m, vendor_url)
    root = m.get_root()
    root.render()
    return {"header": root.header.render(), "html": root.html.render(),
            "script": root.script.render()}
