"""Foreign keys and unique constraints behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tests.storage.factories import (
    make_account,
    make_app,
    make_app_stack,
    make_run,
    make_user,
    make_version,
)
from tower.server.store import db, models


def _rows_owned_by(session: Session, account_id: uuid.UUID) -> dict[str, int]:
    """Row counts per table that carries account_id (every tenant-owned table)."""
    return {
        table.name: session.scalar(
            select(func.count()).select_from(table).where(table.c.account_id == account_id)
        )
        or 0
        for table in models.Base.metadata.sorted_tables
        if "account_id" in table.c
    }


def _unique_violation(caught: pytest.ExceptionInfo[IntegrityError]) -> str:
    """The violated constraint: its name on PostgreSQL, its columns on SQLite."""
    orig = caught.value.orig
    diag = getattr(orig, "diag", None)
    return diag.constraint_name if diag is not None else str(orig)


def _populate_account(session: Session) -> uuid.UUID:
    """An account with a row in every table that carries account_id."""
    stack = make_app_stack(session)
    account = stack.account
    user = make_user(session, account)
    session.add(models.Membership(account_id=account.id, user_id=user.id))
    run = stack.run(session, created_by_id=user.id)
    session.add_all(
        [
            models.ApiKey(
                account_id=account.id,
                user_id=user.id,
                name="k",
                identifier="sk-x",
                key_hash=uuid.uuid4().hex,
            ),
            models.Session(
                account_id=account.id,
                user_id=user.id,
                expires_at=run.created_at,
                refresh_token_hash=uuid.uuid4().hex,
            ),
            models.RunAttempt(account_id=account.id, run_id=run.id, seq=1, status="running"),
            models.RunTransition(account_id=account.id, run_id=run.id, to_status="pending"),
            models.RunLogLine(
                account_id=account.id,
                run_id=run.id,
                line_num=1,
                attempt_seq=1,
                channel="stdout",
                content="hello",
                reported_at=run.created_at,
            ),
        ]
    )
    credential = models.RunnerCredential(
        account_id=account.id, name="r", token_hash=uuid.uuid4().hex
    )
    session.add(credential)
    session.flush()
    session.add(
        models.Runner(account_id=account.id, credential_id=credential.id, name="r", public_key="pk")
    )
    sealed = {"wrapped_key": b"k", "ciphertext": b"c", "preview": "XXXXXXXXXX"}
    env_id = stack.environment.id
    session.add(models.Secret(account_id=account.id, environment_id=env_id, name="S", **sealed))
    catalog = models.Catalog(
        account_id=account.id, environment_id=env_id, name="lake", type="pyiceberg-sql"
    )
    session.add(catalog)
    session.flush()
    session.add(
        models.CatalogProperty(account_id=account.id, catalog_id=catalog.id, name="uri", **sealed)
    )
    session.add_all(
        [
            models.Team(account_id=account.id, display_name="Data Team"),
            models.TeamInvitation(account_id=account.id, email="x@example.com", role="developer"),
            models.ServiceAccount(account_id=account.id, name="ci", role="developer"),
            models.Organization(account_id=account.id, name="Acme"),
            models.Guest(
                account_id=account.id,
                app_id=stack.app.id,
                login_token_hash=uuid.uuid4().hex,
                login_expires_at=run.created_at,
                session_seconds=3600,
            ),
        ]
    )
    session.add(
        models.AuditEvent(
            account_id=account.id,
            actor_user_id=user.id,
            actor_kind="api_key",
            action="app.create",
            target="apps/a",
        )
    )
    session.add(
        models.Schedule(
            account_id=account.id,
            app_id=stack.app.id,
            environment_id=env_id,
            name="nightly",
            cron="0 2 * * *",
        )
    )
    session.flush()
    return account.id


def test_deleting_an_account_deletes_everything_it_owns(
    session_factory: sessionmaker[Session],
) -> None:
    with db.transaction(session_factory) as session:
        doomed = _populate_account(session)
        kept = _populate_account(session)
        assert all(_rows_owned_by(session, doomed).values()), _rows_owned_by(session, doomed)

    with db.transaction(session_factory) as session:
        session.execute(delete(models.Account).where(models.Account.id == doomed))

    with db.transaction(session_factory) as session:
        assert set(_rows_owned_by(session, doomed).values()) == {0}
        assert all(_rows_owned_by(session, kept).values())
        # So is the user whose personal account it was.
        users = select(func.count()).select_from(models.User)
        assert session.scalar(users.filter_by(personal_account_id=doomed)) == 0


def test_deleting_a_user_keeps_what_they_created(
    session_factory: sessionmaker[Session],
) -> None:
    with db.transaction(session_factory) as session:
        stack = make_app_stack(session)
        user = make_user(session, make_account(session))
        app = make_app(session, stack.account, created_by_id=user.id)
        run = stack.run(session, created_by_id=user.id)
        app_id, run_id, user_id = app.id, run.id, user.id

    with db.transaction(session_factory) as session:
        session.execute(delete(models.User).where(models.User.id == user_id))

    with db.transaction(session_factory) as session:
        assert session.get_one(models.App, app_id).created_by_id is None
        assert session.get_one(models.Run, run_id).created_by_id is None


def test_foreign_keys_are_enforced(session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), db.transaction(session_factory) as session:
        make_app(session, models.Account(id=uuid.uuid4()))


def test_app_name_is_unique_per_account(session_factory: sessionmaker[Session]) -> None:
    with db.transaction(session_factory) as session:
        account = make_account(session)
        make_app(session, account, name="etl")
        make_app(session, make_account(session), name="etl")  # another account: fine

    with pytest.raises(IntegrityError) as caught, db.transaction(session_factory) as session:
        make_app(session, account, name="etl")

    assert _unique_violation(caught) in {
        "uq_apps__account_id_name",  # PostgreSQL names the constraint
        "UNIQUE constraint failed: apps.account_id, apps.name",  # SQLite names the columns
    }


def test_run_number_is_unique_per_app(session_factory: sessionmaker[Session]) -> None:
    with db.transaction(session_factory) as session:
        stack = make_app_stack(session)
        stack.run(session, number=7)
        stack.run(session, number=8)
        other = make_app(session, stack.account)
        make_run(session, other, make_version(session, other), stack.environment, number=7)

    with pytest.raises(IntegrityError) as caught, db.transaction(session_factory) as session:
        stack.run(session, number=7)

    assert _unique_violation(caught) in {
        "uq_runs__app_id_number",
        "UNIQUE constraint failed: runs.app_id, runs.number",
    }


def test_a_failed_transaction_leaves_nothing_behind(
    session_factory: sessionmaker[Session],
) -> None:
    with db.transaction(session_factory) as session:
        account = make_account(session)

    with pytest.raises(IntegrityError), db.transaction(session_factory) as session:
        make_app(session, account, name="first")
        make_app(session, account, name="first")

    with db.transaction(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(models.App)) == 0
