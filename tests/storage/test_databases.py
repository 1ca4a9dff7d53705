"""The database fixtures: each URL is a fresh, independent database with Tower's settings."""

from __future__ import annotations

from sqlalchemy import func, inspect, select, text

from tests.conftest import MakeDatabaseUrl
from tests.storage.factories import make_account
from tower.server.store import db, models


def _count_accounts(url: str) -> int:
    engine = db.make_engine(url)
    try:
        with db.transaction(db.make_sessionmaker(engine)) as session:
            return session.scalar(select(func.count()).select_from(models.Account)) or 0
    finally:
        engine.dispose()


def test_each_database_is_fresh(make_database_url: MakeDatabaseUrl, dialect: str) -> None:
    first, second = make_database_url(dialect), make_database_url(dialect)
    assert first != second
    engine = db.make_engine(first)
    try:
        with db.transaction(db.make_sessionmaker(engine)) as session:
            make_account(session)
    finally:
        engine.dispose()
    assert (_count_accounts(first), _count_accounts(second)) == (1, 0)


def test_unmigrated_database_is_empty(make_database_url: MakeDatabaseUrl, dialect: str) -> None:
    engine = db.make_engine(make_database_url(dialect, migrated=False))
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_sqlite_copies_get_wal_and_foreign_keys(make_database_url: MakeDatabaseUrl) -> None:
    engine = db.make_engine(make_database_url("sqlite"))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
    finally:
        engine.dispose()
