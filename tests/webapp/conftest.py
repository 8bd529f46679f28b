"""Fixtures shared by the web tests."""

from __future__ import annotations

import shutil

import pytest

from tests.webapp.test_field import grid_point, login, plant


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


# -- the field app's people and cases (tests/webapp/test_field*.py) -----------------------


@pytest.fixture
def web(app):
    """``web("gw")`` → a test client logged in as that user."""
    return lambda username: login(app.test_client(), username)


@pytest.fixture
def gw_point(hemei, people):
    return grid_point(hemei, people["grids"]["gw"][0])


@pytest.fixture
def dispatched(hemei, people, gw_point):
    """A case in a grid of gw, filed and dispatched to crew's organisation."""
    admin = hemei.accounts.by_username("admin")
    case = plant(hemei, *gw_point, description="人行道破损需修复")
    hemei.move(admin, case.id, {"to": "filed"})
    hemei.move(admin, case.id, {"to": "dispatched", "assignee_org": people["orgs"]["crew"]})
    return hemei.store.get_case(case.id)
