"""The domain facade the web app and the CLI call: one object per instance.

It owns the store and the locator, keeps the locator in step with the active boundary
layers, and implements the use cases (report a case, import a layer, seed the demo)
so that ``webapp`` views and CLI commands stay thin.
"""

from __future__ import annotations

import csv
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np

from gis.cases import NewCase, add_working_time, parse_new_case, utcnow
from gis.catalogue import get_category, load_catalogue
from gis.errors import InvalidInput, LayerError, OutsideJurisdiction
from gis.locate import Locator
from gis.storage import CaseStore, open_store

# The order a demo case walks through the skeleton's flow to reach its status.
_PATH = {
    "reported": [],
    "accepted": ["accepted"],
    "in_progress": ["accepted", "in_progress"],
    "resolved": ["accepted", "in_progress", "resolved"],
    "closed": ["accepted", "in_progress", "resolved", "closed"],
    "rejected": ["rejected"],
}


class Hemei:
    """One instance of the service: settings, store, locator."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.store: CaseStore = open_store(str(settings["DATABASE_URL"]))
        self._locator: Locator | None = None
        self._layers_key: object = None
        self._lock = threading.Lock()

    # -- boundaries -------------------------------------------------------------
    def _layers_version_key(self):
        return tuple(v["id"] for v in self.store.layer_versions() if v["active"])

    @property
    def locator(self) -> Locator:
        """The locator over the active layers (rebuilt when a new version is activated)."""
        key = self._layers_version_key()
        if self._locator is None or key != self._layers_key:
            with self._lock:
                layers = self.store.load_active_layers()
                if "grid" not in layers:
                    raise LayerError("no grid layer is active; run `hemei init` or "
                                     "`hemei import-shapes`")
                self._locator = Locator(layers)
                self._layers_key = key
        return self._locator

    @property
    def layers(self) -> dict:
        """The active boundary layers (level → GeoDataFrame)."""
        return self.locator.layers

    def has_layers(self) -> bool:
        return any(v["active"] for v in self.store.layer_versions())

    def import_layers(self, layers: dict, source: str, *, force: bool = False):
        """Validate new layers against the active ones and activate them if clean.

        Returns the validation report. Errors refuse the import (the active layers are
        untouched) unless ``force``; warnings (repaired geometries) never block it.
        """
        from gis.validate import validate_layers

        existing = self.store.load_active_layers() if self.has_layers() else {}
        others = {k: v for k, v in existing.items() if k not in layers}
        report = validate_layers(layers, existing=others)
        if report.ok or force:
            self.store.save_layers(report.layers, source)
        return report

    # -- initialisation ---------------------------------------------------------
    def ensure_initialised(self) -> bool:
        """Load the demo boundaries and cases on first run. Returns True if it did."""
        if self.has_layers():
            return False
        from gis.layers import read_layer_set

        shapes = str(self.settings["SHAPES"])
        layers = read_layer_set(shapes)
        report = self.import_layers(layers, source=shapes)
        if not report.ok:
            raise LayerError("the demo layers failed validation:\n" + report.format_text())
        demo = self.settings.get("DEMO_CASES")
        if demo and Path(str(demo)).exists():
            self.seed_demo_cases(str(demo))
        return True

    def seed_demo_cases(self, path: str) -> int:
        """Load the demo cases CSV (times relative to now), located in bulk."""
        with open(path, encoding="utf-8", newline="") as fh:
            records = list(csv.DictReader(fh))
        if not records:
            return 0
        lons = np.array([float(r["lon"]) for r in records])
        lats = np.array([float(r["lat"]) for r in records])
        located = self.locator.locate_many(lons, lats)
        now = utcnow()
        rows, events = [], []
        for r, loc in zip(records, located.itertuples(index=False), strict=True):
            if loc.grid_code is None:
                continue  # a demo point outside the street: skip rather than fail
            cat = get_category(r["category"])
            created = now - timedelta(days=float(r["days_ago"]))
            resolved = (now - timedelta(days=float(r["resolved_days_ago"]))
                        if r.get("resolved_days_ago") else None)
            closed = (now - timedelta(days=float(r["closed_days_ago"]))
                      if r.get("closed_days_ago") else None)
            steps = _PATH[r["status"]]
            times = _step_times(created, resolved, closed, steps)
            rows.append({
                "category": cat.code, "title": r["title"], "description": r["description"],
                "lon": float(r["lon"]), "lat": float(r["lat"]),
                "street_code": loc.street_code, "community_code": loc.community_code,
                "compound_code": loc.compound_code, "grid_code": loc.grid_code,
                "status": r["status"], "source": r["source"], "created_at": created,
                "updated_at": times[-1] if times else created,
                "due_at": add_working_time(created, cat.limit_value, cat.limit_unit),
                "resolved_at": resolved, "closed_at": closed if r["status"] == "closed" else (
                    times[-1] if r["status"] == "rejected" else None),
                "row_version": 1 + len(steps),
            })
            evs = [{"at": created, "actor": "demo", "from_status": None,
                    "to_status": "reported", "note": r.get("ref", "")}]
            prev = "reported"
            for st, at in zip(steps, times, strict=True):
                evs.append({"at": at, "actor": "demo", "from_status": prev, "to_status": st,
                            "note": ""})
                prev = st
            events.append(evs)
        return self.store.import_cases(rows, events)

    # -- cases ------------------------------------------------------------------
    def report(self, payload: object, actor: str = "anonymous"):
        """Validate, locate and store a new case. Raises ``InvalidInput`` naming the bad
        field, or ``OutsideJurisdiction`` for a point outside the street."""
        new: NewCase = parse_new_case(payload)
        datum = payload.get("datum") or "wgs84"
        if datum not in ("wgs84", "gcj02"):
            raise InvalidInput(f"datum must be wgs84 or gcj02, got {datum!r}", field="datum")
        if datum == "gcj02":
            # A point picked on a GCJ-02 base map (AMap): stored in WGS-84.
            from gis.gcj02 import gcj02_to_wgs84

            lon, lat = gcj02_to_wgs84(new.lon, new.lat)
            new.lon, new.lat = round(float(lon), 7), round(float(lat), 7)
        chain = self.locator.locate(new.lon, new.lat)
        if chain is None:
            raise OutsideJurisdiction(
                f"the point ({new.lon:.6f}, {new.lat:.6f}) is outside the jurisdiction "
                "(no grid contains it)", field="lon")
        cat = get_category(new.category)
        due = add_working_time(utcnow(), cat.limit_value, cat.limit_unit)
        return self.store.create_case(new, chain, due, actor=actor)

    def parse_bbox(self, text: str | None):
        """Parse ``minLon,minLat,maxLon,maxLat``; ``InvalidInput`` on anything else."""
        if text in (None, ""):
            return None
        parts = str(text).split(",")
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            vals = []
        if len(vals) != 4 or not all(np.isfinite(vals)):
            raise InvalidInput("bbox must be four numbers: minLon,minLat,maxLon,maxLat",
                               field="bbox")
        minx, miny, maxx, maxy = vals
        if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
            raise InvalidInput("bbox must have min ≤ max within lon ±180 and lat ±90",
                               field="bbox")
        return minx, miny, maxx, maxy

    def catalogue(self):
        return load_catalogue()

    def coverage(self, period):
        """The grid layer with every coverage metric for ``period`` (NaN = no data) and
        the all-time ``open``/``total`` counts the tooltips show."""
        from gis.coverage import METRICS, grid_metrics

        grids = self.grid_summary()
        metrics = grid_metrics(self.store, self.layers["grid"], period)
        for key in METRICS:
            grids[key] = grids["code"].map(metrics[key]).astype(float)
        return grids

    def grid_summary(self):
        """The grid layer with per-grid case counts (``open``, ``total``) joined on."""
        grids = self.layers["grid"].copy()
        counts = self.store.grid_counts().set_index("grid_code")
        grids["open"] = grids["code"].map(counts["open"]).fillna(0).astype(int)
        grids["total"] = grids["code"].map(counts["total"]).fillna(0).astype(int)
        return grids


def _step_times(created, resolved, closed, steps):
    """Plausible times for each demo step between creation and resolution/closure."""
    if not steps:
        return []
    end = closed or resolved or (created + timedelta(hours=6 * len(steps)))
    span = max((end - created).total_seconds(), 60.0)
    times = []
    for i, st in enumerate(steps, start=1):
        if st == "resolved" and resolved:
            times.append(resolved)
        elif st == "closed" and closed:
            times.append(closed)
        else:
            times.append(created + timedelta(seconds=span * i / (len(steps) + 1)))
    now = utcnow()
    return [min(t, now) for t in times]

