"""The API's rate limit as a pure ASGI middleware: one token bucket per credential.

It runs before routing and authentication, so a flood costs neither a database lookup
nor a thread: the caller is identified by a hash of the credential it sent (never the
credential itself), or by its IP address when it sent none. An invalid credential is
limited like a valid one, which is what a guessing attack deserves.
"""

from __future__ import annotations

import hashlib
import math

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tower.server.api.errors import error_body
from tower.server.ratelimit import RateLimiter

# Runner traffic is machine traffic on its own runner tokens: claims long-poll, heartbeats
# and log batches arrive in bursts from every run in flight, and throttling them would
# slow dispatch and lose leases, not protect anything (a runner token is not a user's
# credential). Health checks come from load balancers and supervisors.
EXEMPT_PREFIXES = ("/v1/runner/",)
EXEMPT_PATHS = frozenset({"/healthz"})


def caller_key(scope: Scope) -> str:
    """Who is asking: a hash of the API key or bearer token sent, else the client IP."""
    api_key = bearer = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            api_key = value
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].strip()
    token = api_key or bearer  # the precedence services.auth applies
    if token:
        return "credential:" + hashlib.sha256(token).hexdigest()
    client = scope.get("client")
    return "ip:" + (client[0] if client else "unknown")


def is_exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


class RateLimitMiddleware:
    """Answer 429 with `Retry-After` and the JSON error body once a caller's bucket is empty."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        wait_s = self.limiter.acquire(caller_key(scope))
        if wait_s <= 0:
            await self.app(scope, receive, send)
            return
        await self._refuse(wait_s)(scope, receive, send)

    def _refuse(self, wait_s: float) -> JSONResponse:
        retry_after = max(1, math.ceil(wait_s))
        rate = f"{self.limiter.rate:g}"
        detail = (
            f"Rate limit exceeded: at most {rate} requests per second per credential "
            f"(bursts up to {self.limiter.burst:g}). Retry after {retry_after} s, or have the "
            "server's operator raise TOWER_RATE_LIMIT_PER_SECOND / TOWER_RATE_LIMIT_BURST "
            "(0 disables the limit)."
        )
        return JSONResponse(
            error_body(429, detail, code="rate_limited"),
            status_code=429,
            headers={"Retry-After": str(retry_after), "X-RateLimit-Limit": rate},
        )
