"""Real-browser fixtures: the app served on 127.0.0.1 in a thread, Debian's Chromium
driven by Playwright (no browser download: it uses /usr/bin/chromium)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _require_chromium():
    if not Path(CHROMIUM).exists():
        if os.environ.get("HEMEI_REQUIRE_SYSTEM_DEPS"):
            pytest.fail("Chromium is required here (install it: scripts/system-deps.sh)")
        pytest.skip("Chromium not installed (scripts/system-deps.sh installs it)")


@pytest.fixture(scope="session")
def browser():
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def live_server(seeded_template, tmp_path_factory):
    """The app on a free loopback port, over its own copy of the demo instance."""
    from tests.conftest import _copy_instance
    from webapp import create_app

    inst = _copy_instance(seeded_template, tmp_path_factory.mktemp("live") / "instance")
    app = create_app({"INSTANCE": str(inst), "TILES": "none"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join(5)


class PageWatch:
    """Records what a page did: requests that left the app, console errors, dialogs."""

    def __init__(self, page, base: str):
        self.external: list[str] = []
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.failed.append(r.url))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

        def route(r):
            if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                r.continue_()
            else:
                self.external.append(r.request.url)
                r.abort()

        page.route("**/*", route)


@pytest.fixture
def page_factory(browser, live_server):
    base, _app = live_server
    contexts = []

    def make(**ctx_kw):
        ctx = browser.new_context(**ctx_kw)
        contexts.append(ctx)
        page = ctx.new_page()
        return page, PageWatch(page, base)

    yield make
    for c in contexts:
        c.close()
