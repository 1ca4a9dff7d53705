"""The rate limit over HTTP, on a real server with the default settings (20/s, burst 20).

The only thing replaced is the limiter's clock (`ManualClock`): on a busy machine 30
real requests may take longer than a second, and then a correct limiter rightly admits
them all. With the clock held, "30 requests in one second" means exactly that. One test
runs on the real clock to show a refused caller gets through after `Retry-After`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.api.conftest import ApiServer, _serve
from tests.api.helpers import FakeRunner
from tests.live import free_port
from tower.server.app import build_context, create_app
from tower.server.ratelimit import RateLimiter
from tower.server.services import accounts
from tower.server.settings import ServerSettings

DEFAULTS = ServerSettings()


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class LimitedServer:
    api: ApiServer
    limiter: RateLimiter

    def hold_clock(self) -> ManualClock:
        clock = ManualClock()
        self.limiter.clock = clock
        return clock


def _limiter_of(app: FastAPI) -> RateLimiter:
    return next(m.kwargs["limiter"] for m in app.user_middleware if "limiter" in m.kwargs)


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[LimitedServer]:
    """A server with the rate limit at its defaults (the shared fixture turns it off)."""
    port = free_port()
    settings = ServerSettings(home=tmp_path / "home", port=port)
    assert settings.rate_limited
    ctx = build_context(settings)
    boot = accounts.bootstrap(ctx)
    app = create_app(settings, ctx)
    server, thread = _serve(app, port)
    try:
        api = ApiServer(f"http://127.0.0.1:{port}", boot.api_key or "", ctx)
        yield LimitedServer(api, _limiter_of(app))
    finally:
        server.should_exit = True
        thread.join(10)


def _statuses(client: httpx.Client, path: str, count: int) -> list[int]:
    return [client.get(path).status_code for _ in range(count)]


def test_the_defaults_are_twenty_a_second() -> None:
    assert DEFAULTS.rate_limit_per_second == 20
    assert DEFAULTS.rate_limit_burst == 20


def test_thirty_requests_at_once_from_one_key_get_429_past_the_burst(
    limited: LimitedServer,
) -> None:
    limited.hold_clock()
    with limited.api.client() as api:
        answers = [api.get("/apps") for _ in range(30)]
    assert [a.status_code for a in answers] == [200] * 20 + [429] * 10
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "1"
    body = refused.json()
    assert body["status"] == 429
    assert body["code"] == "rate_limited"
    assert body["error_id"]
    assert "20 requests per second" in body["message"]
    assert "TOWER_RATE_LIMIT_PER_SECOND" in body["message"]


def test_thirty_requests_within_a_second_admit_the_burst_plus_the_refill(
    limited: LimitedServer,
) -> None:
    clock = limited.hold_clock()
    statuses = []
    with limited.api.client() as api:
        for i in range(30):
            clock.now = 1000.0 + i * 0.01  # 30 requests in 0.3 s
            statuses.append(api.get("/apps").status_code)
    # 20 tokens in the bucket and 0.2 back between requests: request 24 (t=0.24 s,
    # 0.8 tokens left) is the first refused; from then on one in five gets through.
    assert statuses[:24] == [200] * 24
    assert statuses[24] == 429
    assert statuses.count(429) >= 4


def test_another_key_is_unaffected(limited: LimitedServer) -> None:
    limited.hold_clock()
    other_key = limited.api.new_user_key("other@example.com")
    with limited.api.client() as api, limited.api.client(api_key=other_key) as other:
        assert _statuses(api, "/apps", 30)[-1] == 429
        assert _statuses(other, "/apps", 20) == [200] * 20
        assert api.get("/apps").status_code == 429


def test_a_refused_key_gets_through_after_retry_after(limited: LimitedServer) -> None:
    with limited.api.client() as api:
        # However slow this machine, 200 requests cannot all fit under 20/s + 20.
        refused = None
        for _ in range(200):
            answer = api.get("/apps")
            if answer.status_code == 429:
                refused = answer
                break
        assert refused is not None
        time.sleep(int(refused.headers["Retry-After"]))
        assert api.get("/apps").status_code == 200


def test_callers_without_credentials_are_limited_by_address(limited: LimitedServer) -> None:
    limited.hold_clock()
    with limited.api.client(api_key="") as anonymous:
        statuses = _statuses(anonymous, "/apps", 30)
    assert statuses == [401] * 20 + [429] * 10


def test_runner_routes_and_health_checks_are_not_limited(limited: LimitedServer) -> None:
    limited.hold_clock()
    runner = FakeRunner(limited.api)
    claim = {"runner_id": runner.runner_id, "wait_seconds": 0}
    claims = [runner.http.post("/claim", json=claim).status_code for _ in range(40)]
    with httpx.Client(base_url=limited.api.url) as anonymous:
        health = _statuses(anonymous, "/healthz", 40)
        # The same address is limited on other routes: health checks really are exempt.
        assert _statuses(anonymous, "/v1/apps", 21) == [401] * 20 + [429]
    assert set(claims) == {204}
    assert set(health) == {200}
