"""Engine, sessions and migrations for SQLite (default) and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Enough pooled connections for the request threads, so a busy moment doesn't open and
# configure new SQLite connections for every request.
SQLITE_POOL_SIZE = 16
SQLITE_POOL_OVERFLOW = 32


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class _WriteGate:
    """One writer at a time inside this process, handed over the moment it's free.

    SQLite allows one writer; a thread that finds the lock taken sleeps in SQLite's busy
    handler, in steps that grow to 100 ms, even if the lock is freed a microsecond
    later. Under load that sleep, not the work, dominated dispatch latency. Writers of
    this process queue on a Python lock instead; other processes still meet SQLite's
    own lock and busy timeout.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def acquire(self) -> None:
        if self._owner == threading.get_ident():
            # It would wait for itself until the timeout: say so at once instead.
            raise sqlite3.OperationalError(
                "database is locked: this thread opened a second write transaction while "
                "its first one is still open (finish or reuse the first session)"
            )
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise sqlite3.OperationalError(
                "database is locked: another write transaction of this process held it "
                f"for more than {SQLITE_BUSY_TIMEOUT_MS} ms"
            )
        self._owner = threading.get_ident()

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def connection_factory(self) -> type[sqlite3.Connection]:
        """A DBAPI connection class that gives the gate back once its transaction ends
        (after COMMIT/ROLLBACK has really happened, not before)."""
        gate = self

        class GatedConnection(sqlite3.Connection):
            holds_gate = False

            def commit(self) -> None:
                try:
                    super().commit()
                finally:
                    self.leave_gate()

            def rollback(self) -> None:
                try:
                    super().rollback()
                finally:
                    self.leave_gate()

            def close(self) -> None:
                try:
                    super().close()
                finally:
                    self.leave_gate()

            def enter_gate(self) -> None:
                gate.acquire()
                self.holds_gate = True

            def leave_gate(self) -> None:
                if self.holds_gate:
                    self.holds_gate = False
                    gate.release()

        return GatedConnection


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _on_begin) instead of pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # AUTOCOMMIT (e.g. for VACUUM) must stay outside any transaction.
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return
        # Take the write lock up front: a read that later upgrades to a write
        # would fail with "database is locked" instead of waiting.
        dbapi_connection = connection.connection.dbapi_connection
        dbapi_connection.enter_gate()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_connection.leave_gate()
            raise


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        connect_args: dict[str, Any] = {
            "check_same_thread": False,
            "factory": _WriteGate().connection_factory(),
        }
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url,
                connect_args=connect_args,
                pool_size=SQLITE_POOL_SIZE,
                max_overflow=SQLITE_POOL_OVERFLOW,
            )
        else:  # one in-memory database per connection: nothing to pool
            engine = create_engine(url, connect_args=connect_args)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Apply every migration (idempotent); run at each control-plane start."""
    command.upgrade(alembic_config(url), "head")
