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

import hashlib
import json
import warnings
from dataclasses import dataclass, field

import folium
import mapclassify
import numpy as np
import pandas as pd
import shapely
from branca.element import Element, MacroElement
from folium.elements import JSCSSMixin
from folium.plugins import Fullscreen, HeatMap, LocateControl, MarkerCluster
from jinja2 import Template

from gis.assets import DEFAULT_BASE_URL, localise
from gis.escape import html_text
from gis.geojson import feature_collection, round_coords
from gis.i18n import label
from gis.tiles import TileConfig, add_to_map

# Compact JSON in the pages: folium's templates share one Jinja environment whose tojson
# sorts keys, escapes every CJK character as \uXXXX and pads separators — 15 % of an
# overview page at city scale. Jinja's tojson still escapes <, >, & and ' for <script>.
folium.GeoJson._template.environment.policies["json.dumps_kwargs"] = {
    "sort_keys": False, "ensure_ascii": False, "separators": (",", ":")}

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
    # The smallest value in each class (NaN: none), for the legend: the first class runs
    # from the data's minimum, and a class holding one value reads as that value.
    lows: list[float] = field(default_factory=list)


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
    if scheme == "quantiles":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bins = mapclassify.Quantiles(y, k=k).bins
    else:
        bins = _fisher_jenks(y, k)
    return sorted({float(b) for b in bins})


def _fisher_jenks(y, k: int, max_values: int = 1000) -> list[float]:
    """Exact Fisher–Jenks on the distinct values weighted by how often they occur (counts
    have few distinct values), as a numpy dynamic programme in O(k·u²); above
    ``max_values`` distinct values it runs on that many evenly spaced quantiles."""
    y = np.sort(np.asarray(y, dtype=float))
    u, w = np.unique(y, return_counts=True)
    if len(u) > max_values:
        u, w = np.unique(np.quantile(y, np.linspace(0, 1, max_values)), return_counts=True)
    n = len(u)
    if n <= k:
        return u.tolist()
    w = w.astype(float)
    cw, c1, c2 = (np.concatenate([[0.0], np.cumsum(a)]) for a in (w, w * u, w * u * u))
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ssd = c2[j + 1] - c2[i] - (c1[j + 1] - c1[i]) ** 2 / (cw[j + 1] - cw[i])
    ssd = np.where(j >= i, ssd, np.inf)
    cost, back = ssd[0].copy(), np.zeros((k, n), dtype=np.int64)
    for c in range(1, k):
        tot = np.concatenate([[np.inf], cost[:-1]])[:, None] + ssd
        back[c] = np.argmin(tot, axis=0)
        cost = tot[back[c], np.arange(n)]
    bounds, end = [], n - 1
    for c in range(k - 1, 0, -1):
        bounds.append(u[end])
        end = back[c][end] - 1
    bounds.append(u[end])
    return sorted(float(b) for b in bounds)


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


def class_lows(values, bins: list[float]) -> list[float]:
    """The smallest finite value in each class of ``bins`` (as :func:`class_colours`
    assigns them; NaN for a class with none), vectorised."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not bins:
        return []
    idx = np.minimum(np.searchsorted(np.asarray(bins), v, side="left"), len(bins) - 1)
    lows = np.full(len(bins), np.nan)
    np.fmin.at(lows, idx, v)  # fmin: NaN (the start) gives way to any value
    return lows.tolist()


def legend_html(ch: Choropleth, locale: str) -> str:
    """The legend: one swatch per class with its value range, the 'no data' swatch, and
    which way is good.

    Classes are given by their upper bounds (``ch.bins``). The first class runs from the
    smallest value in the data (``ch.lows``) to its bound: grids with 0 are in it, so it
    reads "0 – 4", not "4". Each later class starts at the next whole number above the
    bound before for counts, at its own smallest value otherwise. A class reads as one
    value only when all its grids have that value. Without ``ch.lows`` the first class
    reads "≤ bound"."""
    rows = []
    lower = None
    colours = class_colours(ch.bins, ch.bins, ch.better)
    lows = ch.lows if len(ch.lows) == len(ch.bins) else [np.nan] * len(ch.bins)
    for b, least, colour in zip(ch.bins, lows, colours, strict=True):
        hi = ch.fmt.format(b)
        if least == b:  # every value of the class is b (NaN never equals)
            rng = hi
        elif lower is None:
            lo = None if np.isnan(least) else ch.fmt.format(least)
            # Values that print alike (7.731 and 7.734 as "7.73") read as one.
            rng = f"≤ {hi}" if lo is None else hi if lo == hi else f"{lo} – {hi}"
        else:
            # Counts: the next whole number, so classes tile ("1 – 4", "5 – 9"). Other
            # values: the class's own smallest value, since "7.73 – 15.9" after a first
            # class ending at 7.73 would put 7.73 in both.
            lo = lower + 1 if ch.integer else lower if np.isnan(least) else least
            lo_text = ch.fmt.format(lo)
            rng = hi if lo == b or lo_text == hi else f"{lo_text} – {hi}"
        rows.append(f'<div class="legend-row"><span class="swatch" style="background:'
                    f'{colour}"></span>{html_text(rng)}</div>')
        lower = b
    rows.append(f'<div class="legend-row"><span class="swatch" style="background:{NO_DATA}">'
                f'</span>{html_text(label("no_data", locale))}</div>')
    direction = label("fewer_better" if ch.better == "lower" else "higher_better", locale)
    return (
        f'<details id="map-legend" class="map-legend" data-metric="{html_text(ch.column)}" '
        'open>'
        f'<summary class="legend-title">{html_text(ch.title)}</summary>'
        f'<div class="legend-direction">{html_text(direction)}</div>' + "".join(rows)
        + (f'<div class="legend-note">{html_text(ch.note)}</div>' if ch.note else "")
        + "</details>" + _collapse_on_phones("map-legend")
    )


#: Narrower than this (a phone held upright), a map's legends start collapsed.
NARROW_PX = 600


def _collapse_on_phones(element_id: str) -> str:
    """A script closing the legend ``<details>`` with this id on a narrow screen: open by
    default (desktops, and browsers without script), collapsed to its title on a phone,
    where it would cover much of the map; the title opens it (mouse, touch or keyboard)."""
    return ("<script>(function(){var d=document.getElementById(" + json.dumps(element_id)
            + ");if(d&&window.matchMedia&&window.matchMedia('(max-width: "
            + f"{NARROW_PX}px)').matches)d.open=false;}})();</script>")


def simplify_for_display(geoms, extent: float, pixels: int = 1600):
    """Simplify polygons that tile an area together, so shared edges stay shared and no
    gaps open between neighbours, to about half a pixel at the zoom that fits ``extent``
    (degrees) into ``pixels``. Returns (geometries, coordinate decimals)."""
    tol = extent / pixels / 2
    geoms = np.asarray(geoms, dtype=object)
    if tol > 1e-6 and len(geoms) > 1:
        geoms = shapely.coverage_simplify(geoms, tol, simplify_boundary=True)
    # Decimals that keep rounding below the simplification tolerance.
    decimals = int(min(7, max(4, np.ceil(-np.log10(max(tol, 1e-7))))))
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


_GEOM_CACHE: dict = {}


def _cached_features(gdf, props: list[str], tiles, extent: float | None,
                     id_col: str = "code") -> dict:
    """Like ``feature_collection(*_display(...))`` but the simplified, rounded geometry
    dicts are computed once per (geometry, datum, extent) and reused; only the
    properties are built per call."""
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    key = (hashlib.sha1(b"".join(shapely.to_wkb(geoms))).hexdigest(), tiles.datum, extent)
    geo = _GEOM_CACHE.get(key)
    if geo is None:
        frame, decimals = _display(gdf[["geometry"]], tiles, extent)
        rounded = round_coords(frame.geometry.values, decimals)
        geo = [json.loads(t) for t in shapely.to_geojson(rounded)]
        if len(_GEOM_CACHE) > 16:
            _GEOM_CACHE.clear()
        _GEOM_CACHE[key] = geo
    cols = []
    for col in props:
        vals = gdf[col].tolist()
        cols.append([None if v is None or (isinstance(v, float) and v != v) or v is pd.NA
                     else html_text(v) if isinstance(v, str)
                     else int(v) if isinstance(v, (int, np.integer)) else float(v)
                     for v in vals])
    ids = gdf[id_col].astype(str).tolist()
    feats = [{"type": "Feature", "id": fid, "geometry": gm,
              "properties": {p: c[i] for p, c in zip(props, cols, strict=True)}}
             for i, (fid, gm) in enumerate(zip(ids, geo, strict=True))]
    return {"type": "FeatureCollection", "features": feats}


#: The words of the map's own controls (Leaflet and its plug-ins say them in English):
#: key → (zh, en).
_CONTROL_LABELS: dict[str, tuple[str, str]] = {
    "zoom_in": ("放大", "Zoom in"),
    "zoom_out": ("缩小", "Zoom out"),
    "fullscreen": ("全屏", "Full screen"),
    "fullscreen_exit": ("退出全屏", "Exit full screen"),
    "locate": ("定位我的位置", "Show my location"),
    "locate_popup": ("您在此点 {distance} {unit} 范围内", "You are within {distance} {unit} of "
                     "this point"),
    "meters": ("米", "metres"),
    "outside": ("您的位置不在地图范围内", "You seem to be outside the map's area"),
    "layers": ("图层", "Layers"),
    "marker": ("位置标记", "Location marker"),
}


def _cl(key: str, locale: str) -> str:
    zh, en = _CONTROL_LABELS[key]
    return en if locale == "en" else zh


class MapControls(MacroElement):
    """The map's zoom buttons and scale bar (metric only), Leaflet's attribution prefix
    (plain "Leaflet": no flag, no slogan) and the words of the controls Leaflet writes
    itself (the layer switch, a marker's alt text), in the page's language. Added right
    after the map, before the other controls, so the zoom buttons stay on top."""

    _template = Template("""
{% macro script(this, kwargs) %}
(function (map, words) {
  if (map.attributionControl) map.attributionControl.setPrefix("Leaflet");
  {%- if this.zoom %}
  L.control.zoom({position: "topleft", zoomInTitle: words.zoom_in,
                  zoomOutTitle: words.zoom_out}).addTo(map);
  {%- endif %}
  L.control.scale({metric: true, imperial: false}).addTo(map);
  L.Marker.prototype.options.alt = words.marker;
  // What "locate me" says once it has found the phone (the control's default, set
  // before the control below is made).
  if (L.Control.Locate) L.Control.Locate.prototype.options.strings.popup = words.locate_popup;
  // The layer switch is made later in this script, with its title fixed in English.
  setTimeout(function () {
    var links = map.getContainer().querySelectorAll(".leaflet-control-layers-toggle");
    for (var i = 0; i < links.length; i++) {
      links[i].title = words.layers;
      links[i].setAttribute("aria-label", words.layers);
    }
  }, 0);
})({{ this._parent.get_name() }}, {{ this.words_json }});
{% endmacro %}
""")

    def __init__(self, locale: str, zoom: bool = True):
        super().__init__()
        self._name = "MapControls"
        self.zoom = zoom
        words = {k: _cl(k, locale) for k in ("zoom_in", "zoom_out", "layers", "marker",
                                             "locate_popup")}
        # ensure_ascii + "</" escaped: the JSON cannot close the surrounding <script>.
        self.words_json = json.dumps(words, ensure_ascii=True).replace("</", "<\\/")


def base_map(bounds, tiles: TileConfig, *, zoom_control: bool = True,
             locale: str = "zh") -> folium.Map:
    """An empty map fitted to ``bounds`` (minx, miny, maxx, maxy, WGS-84) with the tile
    source, a scale bar (metric), full screen and 'locate me', every control in the
    page's language (``locale``)."""
    minx, miny, maxx, maxy = bounds
    if tiles.datum == "gcj02":
        from gis.gcj02 import wgs84_to_gcj02

        (minx, maxx), (miny, maxy) = wgs84_to_gcj02(np.array([minx, maxx]),
                                                    np.array([miny, maxy]))
    m = folium.Map(location=[(miny + maxy) / 2, (minx + maxx) / 2], zoom_start=14,
                   tiles=None, control_scale=False, zoom_control=False)
    MapControls(locale, zoom=zoom_control).add_to(m)
    if tiles.layers:
        add_to_map(tiles, m)
    # Leaflet needs a maxZoom on the map itself when there is no tile layer (marker
    # clusters refuse to start without one).
    m.options["maxZoom"] = 19
    m.fit_bounds([[miny, minx], [maxy, maxx]])
    Fullscreen(position="topleft", title=_cl("fullscreen", locale),
               title_cancel=_cl("fullscreen_exit", locale)).add_to(m)
    LocateControl(auto_start=False, position="topleft",
                  strings={"title": _cl("locate", locale), "metersUnit": _cl("meters", locale),
                           "outsideMapBoundsMsg": _cl("outside", locale)}).add_to(m)
    return m


def _outline_layer(m, gdf, level: str, locale: str, tiles: TileConfig,
                   extent: float | None, show: bool = True):
    colour, weight = LINE[level]
    folium.GeoJson(
        _cached_features(gdf, ["code", "name"], tiles, extent),
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


class RemoteGeoJson(JSCSSMixin, MacroElement):
    """A boundary layer whose geometry the browser fetches from ``url`` (simplified,
    rounded, versioned and cached by HTTP) into its parent FeatureGroup, styled from a
    small per-feature table embedded in the page.

    At city scale the grid geometry is 85 % of an overview page and the same for every
    metric, period and language; served once as its own cacheable file, the page keeps
    only what changes: a colour, a value and two counts per grid. Tooltips are built in
    the browser with ``textContent`` (see ``hemei-map.js``), so no name is parsed as HTML.
    """

    _template = Template("""
{% macro script(this, kwargs) %}
HemeiMap.remoteGeoJson({{ this._parent._parent.get_name() }}, {{ this._parent.get_name() }},
                       {{ this.options_json }});
{% endmacro %}
""")

    def __init__(self, options: dict, script_url: str):
        super().__init__()
        self._name = "RemoteGeoJson"
        # ensure_ascii + "</" escaped: the JSON cannot close the surrounding <script>.
        self.options_json = json.dumps(options, ensure_ascii=True,
                                       separators=(",", ":")).replace("</", "<\\/")
        self.default_js = [("hemei-map", script_url)]


def display_geojson(gdf, tiles: TileConfig, extent: float) -> dict:
    """A layer's display geometry (``code`` and ``name``; simplified together for the
    zoom that fits ``extent``, rounded, shifted to the tile datum), for the browser to
    fetch once per layer version. Names are plain text: the page sets them as text."""
    fc = _cached_features(gdf, [], tiles, extent)
    for feat, name in zip(fc["features"], gdf["name"].astype(str), strict=True):
        feat["properties"] = {"code": feat["id"], "name": name}
    return fc


def _remote_layer(m, name: str, options: dict, script_url: str, show: bool = True):
    group = folium.FeatureGroup(name=name, show=show)
    RemoteGeoJson(options, script_url).add_to(group)
    group.add_to(m)


def overview_map(grids, layers: dict, ch: Choropleth, *, tiles: TileConfig,
                 locale: str = "zh", grid_url: str = "/grids/{code}",
                 case_options: dict | None = None,
                 geometry_url: str = "/layers/{level}/display.geojson?v={version}",
                 layer_version: str = "0",
                 script_url: str = "/static/js/hemei-map.js") -> folium.Map:
    """The street overview: grids coloured by ``ch.column`` (classes from ``ch.scheme``,
    a legend, grey 'no data'), street/community/compound outlines with names on hover,
    clustered cases and a heat map fed by bounding box, and a layer control.

    The page embeds no geometry: each boundary layer is fetched from ``geometry_url``
    (one versioned, cacheable file per layer), the grids are styled from a table of
    ``code → [colour, value, open, total]`` embedded here."""
    bounds = tuple(grids.total_bounds)
    m = base_map(bounds, tiles, locale=locale)
    ch.bins = classify(grids[ch.column], scheme=ch.scheme)
    ch.lows = class_lows(grids[ch.column], ch.bins)
    colours = class_colours(grids[ch.column], ch.bins, ch.better)
    vals = grids[ch.column].to_numpy(dtype=float)
    shown = [ch.fmt.format(v) if np.isfinite(v) else label("no_data", locale) for v in vals]
    table = {str(code): [colour, text, int(o), int(t)] for code, colour, text, o, t in zip(
        grids["code"], colours, shown, grids["open"].fillna(0), grids["total"].fillna(0),
        strict=True)}
    url = geometry_url.replace("{version}", layer_version)
    _remote_layer(m, ch.title, {
        "url": url.replace("{level}", "grid"), "values": table, "noData": NO_DATA,
        "style": {"color": "#555", "weight": 1, "fillOpacity": 0.65},
        "highlight": {"weight": 3, "color": "#000"},
        "labels": [label("grid", locale), label("code", locale), ch.title,
                   label("open", locale), label("total", locale)],
        "link": grid_url, "marker": "grids",
    }, script_url)
    for level in ("street", "community", "compound"):
        if level in layers and len(layers[level]):
            colour, weight = LINE[level]
            _remote_layer(m, label(level, locale), {
                "url": url.replace("{level}", level),
                "style": {"color": colour, "weight": weight, "fill": False, "opacity": 0.9},
                "labels": [label(level, locale), label("code", locale)],
                "marker": level,
            }, script_url)
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
    m = base_map(tuple(gdf.total_bounds), tiles, locale=locale)
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


def point_map(lon: float, lat: float, title: str, *, tiles: TileConfig,
              areas: dict | None = None, locale: str = "zh") -> folium.Map:
    """A small map of one case; ``areas`` (level → GeoDataFrame: its grid, its compound)
    are outlined around it, so the map says where the case is even with no base tiles
    (an intranet with ``TILES=none``)."""
    shown = {lvl: g for lvl, g in (areas or {}).items() if g is not None and len(g)}
    # The view: the case's neighbourhood, widened to take in its grid and compound.
    x0, y0, x1, y1 = lon - 0.002, lat - 0.0015, lon + 0.002, lat + 0.0015
    for g in shown.values():
        gx0, gy0, gx1, gy1 = g.total_bounds
        x0, y0, x1, y1 = min(x0, gx0), min(y0, gy0), max(x1, gx1), max(y1, gy1)
    m = base_map((x0, y0, x1, y1), tiles, locale=locale)
    for level, gdf in shown.items():
        _outline_layer(m, gdf, level, locale, tiles, None)
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


# -- the planner's map -----------------------------------------------------------------------
HOT = "#d7191c"  # ColorBrewer RdBu ends: red for hot, blue for cold spots
COLD = "#2c7bb6"
CLUSTER = "#00441b"  # dark green: apart from the purple community lines and the reds
_PLANNER_LABELS: dict[str, tuple[str, str]] = {
    "hotspots": ("冷热点", "Hot and cold spots"),
    "clusters": ("案件聚集区", "Case clusters"),
    "hot": ("热点", "Hot spot"),
    "cold": ("冷点", "Cold spot"),
    "none": ("不显著", "Not significant"),
    "island": ("无相邻网格，未检验", "No neighbour, not tested"),
    "no_data": ("无数据", "No data"),
    "class": ("冷热点", "Hot/cold"),
    "z": ("Gi* z 值", "Gi* z-score"),
    "p": ("p 值", "p-value"),
    "q": ("FDR 校正后 p 值", "FDR-adjusted p"),
    "count": ("案件数", "Cases"),
    "categories": ("类别", "Categories"),
    "compounds": ("涉及小区", "Compounds"),
    "selected": ("所选区域", "Selected area"),
    "cases_behind": ("查看这 {n} 件案件", "List these {n} cases"),
    "hot_legend": ("热点：高值聚集（Getis–Ord Gi*，{conf}% 置信度，经 Benjamini–Hochberg "
                   "错误发现率校正）",
                   "Hot spot: high values cluster (Getis–Ord Gi*, {conf}% confidence, "
                   "Benjamini–Hochberg false-discovery-rate correction)"),
    "cold_legend": ("冷点：低值聚集（同上）", "Cold spot: low values cluster (same test)"),
    "cluster_legend": ("案件聚集区：{r} 米内至少 {k} 件（DBSCAN）",
                       "Cluster: at least {k} cases within {r} m (DBSCAN)"),
    "no_spots": ("没有网格达到显著的冷热点", "No grid is a significant hot or cold spot"),
    "test_note": ("{n} 个网格参与检验，Queen 邻接，{perms} 次置换；显著即 FDR 校正后 p ≤ {alpha}",
                  "{n} grids tested, Queen contiguity, {perms} permutations; significant "
                  "means FDR-adjusted p ≤ {alpha}"),
}


def _pl(key: str, locale: str) -> str:
    zh, en = _PLANNER_LABELS.get(key) or (label(key, "zh"), label(key, "en"))
    return en if locale.startswith("en") else zh


def _num(v, fmt: str, locale: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return label("no_data", locale)
    return fmt.format(f) if np.isfinite(f) else label("no_data", locale)


def planner_legend_html(hot, clusters, locale: str) -> str:
    """The legend of the hot/cold outlines and the cluster hulls: the confidence, the
    false-discovery-rate correction and the cluster rule, every string escaped."""
    attrs = getattr(hot, "attrs", {}) or {}
    conf = float(attrs.get("confidence", 0.95))
    rows = []
    for key, colour in (("hot_legend", HOT), ("cold_legend", COLD)):
        text = _pl(key, locale).format(conf=f"{conf * 100:g}")
        rows.append(f'<div class="legend-row"><span class="swatch" style="background:'
                    f'transparent;border:3px solid {colour}"></span>{html_text(text)}</div>')
    if hot is not None and not hot["cls"].isin(["hot", "cold"]).any():
        rows.append(f'<div class="legend-note" id="no-spots">'
                    f'{html_text(_pl("no_spots", locale))}</div>')
    if attrs:
        note = _pl("test_note", locale).format(
            n=int(attrs.get("tested", 0)), perms=int(attrs.get("permutations", 0)),
            alpha=f"{float(attrs.get('alpha', 1 - conf)):g}")
        rows.append(f'<div class="legend-note">{html_text(note)}</div>')
    c_attrs = getattr(clusters, "attrs", {}) or {}
    if clusters is not None:
        text = _pl("cluster_legend", locale).format(r=f"{float(c_attrs.get('radius_m', 50)):g}",
                                                   k=int(c_attrs.get("min_cases", 5)))
        rows.append(f'<div class="legend-row"><span class="swatch" style="background:'
                    f'{CLUSTER}66;border:2px solid {CLUSTER}"></span>{html_text(text)}</div>')
    return (f'<details id="hotspot-legend" class="map-legend map-legend-left" '
            f'data-confidence="{conf:g}" open>'
            f'<summary class="legend-title">{html_text(_pl("hotspots", locale))}</summary>'
            + "".join(rows) + "</details>" + _collapse_on_phones("hotspot-legend"))


def planner_map(grids, hotspots_gdf, clusters_gdf, layers: dict, *, tiles: TileConfig,
                locale: str = "zh", choropleth: Choropleth | None = None,
                grid_url: str = "/grids/{code}", cluster_url: str | None = None,
                category_names: dict | None = None, compound_names: dict | None = None,
                focus=None) -> folium.Map:
    """The planner's map: the grid choropleth of a metric, hot and cold grids outlined
    over it, case clusters as hulls, and the community and street outlines.

    Parameters
    ----------
    grids : GeoDataFrame
        The grid layer with the metric column ``choropleth.column`` (e.g.
        :meth:`gis.service.Hemei.coverage`); NaN is grey "no data".
    hotspots_gdf : GeoDataFrame or None
        :func:`gis.analysis.hotspots` of the same grids (``code``, ``z``, ``p``, ``q``,
        ``cls`` and its ``attrs``): ``hot`` grids get a thick red outline, ``cold`` ones a
        thick blue one, and the legend says the confidence and the Benjamini–Hochberg
        false-discovery-rate correction.
    clusters_gdf : GeoDataFrame or None
        :func:`gis.analysis.clusters`: each hull with its count, categories and compounds
        in the tooltip and, with ``cluster_url`` (``"…{cluster_id}…"``), a popup linking to
        the cases behind it.
    layers : dict
        The boundary layers (``street``, ``community`` outlines are drawn).
    tiles : TileConfig
        The base map; on a GCJ-02 source every geometry is shifted for display.
    choropleth : Choropleth
        What colours the grids (its ``bins`` are computed here).
    category_names, compound_names : dict, optional
        Code → display name, for the cluster tooltips.
    focus : shapely geometry, optional
        The area chosen in the filters: the map is fitted to it and it is outlined.

    Every string shown (names, categories, compounds) is escaped with
    :func:`gis.escape.html_text`; links are the URLs given, put into ``href`` attributes
    escaped as well.
    """
    import geopandas as gpd

    ch = choropleth or Choropleth(column="open", title=label("open", locale))
    bounds = tuple(grids.total_bounds)
    extent = max(bounds[2] - bounds[0], bounds[3] - bounds[1])
    fit = tuple(shapely.bounds(focus)) if focus is not None else bounds
    m = base_map(fit, tiles, locale=locale)

    # -- the choropleth, with each grid's Gi* result in its tooltip
    ch.bins = classify(grids[ch.column], scheme=ch.scheme)
    ch.lows = class_lows(grids[ch.column], ch.bins)
    g = grids.copy()
    g["fill"] = class_colours(g[ch.column], ch.bins, ch.better)
    g["value"] = [_num(v, ch.fmt, locale) for v in g[ch.column].to_numpy(dtype=float)]
    g["link"] = [grid_url.format(code=c) for c in g["code"]]
    hot = None
    if hotspots_gdf is not None:
        hot = hotspots_gdf.set_index(hotspots_gdf["code"].astype(str))
        codes = g["code"].astype(str)
        g["spot"] = [_pl(c, locale) for c in codes.map(hot["cls"]).fillna("no_data")]
        g["z"] = [_num(v, "{:.2f}", locale) for v in codes.map(hot["z"])]
        g["p"] = [_num(v, "{:.3f}", locale) for v in codes.map(hot["p"])]
        g["q"] = [_num(v, "{:.3f}", locale) for v in codes.map(hot["q"])]
    props = ["code", "name", "value", "fill", "link"]
    fields, aliases = ["name", "code", "value"], [label("grid", locale), label("code", locale),
                                                  ch.title]
    if hot is not None:
        props += ["spot", "z", "p", "q"]
        fields += ["spot", "z", "p", "q"]
        aliases += [_pl(k, locale) for k in ("class", "z", "p", "q")]
    frame, decimals = _display(g, tiles, extent)
    folium.GeoJson(
        feature_collection(frame, props, precision=decimals, text=html_text, id_col="code"),
        name=ch.title,
        style_function=lambda f: {"fillColor": f["properties"]["fill"], "fillOpacity": 0.6,
                                  "color": "#666", "weight": 1},
        highlight_function=lambda _f: {"weight": 3, "color": "#000"},
        tooltip=folium.GeoJsonTooltip(fields=fields, aliases=aliases, sticky=True),
        on_each_feature=folium.JsCode(
            "function (f, layer) { layer.on('dblclick', function () {"
            " window.location = f.properties.link; }); }"),
    ).add_to(m)

    for level in ("street", "community"):
        if level in layers and len(layers[level]):
            _outline_layer(m, layers[level], level, locale, tiles, extent)

    # -- hot and cold grids outlined
    if hotspots_gdf is not None:
        spots = hotspots_gdf[hotspots_gdf["cls"].isin(["hot", "cold"])]
        if len(spots):
            s = spots.copy()
            s["name"] = s["name"] if "name" in s else s["code"]
            s["spot"] = [_pl(c, locale) for c in s["cls"]]
            s["z"] = [_num(v, "{:.2f}", locale) for v in s["z"]]
            s["p"] = [_num(v, "{:.3f}", locale) for v in s["p"]]
            sf, _ = _display(s, tiles, extent)
            folium.GeoJson(
                feature_collection(sf, ["code", "name", "cls", "spot", "z", "p"],
                                   precision=decimals, text=html_text, id_col="code"),
                name=_pl("hotspots", locale),
                style_function=lambda f: {
                    "color": HOT if f["properties"]["cls"] == "hot" else COLD,
                    "weight": 5, "opacity": 0.95, "fill": False},
                tooltip=folium.GeoJsonTooltip(
                    fields=["name", "spot", "z", "p"],
                    aliases=[label("grid", locale), _pl("class", locale), _pl("z", locale),
                             _pl("p", locale)], sticky=True),
            ).add_to(m)

    # -- case clusters
    if clusters_gdf is not None and len(clusters_gdf):
        cats = category_names or {}
        comps = compound_names or {}
        c = clusters_gdf.copy()
        c["categories_label"] = [
            "、".join(f"{cats.get(k, k)} {n}" for k, n in d.items()) for d in c["categories"]]
        c["compounds_label"] = ["、".join(comps.get(k, k) for k in ks) or "—"
                                for ks in c["compounds"]]
        c["count"] = c["count"].astype(int)
        cf, _ = _display(c, tiles)
        fc = feature_collection(cf, ["cluster_id", "count", "categories_label",
                                     "compounds_label"], precision=6, text=html_text,
                                id_col="cluster_id")
        if cluster_url:
            for feat, cid, n in zip(fc["features"], c["cluster_id"], c["count"], strict=True):
                link = cluster_url.format(cluster_id=int(cid))
                text = _pl("cases_behind", locale).format(n=int(n))
                feat["properties"]["popup"] = (
                    f'<a class="cluster-link" href="{html_text(link)}">{html_text(text)}</a>')
        folium.GeoJson(
            fc, name=_pl("clusters", locale),
            style_function=lambda _f: {"color": CLUSTER, "weight": 2, "fillColor": CLUSTER,
                                       "fillOpacity": 0.35},
            highlight_function=lambda _f: {"weight": 4, "fillOpacity": 0.5},
            tooltip=folium.GeoJsonTooltip(
                fields=["count", "categories_label", "compounds_label"],
                aliases=[_pl("count", locale), _pl("categories", locale),
                         _pl("compounds", locale)], sticky=True),
            popup=(folium.GeoJsonPopup(fields=["popup"], labels=False) if cluster_url
                   else None),
        ).add_to(m)

    if focus is not None:
        ff, _ = _display(gpd.GeoDataFrame({"code": ["focus"], "name": [_pl("selected", locale)]},
                                          geometry=[focus], crs="EPSG:4326"), tiles)
        folium.GeoJson(
            feature_collection(ff, ["code", "name"], precision=6, text=html_text),
            name=_pl("selected", locale), control=False,
            style_function=lambda _f: {"color": "#000", "weight": 3, "dashArray": "6 4",
                                       "fill": False},
        ).add_to(m)

    folium.LayerControl(collapsed=True).add_to(m)
    root = m.get_root().html
    root.add_child(Element(legend_html(ch, locale)))
    root.add_child(Element(planner_legend_html(hotspots_gdf, clusters_gdf, locale)))
    return m
