"""UTCDateTime: aware UTC out of both databases, naive values refused on the way in."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from tests.storage.factories import make_account
from tower.server.store import db, models
from tower.server.store.types import utcnow

# A session time zone far from UTC, so PostgreSQL hands back non-UTC offsets.
PG_SESSION_TIMEZONE = "Asia/Kolkata"
LOCAL = timezone(timedelta(hours=-5))


@pytest.fixture
def factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    if database_url.startswith("postgresql"):
        database_url += "?options=" + quote(f"-c TimeZone={PG_SESSION_TIMEZONE}")
    engine = db.make_engine(database_url)
    yield db.make_sessionmaker(engine)
    engine.dispose()


def test_round_trip_is_aware_utc(factory: sessionmaker[Session]) -> None:
    written = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=LOCAL)
    with db.transaction(factory) as session:
        account_id = make_account(session, created_at=written).id

    with db.transaction(factory) as session:
        read = session.scalar(select(models.Account.created_at).filter_by(id=account_id))
        if session.get_bind().dialect.name == "postgresql":
            assert session.scalar(text("SHOW TimeZone")) == PG_SESSION_TIMEZONE

    assert read == datetime(2024, 3, 1, 17, 0, 0, 123456, tzinfo=UTC)
    assert read is not None and read.tzinfo is UTC


def test_stored_as_utc(factory: sessionmaker[Session]) -> None:
    with db.transaction(factory) as session:
        account_id = make_account(session, created_at=datetime(2024, 3, 1, 12, tzinfo=LOCAL)).id
        dialect = session.get_bind().dialect.name
        raw = (
            "strftime('%Y-%m-%d %H:%M', created_at)"
            if dialect == "sqlite"
            else ("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')")
        )
        stored = session.execute(
            text(f"SELECT {raw} FROM accounts WHERE id = :id"),
            {"id": account_id.hex if dialect == "sqlite" else account_id},
        ).scalar_one()
    assert stored == "2024-03-01 17:00"


def test_comparisons_use_instants(factory: sessionmaker[Session]) -> None:
    instant = datetime(2024, 3, 1, 17, tzinfo=UTC)
    with db.transaction(factory) as session:
        make_account(session, created_at=instant)
        same_instant_elsewhere = instant.astimezone(LOCAL)
        found = session.scalars(
            select(models.Account.created_at).where(
                models.Account.created_at == same_instant_elsewhere
            )
        ).all()
    assert found == [instant]


def test_default_is_aware_now(factory: sessionmaker[Session]) -> None:
    before = utcnow()
    with db.transaction(factory) as session:
        account_id = make_account(session).id
    with db.transaction(factory) as session:
        created = session.scalar(select(models.Account.created_at).filter_by(id=account_id))
    assert created is not None and created.tzinfo is UTC
    assert before <= created <= utcnow()


def test_naive_datetime_is_refused(factory: sessionmaker[Session]) -> None:
    with (
        pytest.raises(StatementError, match="naive datetime") as caught,
        db.transaction(factory) as session,
    ):
        make_account(session, created_at=datetime(2024, 3, 1, 12))
    assert isinstance(caught.value.orig, ValueError)


def test_naive_datetime_in_a_filter_is_refused(factory: sessionmaker[Session]) -> None:
    naive = datetime(2024, 1, 1)
    with (
        pytest.raises(StatementError, match="naive datetime"),
        db.transaction(factory) as session,
    ):
        session.scalars(select(models.Account).where(models.Account.created_at < naive)).all()
