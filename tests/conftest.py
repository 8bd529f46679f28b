"""Shared fixtures: a real SQLite file per test (or per module), the demo street loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gis.settings import read_settings

REPO = Path(__file__).resolve().parent.parent
DEMO_GPKG = REPO / "data" / "shapes" / "jiangnan.gpkg"
DEMO_CASES = REPO / "data" / "shapes" / "demo_cases.csv"

# A point inside the demo street (in 江南社区) and one far outside it.
INSIDE = (111.57, 24.40)
OUTSIDE = (111.30, 24.10)


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory) -> Path:
    """An instance folder initialised once (layers + demo cases); tests copy it, which is
    much faster than validating and loading the demo street every time."""
    from gis.service import Hemei

    inst = tmp_path_factory.mktemp("template")
    h = Hemei(read_settings(env={}, INSTANCE=str(inst)))
    h.ensure_initialised()
    h.store.dispose()
    return inst


def _copy_instance(template: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in template.iterdir():
        shutil.copy2(f, dest / f.name)
    return dest


@pytest.fixture
def instance(seeded_template, tmp_path) -> Path:
    """A fresh instance folder holding a copy of the seeded demo database."""
    return _copy_instance(seeded_template, tmp_path / "instance")


@pytest.fixture
def app(instance):
    from webapp import create_app

    return create_app({"TESTING": True, "INSTANCE": str(instance), "TILES": "none"})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def hemei(app):
    return app.extensions["hemei"]
