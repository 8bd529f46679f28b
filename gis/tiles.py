"""The ``HEMEI_TILES`` setting: which base-map tiles a page shows, and in which datum.

Accepted values (names are case-insensitive):

``none``
    No tiles (the default; the right choice on an intranet with no tile server).
``osm``
    OpenStreetMap standard tiles, ``https://tile.openstreetmap.org/{z}/{x}/{y}.png``.
``tianditu``, ``tianditu-vec``, ``tianditu-img``
    Tianditu (天地图), the official map service: a base layer (``vec_w`` vector / ``img_w``
    imagery) plus its label layer (``cva_w`` / ``cia_w``), in Web Mercator ("_w"), through the
    ``DataServer`` endpoint on ``t0``–``t7.tianditu.gov.cn``. Needs a key (``tk``), from
    ``HEMEI_TIANDITU_KEY``. Tianditu is in CGCS2000, the same as WGS-84 to within centimetres
    for web use, so no shift is applied.
``amap``
    AMap (高德) road tiles, ``https://webrd0{s}.is.autonavi.com/appmaptile?...style=8...``,
    subdomains 1–4. These are drawn in GCJ-02: pages must shift WGS-84 data with
    :mod:`gis.gcj02` before drawing it on them.
an XYZ URL template
    ``http(s)://…`` containing ``{z}``, ``{x}`` and ``{y}`` (``{-y}`` for TMS rows and ``{s}``
    for Leaflet's default ``a``/``b``/``c`` subdomains also work), e.g. an intranet tile
    server; attribution from ``HEMEI_TILES_ATTRIBUTION`` (default "Tiles"). Append
    ``#gcj02`` if that server draws GCJ-02 tiles (``#wgs84``, the default, is accepted too).

:func:`tile_config` turns the setting into a :class:`TileConfig`; :func:`add_to_map` puts
its layers on a folium map. ``TileConfig.datum`` says whether overlays must be shifted, and
``TileConfig.external_hosts`` lists every host the page will fetch tiles from (browser tests
allow exactly those).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["ACCEPTED", "TileConfig", "TileLayerSpec", "add_to_map", "tile_config"]

ACCEPTED = ("none", "osm", "tianditu", "tianditu-vec", "tianditu-img", "amap",
            "an http(s) XYZ URL template with {z}, {x} and {y} (optionally ending in #gcj02)")

OSM_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTR = "© OpenStreetMap contributors"

# Tianditu's "DataServer" endpoint serves the WMTS tile matrix set "w" (Web Mercator) with
# plain XYZ indices (l = zoom), so Leaflet can use it as an ordinary tile layer.
TIANDITU_URL = "https://t{s}.tianditu.gov.cn/DataServer?T={layer}&x={x}&y={y}&l={z}&tk={key}"
TIANDITU_SUBDOMAINS = "01234567"
TIANDITU_ATTR = "© 天地图 Tianditu"
TIANDITU_LAYERS = {  # kind → (base layer, label layer, label shown in the layer name)
    "tianditu-vec": ("vec_w", "cva_w", "矢量"),
    "tianditu-img": ("img_w", "cia_w", "影像"),
}

AMAP_URL = ("https://webrd0{s}.is.autonavi.com/appmaptile"
            "?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}")
AMAP_SUBDOMAINS = "1234"
AMAP_ATTR = "© 高德地图 AutoNavi"

LEAFLET_DEFAULT_SUBDOMAINS = "abc"

DATUMS = ("wgs84", "gcj02")

# Tianditu keys are 32 hex digits; anything else (quotes, "&", spaces) would break the URL
# or smuggle parameters into it, so reject it with a clear message instead.
_TIANDITU_KEY = re.compile(r"[0-9A-Za-z]{8,64}")


@dataclass(frozen=True)
class TileLayerSpec:
    """One tile layer, in the terms of ``folium.TileLayer`` / ``L.tileLayer``.

    ``subdomains`` is a string of one-character subdomains (``"01234567"``) or ``None`` when
    the URL has no ``{s}``; ``overlay`` marks label layers drawn over a base layer.
    """

    url: str
    attr: str
    name: str
    subdomains: str | None = None
    max_zoom: int = 18
    overlay: bool = False


@dataclass(frozen=True)
class TileConfig:
    """The resolved ``HEMEI_TILES`` setting.

    ``kind`` is the canonical setting name (``"none"``, ``"osm"``, ``"tianditu-vec"``,
    ``"tianditu-img"``, ``"amap"`` or ``"xyz"``); ``datum`` is ``"wgs84"`` or ``"gcj02"``
    (the datum the tiles are drawn in); ``external_hosts`` are the hostnames tiles come from.
    """

    kind: str
    layers: tuple[TileLayerSpec, ...]
    datum: str
    external_hosts: tuple[str, ...]


def _hosts(url: str, subdomains: str | None) -> tuple[str, ...]:
    netloc = urlsplit(url).netloc.rsplit("@", 1)[-1]  # drop any user:password@
    if netloc.startswith("["):  # IPv6 literal
        host = netloc[1:].split("]", 1)[0]
    else:
        host = netloc.split(":", 1)[0]
    host = host.lower()
    if "{s}" not in host:
        return (host,)
    # Leaflet picks one subdomain per tile, so the page may fetch from every expansion.
    subs = subdomains or LEAFLET_DEFAULT_SUBDOMAINS
    return tuple(dict.fromkeys(host.replace("{s}", sub) for sub in subs))


def _unique_hosts(layers: tuple[TileLayerSpec, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(h for layer in layers for h in _hosts(layer.url, layer.subdomains)))


def _tianditu(kind: str, key: str) -> TileConfig:
    key = (key or "").strip()
    if not key:
        raise ValueError(f"HEMEI_TILES={kind} needs a Tianditu key: set HEMEI_TIANDITU_KEY "
                         "(apply for one at console.tianditu.gov.cn)")
    if not _TIANDITU_KEY.fullmatch(key):
        raise ValueError("HEMEI_TIANDITU_KEY must be the key's letters and digits only")
    base, labels, label = TIANDITU_LAYERS[kind]

    def url(layer: str) -> str:
        return TIANDITU_URL.replace("{layer}", layer).replace("{key}", key)

    layers = (
        TileLayerSpec(url(base), TIANDITU_ATTR, f"天地图 {label}", TIANDITU_SUBDOMAINS, 18),
        TileLayerSpec(url(labels), TIANDITU_ATTR, f"天地图 {label}注记", TIANDITU_SUBDOMAINS, 18,
                      overlay=True),
    )
    return TileConfig(kind, layers, "wgs84", _unique_hosts(layers))


def _xyz(setting: str, attribution: str) -> TileConfig:
    url, sep, fragment = setting.partition("#")
    datum = fragment.strip().lower() if sep else "wgs84"
    if datum not in DATUMS:
        raise ValueError(f"HEMEI_TILES: unknown suffix #{fragment}; use #gcj02 for a tile "
                         "server that draws GCJ-02 tiles (or nothing for WGS-84)")
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"HEMEI_TILES: a tile URL must start with http:// or https://, "
                         f"got {setting!r}")
    if not _hosts(url, None)[0]:
        raise ValueError(f"HEMEI_TILES: no host name in {setting!r}")
    subdomains = LEAFLET_DEFAULT_SUBDOMAINS if "{s}" in url else None
    layer = TileLayerSpec(url, attribution.strip() or "Tiles", "basemap", subdomains)
    return TileConfig("xyz", (layer,), datum, _unique_hosts((layer,)))


def _is_template(s: str) -> bool:
    return "{z}" in s and "{x}" in s and ("{y}" in s or "{-y}" in s)


def tile_config(setting: str, *, tianditu_key: str = "", attribution: str = "") -> TileConfig:
    """Resolve the ``HEMEI_TILES`` setting.

    Parameters
    ----------
    setting : str
        ``none``, ``osm``, ``tianditu`` (= ``tianditu-vec``), ``tianditu-vec``,
        ``tianditu-img``, ``amap``, or an http(s) XYZ URL template containing ``{z}``, ``{x}``
        and ``{y}``, optionally suffixed ``#gcj02``. Names are case-insensitive; an empty
        value means ``none``.
    tianditu_key : str, optional
        The Tianditu key (``HEMEI_TIANDITU_KEY``); required for the Tianditu settings.
    attribution : str, optional
        Attribution for a URL template (``HEMEI_TILES_ATTRIBUTION``; default "Tiles"). The
        named providers always carry their own attribution.

    Returns
    -------
    TileConfig

    Raises
    ------
    ValueError
        For an unknown value (the message lists the accepted ones), a Tianditu setting without
        a key, or a malformed URL template.
    """
    s = (setting or "").strip()
    name = s.lower() or "none"
    if name == "none":
        return TileConfig("none", (), "wgs84", ())
    if name == "osm":
        layer = TileLayerSpec(OSM_URL, OSM_ATTR, "OpenStreetMap", None, 19)
        return TileConfig("osm", (layer,), "wgs84", ("tile.openstreetmap.org",))
    if name == "tianditu":
        name = "tianditu-vec"
    if name in TIANDITU_LAYERS:
        return _tianditu(name, tianditu_key)
    if name == "amap":
        layer = TileLayerSpec(AMAP_URL, AMAP_ATTR, "高德地图", AMAP_SUBDOMAINS, 18)
        return TileConfig("amap", (layer,), "gcj02", _unique_hosts((layer,)))
    if _is_template(s):
        return _xyz(s, attribution)
    raise ValueError(f"HEMEI_TILES must be one of: {', '.join(ACCEPTED)}; got {setting!r}")


def add_to_map(config: TileConfig, folium_map):
    """Add the configured tile layers to a folium map.

    Parameters
    ----------
    config : TileConfig
        From :func:`tile_config`; with no layers nothing is added.
    folium_map : folium.Map
        A map created with ``tiles=None``.

    Returns
    -------
    folium.Map
        The same map, for chaining.
    """
    import folium  # here, so that importing the setting parser does not pull in folium

    for layer in config.layers:
        kwargs = {}
        if layer.subdomains is not None:  # folium's default, "abc", is right otherwise
            kwargs["subdomains"] = layer.subdomains
        folium.TileLayer(tiles=layer.url, attr=layer.attr, name=layer.name,
                         max_zoom=layer.max_zoom, overlay=layer.overlay, control=False,
                         **kwargs).add_to(folium_map)
    return folium_map
