"""Rows written without the unit of work (`store.rows`), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from tests.storage.factories import make_account, make_app_stack
from tower.server.store import models, rows


def _count_flushes(session: Session) -> list[int]:
    flushes = [0]
    event.listen(session, "after_flush", lambda *_: flushes.__setitem__(0, flushes[0] + 1))
    return flushes


def test_insert_now_writes_the_row_with_its_defaults_and_keeps_the_object_clean(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as session:
        stack = make_app_stack(session)
        flushes = _count_flushes(session)
        run = models.Run(
            id=uuid.uuid4(),
            account_id=stack.account.id,
            app_id=stack.app.id,
            version_id=stack.version.id,
            environment_id=stack.environment.id,
            number=1,
            status="pending",
        )
        rows.insert_now(session, run)
        # Defaults (Python-side) and unset columns are on the object as in the row.
        assert run.parameters == [] and run.num_attempts == 0 and run.exit_code is None
        assert run.created_at is not None
        assert session.is_modified(run) is False and run not in session.new
        written = session.connection().execute(
            select(models.Run.__table__).where(models.Run.__table__.c.id == run.id)
        )
        row = written.one()
        assert (row.status, row.num_attempts, row.parameters) == ("pending", 0, [])
        # Later changes are flushed as for any loaded object.
        run.status = "running"
        session.flush()
        assert flushes[0] == 1
        status = session.connection().scalar(
            select(models.Run.__table__.c.status).where(models.Run.__table__.c.id == run.id)
        )
        assert status == "running"


def test_insert_now_needs_the_primary_key_before_the_insert(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as session:
        stack = make_app_stack(session)
        transition = models.RunTransition(
            account_id=stack.account.id, run_id=uuid.uuid4(), to_status="pending"
        )
        with pytest.raises(ValueError, match="primary key"):
            rows.insert_now(session, transition)


def test_append_writes_what_the_session_holds_unwritten_first(
    session_factory: sessionmaker[Session],
) -> None:
    """An audit event may belong to an account created in the same transaction."""
    with session_factory.begin() as session:
        actor = make_account(session)
        team = models.Account(
            id=uuid.uuid4(), name=f"team-{uuid.uuid4().hex[:8]}", type="team", wrapped_key=b"k"
        )
        session.add(team)
        rows.append(
            session,
            models.AuditEvent,
            account_id=team.id,
            actor_user_id=None,
            actor_kind="api_key",
            action="team.create",
            target=f"teams/{team.name}",
            details={"by": str(actor.id)},
        )
        stored = session.scalars(
            select(models.AuditEvent).where(models.AuditEvent.account_id == team.id)
        ).one()
        assert stored.action == "team.create" and stored.created_at is not None
