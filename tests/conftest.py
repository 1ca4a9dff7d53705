"""Suite-wide fixtures: a clean environment and fresh migrated databases on both dialects.

    def test_x(database_url): ...               # runs twice: [sqlite] and [postgresql]
    def test_y(make_database_url):              # pick the dialect yourself
        url = make_database_url("postgresql")   # fresh, migrated; migrated=False for empty

SQLite: the schema is migrated once per session into a template file, copied per
database. PostgreSQL: a throwaway cluster per session (per xdist worker), a
migrated `tower_tmpl` database, and `CREATE DATABASE t_<uuid> TEMPLATE tower_tmpl`
per database. Missing PostgreSQL binaries skip the PostgreSQL tests locally and
fail them when the `CI` environment variable is set.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Protocol

import pytest

from tests import pg
from tower.server.store import db

DIALECTS = ("sqlite", "postgresql")
PG_TEMPLATE_DB = "tower_tmpl"


class MakeDatabaseUrl(Protocol):
    def __call__(
        self, dialect: str, *, migrated: bool = True, template: str | None = None
    ) -> str: ...


@pytest.fixture(autouse=True)
def _no_tower_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's TOWER_* settings never leak into a test."""
    for name in list(os.environ):
        if name.startswith("TOWER_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.PgCluster]:
    """A running throwaway PostgreSQL cluster, started on first use in this process."""
    bin_dir = pg.find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail(f"{pg.MISSING_BINARIES} (CI is set: PostgreSQL tests must run)")
        pytest.skip(pg.MISSING_BINARIES)
    cluster = pg.start_cluster(bin_dir)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head, self-contained so a plain file copy clones it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "tower.db"
    db.upgrade(f"sqlite:///{path}")
    # Fold the WAL into the main file; make_engine switches each copy back to WAL.
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    return path


@pytest.fixture(scope="session")
def pg_template(pg_cluster: pg.PgCluster) -> str:
    """The name of a database migrated to head, to clone with CREATE DATABASE … TEMPLATE."""
    pg_cluster.create_database(PG_TEMPLATE_DB)
    db.upgrade(pg_cluster.url(PG_TEMPLATE_DB))  # its engine is disposed: no open connection
    return PG_TEMPLATE_DB


@pytest.fixture
def make_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeDatabaseUrl]:
    """Factory of fresh databases: `make_database_url("sqlite" | "postgresql", migrated=True)`.

    Each call returns the URL of a new database (migrated to head unless
    `migrated=False`, then empty; a copy of `template` — a SQLite file or a PostgreSQL
    database name — when given); PostgreSQL ones are dropped after the test.
    Only the dialects actually asked for are started.
    """
    counter = itertools.count()
    pg_databases: list[tuple[pg.PgCluster, str]] = []

    def make(dialect: str, *, migrated: bool = True, template: str | None = None) -> str:
        if dialect == "sqlite":
            path = tmp_path / f"tower-{next(counter)}.db"
            if template or migrated:
                shutil.copyfile(template or request.getfixturevalue("sqlite_template"), path)
            return f"sqlite:///{path}"
        if dialect == "postgresql":
            cluster: pg.PgCluster = request.getfixturevalue("pg_cluster")
            if template is None and migrated:
                template = request.getfixturevalue("pg_template")
            name = f"t_{uuid.uuid4().hex}"
            cluster.create_database(name, template=template)
            pg_databases.append((cluster, name))
            return cluster.url(name)
        raise ValueError(f"unknown dialect {dialect!r}: expected one of {DIALECTS}")

    yield make
    for cluster, name in pg_databases:
        cluster.drop_database(name)


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def dialect(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over both databases; `database_url` follows it."""
    return str(request.param)


@pytest.fixture
def database_url(dialect: str, make_database_url: MakeDatabaseUrl) -> str:
    """A fresh database migrated to head, once per dialect."""
    return make_database_url(dialect)
