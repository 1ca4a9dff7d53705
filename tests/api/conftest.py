"""A real control plane on loopback (uvicorn in a thread) for each API test, on both databases."""

from __future__ import annotations

import base64
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests import pg
from tests.conftest import MakeDatabaseUrl
from tests.live import free_port
from tower.server.app import build_context, create_app, load_server_keys
from tower.server.services import accounts, auth
from tower.server.services.context import ServerContext
from tower.server.settings import ServerSettings


@dataclass
class ApiServer:
    url: str
    api_key: str
    ctx: ServerContext

    def client(self, api_key: str | None = None, **headers: str) -> httpx.Client:
        key = api_key if api_key is not None else self.api_key
        auth_headers = {"X-API-Key": key} if key else {}
        return httpx.Client(
            base_url=f"{self.url}/v1", headers={**auth_headers, **headers}, timeout=30
        )

    def runner_token(self) -> str:
        return auth.mint_runner_credential(self.ctx, name="test-runner", account_id=None)

    def new_user_key(self, email: str) -> str:
        with self.ctx.sessions.begin() as session:
            user = accounts.create_user(self.ctx, session, email=email, password="pw-123456")
            return accounts.create_api_key(session, user=user, name="test")


def _serve(app: object, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test API server did not start")
        time.sleep(0.02)
    return server, thread


#: test-only secrets of the bootstrapped template (the master key is 32 bytes)
TEST_MASTER_KEY = base64.b64encode(b"tower api tests: master key 32 B").decode()
TEST_ADMIN_API_KEY = "sk-api-tests-admin-key-not-a-secret"


def _settings(home: Path, database_url: str, port: int = 0) -> ServerSettings:
    # Tests drive the API with one key far faster than 20 requests/s; the rate limit has
    # its own tests (test_rate_limit.py), which build servers with it on.
    return ServerSettings(
        home=home,
        database_url=database_url,
        port=port,
        lease_ttl_seconds=2.0,
        rate_limit_per_second=0,
        master_key=TEST_MASTER_KEY,
        admin_api_key=TEST_ADMIN_API_KEY,
    )


@pytest.fixture(scope="session")
def bootstrapped_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """Per dialect, made on first use: a database where the first start already happened
    (admin, account, `default`, API key, server keys). Password hashing and key
    generation cost about a second, which every API test would pay again otherwise;
    each test gets its own copy, exactly as a first start leaves it."""
    made: dict[str, str] = {}

    def template(dialect: str) -> str:
        if dialect not in made:
            made[dialect] = _make_bootstrapped_template(request, tmp_path_factory, dialect)
        return made[dialect]

    return template


def _make_bootstrapped_template(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, dialect: str
) -> str:
    root = tmp_path_factory.mktemp(f"bootstrapped-{dialect}")
    if dialect == "sqlite":
        path = root / "tower.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url, template = f"sqlite:///{path}", str(path)
    else:
        cluster: pg.PgCluster = request.getfixturevalue("pg_cluster")
        template = "tower_bootstrapped_tmpl"
        cluster.create_database(template, template=request.getfixturevalue("pg_template"))
        url = cluster.url(template)
    ctx = build_context(_settings(root / "home", url))
    accounts.bootstrap(ctx)
    load_server_keys(ctx)
    # No connection may stay open: PostgreSQL copies only an idle template, and SQLite
    # must have its WAL folded into the file that is copied.
    ctx.sessions.kw["bind"].dispose()
    if dialect == "sqlite":
        with closing(sqlite3.connect(template)) as conn:
            conn.execute("PRAGMA journal_mode=DELETE")
    return template


@pytest.fixture
def api_server(
    dialect: str,
    make_database_url: MakeDatabaseUrl,
    bootstrapped_template: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[ApiServer]:
    port = free_port()
    database_url = make_database_url(dialect, template=bootstrapped_template(dialect))
    settings = _settings(tmp_path / "home", database_url, port)
    ctx = build_context(settings)
    server, thread = _serve(create_app(settings, ctx), port)
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", TEST_ADMIN_API_KEY, ctx)
    finally:
        server.should_exit = True
        thread.join(10)
