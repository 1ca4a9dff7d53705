"""The typed Tower API client: one method per endpoint the CLI, SDK and MCP server call.

Methods return the decoded JSON bodies as the contract names them (`{app, runs}`,
`{version}`, `{run}`, `{run, $links}`), or the item list for list endpoints that are
fetched whole; paged run listings return `{runs, pages}` so callers can page on. Errors
arrive as :class:`ApiError` (the server answered) or :class:`ConnectionFailed` (it
did not), both raised by :class:`HttpClient`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from tower.client._http import ApiError, ConnectionFailed, HttpClient, raise_for_error

#: Upload chunk size: small enough for a smooth progress bar, large enough to be cheap.
UPLOAD_CHUNK_SIZE = 64 * 1024

#: The log stream stays open for as long as the run lives, so reads must never time out;
#: connecting and writing still do.
STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)

JsonDict = dict[str, Any]


def _seg(value: str | int) -> str:
    """One URL path segment: names may hold spaces, slashes or `#`, so encode everything."""
    return quote(str(value), safe="")


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched Server-Sent Event."""

    event: str
    data: str
    id: str | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Turn the lines of a `text/event-stream` body into events (WHATWG SSE rules).

    Comment lines (`:` keep-alives) are skipped, several `data:` lines join with
    newlines, a blank line dispatches, and an event cut off by the end of the stream
    is dropped, as a browser would.
    """
    event = ""
    data: list[str] = []
    event_id: str | None = None
    has_data = False
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if has_data:
                yield SseEvent(event=event or "message", data="\n".join(data), id=event_id)
            event, data, has_data = "", [], False
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
            has_data = True
        elif field == "id" and "\0" not in value:
            event_id = value
        # `retry:` and unknown fields are ignored: we reconnect on our own schedule.


def _chunks(
    data: bytes, on_progress: Callable[[int], None] | None, size: int = UPLOAD_CHUNK_SIZE
) -> Iterator[bytes]:
    """Yield `data` in chunks, reporting the bytes sent so far after each one."""
    sent = 0
    view = memoryview(data)
    for start in range(0, len(data), size):
        chunk = bytes(view[start : start + size])
        yield chunk
        sent += len(chunk)
        if on_progress is not None:
            on_progress(sent)


class TowerApi:
    """The Tower v1 API, bound to one server and one credential.

    Args:
        url: the server URL; its path is replaced by `/v1`.
        api_key: sent as `X-API-Key`.
        jwt: a session or team JWT, sent as `Authorization: Bearer` (wins over api_key).
        transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        jwt: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self._http = HttpClient(url, api_key=api_key, token=jwt, transport=transport)

    # -- plumbing ----------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TowerApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> JsonDict:
        # None means "not given"; an empty list (no repeated filter) is left out too.
        query = {k: v for k, v in params.items() if v is not None and v != []}
        return self._http.get_json(path, params=query)

    # -- session and environments ------------------------------------------------------

    def describe_session(self) -> JsonDict:
        """`GET /session` → `{session: {user, token, teams, ...}}`."""
        return self._get("/session")

    def list_environments(self) -> list[JsonDict]:
        """`GET /environments` → the environments (`{name, is_deletable}`)."""
        body = self._get("/environments", page=0, page_size=100)
        return list(body.get("environments", []))

    # -- apps --------------------------------------------------------------------------

    def list_apps(self) -> list[JsonDict]:
        """`GET /apps` → the `{app, runs}` summaries of every app (page 0 = no paging)."""
        body = self._get("/apps", page=0, page_size=100, num_runs=0)
        return list(body.get("apps", []))

    def create_app(self, name: str, short_description: str = "") -> JsonDict:
        """`POST /apps` → `{app}`."""
        return self._http.post_json("/apps", {"name": name, "short_description": short_description})

    def describe_app(self, name: str, environment: str | None = None) -> JsonDict:
        """`GET /apps/{name}` → `{app, runs}`; runs filtered to `environment` when given."""
        return self._get(f"/apps/{_seg(name)}", environment=environment)

    def delete_app(self, name: str) -> JsonDict:
        """`DELETE /apps/{name}` → `{app}`."""
        return self._http.request("DELETE", f"/apps/{_seg(name)}").json()

    def update_app(
        self,
        name: str,
        *,
        short_description: str | None = None,
        status: str | None = None,
        pending_timeout: int | None = None,
        running_timeout: int | None = None,
        retry_policy: JsonDict | None = None,
    ) -> JsonDict:
        """`PUT /apps/{name}` with only the fields given → `{app}`.

        `status` is `"active"` or `"disabled"`; timeouts are seconds (0 = no limit);
        `retry_policy` is a whole RunRetryPolicy (`max_retries`, `retry_delay_seconds`,
        `use_exponential_backoff`), since the server replaces it as one value.
        """
        fields = {
            "short_description": short_description,
            "status": status,
            "pending_timeout": pending_timeout,
            "running_timeout": running_timeout,
            "retry_policy": retry_policy,
        }
        body = {key: value for key, value in fields.items() if value is not None}
        return self._http.request("PUT", f"/apps/{_seg(name)}", json=body).json()

    def deploy(
        self,
        name: str,
        data: bytes,
        sha256: str,
        *,
        environment: str | None = None,
        all_environments: bool = False,
        idempotency_key: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> JsonDict:
        """`POST /apps/{name}/deploy` with the raw `.tar.gz` package → `{version}`.

        The body is streamed (chunked, no Content-Length) in 64 KiB pieces;
        `on_progress` receives the number of bytes sent so far after each piece.
        `Content-Encoding: gzip` describes the archive itself: httpx never compresses
        request bodies, so the bytes on the wire are exactly the ones `sha256` covers.
        """
        headers = {
            "Content-Type": "application/tar",
            "Content-Encoding": "gzip",
            "X-Tower-Checksum-SHA256": sha256.lower(),
        }
        if idempotency_key:
            headers["X-Tower-Idempotency-Key"] = idempotency_key
        params: dict[str, str] = {}
        if all_environments:
            params["all_environments"] = "true"
        elif environment:
            params["environment"] = environment
        response = self._http.request(
            "POST",
            f"/apps/{_seg(name)}/deploy",
            params=params,
            headers=headers,
            content=_chunks(data, on_progress),
        )
        return response.json()

    # -- runs --------------------------------------------------------------------------

    def run_app(
        self,
        name: str,
        environment: str = "default",
        parameters: dict[str, str] | None = None,
    ) -> JsonDict:
        """`POST /apps/{name}/runs` → `{run}`; `parameters` is always sent, maybe empty."""
        body = {"environment": environment, "parameters": dict(parameters or {})}
        return self._http.post_json(f"/apps/{_seg(name)}/runs", body)

    def list_runs(
        self,
        name: str,
        *,
        page: int = 0,
        page_size: int = 100,
        statuses: Sequence[str] = (),
        environment: str | None = None,
        start_at: str | None = None,
        end_at: str | None = None,
    ) -> JsonDict:
        """`GET /apps/{name}/runs` → `{runs, pages}`, newest first.

        `page=0` asks for every run at once; `statuses` becomes a repeated `status`
        query parameter (a run matches any of them); `start_at`/`end_at` are RFC 3339.
        """
        return self._get(
            f"/apps/{_seg(name)}/runs",
            **_run_filters(page, page_size, statuses, environment, start_at, end_at),
        )

    def search_runs(
        self,
        *,
        page: int = 0,
        page_size: int = 100,
        statuses: Sequence[str] = (),
        environment: str | None = None,
        start_at: str | None = None,
        end_at: str | None = None,
    ) -> JsonDict:
        """`GET /runs` → `{runs, pages}`: the runs of every app, with the filters of
        :meth:`list_runs`."""
        return self._get(
            "/runs", **_run_filters(page, page_size, statuses, environment, start_at, end_at)
        )

    def describe_run(self, name: str, number: int) -> JsonDict:
        """`GET /apps/{name}/runs/{number}` → `{run, $links}`."""
        return self._get(f"/apps/{_seg(name)}/runs/{_seg(number)}")

    def cancel_run(self, name: str, number: int) -> JsonDict:
        """`POST /apps/{name}/runs/{number}` (no body) → `{run, cancelled_child_runs}`."""
        response = self._http.request("POST", f"/apps/{_seg(name)}/runs/{_seg(number)}")
        return response.json()

    def run_graph(self, name: str, number: int) -> list[JsonDict]:
        """`GET /apps/{name}/runs/{number}/graph` → the run graph this run is part of
        (runs started from other runs with `run_app`), as `{id, parent_id}` edges whose
        ids are `{app_name, number}`; `parent_id` is null for a run no run started."""
        body = self._get(f"/apps/{_seg(name)}/runs/{_seg(number)}/graph")
        return list(body.get("runs", []))

    def run_logs(self, name: str, number: int) -> list[JsonDict]:
        """`GET /apps/{name}/runs/{number}/logs` → the run's log lines so far."""
        body = self._get(f"/apps/{_seg(name)}/runs/{_seg(number)}/logs")
        return list(body.get("log_lines", []))

    def stream_run_logs(self, name: str, number: int) -> Iterator[JsonDict]:
        """Follow `GET /apps/{name}/runs/{number}/logs/stream` (Server-Sent Events).

        Yields the `RunLogLine` of each `log` event as it arrives; other events
        (`warning`, `error`, unnamed) and lines that are not JSON objects are skipped.
        Ends when the server closes the stream. A connection that breaks mid-stream
        raises :class:`ConnectionFailed`, so callers can tell it from a clean close.
        """
        path = f"/apps/{_seg(name)}/runs/{_seg(number)}/logs/stream"
        try:
            with self._http.http.stream(
                "GET", path, headers={"Accept": "text/event-stream"}, timeout=STREAM_TIMEOUT
            ) as response:
                if not response.is_success:
                    response.read()
                    raise_for_error(response)
                content_type = response.headers.get("content-type", "")
                if not content_type.startswith("text/event-stream"):
                    raise ApiError(
                        response.status_code,
                        f"The log stream answered with {content_type or 'no content type'} "
                        "instead of text/event-stream.",
                    )
                for event in parse_sse(response.iter_lines()):
                    line = _log_line(event)
                    if line is not None:
                        yield line
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"The log stream from {self._http.url} was interrupted ({exc})."
            ) from exc

    # -- environments and versions (section: environments) -----------------------------

    # -- secrets (section: secrets) ----------------------------------------------------

    # -- catalogs (section: catalogs) --------------------------------------------------


def _run_filters(
    page: int,
    page_size: int,
    statuses: Sequence[str],
    environment: str | None,
    start_at: str | None,
    end_at: str | None,
) -> dict[str, Any]:
    """The query both run listings share (None values are dropped by `_get`)."""
    return {
        "page": page,
        "page_size": page_size,
        "status": list(statuses),
        "environment": environment,
        "start_at": start_at,
        "end_at": end_at,
    }


def _log_line(event: SseEvent) -> JsonDict | None:
    """The RunLogLine carried by a `log` event, or None for anything else."""
    if event.event != "log":
        return None
    try:
        value = json.loads(event.data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
