"""What every use case needs: settings, database, keys, blobs, wake-ups; and who is asking."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam
from sqlalchemy.orm import Session, sessionmaker

from tower.server.blobs import LocalBlobStore
from tower.server.dispatch.notifier import Notifier
from tower.server.keys import KeyRing
from tower.server.services.batching import Batcher, Outcomes
from tower.server.services.credential_cache import CredentialCache
from tower.server.settings import ServerSettings

T = TypeVar("T", bound=tuple[Any, ...])
Item = TypeVar("Item")


@dataclass
class ServerContext:
    """The composition root's products, built once per control-plane process."""

    settings: ServerSettings
    sessions: sessionmaker[Session]
    keys: KeyRing
    blobs: LocalBlobStore
    notifier: Notifier = field(default_factory=Notifier)
    #: private keys loaded from the database once per process (see services.vault)
    loaded_keys: dict[str, Any] = field(default_factory=dict)
    #: credentials checked within the last second (see services.credential_cache)
    credentials: CredentialCache = field(default_factory=CredentialCache)
    #: group commits of this process, one per kind of write (see services.batching)
    batchers: dict[Callable[..., Any], Batcher[Any, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.credentials.watch(self.sessions)

    def batcher(
        self, apply_all: Callable[[ServerContext, list[Item]], Outcomes], max_batch: int
    ) -> Batcher[Item, Any]:
        """This process's batcher for `apply_all(context, items)`, made on first use."""
        found = self.batchers.get(apply_all)
        if found is None:
            made = Batcher(functools.partial(apply_all, self), max_batch=max_batch)
            found = self.batchers.setdefault(apply_all, made)  # one wins a race
        return found


@dataclass(frozen=True)
class Principal:
    """An authenticated caller acting inside one account."""

    account_id: uuid.UUID
    account_name: str
    user_id: uuid.UUID | None
    kind: str  # "session" | "api_key" | "run"
    run_id: uuid.UUID | None = None
    #: what an API key with a scope list may do; None = every scope of the account
    scopes: frozenset[str] | None = None
    #: the caller's role in this account (`tower.core.roles`); None = no role, no access
    role: str | None = None
    #: set when the credential is a service account's API key
    service_account_id: uuid.UUID | None = None
    #: the API key's masked identifier (`sk-abcd…wxyz`) when it authenticated; never the key
    credential: str | None = None
    #: the signed-in session a session token belongs to (None for keys and run tokens)
    session_id: uuid.UUID | None = None


@dataclass(frozen=True)
class RunnerPrincipal:
    """An authenticated runner credential; `account_id` None serves every account."""

    credential_id: uuid.UUID
    account_id: uuid.UUID | None
    #: the credential this one replaced by rotation (its runners are still this runner's)
    rotated_from_id: uuid.UUID | None = None


def owned(stmt: Select[T], model: Any, principal: Principal) -> Select[T]:
    """Scope a query to the caller's account: the one place tenancy is applied."""
    return stmt.where(model.account_id == principal.account_id)


#: the caller's account in statements built once (`owned_once`), bound by `owner(...)`
OWNER_PARAM = "owner_account_id"


def owned_once(stmt: Select[T], model: Any) -> Select[T]:
    """`owned` for a statement built once at import (hot paths), the caller's account
    a bound parameter: execute it with `owner(principal)` among its parameters."""
    return stmt.where(model.account_id == bindparam(OWNER_PARAM))


def owner(principal: Principal) -> dict[str, Any]:
    """The parameter an `owned_once` statement needs."""
    return {OWNER_PARAM: principal.account_id}


@contextmanager
def read_session(ctx: ServerContext) -> Iterator[Session]:
    """A session that only reads, outside any transaction.

    Regular sessions begin with BEGIN IMMEDIATE on SQLite, i.e. they hold the database's
    write lock: a slow report over a million runs would stall every runner heartbeat.
    Autocommit reads take no lock (WAL readers never block writers) and cost nothing
    on PostgreSQL. Each statement reads its own snapshot: a page and its total may
    disagree by the runs created in between, which a listing can live with.
    """
    with ctx.sessions() as session:
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session
