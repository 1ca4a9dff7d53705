"""Migrations on both dialects: one head, upgrade from empty matches the models, round-trips."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from tests.conftest import MakeDatabaseUrl
from tests.storage.factories import make_account, make_environment
from tower.server.store import db, models

PG_LOCK_KEY = 0x746F7765726D67  # env.PG_MIGRATION_LOCK_KEY (env.py is not importable)
SQLITE_BLOCKED_S = 1.0
UPGRADE_TIMEOUT_S = 60


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(db.alembic_config("sqlite://"))


def _schema_diff(url: str) -> list[Any]:
    """What `alembic check` would report: differences between the database and the models."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, models.Base.metadata))
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _current(url: str) -> str | None:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_single_head() -> None:
    assert len(_script().get_heads()) == 1


def test_upgrade_from_empty_matches_models(
    make_database_url: MakeDatabaseUrl, dialect: str
) -> None:
    url = make_database_url(dialect, migrated=False)
    assert _tables(url) == set()

    db.upgrade(url)

    assert _tables(url) == set(models.Base.metadata.tables) | {"alembic_version"}
    assert _current(url) == _script().get_current_head()
    assert _schema_diff(url) == []


def test_upgrade_again_is_a_no_op(database_url: str) -> None:
    db.upgrade(database_url)
    db.upgrade(database_url)
    assert _schema_diff(database_url) == []


def test_downgrade_to_base_then_upgrade_round_trips(database_url: str) -> None:
    config = db.alembic_config(database_url)

    command.downgrade(config, "base")
    assert _tables(database_url) == {"alembic_version"}
    assert _current(database_url) is None

    command.upgrade(config, "head")
    assert _schema_diff(database_url) == []


def test_every_revision_downgrades_and_reapplies(
    make_database_url: MakeDatabaseUrl, dialect: str
) -> None:
    # The "stairway": up one step, down it, up again, for every revision in order.
    url = make_database_url(dialect, migrated=False)
    config = db.alembic_config(url)
    for revision in reversed(list(_script().walk_revisions("base", "heads"))):
        command.upgrade(config, revision.revision)
        command.downgrade(config, "-1")
        command.upgrade(config, revision.revision)
        assert _current(url) == revision.revision
    assert _schema_diff(url) == []


class _Upgrader(threading.Thread):
    """db.upgrade in a thread. Only one Alembic run per process at a time: its
    `context` is process-global (real concurrent upgraders are separate servers)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            db.upgrade(self.url)
        except BaseException as exc:
            self.error = exc


def _wait_until_blocked(engine: Engine, upgrader: _Upgrader) -> None:
    if engine.dialect.name == "postgresql":  # observable: a backend waits on an advisory lock
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        deadline = time.monotonic() + UPGRADE_TIMEOUT_S
        while time.monotonic() < deadline and upgrader.is_alive():
            with engine.connect() as conn:
                if conn.execute(waiting).scalar_one():
                    return
            time.sleep(0.02)
        pytest.fail(f"the upgrade never waited for the migration lock ({upgrader.error!r})")
    upgrader.join(SQLITE_BLOCKED_S)  # SQLite: busy-waiting on the write lock is not observable
    assert upgrader.is_alive(), f"the upgrade did not wait for the write lock ({upgrader.error!r})"


def test_upgrade_waits_for_a_concurrent_migration(
    make_database_url: MakeDatabaseUrl, dialect: str
) -> None:
    # Several control planes may start at once on one database: each must wait
    # for the migration lock instead of racing on CREATE TABLE.
    url = make_database_url(dialect, migrated=False)
    engine = db.make_engine(url)
    upgrader = _Upgrader(url)
    try:
        with engine.begin() as conn:  # SQLite: this BEGIN IMMEDIATE is the lock
            if dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
            upgrader.start()
            _wait_until_blocked(engine, upgrader)
        upgrader.join(UPGRADE_TIMEOUT_S)
    finally:
        engine.dispose()

    assert not upgrader.is_alive()
    assert upgrader.error is None
    assert _schema_diff(url) == []


def test_sqlite_batch_rebuild_keeps_child_rows(make_database_url: MakeDatabaseUrl) -> None:
    # A batch migration recreates the table (copy, DROP, rename). With foreign
    # keys on, the DROP would cascade-delete every child row; env.py turns them
    # off for migrations. This runs such a migration through env.py.
    url = make_database_url("sqlite")
    engine = db.make_engine(url)
    try:
        with db.transaction(db.make_sessionmaker(engine)) as session:
            make_environment(session, make_account(session))
    finally:
        engine.dispose()

    def rebuild_accounts(_heads: Any, context: MigrationContext) -> list[Any]:
        with Operations(context).batch_alter_table("accounts", recreate="always"):
            pass
        return []  # no revisions to apply

    script = _script()
    with EnvironmentContext(db.alembic_config(url), script, fn=rebuild_accounts):
        script.run_env()

    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM environments")).scalar_one() == 1
    finally:
        engine.dispose()
