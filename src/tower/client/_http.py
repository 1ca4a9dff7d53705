"""The one place that turns HTTP into Python: base URL, auth headers, error mapping."""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_TIMEOUT_S = 30.0
USER_AGENT = "tower-oss-client"


class ApiError(Exception):
    """The Tower API answered with an error body."""

    def __init__(
        self, status: int, detail: str, *, code: str = "", errors: list[dict] | None = None
    ) -> None:
        self.status = status
        self.detail = detail
        self.code = code
        self.errors = errors or []
        super().__init__(self.describe())

    def describe(self) -> str:
        """The detail plus each listed error message, as a person should read it."""
        extra = [e.get("message", "") for e in self.errors if e.get("message")]
        extra = [m for m in extra if m and m not in self.detail]
        return "\n".join([self.detail, *extra]) if extra else self.detail


class ConnectionFailed(Exception):
    """The Tower API could not be reached."""


def api_base(url: str) -> str:
    """The API root for a server URL: `<scheme>://<host>[:port]/v1` (the path is replaced)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(path="/v1", query=None, fragment=None))


def raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") or body.get("message") or response.text or response.reason_phrase
    raise ApiError(
        response.status_code,
        str(detail),
        code=str(body.get("code", "")),
        errors=body.get("errors") if isinstance(body.get("errors"), list) else [],
    )


class HttpClient:
    """An httpx client bound to a Tower server and one credential.

    Args:
        url: the server URL (any path is replaced by `/v1`).
        api_key: sent as `X-API-Key`.
        token: a JWT or runner token, sent as `Authorization: Bearer`.
        transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif api_key:
            headers["X-API-Key"] = api_key
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=api_base(url), headers=headers, timeout=timeout, transport=transport
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"Could not reach the Tower API at {self.url} ({exc}). "
                "Is the server running (`tower up`) and TOWER_URL right?"
            ) from exc
        raise_for_error(response)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post_json(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
