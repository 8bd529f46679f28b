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


# The people of the test street: username → (role, password, what they hold).
PASSWORDS = {"admin": "admin-pass-1", "gw": "gw-pass-123", "gw2": "gw2-pass-12",
             "crew": "crew-pass-1", "crew2": "crew2-pass-1", "planner": "plan-pass-1"}


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory) -> Path:
    """An instance folder initialised once (layers, demo cases, accounts and tokens);
    tests copy it, which is much faster than loading the demo street every time.

    ``gw`` looks after the grids of 厦良社区, ``gw2`` those of 点灯社区; ``crew`` works
    for 城管维修队, ``crew2`` for 香槟城物业; ``planner`` reads the whole street."""
    import json

    from gis.service import Hemei

    inst = tmp_path_factory.mktemp("template")
    h = Hemei(read_settings(env={}, INSTANCE=str(inst)))
    h.ensure_initialised()
    grids = h.layers["grid"]
    xialiang = grids[grids["parent_code"] == "451102003001"]["code"].tolist()
    diandeng = grids[grids["parent_code"] == "451102003002"]["code"].tolist()
    crew_org = h.accounts.add_org("城管维修队", "crew")
    prop_org = h.accounts.add_org("香槟城物业", "property")
    a = h.accounts
    users = [
        a.add_user("admin", "admin", password=PASSWORDS["admin"], display_name="管理员"),
        a.add_user("gw", "grid_worker", password=PASSWORDS["gw"], grids=xialiang,
                   display_name="王网格"),
        a.add_user("gw2", "grid_worker", password=PASSWORDS["gw2"], grids=diandeng,
                   display_name="李网格"),
        a.add_user("crew", "field_staff", password=PASSWORDS["crew"], org_id=crew_org,
                   display_name="张师傅"),
        a.add_user("crew2", "field_staff", password=PASSWORDS["crew2"], org_id=prop_org,
                   display_name="赵物业"),
        a.add_user("planner", "planner", password=PASSWORDS["planner"], area_code="451102003",
                   display_name="陈规划"),
    ]
    tokens = {u.username: a.create_token(u.id, "tests") for u in users}
    (inst / "tokens.json").write_text(json.dumps({
        "tokens": tokens, "orgs": {"crew": crew_org, "property": prop_org},
        "grids": {"gw": xialiang, "gw2": diandeng}}), encoding="utf-8")
    h.store.dispose()
    return inst


@pytest.fixture
def people(instance) -> dict:
    """Tokens, organisation ids and grid assignments of the test accounts."""
    import json

    return json.loads((instance / "tokens.json").read_text(encoding="utf-8"))


@pytest.fixture
def auth(people):
    """``auth("gw")`` → the Authorization header of that user's API token."""
    return lambda username: {"Authorization": f"Bearer {people['tokens'][username]}"}


def _copy_instance(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, dirs_exist_ok=True)
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
def client(app, people):
    """A client that sends the administrator's API token (writes need one)."""
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {people['tokens']['admin']}"
    return c


@pytest.fixture
def public_client(app):
    """A client with no credentials: what the public sees."""
    return app.test_client()


@pytest.fixture
def hemei(app):
    return app.extensions["hemei"]
