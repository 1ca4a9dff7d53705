"""What the rate-limit middleware adds to each request, in process.

Calls the ASGI middleware around an app that does nothing, and that app bare, --requests
times each, and prints the difference per request in microseconds: for a caller with an
API key (hash + bucket), a caller without credentials (keyed by IP), an exempt runner
route, and --callers distinct keys in rotation (a larger bucket table). The limiter's
rate is set high enough that nothing is refused: this measures the admitted path.

    .venv/bin/python bench/ratelimit.py [--requests 200000] [--callers 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from _common import report

from tower.server.api.ratelimit import RateLimitMiddleware
from tower.server.ratelimit import RateLimiter


async def _noop_app(scope: Any, receive: Any, send: Any) -> None:
    return None


async def _receive() -> dict[str, Any]:
    return {"type": "http.request"}


async def _send(message: Any) -> None:
    return None


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    base = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"python-httpx/0.28"), *headers]
    return {"type": "http", "path": path, "headers": base, "client": ("127.0.0.1", 5000)}


async def _time(app: Any, scopes: list[dict[str, Any]], requests: int) -> float:
    """Seconds per request of `app` over `scopes` in rotation."""
    count = len(scopes)
    started = time.perf_counter()
    for i in range(requests):
        await app(scopes[i % count], _receive, _send)
    return (time.perf_counter() - started) / requests


async def _measure(requests: int, callers: int) -> dict[str, Any]:
    limited = RateLimitMiddleware(_noop_app, limiter=RateLimiter(rate=1e12, burst=10**9))
    key = [(b"x-api-key", b"sk-" + b"a" * 40)]
    cases = {
        "api_key": [_scope("/v1/apps", key)],
        "no_credentials": [_scope("/v1/apps", [])],
        "runner_route_exempt": [
            _scope("/v1/runner/claim", [(b"authorization", b"Bearer rt-" + b"b" * 40)])
        ],
        f"{callers}_api_keys": [
            _scope("/v1/apps", [(b"x-api-key", f"sk-{n:040d}".encode())]) for n in range(callers)
        ],
    }
    result: dict[str, Any] = {"requests": requests, "overhead_us": {}}
    for name, scopes in cases.items():
        bare = await _time(_noop_app, scopes, requests)
        wrapped = await _time(limited, scopes, requests)
        result["overhead_us"][name] = round((wrapped - bare) * 1e6, 2)
    return result


def _table(result: dict[str, Any]) -> str:
    lines = [f"{'case':<24} {'overhead per request (µs)':>26}"]
    for name, micros in result["overhead_us"].items():
        lines.append(f"{name:<24} {micros:>26.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--callers", type=int, default=10_000)
    args = parser.parse_args()
    report(asyncio.run(_measure(args.requests, args.callers)), _table)


if __name__ == "__main__":
    main()
