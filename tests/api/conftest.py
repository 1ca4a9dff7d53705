"""A real control plane on loopback (uvicorn in a thread) for each API test, on both databases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.live import free_port
from tower.server.app import build_context, create_app
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


@pytest.fixture
def api_server(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    port = free_port()
    # Tests drive the API with one key far faster than 20 requests/s; the rate limit has
    # its own tests (test_rate_limit.py), which build servers with it on.
    settings = ServerSettings(
        home=tmp_path / "home",
        database_url=database_url,
        port=port,
        lease_ttl_seconds=2.0,
        rate_limit_per_second=0,
    )
    ctx = build_context(settings)
    boot = accounts.bootstrap(ctx)
    server, thread = _serve(create_app(settings, ctx), port)
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", boot.api_key or "", ctx)
    finally:
        server.should_exit = True
        thread.join(10)
