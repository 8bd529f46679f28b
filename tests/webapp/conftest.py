"""Fixtures shared by the web tests."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def limited_app(seeded_template, tmp_path):
    """An app whose public forms allow 3 submissions per client and window (the rate
    limit tests), on a copy of the seeded instance."""
    from webapp import create_app

    inst = tmp_path / "limited"
    shutil.copytree(seeded_template, inst)
    app = create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none",
                      "PUBLIC_FORM_LIMIT": "3"})
    yield app
    app.extensions["hemei"].store.dispose()
