"""The credential cache: answers for a second at most, never past an expiry, and empties
itself when a commit changes a row an authentication reads (on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tests.storage.factories import make_account
from tower.server.services.credential_cache import CACHE_TTL_S, CredentialCache
from tower.server.store import models
from tower.server.store.types import utcnow


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache() -> tuple[CredentialCache, FakeClock]:
    clock = FakeClock()
    return CredentialCache(clock=clock), clock


def test_an_entry_answers_for_the_ttl_and_not_after() -> None:
    cache, clock = _cache()
    cache.put("k", "principal", None, cache.generation)
    assert cache.get("k", utcnow()) == "principal"
    clock.now += CACHE_TTL_S / 2
    assert cache.get("k", utcnow()) == "principal"
    clock.now += CACHE_TTL_S
    assert cache.get("k", utcnow()) is None


def test_an_entry_never_outlives_the_credential_expiry() -> None:
    cache, _ = _cache()
    expires = utcnow() + timedelta(milliseconds=50)
    cache.put("k", "principal", expires, cache.generation)
    assert cache.get("k", expires - timedelta(milliseconds=1)) == "principal"
    assert cache.get("k", expires) is None


def test_a_lookup_that_started_before_a_clear_is_not_stored() -> None:
    cache, _ = _cache()
    before = cache.generation  # a request reads the database…
    cache.clear()  # …while a revocation commits
    cache.put("k", "stale principal", None, before)
    assert cache.get("k", utcnow()) is None


def _watched(session_factory: sessionmaker[Session]) -> CredentialCache:
    cache = CredentialCache()
    cache.watch(session_factory)
    cache.put("k", "principal", None, cache.generation)
    return cache


def test_committing_an_auth_row_change_empties_the_cache(
    session_factory: sessionmaker[Session],
) -> None:
    cache = _watched(session_factory)
    with session_factory.begin() as session:
        make_account(session)
        assert cache.get("k", utcnow()) == "principal"  # not before the commit
    assert cache.get("k", utcnow()) is None


def test_an_update_statement_on_credentials_empties_the_cache(
    session_factory: sessionmaker[Session],
) -> None:
    cache = _watched(session_factory)
    with session_factory.begin() as session:
        session.execute(update(models.RunnerCredential).values(revoked_at=utcnow()))
    assert cache.get("k", utcnow()) is None


def test_other_writes_and_rolled_back_changes_leave_the_cache_alone(
    session_factory: sessionmaker[Session],
) -> None:
    cache = _watched(session_factory)
    with session_factory.begin() as session:
        session.execute(update(models.Run).values(exit_code=0))
    with session_factory() as session:
        make_account(session)
        session.rollback()
    assert cache.get("k", utcnow()) == "principal"
