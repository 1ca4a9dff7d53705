"""Runs written straight into the server's database, for tests that need many runs in
given statuses at given times (the runner protocol can't backdate a run).

Apps are created through the API (so they belong to the caller's account); versions,
extra environments and runs are rows added through the server's own sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import httpx
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from tests.api.conftest import ApiServer
from tests.storage.factories import make_version
from tower.server.store import models


def ts(text: str) -> datetime:
    """`2025-01-01T10:00Z` → an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def create_app(api: httpx.Client, name: str) -> None:
    response = api.post("/apps", json={"name": name})
    assert response.status_code == 201, response.text


def add_environment(server: ApiServer, app_name: str, env_name: str) -> None:
    """A second environment in the account that owns `app_name`."""
    with server.ctx.sessions.begin() as session:
        app = _app(session, app_name)
        session.add(models.Environment(account_id=app.account_id, name=env_name))


def add_runs(
    server: ApiServer,
    app_name: str,
    runs: Iterable[tuple[str, str]],
    *,
    environment: str = "default",
) -> list[int]:
    """Insert `(status, created_at)` runs of `app_name` in that order; their numbers."""
    numbers = []
    with server.ctx.sessions.begin() as session:
        app = _app(session, app_name)
        version = session.scalar(
            select(models.AppVersion).where(models.AppVersion.app_id == app.id).limit(1)
        ) or make_version(session, app)
        env = session.scalar(
            select(models.Environment).where(
                models.Environment.account_id == app.account_id,
                models.Environment.name == environment,
            )
        )
        assert env is not None, f"no environment {environment!r}"
        for status, created_at in runs:
            app.last_run_number += 1
            at = ts(created_at)
            session.add(
                models.Run(
                    account_id=app.account_id,
                    app_id=app.id,
                    version_id=version.id,
                    environment_id=env.id,
                    number=app.last_run_number,
                    status=status,
                    created_at=at,
                    scheduled_at=at,
                )
            )
            numbers.append(app.last_run_number)
    return numbers


def _app(session: Session, name: str) -> models.App:
    app = session.scalar(select(models.App).where(models.App.name == name))
    assert app is not None, f"no app {name!r}"
    return app


@contextmanager
def count_queries(server: ApiServer) -> Iterator[list[str]]:
    """Collects every SQL statement the server runs inside the block."""
    engine = server.ctx.sessions.kw["bind"]
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
