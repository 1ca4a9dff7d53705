"""Alembic environment for the Tower metadata database (SQLite or PostgreSQL).

Driven two ways: programmatically by `tower.server.store.db.upgrade(url)` (a
`Config` carrying `script_location` and `sqlalchemy.url`, no ini file), and by
the `alembic` CLI when authoring migrations:

    alembic -c src/tower/server/store/migrations/alembic.ini \
        -x url=sqlite:////tmp/scratch.db revision --autogenerate --rev-id 0002 -m "..."

The engine comes from `db.make_engine`, so SQLite gets its PRAGMAs and writes
`BEGIN IMMEDIATE`. Every upgrade or downgrade runs in ONE transaction on both
databases (SQLite DDL is transactional once pysqlite stops managing
transactions, which `make_engine` arranges), under a lock so that several
control planes starting at once migrate one after the other.
"""

from __future__ import annotations

import logging.config
from typing import Any

from alembic import context
from sqlalchemy import Connection, event

from tower.server.store import models
from tower.server.store.db import make_engine, normalize_url
from tower.server.store.types import UTCDateTime

# Any constant works; it only has to differ from the other advisory locks Tower takes.
PG_MIGRATION_LOCK_KEY = 0x746F7765726D67  # "towermg"

config = context.config
target_metadata = models.Base.metadata


def _database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError(
            "no database URL for migrations: pass `-x url=sqlite:///path.db` to alembic "
            "(or call tower.server.store.db.upgrade(url))"
        )
    return normalize_url(url)


def _render_item(type_: str, obj: Any, _autogen_context: Any) -> str | bool:
    # Migrations must not import application types: render what the database stores.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure_options(url: str) -> dict[str, Any]:
    is_sqlite = url.startswith("sqlite")
    return {
        "target_metadata": target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        "render_as_batch": is_sqlite,
        "compare_type": True,
        "render_item": _render_item,
        # Alembic assumes pysqlite's implicit transactions; make_engine disables
        # those, so SQLite DDL is transactional and a failed upgrade rolls back.
        "transactional_ddl": True,
    }


def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    # Batch mode drops and recreates tables; with foreign keys on, dropping a
    # parent table would cascade-delete its children's rows. The PRAGMA is a
    # no-op inside a transaction, hence on connect (after make_engine's ON).
    dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left rows violating foreign keys: {broken[:10]}")


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) instead of executing it."""
    url = _database_url()
    context.configure(url=url, literal_binds=True, **_configure_options(url))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _database_url()
    engine = make_engine(url)
    dialect = engine.dialect.name
    if dialect == "sqlite":
        event.listen(engine, "connect", _foreign_keys_off)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **_configure_options(url))
            with context.begin_transaction():
                if dialect == "postgresql":
                    connection.exec_driver_sql(
                        f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK_KEY})"
                    )
                # On SQLite the BEGIN IMMEDIATE of this transaction is the lock.
                context.run_migrations()
                if dialect == "sqlite":
                    _check_sqlite_foreign_keys(connection)
    finally:
        # Leave no pooled connection behind: PostgreSQL refuses to use a
        # database with open connections as a CREATE DATABASE template.
        engine.dispose()


if config.config_file_name is not None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
