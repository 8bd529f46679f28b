"""The HEMEI_TILES setting: every accepted value, its datum, its hosts, and the folium layers."""

from __future__ import annotations

import dataclasses
import json
import re

import folium
import pytest

from gis.tiles import TileConfig, TileLayerSpec, add_to_map, tile_config

KEY = "0123456789abcdef0123456789abcdef"  # the shape of a Tianditu key (32 hex digits)


def expand(layer: TileLayerSpec, s: str, z=15, x=26189, y=14149) -> str:
    return (layer.url.replace("{s}", s).replace("{z}", str(z)).replace("{x}", str(x))
            .replace("{y}", str(y)))


@pytest.mark.parametrize("setting", ["none", "NONE", " none ", ""])
def test_none(setting):
    cfg = tile_config(setting)
    assert cfg == TileConfig("none", (), "wgs84", ())


def test_osm():
    cfg = tile_config("OSM", attribution="ignored for named providers")
    assert cfg.kind == "osm" and cfg.datum == "wgs84"
    (layer,) = cfg.layers
    assert layer.url == "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    assert layer.attr == "© OpenStreetMap contributors"
    assert layer.subdomains is None and not layer.overlay
    assert cfg.external_hosts == ("tile.openstreetmap.org",)


@pytest.mark.parametrize(("setting", "base", "labels"), [
    ("tianditu", "vec_w", "cva_w"),
    ("tianditu-vec", "vec_w", "cva_w"),
    ("Tianditu-Img", "img_w", "cia_w"),
])
def test_tianditu(setting, base, labels):
    cfg = tile_config(setting, tianditu_key=KEY)
    assert cfg.kind == ("tianditu-img" if base == "img_w" else "tianditu-vec")
    assert cfg.datum == "wgs84"  # CGCS2000 ≈ WGS-84: no shift
    base_layer, label_layer = cfg.layers
    assert base_layer.url == (
        f"https://t{{s}}.tianditu.gov.cn/DataServer?T={base}&x={{x}}&y={{y}}&l={{z}}&tk={KEY}")
    assert label_layer.url == base_layer.url.replace(f"T={base}", f"T={labels}")
    assert not base_layer.overlay and label_layer.overlay
    assert base_layer.subdomains == label_layer.subdomains == "01234567"
    assert expand(base_layer, "3") == (
        f"https://t3.tianditu.gov.cn/DataServer?T={base}&x=26189&y=14149&l=15&tk={KEY}")
    assert cfg.external_hosts == tuple(f"t{i}.tianditu.gov.cn" for i in range(8))
    assert all("天地图" in layer.attr for layer in cfg.layers)


@pytest.mark.parametrize("key", ["", "   "])
def test_tianditu_without_key_says_what_to_set(key):
    with pytest.raises(ValueError, match="HEMEI_TIANDITU_KEY"):
        tile_config("tianditu-img", tianditu_key=key)


def test_tianditu_key_cannot_inject_parameters():
    with pytest.raises(ValueError, match="HEMEI_TIANDITU_KEY"):
        tile_config("tianditu", tianditu_key=KEY + "&T=img_w")
    assert tile_config("tianditu", tianditu_key=f"  {KEY}\n").layers[0].url.endswith(KEY)


def test_amap_is_gcj02():
    cfg = tile_config("amap")
    assert cfg.kind == "amap" and cfg.datum == "gcj02"
    (layer,) = cfg.layers
    assert layer.subdomains == "1234"
    assert layer.attr == "© 高德地图 AutoNavi"
    assert expand(layer, "2") == ("https://webrd02.is.autonavi.com/appmaptile?lang=zh_cn"
                                  "&size=1&scale=1&style=8&x=26189&y=14149&z=15")
    assert cfg.external_hosts == tuple(f"webrd0{i}.is.autonavi.com" for i in range(1, 5))


def test_xyz_template():
    cfg = tile_config("http://10.1.2.3:8080/tiles/{z}/{x}/{y}.png", attribution="区测绘院")
    assert cfg.kind == "xyz" and cfg.datum == "wgs84"
    (layer,) = cfg.layers
    assert layer.url == "http://10.1.2.3:8080/tiles/{z}/{x}/{y}.png"
    assert layer.attr == "区测绘院" and layer.subdomains is None
    assert cfg.external_hosts == ("10.1.2.3",)


def test_xyz_default_attribution_and_gcj02_suffix():
    cfg = tile_config("http://10.1.2.3/tiles/{z}/{x}/{y}.png#gcj02")
    assert cfg.datum == "gcj02"
    assert cfg.layers[0].url == "http://10.1.2.3/tiles/{z}/{x}/{y}.png"  # suffix stripped
    assert cfg.layers[0].attr == "Tiles"
    assert tile_config("https://tiles.example.cn/{z}/{x}/{y}.png#WGS84").datum == "wgs84"


def test_xyz_with_subdomains_lists_every_host():
    cfg = tile_config("https://{s}.Tiles.Example.cn/{z}/{x}/{-y}.png")
    assert cfg.layers[0].subdomains == "abc"  # Leaflet's default
    assert cfg.external_hosts == ("a.tiles.example.cn", "b.tiles.example.cn",
                                  "c.tiles.example.cn")


@pytest.mark.parametrize("setting", [
    "google", "tianditu-ter", "baidu", "mapbox://styles/x",
    "http://10.1.2.3/tiles/{z}/{x}.png",  # no {y}
    "ftp://10.1.2.3/{z}/{x}/{y}.png", "/tiles/{z}/{x}/{y}.png",  # not http(s)
])
def test_unknown_values_list_the_accepted_ones(setting):
    with pytest.raises(ValueError) as err:
        tile_config(setting, tianditu_key=KEY)
    msg = str(err.value)
    if "{z}" in setting and "{y}" in setting:
        assert "http" in msg
    else:
        for accepted in ("none", "osm", "tianditu-vec", "tianditu-img", "amap", "{z}"):
            assert accepted in msg


def test_unknown_suffix_is_an_error():
    with pytest.raises(ValueError, match="#gcj02"):
        tile_config("http://10.1.2.3/tiles/{z}/{x}/{y}.png#gcj2")


def test_config_is_frozen():
    cfg = tile_config("osm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.datum = "gcj02"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.layers[0].url = "x"


def render(cfg: TileConfig) -> str:
    m = folium.Map(location=[24.40, 111.57], zoom_start=15, tiles=None)
    assert add_to_map(cfg, m) is m
    return m.get_root().render()


def tile_layer_calls(html: str) -> list[str]:
    # folium writes the URL as a JSON string literal (with "&" as \u0026): decode it.
    return [json.loads(lit) for lit in re.findall(r'L\.tileLayer\(\s*("(?:[^"\\]|\\.)*")', html)]


def test_add_to_map_tianditu_two_layers_with_subdomains():
    cfg = tile_config("tianditu", tianditu_key=KEY)
    html = render(cfg)
    assert tile_layer_calls(html) == [layer.url for layer in cfg.layers]
    assert html.count('"subdomains": "01234567"') == 2
    assert '"maxZoom": 18' in html
    assert f'"attribution": {json.dumps(cfg.layers[0].attr)}' in html  # folium \u-escapes it
    assert "L.control.layers" not in html  # control=False: nothing to switch


def test_add_to_map_amap_and_osm():
    html = render(tile_config("amap"))
    assert tile_layer_calls(html) == [tile_config("amap").layers[0].url]
    assert '"subdomains": "1234"' in html
    html = render(tile_config("osm"))
    assert tile_layer_calls(html) == ["https://tile.openstreetmap.org/{z}/{x}/{y}.png"]
    assert '"maxZoom": 19' in html


def test_add_to_map_none_adds_nothing():
    assert tile_layer_calls(render(tile_config("none"))) == []


def test_every_rendered_tile_host_is_declared():
    for setting in ("osm", "amap", "tianditu-img", "http://10.1.2.3/t/{z}/{x}/{y}.png#gcj02",
                    "https://{s}.tiles.example.cn/{z}/{x}/{y}.png"):
        cfg = tile_config(setting, tianditu_key=KEY)
        for layer in cfg.layers:
            for sub in layer.subdomains or [""]:
                host = re.match(r"https?://([^/:]+)", expand(layer, sub)).group(1)
                assert host in cfg.external_hosts, (setting, host)
