"""Credentials checked a moment ago, so a busy client is not looked up on every request.

Every request authenticates; a runner or an SDK draining a queue sends hundreds a
second with one API key or runner token. Looking the credential up each time cost
more than most of the requests' own work. An entry here answers for CACHE_TTL_S
(one second) and no longer:

* in this process, a commit that changes an API key, a membership, a service
  account, an account, a user or a runner credential (revoked, deleted, role changed,
  rotated) empties the cache at once, so the next request reads the database again;
* a change made by *another* control plane (several behind one PostgreSQL) is seen
  within CACHE_TTL_S: a revoked key or token keeps working at most that long there;
* expiry is exact: each entry keeps the credential's expiry time, checked on every hit.

Only successes are cached: an unknown, revoked or expired credential is read (and
refused) every time. Keys are SHA-256 hashes of the credential, never the secret.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from tower.server.store import models

CACHE_TTL_S = 1.0
#: the rows an authentication decision reads: a change to any of them drops the cache
AUTH_MODELS: tuple[type[Any], ...] = (
    models.ApiKey,
    models.Membership,
    models.ServiceAccount,
    models.Account,
    models.User,
    models.RunnerCredential,
)
_AUTH_TABLES = frozenset(model.__table__.name for model in AUTH_MODELS)
_CHANGED = "tower.credentials_changed"


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Any
    expires_at: datetime | None
    #: monotonic time after which the entry is not used
    fresh_until: float


class CredentialCache:
    """Credential hash → the principal it authenticated as, for CACHE_TTL_S."""

    def __init__(
        self, ttl_s: float = CACHE_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        # Bumped by every clear: a lookup that read the database before a revocation
        # committed must not store what it read after the cache was emptied.
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, key: str, now: datetime) -> Any | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.fresh_until < self._clock() or (
            entry.expires_at is not None and entry.expires_at <= now
        ):
            self._entries.pop(key, None)
            return None
        return entry.principal

    def put(self, key: str, principal: Any, expires_at: datetime | None, generation: int) -> None:
        """Remember a success read while the cache was at `generation` (see `generation`)."""
        with self._lock:
            if generation != self._generation:
                return
            if len(self._entries) > 10_000:  # many credentials at once: start over
                self._entries.clear()
            self._entries[key] = _Entry(principal, expires_at, self._clock() + self._ttl_s)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Empty the cache whenever a session of `sessions` commits a change to a row
        an authentication reads (by the unit of work or by an UPDATE/DELETE statement)."""

        @event.listens_for(sessions, "before_flush")
        def _flushing(session: Session, _context: Any, _instances: Any) -> None:
            changed = (*session.new, *session.dirty, *session.deleted)
            if any(isinstance(row, AUTH_MODELS) for row in changed):
                session.info[_CHANGED] = True

        @event.listens_for(sessions, "do_orm_execute")
        def _executing(state: ORMExecuteState) -> None:
            if (state.is_update or state.is_delete) and _names_auth_table(state):
                state.session.info[_CHANGED] = True

        @event.listens_for(sessions, "after_commit")
        def _committed(session: Session) -> None:
            # A flag left by a rolled-back change only costs one needless clear.
            if session.info.pop(_CHANGED, False):
                self.clear()


def _names_auth_table(state: ORMExecuteState) -> bool:
    table = getattr(state.statement, "table", None)
    return getattr(table, "name", None) in _AUTH_TABLES
