"""``hemei serve --production`` as a real process for tests: started on a free port, waited
for, stopped with SIGTERM (gunicorn's graceful shutdown), its output kept."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``url`` answers 200; fails if the server exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@dataclass
class Served:
    """A running server: its base URL and process; after the ``with`` block, its exit
    status and everything it wrote (standard output and error together)."""

    base: str
    proc: subprocess.Popen
    rc: int | None = None
    output: str = ""


@contextmanager
def production_server(env: dict, log_path: Path, workers: int = 1, timeout: float = 60):
    """``hemei serve --production --workers N`` with ``env``; yields a :class:`Served`
    once /healthz answers. On the way out it is stopped with SIGTERM and must stop
    within 20 s (else killed, and the test fails)."""
    port = free_port()
    log = log_path.open("w+", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "webapp.cli", "serve", "--production", "--workers",
         str(workers), "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    served = Served(f"http://127.0.0.1:{port}", proc)
    try:
        wait_for(f"{served.base}/healthz", proc, timeout)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            served.rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            raise AssertionError("gunicorn did not stop within 20s of SIGTERM") from None
        finally:
            log.seek(0)
            served.output = log.read()
            log.close()
