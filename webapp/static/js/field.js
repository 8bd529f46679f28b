/* Hemei Grid field pages (/m/): report on the spot, act on a case, patrol check-in.
 *
 * Plain Leaflet, no framework. Each page's map element carries its settings as JSON in
 * data-config (tiles or none, the grid outlines' URL, the street's bounds …). User text
 * only ever reaches the DOM through textContent. Everything the server needs travels in
 * ordinary form fields, so the forms still post (with less help) if this script fails.
 * The text it shows comes translated from the page (#field-i18n, see field/_scripts.html).
 */
(function () {
  "use strict";

  var R_EARTH = 6371008.8;

  function $(id) { return document.getElementById(id); }

  function csrfToken() {
    var el = document.querySelector("input[name=csrf_token]");
    return el ? el.value : "";
  }

  var MESSAGES = (function () {
    var e = document.getElementById("field-i18n");
    try { return JSON.parse(e ? e.textContent : "{}") || {}; } catch (x) { return {}; }
  })();

  /** The translated message `key`, each %(name)s in it replaced by vars[name]. */
  function msg(key, vars) {
    var s = MESSAGES[key];
    if (typeof s !== "string") return key;
    return s.replace(/%\((\w+)\)s/g, function (m, name) {
      return vars && vars[name] !== undefined && vars[name] !== null ? String(vars[name]) : m;
    });
  }

  // Leaflet's own words (zoom buttons, a marker's alt text) in the page's language.
  if (window.L) {
    L.Control.Zoom.prototype.options.zoomInTitle = msg("zoomIn");
    L.Control.Zoom.prototype.options.zoomOutTitle = msg("zoomOut");
    L.Marker.prototype.options.alt = msg("markerAlt");
  }

  function config(el) {
    try { return JSON.parse(el.getAttribute("data-config") || "{}"); } catch (e) { return {}; }
  }

  /** Great-circle distance in metres (the server computes the exact geodesic). */
  function distance(lon1, lat1, lon2, lat2) {
    var toRad = Math.PI / 180, dLat = (lat2 - lat1) * toRad, dLon = (lon2 - lon1) * toRad;
    var a = Math.sin(dLat / 2) * Math.sin(dLat / 2) + Math.cos(lat1 * toRad) *
      Math.cos(lat2 * toRad) * Math.sin(dLon / 2) * Math.sin(dLon / 2);
    return 2 * R_EARTH * Math.asin(Math.min(1, Math.sqrt(a)));
  }

  function fixed(x) { return (Math.round(x * 1e7) / 1e7).toFixed(7); }

  /** A Leaflet map: the configured WGS-84 tiles, or a plain background, plus the grids. */
  function makeMap(el, cfg, opts) {
    var map = L.map(el, {maxZoom: 19, zoomSnap: 1, attributionControl: false});
    var tiles = cfg.tiles || [];
    if (tiles.length) {
      map.attributionControl = L.control.attribution({prefix: false}).addTo(map);
      tiles.forEach(function (t) {
        L.tileLayer(t.url, {attribution: t.attr, subdomains: t.subdomains,
                            maxZoom: t.maxZoom || 18, maxNativeZoom: t.maxZoom || 18}).addTo(map);
      });
    } else {
      el.classList.add("no-tiles");
    }
    if (cfg.bounds) map.fitBounds(cfg.bounds);
    var mine = {};
    (cfg.myGrids || []).forEach(function (c) { mine[c] = true; });
    if (cfg.gridUrl) {
      fetch(cfg.gridUrl, {credentials: "same-origin"}).then(function (r) {
        return r.ok ? r.json() : null;
      }).then(function (gj) {
        if (!gj) return;
        var layer = L.geoJSON(gj, {
          interactive: false,
          style: function (f) {
            var m = mine[f.properties && f.properties.code];
            return {color: m ? "#b22222" : "#888", weight: m ? 3 : 1, opacity: 0.9,
                    fill: !!m, fillOpacity: 0.06};
          }
        }).addTo(map);
        layer.bringToBack();
        el.setAttribute("data-grids-loaded", String(gj.features ? gj.features.length : 0));
      }).catch(function () { /* outlines are a help, not a need */ });
    }
    if (opts && opts.center) map.setView(opts.center, opts.zoom || 17);
    return map;
  }

  function geolocate(onOk, onErr) {
    if (!navigator.geolocation) { onErr(msg("noGeolocation")); return; }
    navigator.geolocation.getCurrentPosition(function (p) {
      onOk(p.coords.longitude, p.coords.latitude, p.coords.accuracy);
    }, function (e) {
      onErr(msg(e && e.code === 1 ? "geoDenied" : "geoFailed"));
    }, {enableHighAccuracy: true, timeout: 15000, maximumAge: 0});
  }

  function accuracyText(acc) {
    return acc ? msg("accuracy", {num: Math.round(acc)}) : msg("accuracyUnknown");
  }

  // ------------------------------------------------------------------ every form
  var SUBMITS = "button[type=submit], button:not([type]), input[type=submit]";

  /** Mark `form` as on its way: a second tap over a slow connection must not send it
   *  again (the server also refuses the repeat, this spares the round trip). */
  function busy(form) {
    form.setAttribute("data-submitting", "1");
    // Disabled only after the browser has collected the fields: a submit button disabled
    // at once would drop its own name=value (confirm_new) from what is sent.
    setTimeout(function () {
      Array.prototype.forEach.call(form.querySelectorAll(SUBMITS), function (b) {
        if (!b.disabled) { b.disabled = true; b.setAttribute("data-busy", "1"); }
      });
    }, 0);
  }

  /** Undo busy(): the page came back (history, bfcache) and may be sent again. */
  function idle(form) {
    form.removeAttribute("data-submitting");
    Array.prototype.forEach.call(form.querySelectorAll("[data-busy]"), function (b) {
      b.disabled = false; b.removeAttribute("data-busy");
    });
  }

  function guardForms() {
    // Capture phase, before the pages' own handlers: a question or a refusal stops it.
    document.addEventListener("submit", function (e) {
      var form = e.target, ask = form.getAttribute("data-confirm");
      var files = form.querySelectorAll("input[type=file][data-max]");
      for (var i = 0; i < files.length; i++) {
        var max = +files[i].getAttribute("data-max");
        if (files[i].files && files[i].files.length > max) {
          e.preventDefault(); e.stopImmediatePropagation();
          tooMany(files[i], max);
          return;
        }
      }
      if (ask && form.getAttribute("data-submitting") !== "1" && !window.confirm(ask)) {
        e.preventDefault(); e.stopImmediatePropagation();
      }
    }, true);
    // Bubble phase, after them: only a submission that really goes is marked.
    document.addEventListener("submit", function (e) {
      var form = e.target;
      if (e.defaultPrevented) return;
      if (form.getAttribute("data-submitting") === "1") { e.preventDefault(); return; }
      busy(form);
    });
    window.addEventListener("pageshow", function () {
      Array.prototype.forEach.call(document.querySelectorAll("form"), idle);
    });
    document.addEventListener("change", function (e) {
      var t = e.target, max = t && t.getAttribute && t.getAttribute("data-max");
      if (max && t.files) tooMany(t, +max);
    });
  }

  /** Say (next to the file input) that more than `max` photos were chosen. */
  function tooMany(input, max) {
    var id = input.id + "-count", note = $(id);
    var over = input.files && input.files.length > max;
    if (!note) {
      if (!over) return;
      note = el("p", "error-message m-warn");
      note.id = id; note.setAttribute("role", "alert");
      input.parentNode.insertBefore(note, input.nextSibling);
    }
    note.textContent = over ? msg("tooManyPhotos", {num: max, chosen: input.files.length}) : "";
    note.hidden = !over;
    if (over) note.scrollIntoView({block: "center"});
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ------------------------------------------------------------------ report
  function reportPage(form) {
    var mapEl = $("report-map"), cfg = config(mapEl), map = makeMap(mapEl, cfg);
    var lon = $("lon"), lat = $("lat"), acc = $("accuracy"), status = $("loc-status");
    var marker = null, circle = null, photoPos = null;
    var dups = $("duplicates"), list = $("dup-list"), button = $("submit-report");

    // A new place or category makes the list of duplicates stale: check again on submit.
    function staleDups() {
      if (!dups.hidden && list.children.length) { dups.hidden = true; button.hidden = false; }
    }

    function place(lo, la, accuracy, how) {
      lon.value = fixed(lo); lat.value = fixed(la);
      acc.value = accuracy ? String(Math.round(accuracy)) : "";
      var ll = [la, lo];
      if (!marker) {
        marker = L.marker(ll, {draggable: true, autoPan: true}).addTo(map);
        marker.on("dragend", function () {
          var p = marker.getLatLng();
          place(p.lng, p.lat, null, "drag");
        });
      } else {
        marker.setLatLng(ll);
      }
      if (circle) { map.removeLayer(circle); circle = null; }
      if (accuracy) {
        circle = L.circle(ll, {radius: accuracy, weight: 1, color: "#1565c0",
                               fillOpacity: 0.1, interactive: false}).addTo(map);
      }
      var poor = how === "gps" && accuracy && accuracy > (cfg.poorM || 100);
      status.classList.toggle("m-warn", !!poor);
      status.classList.remove("error-message");
      if (poor) {
        // A position this vague may be a street away: ask for the marker to be placed.
        status.textContent = msg("poorAccuracy", {num: Math.round(accuracy)});
        status.setAttribute("data-poor", "1");
        map.setView(ll, 16, {animate: false});
      } else if (how === "gps") {
        status.removeAttribute("data-poor");
        status.textContent = msg("locatedDrag", {accuracy: accuracyText(accuracy)});
        map.setView(ll, accuracy && accuracy > 150 ? 16 : 18, {animate: false});
      } else if (how === "photo") {
        status.removeAttribute("data-poor");
        status.textContent = msg("photoPlaced");
        map.setView(ll, 18, {animate: false});
      } else if (how === "kept") {
        status.textContent = msg("keptPlace");
      } else {
        status.removeAttribute("data-poor");
        status.textContent = msg("tapped");
      }
      mapEl.setAttribute("data-located", how);
      if (how !== "kept") staleDups();
    }

    function locateNow() {
      status.textContent = msg("locating");
      geolocate(function (lo, la, a) { place(lo, la, a, "gps"); }, function (error) {
        status.textContent = msg("orTapMap", {error: error});
      });
    }

    map.on("click", function (e) { place(e.latlng.lng, e.latlng.lat, null, "tap"); });
    $("locate-me").addEventListener("click", locateNow);
    if (lon.value && lat.value) {
      place(parseFloat(lon.value), parseFloat(lat.value), parseFloat(acc.value) || null, "kept");
      map.setView([parseFloat(lat.value), parseFloat(lon.value)], 18, {animate: false});
    } else {
      locateNow();
    }

    // A photo's own GPS position, offered as the location.
    var photoBtn = $("use-photo-location"), photoStatus = $("photo-status");
    photoBtn.addEventListener("click", function () {
      if (photoPos) place(photoPos[0], photoPos[1], null, "photo");
      photoBtn.textContent = msg("usePhoto");
    });
    $("photos").addEventListener("change", function (ev) {
      var files = Array.prototype.slice.call(ev.target.files || [], 0, 3);
      photoPos = null; photoBtn.hidden = true; photoStatus.textContent = "";
      var chain = Promise.resolve();
      files.forEach(function (f) {
        chain = chain.then(function () {
          if (photoPos) return null;
          var body = new FormData();
          body.append("photo", f, f.name || "photo.jpg");
          return fetch(cfg.photoUrl, {method: "POST", body: body, credentials: "same-origin",
                                      headers: {"X-CSRFToken": csrfToken()}})
            .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
            .then(function (res) {
              var j = res[1];
              if (!res[0]) {
                photoStatus.textContent = msg("photoUnusable",
                                              {reason: (j.error && j.error.message) || ""});
              } else if (j.lon !== null && j.lon !== undefined && !j.inside) {
                // Offering a place the case cannot be reported at would only earn a 422.
                photoStatus.textContent = msg("photoOutside");
              } else if (j.lon !== null && j.lon !== undefined) {
                photoPos = [j.lon, j.lat];
                photoBtn.hidden = false;
                var d = lon.value ? Math.round(distance(j.lon, j.lat, +lon.value, +lat.value)) : null;
                photoBtn.textContent = d !== null ? msg("usePhotoDistance", {num: d}) : msg("usePhoto");
                photoStatus.textContent = msg("photoHasPlace");
              }
            });
        }).catch(function () { photoStatus.textContent = msg("photoUnreadable"); });
      });
    });

    // Duplicates: before saving, ask for open cases of the same category nearby.
    $("category").addEventListener("change", staleDups);
    function submitNew() {
      var h = form.querySelector("input[type=hidden][name=confirm_new]");
      if (!h) {
        h = document.createElement("input");
        h.type = "hidden"; h.name = "confirm_new";
        form.appendChild(h);
      }
      h.value = "1";
      busy(form);  // form.submit() fires no submit event for guardForms to see
      form.submit();
    }
    form.addEventListener("submit", function (e) {
      var by = e.submitter;
      if (by && (by.hasAttribute("formaction") || by.name === "confirm_new")) return;
      e.preventDefault();
      if (!lon.value || !lat.value) {
        status.textContent = msg("locateFirst");
        status.classList.add("error-message");
        mapEl.scrollIntoView({block: "center"});
        return;
      }
      var q = "?lon=" + encodeURIComponent(lon.value) + "&lat=" + encodeURIComponent(lat.value) +
        "&category=" + encodeURIComponent($("category").value) + "&radius=" + (cfg.radius || 50);
      button.disabled = true;
      fetch(cfg.nearbyUrl + q, {credentials: "same-origin"}).then(function (r) {
        return r.ok ? r.json() : {cases: []};
      }).then(function (j) {
        button.disabled = false;
        if (!j.cases || !j.cases.length) { submitNew(); return; }
        list.textContent = "";
        j.cases.forEach(function (c) {
          var li = el("li");
          li.setAttribute("data-case-id", c.id);
          li.appendChild(el("span", "m-title", c.title));
          li.appendChild(el("span", "m-sub", "#" + c.id + " · " + c.status_label + " · " +
                            msg("aboutM", {num: Math.round(c.distance_m)}) + " · " + c.created));
          var b = el("button", "big m-add", msg("addToCase"));
          b.type = "submit";
          b.setAttribute("formaction", c.add_url);
          li.appendChild(b);
          list.appendChild(li);
        });
        dups.hidden = false;
        button.hidden = true;  // now the choice is: add to one of these, or report anyway
        dups.scrollIntoView({block: "start"});
      }).catch(function () { button.disabled = false; submitNew(); });
    });
  }

  // ------------------------------------------------------------------ a case
  function casePage(mapEl) {
    var cfg = config(mapEl), c = cfg["case"];
    var map = makeMap(mapEl, cfg, {center: c, zoom: 17});
    L.marker(c, {title: msg("caseMarker"), alt: msg("caseMarker")}).addTo(map);
    (cfg.lines || []).forEach(function (line) {
      L.polyline(line.map(function (p) { return [p[1], p[0]]; }),
                 {color: "#2e7d32", weight: 5, opacity: 0.8}).addTo(map);
    });

    var useLoc = $("use-my-location");
    if (useLoc) {
      var myLon = $("my-lon"), myLat = $("my-lat"), myAcc = $("my-acc");
      var st = $("my-loc-status"), me = null;
      var farM = cfg.farM || 100;
      var show = function (lo, la, a) {
        myLon.value = fixed(lo); myLat.value = fixed(la);
        if (myAcc) myAcc.value = a ? String(Math.round(a)) : "";
        var d = Math.round(distance(lo, la, c[1], c[0]));
        st.textContent = msg(d > farM ? "farFromCase" : "nearCase",
                             {accuracy: accuracyText(a), num: d, far: farM});
        st.classList.toggle("m-warn", d > farM);
        if (me) map.removeLayer(me);
        me = L.circle([la, lo], {radius: Math.max(a || 10, 5), color: "#1565c0",
                                 fillOpacity: 0.2, weight: 2}).addTo(map);
        map.fitBounds(L.latLngBounds([c, [la, lo]]).pad(0.3), {maxZoom: 18, animate: false});
        useLoc.setAttribute("data-located", "1");
      };
      useLoc.addEventListener("click", function () {
        st.textContent = msg("locating");
        geolocate(show, function (error) { st.textContent = error; });
      });
      if (myLon.value && myLat.value) {
        show(+myLon.value, +myLat.value, myAcc && myAcc.value ? +myAcc.value : null);
      }
    }

    var details = $("line-details");
    if (details) {
      var repair = null, pts = [], poly = null, marks = [];
      var input = $("line"), lengthEl = $("line-length");
      var redraw = function () {
        if (poly) repair.removeLayer(poly);
        marks.forEach(function (m) { repair.removeLayer(m); });
        marks = pts.map(function (p) {
          return L.circleMarker([p[1], p[0]], {radius: 6, color: "#2e7d32"}).addTo(repair);
        });
        poly = pts.length > 1 ? L.polyline(pts.map(function (p) { return [p[1], p[0]]; }),
                                           {color: "#2e7d32", weight: 5}).addTo(repair) : null;
        var len = 0;
        for (var i = 1; i < pts.length; i++) {
          len += distance(pts[i - 1][0], pts[i - 1][1], pts[i][0], pts[i][1]);
        }
        input.value = pts.length > 1 ? JSON.stringify(pts) : "";
        lengthEl.textContent = pts.length === 0 ? msg("noLine") : pts.length === 1
          ? msg("onePoint") : msg("linePoints", {num: pts.length, length: len.toFixed(1)});
        lengthEl.setAttribute("data-length", len.toFixed(1));
      };
      var init = function () {
        if (repair) { repair.invalidateSize(); return; }
        repair = makeMap($("repair-map"), {tiles: cfg.tiles, gridUrl: null},
                         {center: c, zoom: 18});
        L.marker(c, {interactive: false}).addTo(repair);
        repair.on("click", function (e) {
          if (pts.length >= 500) return;
          pts.push([+fixed(e.latlng.lng), +fixed(e.latlng.lat)]);
          redraw();
        });
        if (input.value) {
          try { pts = JSON.parse(input.value) || []; } catch (e) { pts = []; }
        }
        redraw();
        $("repair-map").setAttribute("data-ready", "1");
      };
      details.addEventListener("toggle", function () { if (details.open) init(); });
      $("line-undo").addEventListener("click", function () { pts.pop(); if (repair) redraw(); });
      $("line-clear").addEventListener("click", function () { pts = []; if (repair) redraw(); });
      if (input.value) { details.open = true; init(); }
    }
    // A <details> opened by the server (a form re-shown with its error): bring it into view.
    var open = document.querySelector("details.m-move[open]");
    if (open) open.scrollIntoView({block: "start"});
  }

  // ------------------------------------------------------------------ patrol
  function patrolPage(form) {
    var mapEl = $("patrol-map"), cfg = config(mapEl), map = makeMap(mapEl, cfg);
    var lon = $("lon"), lat = $("lat"), acc = $("accuracy"), st = $("loc-status");
    var btn = $("check-in"), why = $("check-in-why"), me = null, dot = null;
    var mine = {};
    (cfg.myGrids || []).forEach(function (code) { mine[code] = true; });
    // The button only when a check-in here can succeed; otherwise say why (the server
    // refuses the same cases: outside the street, not one's grid, too vague a fix).
    var allow = function (ok, reason) {
      btn.disabled = !ok;
      why.textContent = ok ? "" : (reason || "");
      why.hidden = ok || !reason;
      btn.setAttribute("data-why", ok ? "" : (reason ? reason : "wait"));
    };
    var show = function (lo, la, a) {
      lon.value = fixed(lo); lat.value = fixed(la); acc.value = a ? a.toFixed(1) : "";
      st.textContent = msg("located", {accuracy: accuracyText(a)});
      var vague = a && cfg.maxAccuracy && a > cfg.maxAccuracy;
      if (vague) allow(false, msg("tooInaccurate", {num: Math.round(a), limit: cfg.maxAccuracy}));
      else allow(!cfg.locateUrl, "");  // with a grid look-up to come, wait for it
      if (me) map.removeLayer(me);
      if (dot) map.removeLayer(dot);
      me = L.circle([la, lo], {radius: Math.max(a || 10, 5), color: "#1565c0",
                               fillOpacity: 0.15, weight: 1}).addTo(map);
      dot = L.circleMarker([la, lo], {radius: 7, color: "#fff", weight: 2,
                                      fillColor: "#1565c0", fillOpacity: 1}).addTo(map);
      map.setView([la, lo], 17, {animate: false});
      mapEl.setAttribute("data-located", "gps");
      if (cfg.locateUrl) {
        fetch(cfg.locateUrl + "?lon=" + lon.value + "&lat=" + lat.value, {credentials: "same-origin"})
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (j) {
            if (!j) { if (!vague) allow(true); return; }
            var g = j.inside && j.chain && j.chain.grid;
            st.textContent = g ? msg("inGrid", {accuracy: accuracyText(a), grid: g.name})
              : msg("outsideStreet", {accuracy: accuracyText(a)});
            if (g) st.setAttribute("data-grid", g.code);
            if (vague) return;
            if (!g) allow(false, msg("cannotOutside"));
            else if (cfg.onlyMine && !mine[g.code]) allow(false, msg("cannotNotMine", {grid: g.name}));
            else allow(true);
          }).catch(function () { if (!vague) allow(true); /* the server still checks */ });
      }
    };
    var locateNow = function () {
      st.textContent = msg("locating");
      allow(false, "");
      geolocate(show, function (error) { st.textContent = error; });
    };
    $("locate-me").addEventListener("click", locateNow);
    form.addEventListener("submit", function (e) {
      if (!lon.value) { e.preventDefault(); locateNow(); }
    });
    locateNow();
  }

  function start() {
    guardForms();
    var f = document.querySelector("form[data-field-page=report]");
    if (f) reportPage(f);
    var m = document.querySelector("[data-field-page=case]");
    if (m) casePage(m);
    var p = document.querySelector("form[data-field-page=patrol]");
    if (p) patrolPage(p);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
