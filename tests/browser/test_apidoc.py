"""The browsable API page in a real Chromium, with every request that leaves the app
refused (it must work on an intranet)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.browser


def test_docs_page_renders_offline_in_chromium(page_factory, live_server):
    base, app = live_server
    page, watch = page_factory()
    page.goto(f"{base}/api/v1/docs")
    page.wait_for_selector(".opblock-summary", timeout=20_000)
    n_ops = page.locator(".opblock").count()
    title = page.locator(".info .title").inner_text()
    spec = json.loads(app.test_client().get("/api/v1/openapi.json").data)
    assert n_ops == sum(len(item) for item in spec["paths"].values())
    assert "Hemei Grid API" in title
    assert watch.external == [] and watch.failed == [] and watch.errors == []
