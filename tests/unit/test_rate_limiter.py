"""Token-bucket arithmetic of the API's rate limit, on an injected clock."""

from __future__ import annotations

import pytest

from tower.server import ratelimit
from tower.server.api.ratelimit import caller_key, is_exempt
from tower.server.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _granted(limiter: RateLimiter, key: str, count: int) -> int:
    return sum(limiter.acquire(key) == 0.0 for _ in range(count))


def test_a_full_bucket_admits_the_burst_then_says_how_long_to_wait() -> None:
    limiter = RateLimiter(rate=20, burst=20, clock=Clock())
    assert _granted(limiter, "k", 20) == 20
    assert limiter.acquire("k") == pytest.approx(0.05)  # one token at 20/s


def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, clock=clock)
    assert _granted(limiter, "k", 10) == 5
    clock.now = 0.3  # three tokens back
    assert _granted(limiter, "k", 10) == 3
    clock.now = 100.0  # long idle: the bucket is full again, not 1000 tokens deep
    assert _granted(limiter, "k", 10) == 5


def test_refused_requests_do_not_take_tokens() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    assert limiter.acquire("k") == 0.0
    clock.now = 0.5
    assert limiter.acquire("k") == pytest.approx(0.5)
    assert limiter.acquire("k") == pytest.approx(0.5)
    clock.now = 1.0
    assert limiter.acquire("k") == 0.0


def test_callers_have_separate_buckets() -> None:
    limiter = RateLimiter(rate=1, burst=2, clock=Clock())
    assert _granted(limiter, "a", 5) == 2
    assert _granted(limiter, "b", 5) == 2


def test_a_sustained_caller_gets_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=20, burst=20, clock=clock)
    granted = 0
    for step in range(10_000):  # 100 requests a second for 100 s
        clock.now = step / 100
        granted += limiter.acquire("k") == 0.0
    assert granted == pytest.approx(20 + 20 * 99.99, abs=2)


def test_idle_buckets_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "SWEEP_EVERY", 10)
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=10, clock=clock)
    for n in range(9):
        limiter.acquire(f"caller-{n}")
    assert limiter.tracked() == 9
    clock.now = 1.0  # long enough for every bucket to be full again
    limiter.acquire("late")  # the tenth check sweeps
    assert limiter.tracked() == 1


def test_a_zero_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=10)


def _scope(*headers: tuple[bytes, bytes], client: str = "10.0.0.7") -> dict:
    return {"headers": list(headers), "client": (client, 5555)}


def test_callers_are_keyed_by_a_hash_of_their_credential_never_the_credential() -> None:
    by_key = caller_key(_scope((b"x-api-key", b"sk-secret-1")))
    by_bearer = caller_key(_scope((b"authorization", b"Bearer sk-secret-1")))
    assert by_key == by_bearer  # the same credential, however it is sent
    assert "sk-secret-1" not in by_key
    assert by_key != caller_key(_scope((b"x-api-key", b"sk-secret-2")))
    assert caller_key(_scope()) == "ip:10.0.0.7"
    assert caller_key(_scope((b"authorization", b"Basic abc"))) == "ip:10.0.0.7"


def test_runner_routes_and_health_are_exempt() -> None:
    assert is_exempt("/healthz")
    assert is_exempt("/v1/runner/claim")
    assert not is_exempt("/v1/runs")
    assert not is_exempt("/v1/runners")
