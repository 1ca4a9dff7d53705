"""The SDK's HTTP calls to the Tower API, on the standard library's `http.client`.

Not httpx: the SDK runs at the start of every app (`import tower; tower.run_app(...)`)
and must stay light; httpx and its dependencies cost far more to import than
`http.client`. One request per connection: an app makes few calls, and a long poll
holds its connection anyway. Proxy variables are not honoured: the SDK talks to the
control plane that started the run.
"""

from __future__ import annotations

import http.client
from urllib.parse import quote, urlsplit

__all__ = ["HttpResponse", "Url", "parse_url", "quote_segment", "request"]

#: the largest answer the SDK reads (a page of runs is a few hundred KiB at most)
MAX_BODY = 64 * 1024 * 1024


class Url:
    """The parts of an http(s) URL that a request needs."""

    __slots__ = ("host", "path", "port", "scheme")

    def __init__(self, scheme: str, host: str, port: int, path: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.path = path

    def join(self, path: str) -> Url:
        """This URL with `path` appended to its own path."""
        return Url(self.scheme, self.host, self.port, self.path.rstrip("/") + path)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"


class HttpResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        #: lower-cased names; a repeated header keeps its last value
        self.headers = headers
        self.body = body


def parse_url(url: str) -> Url:
    """Split `scheme://host[:port][/path]`; raise ValueError for anything else."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    return Url(scheme, parts.hostname, port, parts.path.rstrip("/"))


def quote_segment(text: str) -> str:
    """Percent-encode `text` for use as one path segment."""
    return quote(text, safe="")


def request(
    method: str,
    url: Url,
    *,
    headers: dict[str, str],
    body: bytes | None = None,
    timeout: float,
) -> HttpResponse:
    """Send one request and read the whole answer.

    `timeout` bounds connecting and each wait for data. Network problems raise
    OSError (TimeoutError, ConnectionError, ssl.SSLError) or http.client.HTTPException,
    which is re-raised as ConnectionError so callers handle one family.
    """
    connection_class = (
        http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(url.host, url.port, timeout=timeout)
    try:
        connection.request(method, url.path or "/", body=body, headers=headers)
        response = connection.getresponse()
        data = response.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise ConnectionError("the answer is too large")
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
        return HttpResponse(response.status, answer_headers, data)
    except http.client.HTTPException as exc:
        raise ConnectionError(f"bad HTTP answer: {exc!r}") from exc
    finally:
        connection.close()
