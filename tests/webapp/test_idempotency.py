"""POST /api/v1/issues with an Idempotency-Key: a retry answers with the case the first
request made instead of reporting it again (SQLite, and PostGIS when configured)."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import INSIDE

pytestmark = pytest.mark.backends("sqlite", "postgis")

NEW = {"category": "street_light", "lon": INSIDE[0], "lat": INSIDE[1],
       "description": "路灯不亮", "title": "路灯不亮"}


def count_cases(client) -> int:
    return client.get("/api/v1/issues?limit=1").get_json()["numberMatched"]


def post(client, key, headers=None):
    return client.post("/api/v1/issues", json=NEW,
                       headers={**(headers or {}), "Idempotency-Key": key})


def test_a_retry_returns_the_same_case(client, hemei):
    before = count_cases(client)
    first = post(client, "retry-1")
    assert first.status_code == 201
    again = post(client, "retry-1")
    assert again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert count_cases(client) == before + 1
    assert hemei.store.idempotent_case_id(
        hemei.accounts.by_username("admin").id, "retry-1") == first.get_json()["id"]


def test_without_a_key_every_post_is_a_new_case(client):
    before = count_cases(client)
    a = client.post("/api/v1/issues", json=NEW)
    b = client.post("/api/v1/issues", json=NEW)
    assert a.status_code == b.status_code == 201
    assert a.get_json()["id"] != b.get_json()["id"]
    assert count_cases(client) == before + 2


def test_another_key_is_another_case(client):
    a, b = post(client, "key-a"), post(client, "key-b")
    assert a.status_code == b.status_code == 201
    assert a.get_json()["id"] != b.get_json()["id"]


def test_the_same_key_from_another_user_is_independent(app, client, auth):
    before = count_cases(client)
    mine = post(app.test_client(), "shared-key", auth("admin"))
    theirs = post(app.test_client(), "shared-key", auth("gw"))
    assert mine.status_code == theirs.status_code == 201
    assert mine.get_json()["id"] != theirs.get_json()["id"]
    assert count_cases(client) == before + 2
    # And each user's retry finds their own case.
    assert post(app.test_client(), "shared-key", auth("gw")).get_json()["id"] == \
        theirs.get_json()["id"]


def test_concurrent_retries_make_exactly_one_case(app, client, auth):
    before = count_cases(client)
    n = 8
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i: int) -> None:
        c = app.test_client()  # one client per thread
        barrier.wait(timeout=10)
        r = post(c, "race-key-1", auth("admin"))
        results[i] = (r.status_code, r.get_json().get("id"), r.headers.get("Location"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r is not None for r in results), results
    statuses = sorted(r[0] for r in results)
    assert statuses == [200] * (n - 1) + [201], results
    assert len({r[1] for r in results}) == 1
    assert len({r[2] for r in results}) == 1
    assert count_cases(client) == before + 1


@pytest.mark.parametrize("key", ["", " ", " lead", "trail ", "x" * 101, "键", "a\tb"])
def test_a_bad_key_is_a_400_naming_the_header(client, key):
    before = count_cases(client)
    r = client.post("/api/v1/issues", json=NEW, headers={"Idempotency-Key": key})
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["field"] == "Idempotency-Key"
    assert "Idempotency-Key" in err["message"]
    assert count_cases(client) == before


@pytest.mark.parametrize("key", ["a", "x" * 100, "a b", "550e8400-e29b-41d4-a716-446655440000"])
def test_good_keys_are_accepted(client, key):
    assert post(client, key).status_code == 201


def test_the_header_is_documented(public_client):
    spec = public_client.get("/api/v1/openapi.json").get_json()
    params = spec["paths"]["/api/v1/issues"]["post"]["parameters"]
    (p,) = [p for p in params if p["name"] == "Idempotency-Key"]
    assert p["in"] == "header" and p["schema"]["maxLength"] == 100


def test_a_retry_with_the_fields_in_another_order_is_still_a_retry(client):
    first = post(client, "order-1")
    body = dict(reversed(list(NEW.items())))
    again = client.post("/api/v1/issues", json=body, headers={"Idempotency-Key": "order-1"})
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]


@pytest.mark.parametrize("change", [{"description": "井盖丢失"}, {"category": "drainage"},
                                    {"lon": INSIDE[0] + 1e-5}])
def test_the_same_key_with_another_report_is_422_and_stores_nothing(client, change):
    """A client that reuses a key for a new report is told so: answering with the first
    case (as before) silently lost the second report."""
    key = f"reused-{sorted(change)[0]}"
    first = post(client, key)
    assert first.status_code == 201
    before = count_cases(client)
    r = client.post("/api/v1/issues", json={**NEW, **change},
                    headers={"Idempotency-Key": key})
    assert r.status_code == 422
    err = r.get_json()["error"]
    assert err["code"] == "idempotency_key_reused" and err["field"] == "Idempotency-Key"
    assert err["details"]["case_id"] == first.get_json()["id"]
    assert count_cases(client) == before
    assert post(client, key).status_code == 200  # the first report's retry still works


def test_a_key_stored_before_fingerprints_is_replayed_as_before(client, hemei):
    """Keys written before migration 0003 have no fingerprint: never a false 422."""
    import sqlalchemy as sa

    from gis.storage import idempotency_keys

    first = post(client, "legacy-1")
    with hemei.store._write() as conn:
        conn.execute(sa.update(idempotency_keys).where(idempotency_keys.c.key == "legacy-1")
                     .values(fingerprint=None))
    r = client.post("/api/v1/issues", json={**NEW, "description": "别的"},
                    headers={"Idempotency-Key": "legacy-1"})
    assert r.status_code == 200 and r.get_json()["id"] == first.get_json()["id"]


def test_photos_are_part_of_what_a_key_remembers(client):
    import io

    from PIL import Image

    def jpeg(colour):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buf, "JPEG")
        return buf.getvalue()

    def send(colour):
        return client.post("/api/v1/issues", content_type="multipart/form-data",
                           headers={"Idempotency-Key": "photo-1"}, data={
                               **{k: str(v) for k, v in NEW.items()},
                               "photos": [(io.BytesIO(jpeg(colour)), "a.jpg")]})

    first = send((200, 0, 0))
    assert first.status_code == 201
    assert send((200, 0, 0)).status_code == 200
    assert send((0, 0, 200)).status_code == 422
