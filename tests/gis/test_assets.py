"""Folium maps load every script, stylesheet, font and image from webapp/static/vendor."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import sys
from pathlib import Path

import branca.colormap as cm
import folium
import pytest
from branca.element import JavascriptLink
from folium import plugins
from folium.utilities import JsCode

from gis import assets
from gis.assets import (
    DEFAULT_BASE_URL,
    VENDOR,
    local_url,
    localise,
    page_is_offline,
    page_resources,
)

REPO = Path(__file__).resolve().parents[2]
VENDOR_DIR = REPO / "webapp" / "static" / "vendor"

# Every class whose CDN defaults a map may pull in (checked for being left untouched).
CLASSES = [
    folium.Map,
    plugins.MarkerCluster,
    plugins.FastMarkerCluster,
    plugins.HeatMap,
    plugins.Fullscreen,
    plugins.LocateControl,
    plugins.Search,
    plugins.MiniMap,
    plugins.Draw,
    plugins.MousePosition,
    plugins.Realtime,
]

FEATURES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"id": 1, "name": "和美社区", "households": 120},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [
                        [116.30, 39.90],
                        [116.32, 39.90],
                        [116.32, 39.92],
                        [116.30, 39.92],
                        [116.30, 39.90],
                    ]
                ],
            },
        },
        {
            "type": "Feature",
            "properties": {"id": 2, "name": "幸福社区", "households": 80},
            "geometry": {"type": "Point", "coordinates": [116.31, 39.91]},
        },
    ],
}


def build_full_map() -> folium.Map:
    """A map using every element Hemei Grid uses (tiles come from the intranet)."""
    m = folium.Map(location=[39.91, 116.31], zoom_start=13, tiles=None)
    grid = folium.GeoJson(
        FEATURES,
        name="网格",
        tooltip=folium.GeoJsonTooltip(fields=["name", "households"]),
        popup=folium.GeoJsonPopup(fields=["name"]),
    ).add_to(m)
    folium.Marker([39.91, 116.31], icon=folium.Icon(icon="house", prefix="fa", angle=45)).add_to(m)
    folium.Marker([39.915, 116.315], icon=folium.Icon()).add_to(m)  # glyphicon default
    folium.CircleMarker([39.905, 116.305], radius=6).add_to(m)
    cluster = plugins.MarkerCluster(name="cluster").add_to(m)
    for i in range(5):
        folium.Marker([39.9 + i / 1000, 116.3]).add_to(cluster)
    plugins.FastMarkerCluster([[39.9, 116.3], [39.91, 116.31]]).add_to(m)
    plugins.HeatMap([[39.9, 116.3, 1.0], [39.91, 116.31, 0.5]]).add_to(m)
    plugins.Fullscreen().add_to(m)
    plugins.LocateControl().add_to(m)
    plugins.Search(layer=grid, search_label="name").add_to(m)
    plugins.MiniMap().add_to(m)  # has its own tile layer: ignored by page_is_offline
    plugins.Draw().add_to(m)
    plugins.MousePosition().add_to(m)
    cm.LinearColormap(["green", "yellow", "red"], vmin=0, vmax=120, caption="户数").add_to(m)
    cm.StepColormap(
        ["#eeeeee", "#999999", "#333333"], index=[0, 40, 80, 120], vmin=0, vmax=120
    ).add_to(m)
    # Realtime's source: a URL, fetch options, or a JS function feeding it GeoJSON
    feed = JsCode(f"function (onData, onError) {{ onData({json.dumps(FEATURES)}); }}")
    plugins.Realtime(feed, interval=60000).add_to(m)
    folium.LayerControl().add_to(m)
    return m


def _snapshot_class_defaults() -> dict:
    return {
        cls: (copy.deepcopy(cls.default_js), copy.deepcopy(getattr(cls, "default_css", [])))
        for cls in CLASSES
    }


def _vendor_file(url: str) -> Path:
    assert url.startswith(DEFAULT_BASE_URL + "/"), url
    return VENDOR_DIR / url[len(DEFAULT_BASE_URL) + 1 :]


def test_full_map_is_offline_and_every_local_file_exists():
    m = build_full_map()
    localise(m)
    html = m.get_root().render()

    assert page_is_offline(html) == []

    local = [u for u in page_resources(html) if u.startswith(DEFAULT_BASE_URL + "/")]
    missing = [u for u in local if not _vendor_file(u).is_file()]
    assert missing == []
    # Everything the elements above need was linked (d3 is added by branca at render).
    for needed in (
        "leaflet.js",
        "jquery.min.js",
        "leaflet.awesome-markers.js",
        "all.min.css",
        "bootstrap-glyphicons.css",
        "leaflet.markercluster.js",
        "leaflet_heat.min.js",
        "Control.FullScreen.js",
        "L.Control.Locate.min.js",
        "leaflet-search.min.js",
        "Control.MiniMap.min.js",
        "leaflet.draw.js",
        "L.Control.MousePosition.js",
        "d3.min.js",
        "leaflet-realtime.js",
        "leaflet.awesome.rotate.min.css",
    ):
        assert any(u.endswith("/" + needed) for u in local), needed
    # Without localise the same page would hit the CDNs.
    assert len(page_is_offline(build_full_map().get_root().render())) >= len(local)


def test_localise_figure_root_custom_base_url_and_idempotent():
    m = build_full_map()
    localise(m.get_root(), base_url="/hemei/static/vendor/")
    localise(m, base_url="/hemei/static/vendor")
    html = m.get_root().render()
    assert page_is_offline(html) == []
    urls = [u for u in page_resources(html) if u.endswith((".js", ".css"))]
    assert urls and all(u.startswith("/hemei/static/vendor/") for u in urls)
    assert not any("vendor//" in u or u.count("/hemei/") > 1 for u in urls)
    # rendering twice gives the same links
    assert page_resources(m.get_root().render()) == page_resources(html)


def test_elements_added_after_localise_are_rewritten_at_render_time():
    m = folium.Map(tiles=None)
    localise(m)
    plugins.Fullscreen().add_to(m)
    cm.LinearColormap(["red", "blue"]).add_to(m)
    html = m.get_root().render()
    assert page_is_offline(html) == []
    assert f"{DEFAULT_BASE_URL}/leaflet.fullscreen@3.0.0/Control.FullScreen.js" in html
    assert f"{DEFAULT_BASE_URL}/d3@3.5.5/d3.min.js" in html


def test_class_defaults_are_untouched():
    before = _snapshot_class_defaults()
    m = build_full_map()
    localise(m)
    m.get_root().render()
    assert _snapshot_class_defaults() == before

    fresh = folium.Map()
    assert fresh.default_js == before[folium.Map][0]
    assert fresh.default_css == before[folium.Map][1]
    assert any(url.startswith("https://") for _, url in fresh.default_js)
    fresh_html = fresh.get_root().render()
    assert "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js" in page_is_offline(
        fresh_html
    )
    # instance copies, not the class lists
    assert m.default_js is not folium.Map.default_js
    assert all(url.startswith(DEFAULT_BASE_URL) for _, url in m.default_js)


def test_unknown_url_raises_value_error_naming_it():
    m = folium.Map(tiles=None)
    plugins.AntPath([[39.9, 116.3], [39.91, 116.31]]).add_to(m)  # plugin not vendored
    with pytest.raises(ValueError, match=re.escape(plugins.AntPath.default_js[0][1])):
        localise(m)

    class Shiny(folium.MacroElement):
        default_js = [("shiny", "https://cdn.example.com/shiny@1.0/shiny.js")]

    m = folium.Map(tiles=None)
    localise(m)
    Shiny().add_to(m)  # added after localise: caught when rendering
    with pytest.raises(ValueError, match=r"https://cdn\.example\.com/shiny@1\.0/shiny\.js"):
        m.get_root().render()

    m = folium.Map(tiles=None)
    m.get_root().header.add_child(JavascriptLink("https://cdn.example.com/x.js"), name="x")
    with pytest.raises(ValueError, match=r"https://cdn\.example\.com/x\.js"):
        localise(m)

    with pytest.raises(ValueError, match="unpkg"):
        local_url("https://unpkg.com/leaflet-control-geocoder/dist/Control.Geocoder.js")


def test_local_url_variants():
    leaflet = "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js"
    expected = f"{DEFAULT_BASE_URL}/leaflet@1.9.3/dist/leaflet.js"
    assert local_url(leaflet) == expected
    assert local_url(leaflet.replace("https:", "http:")) == expected
    assert local_url(leaflet.replace("https:", "")) == expected
    assert local_url(expected) == expected
    assert local_url("/static/hemei.css") == "/static/hemei.css"
    assert local_url("data:text/css,") == "data:text/css,"


def test_every_manifest_path_exists():
    for url, path in VENDOR.items():
        assert (VENDOR_DIR / path).is_file(), (url, path)


def test_vendored_css_references_exist():
    css_files = sorted(VENDOR_DIR.rglob("*.css"))
    assert len(css_files) >= 10
    problems = []
    checked = 0
    for css in css_files:
        text = css.read_text(encoding="utf-8", errors="replace")
        refs = [m.group(2).strip() for m in re.finditer(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", text)]
        refs += re.findall(r"""@import\s+['"]([^'"]+)""", text)
        for ref in refs:
            if ref.startswith("data:") or ref.startswith("#"):
                continue  # inline data, or leaflet's IE-only url(#default#VML) behaviour
            if re.match(r"^(?:[a-z]+:)?//", ref, re.IGNORECASE):
                problems.append(f"{css.relative_to(VENDOR_DIR)}: external {ref}")
                continue
            target = (css.parent / re.split(r"[?#]", ref, maxsplit=1)[0]).resolve()
            if not target.is_file() or VENDOR_DIR.resolve() not in target.parents:
                problems.append(f"{css.relative_to(VENDOR_DIR)}: missing {ref}")
            checked += 1
    assert problems == []
    assert checked >= 20  # fonts and images of Font Awesome, glyphicons, leaflet, plugins


def test_every_vendored_package_has_a_licence_and_matches_the_script():
    spec = importlib.util.spec_from_file_location(
        "vendor_assets", REPO / "scripts" / "vendor_assets.py"
    )
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses need the module registered
    try:
        spec.loader.exec_module(script)
    finally:
        del sys.modules[spec.name]  # importing runs nothing (main() is guarded)

    dirs = {pkg.dirname for pkg in script.MANIFEST}
    for dirname in dirs:
        pkg_dir = VENDOR_DIR / dirname
        assert pkg_dir.is_dir(), dirname
        assert any(p.name.lower().startswith(("licen", "mit-licen")) for p in pkg_dir.iterdir())
    for path in VENDOR.values():
        assert any(path.startswith(d + "/") for d in dirs), path

    listed = json.loads((VENDOR_DIR / "MANIFEST.json").read_text(encoding="utf-8"))
    assert {f"{p['name']}@{p['version']}" for p in listed["packages"]} == dirs
    on_disk = {str(p.relative_to(VENDOR_DIR)) for p in VENDOR_DIR.rglob("*") if p.is_file()}
    in_manifest = {
        f"{p['name']}@{p['version']}/{f}" for p in listed["packages"] for f in p["files"]
    }
    assert on_disk - {"MANIFEST.json"} == in_manifest
    total = sum((VENDOR_DIR / f).stat().st_size for f in on_disk)
    assert total < 5 * 1024 * 1024


def test_page_is_offline_checks():
    html = """<!DOCTYPE html><html><head>
    <script src="https://cdn.example.com/a.js"></script>
    <script src="/static/vendor/leaflet@1.9.3/dist/leaflet.js"></script>
    <link rel="stylesheet" href="//cdn.example.com/b.css"/>
    <style>.x { background: url('http://img.example.com/c.png') }
           .y { background: url(data:image/png;base64,AAAA) }
           @import "https://fonts.example.com/d.css";</style>
    </head><body><div style="background-image:url(https://img.example.com/e.png)"></div>
    <a href="https://www.example.com/not-a-load">link</a>
    <script>
      var t = L.tileLayer("https://{s}.tile.example.org/{z}/{x}/{y}.png",
          {"attribution": "&copy; <a href=\\"https://osm.example.org/copyright\\">OSM</a>"});
      var w = L.tileLayer.wms("https://wms.example.org/ows", {"layers": "x"});
      var i = L.icon({"iconUrl": "https://img.example.com/f.png"});
      var p = $(`<div><a href="https://www.example.com/g">more</a></div>`)[0];
      // a comment mentioning //not.a.url
    </script></body></html>"""
    assert sorted(page_is_offline(html)) == sorted(
        [
            "https://cdn.example.com/a.js",
            "//cdn.example.com/b.css",
            "http://img.example.com/c.png",
            "https://fonts.example.com/d.css",
            "https://img.example.com/e.png",
            "https://img.example.com/f.png",
        ]
    )
    assert "/static/vendor/leaflet@1.9.3/dist/leaflet.js" in page_resources(html)
    assert page_is_offline("<html><body><p>nothing</p></body></html>") == []


def test_assets_module_does_not_import_flask():
    source = Path(assets.__file__).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(from|import)\s+flask\b", source, re.MULTILINE)
