/* Hemei Grid: cases for the visible area, fetched from the API by bounding box.
 *
 * Folium embeds everything it is given into the page, which does not scale to a city's
 * millions of cases. So the page embeds no case markers: on every pan or zoom this
 * fetches the cases in view (compact rows) and refills the marker cluster and the heat
 * layer. User text is only ever put into the DOM with textContent, never as HTML.
 * When the base map is GCJ-02 (AMap, some intranet servers), the viewport is converted
 * back to WGS-84 for the query and each point is shifted to GCJ-02 for display.
 */
(function (global) {
  "use strict";

  // --- GCJ-02 (the public forward formula; the inverse by fixed-point iteration) ---
  var A = 6378245.0, EE = 0.00669342162296594323;
  function tLat(x, y) {
    var r = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
    r += (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
    r += (20 * Math.sin(y * Math.PI) + 40 * Math.sin(y / 3 * Math.PI)) * 2 / 3;
    r += (160 * Math.sin(y / 12 * Math.PI) + 320 * Math.sin(y * Math.PI / 30)) * 2 / 3;
    return r;
  }
  function tLon(x, y) {
    var r = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
    r += (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
    r += (20 * Math.sin(x * Math.PI) + 40 * Math.sin(x / 3 * Math.PI)) * 2 / 3;
    r += (150 * Math.sin(x / 12 * Math.PI) + 300 * Math.sin(x / 30 * Math.PI)) * 2 / 3;
    return r;
  }
  function toGcj(lon, lat) {
    var dLat = tLat(lon - 105, lat - 35), dLon = tLon(lon - 105, lat - 35);
    var rad = lat / 180 * Math.PI, m = Math.sin(rad);
    m = 1 - EE * m * m;
    var s = Math.sqrt(m);
    dLat = (dLat * 180) / ((A * (1 - EE)) / (m * s) * Math.PI);
    dLon = (dLon * 180) / (A / s * Math.cos(rad) * Math.PI);
    return [lon + dLon, lat + dLat];
  }
  function toWgs(lon, lat) {
    var w = [lon, lat];
    for (var i = 0; i < 20; i++) {
      var g = toGcj(w[0], w[1]);
      var dx = g[0] - lon, dy = g[1] - lat;
      w = [w[0] - dx, w[1] - dy];
      if (Math.abs(dx) < 1e-9 && Math.abs(dy) < 1e-9) break;
    }
    return w;
  }

  function el(tag, text, attrs) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }

  function popup(row, o) {
    // row = [id, lon, lat, status, category, created (epoch s), title]
    var box = el("div", null, { "class": "case-popup" });
    box.appendChild(el("b", row[6]));
    var age = Math.max(0, Math.floor((Date.now() / 1000 - row[5]) / 86400));
    [[o.labels.category, o.categories[row[4]] || row[4]],
     [o.labels.status, o.statuses[row[3]] || row[3]],
     [o.labels.age, age + " " + o.labels.days]].forEach(function (kv) {
      box.appendChild(el("br"));
      box.appendChild(document.createTextNode(kv[0] + ": " + kv[1]));
    });
    box.appendChild(el("br"));
    box.appendChild(el("a", o.labels.details, { href: o.caseUrl.replace("{id}", row[0]) }));
    return box;
  }

  function attach(map, cluster, heat, o) {
    var seq = 0, timer = null;
    var status = document.getElementById("case-count");
    function load() {
      var b = map.getBounds(), sw = b.getSouthWest(), ne = b.getNorthEast();
      var lo = [sw.lng, sw.lat], hi = [ne.lng, ne.lat];
      if (o.datum === "gcj02") { lo = toWgs(lo[0], lo[1]); hi = toWgs(hi[0], hi[1]); }
      var url = o.pointsUrl + (o.pointsUrl.indexOf("?") < 0 ? "?" : "&") + "bbox=" +
        [lo[0], lo[1], hi[0], hi[1]].map(function (v) { return v.toFixed(6); }).join(",") +
        "&limit=" + o.limit;
      var mine = ++seq;
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); })
        .then(function (data) {
          if (mine !== seq) return;  // a newer request is on its way
          cluster.clearLayers();
          var markers = [], heatPts = [];
          data.rows.forEach(function (row) {
            var p = o.datum === "gcj02" ? toGcj(row[1], row[2]) : [row[1], row[2]];
            var mk = L.circleMarker([p[1], p[0]], {
              radius: 6, weight: 1, color: "#fff", fillOpacity: 0.9,
              fillColor: o.colours[row[3]] || "#333"
            });
            mk.bindPopup(function () { return popup(row, o); });
            mk.options.caseId = row[0];
            markers.push(mk);
            heatPts.push([p[1], p[0], 1]);
          });
          cluster.addLayers(markers);
          if (heat) heat.setLatLngs(heatPts);
          if (status) {
            status.textContent = data.truncated ?
              o.labels.shown.replace("{n}", data.rows.length).replace("{total}", data.numberMatched) :
              String(data.rows.length);
          }
          map.getContainer().setAttribute("data-cases-loaded", String(data.rows.length));
        }).catch(function () { /* keep what is shown; the next move retries */ });
    }
    map.on("moveend", function () { clearTimeout(timer); timer = setTimeout(load, 150); });
    load();
  }

  /* A boundary layer fetched from its own (versioned, cached) GeoJSON file into `group`.
   * o.values (grids): code -> [colour, value text, open, total]; the tooltip shows the
   * name, code and those numbers under o.labels. Everything is set as text. */
  function remoteGeoJson(map, group, o) {
    function tip(f) {
      var box = el("div", null, { "class": "area-tip" });
      var v = o.values ? o.values[f.id] : null;
      var rows = [[o.labels[0], f.properties.name], [o.labels[1], f.properties.code]];
      if (o.values) {
        rows.push([o.labels[2], v ? v[1] : ""]);
        // The open and total counts, unless the map's metric is one of them already.
        [[o.labels[3], 2], [o.labels[4], 3]].forEach(function (c) {
          if (c[0] !== o.labels[2]) rows.push([c[0], v ? v[c[1]] : 0]);
        });
      }
      var table = el("table");
      rows.forEach(function (r) {
        var tr = el("tr");
        tr.appendChild(el("th", r[0]));
        tr.appendChild(el("td", r[1]));
        table.appendChild(tr);
      });
      box.appendChild(table);
      return box;
    }
    fetch(o.url, { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (data) {
        var base = o.style || {};
        var layer = L.geoJSON(data, {
          style: function (f) {
            var s = Object.assign({}, base);
            if (o.values) {
              var v = o.values[f.id];
              s.fillColor = v ? v[0] : o.noData;
            }
            return s;
          },
          onEachFeature: function (f, lyr) {
            lyr.bindTooltip(function () { return tip(f); }, { sticky: true });
            if (o.highlight) {
              lyr.on("mouseover", function () { lyr.setStyle(o.highlight); });
              lyr.on("mouseout", function () { layer.resetStyle(lyr); });
            }
            if (o.link) {
              lyr.on("dblclick", function () {
                window.location = o.link.replace("{code}", encodeURIComponent(f.id));
              });
            }
          }
        });
        group.addLayer(layer);
        if (o.marker === "grids") layer.bringToBack();
        var c = map.getContainer();
        c.setAttribute("data-" + o.marker + "-loaded", String(data.features.length));
      });
  }

  global.HemeiMap = { attach: attach, remoteGeoJson: remoteGeoJson, toGcj: toGcj,
                      toWgs: toWgs };
})(window);
