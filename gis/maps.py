"""Folium maps, built in one place from GeoDataFrames.

Views only embed what these functions return. Every string that may come from a user
(case titles, descriptions, and boundary names from imported files) goes through
:func:`gis.escape.html_text` before it reaches a popup or tooltip; cases loaded in the
browser are put into the DOM as text by ``hemei-map.js``.

At city scale (tens of thousands of grids, millions of cases) folium's habit of embedding
everything is the problem, so the overview embeds no case markers (the browser fetches
the cases in view by bounding box), simplifies the grid polygons together so neighbours
keep their shared edges (``shapely.coverage_simplify``), and rounds coordinates to what
the screen needs.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import folium
import mapclassify
import numpy as np
import shapely
from branca.element import Element, MacroElement
from folium.elements import JSCSSMixin
from folium.plugins import Fullscreen, HeatMap, LocateControl, MarkerCluster
from jinja2 import Template

from gis.assets import DEFAULT_BASE_URL, localise
from gis.escape import html_text
from gis.geojson import feature_collection
from gis.i18n import label
from gis.tiles import TileConfig, add_to_map

# ColorBrewer YlOrRd, 5 classes: light = good, dark red = bad (the palette is reversed for
# metrics where higher is better, so dark red always means "look here").
PALETTE = ["#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026"]
NO_DATA = "#d9d9d9"
STATUS_COLOURS = {
    "reported": "#e6550d", "verified": "#fd8d3c", "filed": "#fdae6b",
    "dispatched": "#6baed6", "claimed": "#6baed6", "in_progress": "#3182bd",
    "reopened": "#de2d26", "resolved": "#31a354", "closed": "#636363",
    "rejected": "#969696", "closed_not_fixed": "#252525",
}
LINE = {"street": ("#252525", 3), "community": ("#54278f", 2), "compound": ("#2171b5", 1),
        "grid": ("#555555", 1)}
SCHEMES = ("natural_breaks", "quantiles")


@dataclass
class Choropleth:
    """What to colour the grids by: a column of values and how to read it."""

    column: str
    title: str
    better: str = "lower"  # or "higher"
    scheme: str = "natural_breaks"
    fmt: str = "{:g}"
    note: str = ""
    integer: bool = False  # counts: classes read "1 – 2", "3 – 4", not "0 – 2", "2 – 4"
    bins: list[float] = field(default_factory=list)


def classify(values, k: int = 5, scheme: str = "natural_breaks") -> list[float]:
    """Upper bounds of up to ``k`` classes for the finite ``values``.

    ``natural_breaks`` (Fisher–Jenks, sampled above 2,000 values) suits skewed counts;
    ``quantiles`` gives classes of equal size. Duplicate bounds (many equal values) are
    merged, so a layer of mostly zeros gets fewer, meaningful classes.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown classification scheme {scheme!r}; expected {SCHEMES}")
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    uniq = np.unique(y)
    if len(uniq) == 0:
        return []
    if len(uniq) <= k:
        return [float(u) for u in uniq]
    with warnings.catch_warnings():
        # Without numba mapclassify warns that it uses pure Python; fine at these sizes.
        warnings.simplefilter("ignore")
        if scheme == "quantiles":
            bins = mapclassify.Quantiles(y, k=k).bins
        elif len(y) <= 2000:
            bins = mapclassify.FisherJenks(y, k=k).bins
        else:
            bins = mapclassify.FisherJenksSampled(y, k=k, pct=2000 / len(y)).bins
    return sorted({float(b) for b in bins})


def class_colours(values, bins: list[float], better: str = "lower") -> list[str]:
    """A colour per value (vectorised): its class on the palette, grey for no data."""
    v = np.asarray(values, dtype=float)
    out = np.full(len(v), NO_DATA, dtype=object)
    if not bins:
        return out.tolist()
    palette = PALETTE if better == "lower" else PALETTE[::-1]
    idx = np.minimum(np.searchsorted(np.asarray(bins), v, side="left"), len(bins) - 1)
    # Spread the classes over the palette so two classes still span light → dark.
    pos = np.rint(idx * (len(palette) - 1) / max(len(bins) - 1, 1)).astype(int)
    ok = np.isfinite(v)
    out[ok] = np.asarray(palette, dtype=object)[pos[ok]]
    return out.tolist()


def legend_html(ch: Choropleth, locale: str) -> str:
    """The legend: one swatch per class with its value range, the 'no data' swatch, and
    which way is good."""
    rows = []
    lower = None
    colours = class_colours(ch.bins, ch.bins, ch.better)
    for b, colour in zip(ch.bins, colours, strict=True):
        hi = ch.fmt.format(b)
        if lower is None:
            rng = hi if len(ch.bins) <= 5 and b == min(ch.bins) else f"≤ {hi}"
        else:
            lo = lower + 1 if ch.integer else lower
            rng = hi if lo == b else f"{ch.fmt.format(lo)} – {hi}"
        rows.append(f'<div class="legend-row"><span class="swatch" style="background:'
                    f'{colour}"></span>{html_text(rng)}</div>')
        lower = b
    rows.append(f'<div class="legend-row"><span class="swatch" style="background:{NO_DATA}">'
                f'</span>{html_text(label("no_data", locale))}</div>')
    direction = label("fewer_better" if ch.better == "lower" else "higher_better", locale)
    return (
        f'<div id="map-legend" class="map-legend" data-metric="{html_text(ch.column)}">'
        f'<div class="legend-title">{html_text(ch.title)}</div>'
        f'<div class="legend-direction">{html_text(direction)}</div>' + "".join(rows)
        + (f'<div class="legend-note">{html_text(ch.note)}</div>' if ch.note else "")
        + "</div>"
    )


def simplify_for_display(geoms, extent: float, pixels: int = 1600):
    """Simplify polygons that tile an area together, so shared edges stay shared and no
    gaps open between neighbours, to about half a pixel at the zoom that fits ``extent``
    (degrees) into ``pixels``. Returns (geometries, coordinate decimals)."""
    tol = extent / pixels / 2
    geoms = np.asarray(geoms, dtype=object)
    if tol > 1e-6 and len(geoms) > 1:
        geoms = shapely.coverage_simplify(geoms, tol, simplify_boundary=True)
    # Decimals that keep rounding below the simplification tolerance.
    decimals = int(min(7, max(4, np.ceil(-np.log10(max(tol, 1e-7))) + 1)))
    return geoms, decimals


def _display(gdf, tiles: TileConfig, extent: float | None = None):
    """A copy of ``gdf`` ready to draw: simplified (if ``extent``) and shifted to the tile
    datum. Returns (frame, decimals)."""
    out = gdf.copy()
    decimals = 6
    if extent is not None:
        out["geometry"], decimals = simplify_for_display(out.geometry.values, extent)
    if tiles.datum == "gcj02":
        from gis.gcj02 import shift_geometries

        out["geometry"] = shift_geometries(out.geometry.values, to="gcj02")
    return out, decimals


def base_map(bounds, tiles: TileConfig, *, zoom_control: bool = True) -> folium.Map:
    """An empty map fitted to ``bounds`` (minx, miny, maxx, maxy, WGS-84) with the tile
    source, a scale bar, full screen and 'locate me'."""
    minx, miny, maxx, maxy = bounds
    if tiles.datum == "gcj02":
        from gis.gcj02 import wgs84_to_gcj02

        (minx, maxx), (miny, maxy) = wgs84_to_gcj02(np.array([minx, maxx]),
                                                    np.array([miny, maxy]))
    m = folium.Map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=14,
                   tiles=None, control_scale=True, zoom_control=zoom_control)
    if tiles.layers:
        add_to_map(tiles, m)
    # Leaflet needs a maxZoom on the map itself when there is no tile layer (marker
    # clusters refuse to start without one).
    m.options["maxZoom"] = 19
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    Fullscreen(position="topleft").add_to(m)
    LocateControl(auto_start=False, position="topleft",
                  strings={"title": "定位 / Locate me"}).add_to(m)
    return m


def _outline_layer(m, gdf, level: str, locale: str, tiles: TileConfig,
                   extent: float | None, show: bool = True):
    colour, weight = LINE[level]
    frame, decimals = _display(gdf, tiles, extent)
    folium.GeoJson(
        feature_collection(frame, ["code", "name"], precision=decimals, text=html_text,
                           id_col="code"),
        name=label(level, locale), show=show,
        style_function=lambda _f, c=colour, w=weight: {
            "color": c, "weight": w, "fill": False, "opacity": 0.9},
        tooltip=folium.GeoJsonTooltip(fields=["name", "code"],
                                      aliases=[label(level, locale), label("code", locale)],
                                      sticky=True),
    ).add_to(m)


class CaseLoader(JSCSSMixin, MacroElement):
    """Fills a marker cluster and a heat layer with the cases in view, fetched by
    bounding box from the API (see ``webapp/static/js/hemei-map.js``)."""

    _template = Template("""
{% macro script(this, kwargs) %}
HemeiMap.attach({{ this._parent.get_name() }}, {{ this.cluster.get_name() }},
                {{ this.heat.get_name() if this.heat else 'null' }}, {{ this.options_json }});
{% endmacro %}
""")

    def __init__(self, cluster, heat, options: dict, script_url: str):
        super().__init__()
        self._name = "CaseLoader"
        self.cluster, self.heat = cluster, heat
        # ensure_ascii + "</" escaped: the JSON cannot close the surrounding <script>.
        self.options_json = json.dumps(options, ensure_ascii=True).replace("</", "<\\/")
        self.default_js = [("hemei-map", script_url)]


def case_layers(m, *, locale: str, tiles: TileConfig, points_url: str, case_url: str,
                script_url: str, categories: dict, limit: int = 5000, heat: bool = True):
    """Add the clustered case markers (coloured by status) and the heat map, both fed
    from ``points_url`` for the visible area."""
    from gis.cases import STATUS_LABELS

    cluster = MarkerCluster(name=label("cases", locale), control=True,
                            options={"maxClusterRadius": 40, "chunkedLoading": True})
    cluster.add_to(m)
    heat_layer = None
    if heat:
        heat_layer = HeatMap([], name=label("heatmap", locale), show=False, radius=18,
                             blur=14, min_opacity=0.3)
        heat_layer.add_to(m)
    i = 1 if locale.startswith("en") else 0
    options = {
        "pointsUrl": points_url, "caseUrl": case_url, "limit": limit, "datum": tiles.datum,
        "colours": STATUS_COLOURS,
        "statuses": {k: v[i] for k, v in STATUS_LABELS.items()},
        "categories": categories,
        "labels": {k: label(k, locale) for k in ("category", "status", "age", "days",
                                                 "details", "shown")},
    }
    CaseLoader(cluster, heat_layer, options, script_url).add_to(m)


def overview_map(grids, layers: dict, ch: Choropleth, *, tiles: TileConfig,
                 locale: str = "zh", grid_url: str = "/grids/{code}",
                 case_options: dict | None = None) -> folium.Map:
    """The street overview: grids coloured by ``ch.column`` (classes from ``ch.scheme``,
    a legend, grey 'no data'), street/community/compound outlines with names on hover,
    clustered cases and a heat map fed by bounding box, and a layer control."""
    bounds = tuple(grids.total_bounds)
    extent = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    m = base_map(bounds, tiles)
    ch.bins = classify(grids[ch.column], scheme=ch.scheme)
    g = grids.copy()
    g["fill"] = class_colours(g[ch.column], ch.bins, ch.better)
    vals = g[ch.column].to_numpy(dtype=float)
    g["value"] = [ch.fmt.format(v) if np.isfinite(v) else label("no_data", locale)
                  for v in vals]
    g["link"] = [grid_url.format(code=c) for c in g["code"]]
    frame, decimals = _display(g, tiles, extent)
    props = ["code", "name", "value", "open", "total", "fill", "link"]
    folium.GeoJson(
        feature_collection(frame, props, precision=decimals, text=html_text, id_col="code"),
        name=ch.title,
        style_function=lambda f: {"fillColor": f["properties"]["fill"], "fillOpacity": 0.65,
                                  "color": "#555", "weight": 1},
        highlight_function=lambda _f: {"weight": 3, "color": "#000"},
        tooltip=folium.GeoJsonTooltip(
            fields=["name", "code", "value", "open", "total"],
            aliases=[label("grid", locale), label("code", locale), ch.title,
                     label("open", locale), label("total", locale)], sticky=True),
        on_each_feature=folium.JsCode(
            "function (f, layer) { layer.on('dblclick', function () {"
            " window.location = f.properties.link; }); }"),
    ).add_to(m)
    for level in ("street", "community", "compound"):
        if level in layers and len(layers[level]):
            _outline_layer(m, layers[level], level, locale, tiles, extent)
    if case_options is not None:
        case_layers(m, locale=locale, tiles=tiles, **case_options)
    folium.LayerControl(collapsed=True).add_to(m)
    m.get_root().html.add_child(Element(legend_html(ch, locale)))
    return m


def _embedded_cases(m, cases: list[dict], locale: str, case_url: str, tiles: TileConfig):
    """A few cases (one grid's) embedded directly, clustered, with escaped popups."""
    if not cases:
        return
    lon = np.array([c["lon"] for c in cases])
    lat = np.array([c["lat"] for c in cases])
    if tiles.datum == "gcj02":
        from gis.gcj02 import wgs84_to_gcj02

        lon, lat = wgs84_to_gcj02(lon, lat)
    cluster = MarkerCluster(name=label("cases", locale), control=True,
                            options={"maxClusterRadius": 30})
    feats = []
    for c, x, y in zip(cases, lon, lat, strict=True):
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
            "geometry": {"type": "Point", "coordinates": [round(float(x), 6),
                                                          round(float(y), 6)]},
            "properties": {"popup": popup, "status": c["status"],
                           "colour": STATUS_COLOURS.get(c["status"], "#333")},
        })
    folium.GeoJson(
        {"type": "FeatureCollection", "features": feats},
        marker=folium.CircleMarker(radius=7, fill=True, fill_opacity=0.9, weight=1),
        style_function=lambda f: {"color": "#ffffff", "fillColor": f["properties"]["colour"]},
        popup=folium.GeoJsonPopup(fields=["popup"], labels=False),
    ).add_to(cluster)
    cluster.add_to(m)


def area_map(area_row, level: str, children, cases: list[dict], *, tiles: TileConfig,
             locale: str = "zh", case_url: str = "/cases/{id}") -> folium.Map:
    """One grid or compound zoomed in: its outline, the features of ``children`` (the
    compounds touching a grid, or the grids a compound straddles) and its cases."""
    import geopandas as gpd

    gdf = gpd.GeoDataFrame([area_row], geometry="geometry", crs="EPSG:4326")
    m = base_map(tuple(gdf.total_bounds), tiles)
    frame, _ = _display(gdf, tiles)
    folium.GeoJson(
        feature_collection(frame, ["code", "name"], precision=6, text=html_text,
                           id_col="code"),
        name=label(level, locale),
        style_function=lambda _f: {"color": "#bd0026", "weight": 3, "fillOpacity": 0.05},
        tooltip=folium.GeoJsonTooltip(fields=["name", "code"],
                                      aliases=[label(level, locale), label("code", locale)]),
    ).add_to(m)
    if children is not None and len(children):
        child_level = "compound" if level == "grid" else "grid"
        _outline_layer(m, children, child_level, locale, tiles, None)
    _embedded_cases(m, cases, locale, case_url, tiles)
    folium.LayerControl(collapsed=True).add_to(m)
    return m


def point_map(lon: float, lat: float, title: str, *, tiles: TileConfig) -> folium.Map:
    """A small map of one case."""
    m = base_map((lon - 0.002, lat - 0.0015, lon + 0.002, lat + 0.0015), tiles)
    if tiles.datum == "gcj02":
        from gis.gcj02 import wgs84_to_gcj02

        lon, lat = (float(v) for v in wgs84_to_gcj02(lon, lat))
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
