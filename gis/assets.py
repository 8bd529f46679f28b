"""Serve every script, stylesheet, font and image of a Folium map from the app itself.

Folium, branca and the Leaflet plugins load their JS/CSS from public CDNs (each class's
``default_js`` / ``default_css`` lists, plus a few links added at render time, e.g. d3
for branca's colormap legends).  Government intranets have no internet, so the files
are vendored under ``webapp/static/vendor/<package>@<version>/`` (re-created by
``scripts/vendor_assets.py``) and this module rewrites the URLs:

    m = folium.Map(tiles=None)
    ...                               # add layers, plugins, legends
    localise(m)                       # or localise(m, base_url=url_for("static", ...))
    html = m.get_root().render()
    assert page_is_offline(html) == []

Public API:

``VENDOR``
    CDN URL (exactly as folium/branca reference it) -> path under ``vendor/``.
``DEFAULT_BASE_URL``
    ``"/static/vendor"``, where the web app serves ``webapp/static/vendor``.
``local_url(url, base_url=DEFAULT_BASE_URL) -> str``
    The local URL for one CDN URL; ``ValueError`` if it is not vendored.
``localise(element, base_url=DEFAULT_BASE_URL) -> None``
    Rewrite a whole map/figure to local URLs (see its docstring).
``page_resources(html) -> list[str]``
    Every resource URL a rendered page references.
``page_is_offline(html) -> list[str]``
    The external ones among them; ``[]`` means the page needs no internet
    (tile URLs excepted, see below).

Tiles are out of scope here: the tile URL templates inside ``L.tileLayer(...)`` /
``L.tileLayer.wms(...)`` calls (including the MiniMap's) point at whatever tile server
the deployment configures, so ``page_is_offline`` ignores them; use ``tiles=None`` plus
a TileLayer pointing at the intranet tile server.

This module must not import flask.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser

from branca.element import Element, Figure, Link

DEFAULT_BASE_URL = "/static/vendor"

#: CDN URL used by folium 0.20 / branca 0.8 -> file under webapp/static/vendor/.
#: Keep in sync with the package manifest in scripts/vendor_assets.py.
VENDOR: dict[str, str] = dict(
    [
        # folium.Map defaults
        (
            "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js",
            "leaflet@1.9.3/dist/leaflet.js",
        ),
        (
            "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css",
            "leaflet@1.9.3/dist/leaflet.css",
        ),
        ("https://code.jquery.com/jquery-3.7.1.min.js", "jquery@3.7.1/dist/jquery.min.js"),
        (
            "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/js/bootstrap.bundle.min.js",
            "bootstrap@5.2.2/dist/js/bootstrap.bundle.min.js",
        ),
        (
            "https://cdn.jsdelivr.net/npm/bootstrap@5.2.2/dist/css/bootstrap.min.css",
            "bootstrap@5.2.2/dist/css/bootstrap.min.css",
        ),
        # bootstrap 3.0.0 is not on npm: glyphicons from 3.1.1, css derived by the script
        (
            "https://netdna.bootstrapcdn.com/bootstrap/3.0.0/css/bootstrap-glyphicons.css",
            "bootstrap@3.1.1/dist/css/bootstrap-glyphicons.css",
        ),
        (
            "https://cdn.jsdelivr.net/npm/@fortawesome/fontawesome-free@6.2.0/css/all.min.css",
            "@fortawesome/fontawesome-free@6.2.0/css/all.min.css",
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.js",
            "drmonty-leaflet-awesome-markers@2.0.2/js/leaflet.awesome-markers.js",
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/Leaflet.awesome-markers/2.0.2/leaflet.awesome-markers.css",
            "drmonty-leaflet-awesome-markers@2.0.2/css/leaflet.awesome-markers.css",
        ),
        # generated equivalent (see scripts/vendor_assets.py)
        (
            "https://cdn.jsdelivr.net/gh/python-visualization/folium/folium/templates/leaflet.awesome.rotate.min.css",
            "folium@0.20.0/folium/templates/leaflet.awesome.rotate.min.css",
        ),
        # plugins.MarkerCluster / FastMarkerCluster
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/leaflet.markercluster.js",
            "leaflet.markercluster@1.1.0/dist/leaflet.markercluster.js",
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/MarkerCluster.css",
            "leaflet.markercluster@1.1.0/dist/MarkerCluster.css",
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet.markercluster/1.1.0/MarkerCluster.Default.css",
            "leaflet.markercluster@1.1.0/dist/MarkerCluster.Default.css",
        ),
        # plugins.HeatMap (file shipped in the folium wheel)
        (
            "https://cdn.jsdelivr.net/gh/python-visualization/folium@main/folium/templates/leaflet_heat.min.js",
            "folium@0.20.0/folium/templates/leaflet_heat.min.js",
        ),
        # plugins.Fullscreen (npm has no .min.js; the unminified file is used)
        (
            "https://cdn.jsdelivr.net/npm/leaflet.fullscreen@3.0.0/Control.FullScreen.min.js",
            "leaflet.fullscreen@3.0.0/Control.FullScreen.js",
        ),
        (
            "https://cdn.jsdelivr.net/npm/leaflet.fullscreen@3.0.0/Control.FullScreen.css",
            "leaflet.fullscreen@3.0.0/Control.FullScreen.css",
        ),
        # plugins.LocateControl
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet-locatecontrol/0.66.2/L.Control.Locate.min.js",
            "leaflet.locatecontrol@0.66.2/dist/L.Control.Locate.min.js",
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet-locatecontrol/0.66.2/L.Control.Locate.min.css",
            "leaflet.locatecontrol@0.66.2/dist/L.Control.Locate.min.css",
        ),
        # plugins.Search
        (
            "https://cdn.jsdelivr.net/npm/leaflet-search@2.9.7/dist/leaflet-search.min.js",
            "leaflet-search@2.9.7/dist/leaflet-search.min.js",
        ),
        (
            "https://cdn.jsdelivr.net/npm/leaflet-search@2.9.7/dist/leaflet-search.min.css",
            "leaflet-search@2.9.7/dist/leaflet-search.min.css",
        ),
        # plugins.MiniMap
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet-minimap/3.6.1/Control.MiniMap.js",
            "leaflet-minimap@3.6.1/dist/Control.MiniMap.min.js",
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet-minimap/3.6.1/Control.MiniMap.css",
            "leaflet-minimap@3.6.1/dist/Control.MiniMap.min.css",
        ),
        # plugins.Draw
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet.draw/1.0.2/leaflet.draw.js",
            "leaflet-draw@1.0.2/dist/leaflet.draw.js",
        ),
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet.draw/1.0.2/leaflet.draw.css",
            "leaflet-draw@1.0.2/dist/leaflet.draw.css",
        ),
        # plugins.MousePosition (GitHub originals; same plugin republished on npm)
        (
            "https://cdn.jsdelivr.net/gh/ardhi/Leaflet.MousePosition/src/L.Control.MousePosition.min.js",
            "leaflet-mouse-position@1.2.0/src/L.Control.MousePosition.js",
        ),
        (
            "https://cdn.jsdelivr.net/gh/ardhi/Leaflet.MousePosition/src/L.Control.MousePosition.min.css",
            "leaflet-mouse-position@1.2.0/src/L.Control.MousePosition.css",
        ),
        # plugins.Realtime
        (
            "https://cdnjs.cloudflare.com/ajax/libs/leaflet-realtime/2.2.0/leaflet-realtime.js",
            "leaflet-realtime@2.2.0/dist/leaflet-realtime.js",
        ),
        # branca LinearColormap / StepColormap legends (added at render time)
        ("https://cdnjs.cloudflare.com/ajax/libs/d3/3.5.5/d3.min.js", "d3@3.5.5/d3.min.js"),
    ]
)

_EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
_HOOK_NAME = "hemei_offline_assets"


def _key(url: str) -> str:
    """Scheme-less, query-less form so http/https/protocol-relative spellings match."""
    rest = re.sub(r"^\s*(?:https?:)?//", "", url.strip(), flags=re.IGNORECASE)
    host, _, path = rest.partition("/")
    return host.lower() + "/" + re.split(r"[?#]", path, maxsplit=1)[0]


_BY_KEY = {_key(url): path for url, path in VENDOR.items()}


def _is_external(url: str) -> bool:
    return bool(_EXTERNAL.match(url))


def local_url(url: str, base_url: str = DEFAULT_BASE_URL, *, context: str = "") -> str:
    """Return the local URL serving the vendored copy of ``url``.

    URLs that are not external (relative, site-absolute like ``/static/x.js``, ``data:``)
    or that already start with ``base_url`` are returned unchanged.  An external URL
    without a vendored copy raises ``ValueError`` naming it.
    """
    base = base_url.rstrip("/")
    if url.startswith(base + "/") or not _is_external(url):
        return url
    path = _BY_KEY.get(_key(url))
    if path is None:
        where = f" (used by {context})" if context else ""
        raise ValueError(
            f"no vendored copy of {url!r}{where}: the map would load it from the internet. "
            "Add the package to scripts/vendor_assets.py, run it, and map the URL in "
            "gis.assets.VENDOR."
        )
    return f"{base}/{path}"


def _walk(element: Element, seen: set[int]) -> Iterator[Element]:
    """Depth-first over an element and its ``_children`` (iterative: maps can be deep).

    A Figure's ``header``/``html``/``script`` are attributes, not ``_children``: they
    are visited too (the header is where the ``<script src>``/``<link>`` elements live).
    """
    stack = [element]
    while stack:
        el = stack.pop()
        if id(el) in seen:
            continue
        seen.add(id(el))
        yield el
        children = list((getattr(el, "_children", None) or {}).values())
        if isinstance(el, Figure):
            children = [el.header, el.html, el.script, *children]
        stack.extend(reversed(children))


def _localise_one(el: Element, base_url: str) -> None:
    name = type(el).__name__
    for attr in ("default_js", "default_css"):
        links = getattr(el, attr, None)
        if links is None:
            continue
        # A new list set on the instance: the class attribute (shared by every map
        # of the process, and mutated in place by folium's add_js_link) stays as is.
        setattr(
            el,
            attr,
            [(n, local_url(u, base_url, context=f"{name}.{attr} {n!r}")) for n, u in links],
        )
    if isinstance(el, Link) and isinstance(getattr(el, "url", None), str):
        el.url = local_url(el.url, base_url, context=f"{name} in the page header")


class _OfflineAssetsHook(Element):
    """Added as the LAST child of the Figure by ``localise``.

    ``Figure.render`` first renders its children in order (the map, with all its layers
    and plugins), during which elements add links to ``figure.header`` (``JSCSSMixin``
    copies its ``default_js``/``default_css`` there; branca's colormap adds d3), and only
    then renders its template, which writes out the header.  This hook runs between the
    two and rewrites every link added meanwhile, including by elements added after
    ``localise`` was called.  It renders nothing.
    """

    def __init__(self, base_url: str):
        super().__init__()
        self._name = "OfflineAssetsHook"
        self.base_url = base_url

    def render(self, **kwargs) -> str:
        for el in _walk(self.get_root(), set()):
            if el is not self:
                _localise_one(el, self.base_url)
        return ""


def localise(element: Element, base_url: str = DEFAULT_BASE_URL) -> None:
    """Make ``element``'s page load all its JS/CSS from ``base_url`` (the vendor folder).

    ``element`` is a ``folium.Map``, a ``branca.element.Figure`` or any element of one.
    The whole tree of its root (the Figure: header, html, script and, recursively,
    every ``_children``) is walked; every ``default_js``/``default_css`` entry is
    replaced by an instance-level copy pointing at the local file (class attributes
    are never modified, so other maps keep the CDN defaults) and so is the ``url`` of
    every ``JavascriptLink``/``CssLink`` already present.  A hook is added to the Figure
    so links added while rendering (branca's colormap d3, plugins added later) are
    rewritten too.

    Raises ``ValueError`` naming the first external URL that has no vendored copy, here
    or at render time, so a new plugin cannot silently pull from a CDN.  Idempotent.
    """
    root = element.get_root()
    seen: set[int] = set()
    for el in _walk(root, seen):
        _localise_one(el, base_url)
    for el in _walk(element, seen):  # in case element isn't among its root's children
        _localise_one(el, base_url)
    if isinstance(root, Figure):
        root._children.pop(_HOOK_NAME, None)  # re-added below so that it stays last
        root.add_child(_OfflineAssetsHook(base_url), name=_HOOK_NAME)


# --------------------------------------------------------------------------- checking
_RESOURCE_ATTRS = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src",),
    "iframe": ("src",),
    "embed": ("src",),
    "source": ("src",),
    "audio": ("src",),
    "video": ("src", "poster"),
    "track": ("src",),
    "object": ("data",),
    "input": ("src",),
}
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", re.IGNORECASE | re.DOTALL)
_CSS_IMPORT = re.compile(r"""@import\s+(['"])(.*?)\1""", re.IGNORECASE)
# In inline JS: absolute URLs anywhere, protocol-relative ones only right after a quote
# or "(" (so "// comments" don't count).
_JS_URL = re.compile(
    r"""(?:https?://|(?<=["'`(])//(?=[\w-]+\.[\w.-]))[^\s"'`<>\\)]+""", re.IGNORECASE
)
_TILE_CALL = re.compile(r"\bL\s*\.\s*tileLayer(?:\s*\.\s*wms)?\s*\(", re.IGNORECASE)
_HREF_BEFORE = re.compile(r"""href\s*=\s*\\?["']?$""", re.IGNORECASE)


def _call_end(js: str, open_paren: int) -> int:
    """Index just past the parenthesis matching ``js[open_paren]``, skipping strings."""
    depth, i, quote = 0, open_paren, ""
    while i < len(js):
        c = js[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'`":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(js)


def _css_urls(css: str) -> list[str]:
    return [m.group(2).strip() for m in _CSS_URL.finditer(css)] + [
        m.group(2).strip() for m in _CSS_IMPORT.finditer(css)
    ]


def _js_urls(js: str) -> list[str]:
    tile_spans = [(m.start(), _call_end(js, m.end() - 1)) for m in _TILE_CALL.finditer(js)]
    found = []
    for m in _JS_URL.finditer(js):
        if any(start <= m.start() < end for start, end in tile_spans):
            continue  # tile templates and their attribution: configured separately
        if _HREF_BEFORE.search(js, max(0, m.start() - 12), m.start()):
            continue  # <a href="..."> in popups/attributions: a link, not a load
        found.append(m.group(0))
    return found


class _ResourceParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for attr in _RESOURCE_ATTRS.get(tag, ()):
            if values.get(attr):
                self.urls.append(values[attr].strip())  # type: ignore[union-attr]
        if values.get("style"):
            self.urls.extend(_css_urls(values["style"]))  # type: ignore[arg-type]
        if tag == "style" or (tag == "script" and not values.get("src")):
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.urls.extend(_css_urls(data))
        elif self._in == "script":
            self.urls.extend(_js_urls(data))


def page_resources(html: str) -> list[str]:
    """Every resource URL the rendered page references, in order, without duplicates.

    Looked at: ``<script src>``, ``<link href>``, ``src`` of img/iframe/embed/source/
    audio/video/track/input, ``<video poster>``, ``<object data>``; ``url(...)`` and
    ``@import`` in ``<style>`` blocks and ``style=""`` attributes; absolute URLs in
    inline ``<script>`` code (e.g. a CustomIcon's ``iconUrl``, a Realtime or GeoJson
    source URL), except inside ``L.tileLayer(...)``/``L.tileLayer.wms(...)`` calls
    (tiles are configured separately) and right after ``href=`` (hyperlinks in popups
    are not loaded by the page).  URLs inside embedded data, e.g. GeoJSON properties,
    are reported too: the checker can't tell them from a URL the code loads.
    """
    parser = _ResourceParser()
    parser.feed(html)
    parser.close()
    return list(dict.fromkeys(u for u in parser.urls if u))


def page_is_offline(html: str) -> list[str]:
    """External (``http://``, ``https://`` or protocol-relative ``//``) URLs the page
    references; ``[]`` means it loads nothing from the internet.

    See ``page_resources`` for what is inspected.  URLs in ``L.tileLayer(...)`` calls
    are deliberately ignored: tile servers are configured separately.
    """
    return [u for u in page_resources(html) if _is_external(u)]


__all__ = [
    "DEFAULT_BASE_URL",
    "VENDOR",
    "local_url",
    "localise",
    "page_is_offline",
    "page_resources",
]
