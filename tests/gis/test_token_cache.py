"""The per-process cache of API tokens' users (gis.accounts.Accounts): every API request
carries a token, so its user is kept for a while, but never past a change to accounts.
A second store on the same database stands for another worker process or the CLI (each
has its own stores and caches); hemei token revoke in a real subprocess is in
tests/webapp/test_accounts.py."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from gis.accounts import Accounts
from gis.storage import open_store

pytestmark = pytest.mark.backends("sqlite", "postgis")


def _url(hemei) -> str:
    return hemei.settings["DATABASE_URL"]


@pytest.fixture
def elsewhere(hemei):
    """Accounts on the same database through a store of its own (another process)."""
    store = open_store(_url(hemei))
    yield Accounts(store)
    store.dispose()


@pytest.fixture
def worker(hemei):
    user = hemei.accounts.add_user("缓存网格员", "grid_worker", password="pw-123456789",
                                   grids=[sorted(hemei.layers["grid"]["code"])[0]])
    return user, hemei.accounts.create_token(user.id, "phone")


def _soon(check, timeout: float = 5.0) -> bool:
    """``check()`` holds now (SQLite: the stamp file is read on every look-up) or within
    ``timeout`` (PostGIS: the notification reaches the listener a moment after the
    commit)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _revoke_behind_hemei(hemei, token: str) -> None:
    """Revoke ``token`` in the database directly, as an SQL shell would (no stamp)."""
    from gis.accounts import _digest

    with hemei.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP "
                             "WHERE digest = :d"), {"d": _digest(token)})


def test_a_token_revoked_elsewhere_is_refused_on_the_next_request(hemei, elsewhere, worker,
                                                                  backend):
    user, token = worker
    if backend == "postgis":
        hemei.store.accounts_stamp()
        assert hemei.store._listener.peek().wait_live(10)
    assert hemei.accounts.user_for_token(token).id == user.id
    assert hemei.accounts.user_for_token(token).id == user.id  # cached
    assert elsewhere.revoke_token(token) == 1
    assert _soon(lambda: hemei.accounts.user_for_token(token) is None)


def test_grids_changed_elsewhere_count_on_the_next_request(hemei, elsewhere, worker):
    user, token = worker
    grids = sorted(hemei.layers["grid"]["code"])
    assert hemei.accounts.user_for_token(token).grids == grids[:1]
    elsewhere.set_grids(user.id, grids[1:3])
    assert _soon(lambda: hemei.accounts.user_for_token(token).grids == grids[1:3])


def test_a_caller_changing_the_user_does_not_change_what_is_cached(hemei, worker):
    user, token = worker
    got = hemei.accounts.user_for_token(token)
    got.grids.append("别的网格")
    got.role = "admin"
    again = hemei.accounts.user_for_token(token)
    assert again.role == "grid_worker" and "别的网格" not in again.grids


@pytest.mark.backends("sqlite")
def test_sqlite_serves_a_token_from_the_cache_until_its_ttl(hemei, worker, monkeypatch):
    """What proves the cache is there: a change made behind Hemei's back (no stamp) is
    not seen until the entry's time is up."""
    monkeypatch.setattr(Accounts, "TOKEN_CACHE_SECONDS", 0.5)
    user, token = worker
    assert hemei.accounts.user_for_token(token).id == user.id
    _revoke_behind_hemei(hemei, token)
    assert hemei.accounts.user_for_token(token).id == user.id  # from the cache
    time.sleep(0.6)
    assert hemei.accounts.user_for_token(token) is None


@pytest.mark.backends("postgis")
def test_postgis_caches_only_while_it_listens_for_changes(hemei, worker, monkeypatch):
    """The stamp is what the LISTEN connection has heard; without that connection
    nothing is cached."""
    from gis import pg

    monkeypatch.setattr(pg.AccountsListener, "RETRY_S", 0.2)
    user, token = worker
    hemei.store.accounts_stamp()  # starts the listener
    assert hemei.store._listener.peek().wait_live(10)
    assert hemei.accounts.user_for_token(token).id == user.id
    _revoke_behind_hemei(hemei, token)  # no notification: the cache answers
    assert hemei.accounts.user_for_token(token).id == user.id
    # The listening connection dies (a server restart, a failover): no caching until it
    # is back, and what was cached before is not trusted after.
    with hemei.store.engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = 'hemei accounts listener' "
                             "AND datname = current_database()"))
    deadline = time.monotonic() + 10
    while hemei.store.accounts_stamp() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hemei.accounts.user_for_token(token) is None
    assert hemei.store._listener.peek().wait_live(10)
    assert hemei.accounts.user_for_token(token) is None


def test_unknown_tokens_are_not_cached_so_a_new_one_works_at_once(hemei, elsewhere, worker):
    user, _ = worker
    assert hemei.accounts.user_for_token("hm_not-yet") is None
    token = elsewhere.create_token(user.id, "new")
    assert hemei.accounts.user_for_token(token).id == user.id


def test_a_restore_under_a_running_server_empties_its_token_cache(hemei, tmp_path, backend):
    """A restored database holds the users and tokens of its backup: a token made after
    the backup must stop working, though this process has it cached."""
    from gis import backup

    if backend == "postgis":
        hemei.store.accounts_stamp()
        assert hemei.store._listener.peek().wait_live(10)
    out = tmp_path / "before.backup"
    backup.backup(_url(hemei), out)
    user = hemei.accounts.add_user("备份后", "planner", password="pw-123456789")
    token = hemei.accounts.create_token(user.id)
    assert hemei.accounts.user_for_token(token).id == user.id  # cached now
    backup.restore(_url(hemei), out, force=True)
    assert _soon(lambda: hemei.accounts.user_for_token(token) is None)


@pytest.mark.backends("sqlite")
def test_a_store_copied_over_a_running_server_empties_its_token_cache(hemei, tmp_path):
    """``hemei migrate-store --force`` into the database a server runs on replaces its
    users and tokens as a restore does."""
    from gis import backup
    from gis.transfer import migrate_store

    copy = tmp_path / "copy.sqlite3"
    backup.backup(_url(hemei), copy)
    user = hemei.accounts.add_user("复制后", "planner", password="pw-123456789")
    token = hemei.accounts.create_token(user.id)
    assert hemei.accounts.user_for_token(token).id == user.id  # cached now
    migrate_store(f"sqlite:///{copy}", _url(hemei), force=True)
    assert hemei.accounts.user_for_token(token) is None
