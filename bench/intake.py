"""Benchmark: case intake under load, through the served app.

Starts two servers side by side on free ports, each served by gunicorn with the same
worker processes (``--workers``, default 4) and 4 threads a worker:

- **Hemei**: ``hemei serve --production`` over a fresh instance (the demo street's layers,
  no demo cases, an administrator's API token) on ``--backend sqlite`` (a file in a temporary
  folder) or ``--backend postgis`` (a new database on the server ``--pg-url`` names, default
  ``$HEMEI_TEST_PG_URL``; dropped at the end);
- **minimal**: the obvious alternative, a Flask app of one view that parses the JSON body and
  runs one ``INSERT`` into a table of six columns (``sqlite3`` with the same WAL,
  ``synchronous=NORMAL`` and busy timeout as Hemei's store, or ``psycopg`` in autocommit
  into a database of the same server) — no token, no validation, no locating, no history,
  no idempotency.

Then ``--clients`` client processes (default 8) post ``--reports`` reports (default 10,000)
to each server, as fast as each answer comes back (keep-alive connections,
``http.client``): a report is a point inside the demo street, a unique ``Idempotency-Key``
and a bearer token (the minimal app ignores both). Before timing, every server answers a
warm-up round of 30 reports per worker thread (Hemei loads its layers lazily, once per
worker). The reports are posted in ``--rounds`` (default 3) rounds, alternating between
the servers and which goes first, so a machine that slows down or speeds up meanwhile
weighs on both alike. Printed per server and round: throughput (reports/s, over the wall time of the
round), latency p50/p99 (as the clients see it), the statuses, and the CPU time the
server's worker processes spent per report (Linux); per round the ratio Hemei /
minimal; then the median ratio. Target: Hemei ≥ 0.5 × the minimal endpoint's
throughput. The CPU per report barely moves with what else the machine does, where
throughput swings by a quarter between rounds: it says where a change helped.

Timings depend on what else the machine runs (clients and servers share its cores): the
load average is printed first and last.

Run: ``python bench/intake.py [--reports N] [--clients N] [--workers N] [--rounds N]
[--backend sqlite|postgis] [--pg-url URL] [--access-log on|off]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
THREADS = 4  # gunicorn threads a worker, as `hemei serve --production` runs it
TARGET = 0.5


# -- the minimal app ---------------------------------------------------------------------
MINIMAL_DDL = {
    "sqlite": "CREATE TABLE IF NOT EXISTS reports (id INTEGER PRIMARY KEY AUTOINCREMENT, "
              "category TEXT NOT NULL, lon REAL NOT NULL, lat REAL NOT NULL, "
              "description TEXT NOT NULL, created_at TEXT NOT NULL)",
    "postgis": "CREATE TABLE IF NOT EXISTS reports (id SERIAL PRIMARY KEY, "
               "category TEXT NOT NULL, lon DOUBLE PRECISION NOT NULL, "
               "lat DOUBLE PRECISION NOT NULL, description TEXT NOT NULL, "
               "created_at TIMESTAMP NOT NULL)",
}


def minimal_app(backend: str, target: str):
    """A Flask app with one view, ``POST /reports``: one INSERT, 201 with the new id.
    ``target`` is the SQLite file or the libpq URL; one connection per thread."""
    import threading
    from datetime import UTC, datetime

    from flask import Flask, jsonify, request

    app = Flask("minimal")
    local = threading.local()

    def connect():
        if backend == "sqlite":
            import sqlite3

            conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn, "INSERT INTO reports (category, lon, lat, description, created_at) " \
                         "VALUES (?, ?, ?, ?, ?) RETURNING id"
        import psycopg

        return psycopg.connect(target, autocommit=True), (
            "INSERT INTO reports (category, lon, lat, description, created_at) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id")

    @app.post("/reports")
    def report():
        if not hasattr(local, "conn"):
            local.conn, local.sql = connect()
        d = request.get_json()
        now = datetime.now(UTC).replace(tzinfo=None)
        if backend == "sqlite":
            now = now.isoformat(sep=" ")  # as SQLAlchemy stores a DateTime in SQLite
        row = local.conn.execute(local.sql, (d["category"], float(d["lon"]), float(d["lat"]),
                                             d["description"], now)).fetchone()
        return jsonify(id=row[0]), 201

    return app


def serve_minimal(backend: str, target: str, port: int, workers: int) -> None:
    """Serve :func:`minimal_app` with gunicorn as Hemei is served (workers × 4 threads)."""
    from gunicorn.app.base import BaseApplication

    app = minimal_app(backend, target)

    class Minimal(BaseApplication):
        def load_config(self):
            for k, v in {"bind": f"127.0.0.1:{port}", "workers": workers, "threads": THREADS,
                         "accesslog": None, "errorlog": "-", "loglevel": "warning",
                         "proc_name": "minimal"}.items():
                self.cfg.set(k, v)

        def load(self):
            return app

    Minimal().run()


# -- servers -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port: int, path: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server on port {port} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server on port {port} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def prepare_hemei(inst: Path, url: str | None) -> str:
    """A fresh instance: the demo street's layers, no demo cases, an admin's API token."""
    from gis.service import Hemei
    from gis.settings import read_settings

    h = Hemei(read_settings(env={}, INSTANCE=str(inst), DATABASE_URL=url, DEMO_CASES=""))
    h.ensure_initialised()
    admin = h.accounts.add_user("admin", "admin", password=secrets.token_urlsafe(12),
                                display_name="bench")
    token = h.accounts.create_token(admin.id, "bench")
    h.store.dispose()
    return token


def points_inside(n: int, seed: int = 7) -> np.ndarray:
    """``n`` points spread over the demo street's grids (located by the app's locator)."""
    from gis.layers import read_layer_set
    from gis.locate import Locator
    from gis.settings import setting_default

    layers = read_layer_set(str(setting_default("SHAPES")))
    loc = Locator(layers)
    x0, y0, x1, y1 = layers["grid"].total_bounds
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    have = 0
    while have < n:
        x, y = rng.uniform(x0, x1, 2 * n), rng.uniform(y0, y1, 2 * n)
        inside = loc.locate_many(x, y)["grid_code"].notna().to_numpy()
        out.append(np.column_stack([x[inside], y[inside]]))
        have += int(inside.sum())
    return np.concatenate(out)[:n]


def write_count(inst: Path, url: str | None) -> int:
    """Hemei's data version: it moves once per write transaction."""
    from gis.storage import open_store

    store = open_store(url or f"sqlite:///{inst / 'hemei.sqlite3'}", migrate=False)
    try:
        return store.data_version()
    finally:
        store.dispose()


# -- clients -----------------------------------------------------------------------------
def _client(args) -> dict:
    """One client: post its share of the reports one after the other on one keep-alive
    connection; returns the latencies (s), the statuses and when it started and ended."""
    port, path, token, items, barrier = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    lat = np.empty(len(items))
    statuses: dict[int, int] = {}
    if barrier is not None:
        barrier.wait()
    start = time.monotonic()
    for i, (key, body) in enumerate(items):
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, body=body, headers={**headers, "Idempotency-Key": key})
            r = conn.getresponse()
            r.read()
            status = r.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            status = 0
        lat[i] = time.perf_counter() - t0
        statuses[status] = statuses.get(status, 0) + 1
    return {"lat": lat, "statuses": statuses, "start": start, "end": time.monotonic()}


def drive(port: int, path: str, token: str, pts: np.ndarray, clients: int, run: str) -> dict:
    """Post one report per point from ``clients`` processes at once."""
    items = [(f"{run}-{i}", json.dumps({
        "category": "street_light", "lon": round(float(x), 7), "lat": round(float(y), 7),
        "title": "路灯不亮", "description": f"bench {run} #{i}"}, ensure_ascii=False).encode())
        for i, (x, y) in enumerate(pts)]
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(clients)
        with ctx.Pool(clients) as pool:
            parts = pool.map(_client, [(port, path, token, items[c::clients], barrier)
                                       for c in range(clients)])
    lat = np.concatenate([p["lat"] for p in parts])
    statuses: dict[int, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    return {"n": len(items), "wall": wall, "rate": len(items) / wall,
            "p50": float(np.percentile(lat, 50)) * 1000,
            "p99": float(np.percentile(lat, 99)) * 1000, "statuses": statuses}


def server_cpu(proc: subprocess.Popen) -> float | None:
    """CPU seconds (user + system) the server's worker processes have used so far, from
    /proc (None where there is none): a figure that, unlike throughput, barely moves
    with what else the machine runs."""
    try:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        total = 0
        for kid in kids:
            fields = Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    except OSError:
        return None
    return total / os.sysconf("SC_CLK_TCK")


def show(label: str, r: dict) -> None:
    codes = ", ".join(f"{k}: {v:,}" for k, v in sorted(r["statuses"].items()))
    cpu = f"; {r['cpu_ms']:.2f} ms CPU a report" if r.get("cpu_ms") is not None else ""
    print(f"{label:<9} {r['n']:,} reports in {r['wall']:6.2f} s  {r['rate']:8.1f} reports/s  "
          f"p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  ({codes}){cpu}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3,
                    help="the reports are posted in this many rounds per server, "
                         "alternating between the servers (the median ratio counts)")
    ap.add_argument("--backend", choices=("sqlite", "postgis"), default="sqlite")
    ap.add_argument("--pg-url", default=os.environ.get("HEMEI_TEST_PG_URL"),
                    help="a PostgreSQL server and a role that may create databases "
                         "(default: $HEMEI_TEST_PG_URL)")
    ap.add_argument("--access-log", choices=("on", "off"), default="on",
                    help="Hemei's JSON access log (on, as `serve --production` runs it)")
    ap.add_argument("--serve-minimal", nargs=2, metavar=("BACKEND", "TARGET"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_minimal:
        serve_minimal(*args.serve_minimal, port=args.port, workers=args.workers)
        return
    if args.backend == "postgis" and not args.pg_url:
        raise SystemExit("--backend postgis needs --pg-url or $HEMEI_TEST_PG_URL")

    import sqlalchemy as sa

    from gis import pg

    print(f"Hemei Grid intake bench, {time.strftime('%Y-%m-%d %H:%M')}: {args.backend}, "
          f"{args.workers} workers × {THREADS} threads, {args.clients} clients, "
          f"{args.reports:,} reports; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    tmp = Path(tempfile.mkdtemp(prefix="hemei-intake-"))
    made: list[str] = []
    procs: list[subprocess.Popen] = []
    try:
        if args.backend == "sqlite":
            hemei_url = None
            minimal_target = str(tmp / "minimal.sqlite3")
            import sqlite3

            with sqlite3.connect(minimal_target) as conn:
                conn.execute(MINIMAL_DDL["sqlite"])
        else:
            base = sa.make_url(args.pg_url)
            stem = f"hemei_bench_{os.getpid()}"
            hemei_url = pg.create_database(base.set(database=f"{stem}_hemei"))
            made.append(hemei_url)
            minimal_url = pg.create_database(base.set(database=f"{stem}_minimal"))
            made.append(minimal_url)
            import psycopg

            minimal_target = sa.make_url(minimal_url).set(drivername="postgresql") \
                .render_as_string(hide_password=False)
            with psycopg.connect(minimal_target, autocommit=True) as conn:
                conn.execute(MINIMAL_DDL["postgis"])
        inst = tmp / "instance"
        token = prepare_hemei(inst, hemei_url)
        warm_n = 30 * args.workers * THREADS
        pts = points_inside(args.reports + 2 * warm_n)

        env = {**os.environ, "HEMEI_INSTANCE": str(inst), "HEMEI_TILES": "none",
               "HEMEI_DEMO_CASES": "", "HEMEI_ACCESS_LOG": "1" if args.access_log == "on"
               else "0"}
        env.pop("HEMEI_DATABASE_URL", None)
        if hemei_url:
            env["HEMEI_DATABASE_URL"] = hemei_url
        servers = {}
        for name in ("minimal", "hemei"):
            port = free_port()
            if name == "hemei":
                cmd = [sys.executable, "-m", "webapp.cli", "serve", "--production",
                       "--workers", str(args.workers), "--host", "127.0.0.1",
                       "--port", str(port)]
                path, probe = "/api/v1/issues", "/healthz"
            else:
                cmd = [sys.executable, __file__, "--serve-minimal", args.backend,
                       minimal_target, "--port", str(port), "--workers", str(args.workers)]
                path, probe = "/reports", "/"
            log = (tmp / f"{name}.log").open("w")
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            procs.append(proc)
            wait_until_up(port, probe, proc)
            servers[name] = (port, path, proc)
        for i, name in enumerate(("minimal", "hemei")):
            port, path, _ = servers[name]
            drive(port, path, token, pts[i * warm_n:(i + 1) * warm_n], args.clients,
                  secrets.token_hex(4) + "w")
        ratios, results = [], {"minimal": [], "hemei": []}
        for rnd in range(args.rounds):
            # Alternate which goes first: a machine that slows down or speeds up during
            # the run then weighs on both alike.
            order = ("minimal", "hemei") if rnd % 2 == 0 else ("hemei", "minimal")
            got = {}
            for name in order:
                port, path, proc = servers[name]
                # SQLite commits the reports queued in a worker together (group commit).
                commits = (write_count(inst, hemei_url)
                           if name == "hemei" and args.backend == "sqlite" else None)
                lo = 2 * warm_n + rnd * args.reports // args.rounds
                hi = 2 * warm_n + (rnd + 1) * args.reports // args.rounds
                cpu0 = server_cpu(proc)
                r = got[name] = drive(port, path, token, pts[lo:hi], args.clients,
                                      secrets.token_hex(4))
                cpu1 = server_cpu(proc)
                # None if it cannot be told (no /proc; or a worker died and was replaced
                # meanwhile, taking its CPU time with it: the dead are reported below).
                r["cpu_ms"] = (None if cpu0 is None or cpu1 is None or cpu1 < cpu0
                               else (cpu1 - cpu0) / r["n"] * 1000)
                results[name].append(r)
                show(f"{name} {rnd + 1}", r)
                if commits is not None:
                    done = write_count(inst, hemei_url) - commits
                    print(f"            {r['n'] / max(done, 1):.2f} reports per write "
                          f"transaction ({done:,} transactions; group commit)")
                bad = {k: v for k, v in r["statuses"].items() if k != 201}
                if bad:
                    print(f"  non-201 answers: {bad}; see {tmp / (name + '.log')}")
            ratios.append(got["hemei"]["rate"] / got["minimal"]["rate"])
            print(f"  round {rnd + 1}: Hemei / minimal throughput {ratios[-1]:.2f}x")
        for proc in procs:
            stop(proc)
        for name in servers:  # gunicorn restarts a crashed worker: say so
            dead = [x for x in (tmp / f"{name}.log").read_text(errors="replace").splitlines()
                    if "was sent SIG" in x or "exited with code" in x]
            if dead:
                print(f"  {name}: {len(dead)} worker(s) died: {dead[0].strip()}")
        ratio = float(np.median(ratios))
        verdict = "met" if ratio >= TARGET else "MISSED"
        print(f"ratio Hemei / minimal throughput, median of {len(ratios)} rounds: "
              f"{ratio:.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x); "
              f"target >= {TARGET}x: {verdict}")
        med = {name: {k: float(np.median([r[k] for r in rs])) for k in ("rate", "p50", "p99")}
               for name, rs in results.items()}
        print(f"median throughput: Hemei {med['hemei']['rate']:.0f}/s, minimal "
              f"{med['minimal']['rate']:.0f}/s; latency ratio Hemei / minimal: p50 "
              f"{med['hemei']['p50'] / med['minimal']['p50']:.2f}x, p99 "
              f"{med['hemei']['p99'] / med['minimal']['p99']:.2f}x")
        cpu = {name: [r["cpu_ms"] for r in rs if r.get("cpu_ms") is not None]
               for name, rs in results.items()}
        if cpu["hemei"] and cpu["minimal"]:
            h, m = float(np.median(cpu["hemei"])), float(np.median(cpu["minimal"]))
            print(f"server CPU a report (the worker processes"
                  f"{'; PostgreSQL’s own not counted' if args.backend == 'postgis' else ''}"
                  f"), median: Hemei {h:.2f} ms, minimal {m:.2f} ms; minimal / Hemei "
                  f"{m / h:.2f}x")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        for proc in procs:
            stop(proc)
        for url in made:
            pg.drop_database(url)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
