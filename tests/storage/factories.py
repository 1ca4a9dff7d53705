"""Row factories for storage tests: valid rows with random names, any field overridable.

Each factory adds its row to the session and flushes (so ids and defaults are
set) but never commits: the caller's transaction owns the unit of work.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from tower.server.store import models
from tower.server.store.types import utcnow


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _add(session: Session, row: models.Base) -> Any:
    session.add(row)
    session.flush()
    return row


def make_account(session: Session, **overrides: Any) -> models.Account:
    fields = {"name": _name("acct"), "type": "team", "wrapped_key": secrets.token_bytes(60)}
    return _add(session, models.Account(**fields | overrides))


def make_user(session: Session, account: models.Account, **overrides: Any) -> models.User:
    fields = {
        "email": f"{_name('user')}@example.com",
        "password_hash": "$argon2id$not-a-real-hash",
        "personal_account_id": account.id,
    }
    return _add(session, models.User(**fields | overrides))


def make_environment(
    session: Session, account: models.Account, **overrides: Any
) -> models.Environment:
    fields = {"account_id": account.id, "name": _name("env")}
    return _add(session, models.Environment(**fields | overrides))


def make_app(session: Session, account: models.Account, **overrides: Any) -> models.App:
    fields = {"account_id": account.id, "name": _name("app")}
    return _add(session, models.App(**fields | overrides))


def make_version(session: Session, app: models.App, **overrides: Any) -> models.AppVersion:
    app.last_version_number += 1
    fields = {
        "account_id": app.account_id,
        "app_id": app.id,
        "number": app.last_version_number,
        "towerfile": f'[app]\nname = "{app.name}"\nscript = "main.py"\n',
        "invoke": "main.py",
        "content_checksum": secrets.token_hex(32),
        "package_sha256": secrets.token_hex(32),
        "package_size": 1024,
        "blob_key": f"packages/{uuid.uuid4().hex}",
        "wrapped_data_key": secrets.token_bytes(60),
    }
    return _add(session, models.AppVersion(**fields | overrides))


def make_run(
    session: Session,
    app: models.App,
    version: models.AppVersion,
    environment: models.Environment,
    **overrides: Any,
) -> models.Run:
    app.last_run_number += 1
    fields = {
        "account_id": app.account_id,
        "app_id": app.id,
        "version_id": version.id,
        "environment_id": environment.id,
        "number": app.last_run_number,
        "status": "pending",
    }
    return _add(session, models.Run(**fields | overrides))


@dataclass(frozen=True, slots=True)
class AppStack:
    """An account with one environment and one app whose version is pinned to it."""

    account: models.Account
    environment: models.Environment
    app: models.App
    version: models.AppVersion

    def run(self, session: Session, **overrides: Any) -> models.Run:
        return make_run(session, self.app, self.version, self.environment, **overrides)


def make_app_stack(session: Session) -> AppStack:
    account = make_account(session)
    environment = make_environment(session, account, name="default")
    app = make_app(session, account)
    version = make_version(session, app)
    _add(
        session,
        models.AppEnvironmentVersion(
            account_id=account.id,
            app_id=app.id,
            environment_id=environment.id,
            version_id=version.id,
        ),
    )
    return AppStack(account, environment, app, version)


def make_pending_runs(session: Session, stack: AppStack, count: int) -> list[models.Run]:
    """`count` pending runs with strictly increasing created_at (the queue order)."""
    start = utcnow()
    return [stack.run(session, created_at=start + timedelta(milliseconds=i)) for i in range(count)]
