"""Apps that start other apps and wait for them: `run_app`, `wait_for_run`, `wait_for_runs`.

    import tower
    from tower.exceptions import RunFailedError

    runs = [tower.run_app("child", parameters={"n": str(n)}) for n in range(3)]
    ok, failed = tower.wait_for_runs(runs, timeout=3600)

Same names, signatures and exceptions as the official SDK. Configuration comes from
the environment a runner gives every run: `TOWER_URL` (the API is under `/v1`),
`TOWER_JWT` (sent as a Bearer token, preferred) or `TOWER_API_KEY` (`X-API-Key`),
the environment from `TOWER__RUNTIME__ENVIRONMENT_NAME` then `TOWER_ENVIRONMENT`, and
`TOWER__RUNTIME__RUN_ID`, sent as the new run's parent.

Waiting is a server long poll (`POST /v1/runs/await`) that answers as soon as one of
the runs ends, so a parent resumes within milliseconds of its child finishing. A
server without that endpoint (404) is polled the official SDK's way instead:
`GET /v1/apps/{name}/runs/{number}` every 2 seconds.

Every run of an app that calls `run_app` pays for this module's imports, so it uses
`json` and a bare socket (see `tower._http`) and neither `dataclasses` (it imports
`inspect`) nor `typing`: on a small host those two cost more than the rest together.
"""

from __future__ import annotations

import json
import time

from tower import _env, _http
from tower.exceptions import (
    AppNotFoundError,
    NotFoundException,
    RunAppUnauthorizedError,
    RunFailedError,
    TimeoutException,
    UnauthorizedException,
    UnhandledRunStateException,
    UnknownException,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any, Protocol

    class RunRef(Protocol):
        """Anything that names a run: our Run, the official SDK's Run, ..."""

        @property
        def app_name(self) -> str: ...
        @property
        def number(self) -> int: ...


__all__ = ["Run", "RunParameter", "run_app", "wait_for_run", "wait_for_runs"]

DEFAULT_URL = "http://127.0.0.1:8000"  # what `tower up` serves, like the CLI's default
DEFAULT_ENVIRONMENT = "default"
USER_AGENT = "tower-oss-sdk"
DEFAULT_WAIT_TIMEOUT_S = 86_400.0  # one day, as in the official SDK

REQUEST_TIMEOUT_S = 30.0
#: how long one long poll may be held; the server allows up to 60 s
LONG_POLL_S = 30.0
#: extra read time on top of a long poll before the answer counts as lost
LONG_POLL_MARGIN_S = 15.0
#: the server accepts at most this many runs per long poll
MAX_RUNS_PER_POLL = 100
#: describe-polling interval against a server without the long-poll endpoint
LEGACY_POLL_S = 2.0
#: consecutive unanswered or 5xx requests before waiting gives up
MAX_NETWORK_FAILURES = 5
RETRY_PAUSE_S = 1.0
#: how often run_app retries a 429 (the server did not act on it) before giving up
MAX_RATE_LIMITED_TRIES = 5
MAX_RETRY_AFTER_S = 10.0

SUCCESSFUL = frozenset({"exited"})
FAILED = frozenset({"crashed", "errored", "cancelled"})
WAITING = frozenset({"pending", "scheduled", "starting", "running", "retrying"})
_NOT_FOUND_CODES = frozenset({"app_not_found", "run_not_found"})

#: base URLs found to lack the long-poll endpoint (probed once per process)
_LEGACY_SERVERS: set[str] = set()


class _Frozen:
    """Immutability, equality, hashing, repr and pickling over `__slots__`: what a
    frozen dataclass gives, without the import. Subclasses list their fields in
    `_fields` (also their `__slots__`) and take them in that order in `__init__`."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def _assign(self, *values: object) -> None:
        for name, value in zip(self._fields, values, strict=True):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # The default pickling restores slots through __setattr__, which refuses.
        return type(self), self._values()


class RunParameter(_Frozen):
    """One parameter of a run, as the run was started with it."""

    _fields = ("name", "value", "hidden")
    __slots__ = _fields
    name: str
    value: str
    hidden: bool

    def __init__(self, name: str, value: str, hidden: bool = False) -> None:
        self._assign(name, value, hidden)


class Run(_Frozen):
    """A run as the API described it (immutable; wait or fetch again to see it change).

    Fields are the contract's Run fields that apps use; `link` is `$link` on the wire.
    """

    _fields = (
        "app_name",
        "number",
        "run_id",
        "status",
        "status_group",
        "exit_code",
        "environment",
        "app_version",
        "num_attempts",
        "created_at",
        "started_at",
        "ended_at",
        "parameters",
        "link",
    )
    __slots__ = _fields
    app_name: str
    number: int
    run_id: str
    status: str
    status_group: str
    exit_code: int | None
    environment: str
    app_version: str
    num_attempts: int
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    parameters: tuple[RunParameter, ...]
    link: str

    def __init__(
        self,
        app_name: str,
        number: int,
        run_id: str = "",
        status: str = "",
        status_group: str = "",
        exit_code: int | None = None,
        environment: str = "",
        app_version: str = "",
        num_attempts: int = 0,
        created_at: str | None = None,
        started_at: str | None = None,
        ended_at: str | None = None,
        parameters: tuple[RunParameter, ...] = (),
        link: str = "",
    ) -> None:
        self._assign(
            app_name,
            number,
            run_id,
            status,
            status_group,
            exit_code,
            environment,
            app_version,
            num_attempts,
            created_at,
            started_at,
            ended_at,
            tuple(parameters),
            link,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        """Build from the API's Run JSON, tolerating missing or extra keys."""
        params = data.get("parameters")
        return cls(
            app_name=_text(data.get("app_name")),
            number=_int(data.get("number")) or 0,
            run_id=_text(data.get("run_id")),
            status=_text(data.get("status")),
            status_group=_text(data.get("status_group")),
            exit_code=_int(data.get("exit_code")),
            environment=_text(data.get("environment")),
            app_version=_text(data.get("app_version")),
            num_attempts=_int(data.get("num_attempts")) or 0,
            created_at=_optional_text(data.get("created_at")),
            started_at=_optional_text(data.get("started_at")),
            ended_at=_optional_text(data.get("ended_at")),
            parameters=tuple(_parameter(p) for p in params if isinstance(p, dict))
            if isinstance(params, list)
            else (),
            link=_text(data.get("$link")),
        )


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _parameter(data: Mapping[str, Any]) -> RunParameter:
    return RunParameter(_text(data.get("name")), _text(data.get("value")), bool(data.get("hidden")))


# ----------------------------------------------------------------------- the API


class _Api:
    """Where and as whom to call the Tower API, read from the environment per call
    (an app may change its environment before calling)."""

    __slots__ = ("base", "headers")

    def __init__(self, base: _http.Url, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers

    @classmethod
    def from_env(cls) -> _Api:
        raw = _env.env_text("TOWER_URL") or DEFAULT_URL
        try:
            base = _http.parse_url(raw)
        except ValueError as exc:
            raise UnknownException(f"TOWER_URL is not usable: {exc}") from None
        if not base.path.endswith("/v1"):
            base = base.join("/v1")
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        jwt = _env.env_text("TOWER_JWT")
        api_key = _env.env_text("TOWER_API_KEY")
        if jwt:
            headers["Authorization"] = f"Bearer {jwt.strip()}"
        elif api_key:
            headers["X-API-Key"] = api_key.strip()
        return cls(base, headers)

    def send(
        self, method: str, path: str, payload: object = None, *, timeout: float
    ) -> _http.HttpResponse:
        """One request; network problems raise OSError."""
        headers = self.headers
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers = {**headers, "Content-Type": "application/json"}
        url = self.base.join(path)
        return _http.request(method, url, headers=headers, body=body, timeout=timeout)


def _json(response: _http.HttpResponse) -> Any:
    try:
        return json.loads(response.body) if response.body else None
    except ValueError:
        return None


def _error_text(response: _http.HttpResponse) -> str:
    """The server's explanation: our error bodies carry `detail` and `message`,
    RFC 7807 ones `detail` and `title`."""
    payload = _json(response)
    if isinstance(payload, dict):
        for key in ("detail", "message", "title"):
            if isinstance(payload.get(key), str) and payload[key]:
                return payload[key]
    text = response.body[:300].decode("utf-8", "replace").strip()
    return text or f"HTTP {response.status}"


def _error_code(response: _http.HttpResponse) -> str:
    payload = _json(response)
    return str(payload.get("code") or "") if isinstance(payload, dict) else ""


def _run_path(app_name: str, number: int | None = None) -> str:
    path = f"/apps/{_http.quote_segment(app_name)}/runs"
    return path if number is None else f"{path}/{int(number)}"


# ------------------------------------------------------------------------ run_app


def run_app(
    name: str,
    environment: str | None = None,
    parameters: dict[str, str] | None = None,
) -> Run:
    """Start a run of app `name` and return it at once (it is usually `pending`).

    Raises AppNotFoundError for an unknown app (or one not deployed to the
    environment), RunAppUnauthorizedError (a RuntimeError and an UnauthorizedException)
    for refused credentials, and UnknownException for anything else.
    """
    api = _Api.from_env()
    body = {
        "environment": environment or _default_environment(),
        "parameters": {str(key): str(value) for key, value in (parameters or {}).items()},
        "parent_run_id": _env.env_text("TOWER__RUNTIME__RUN_ID"),
    }
    response = _send_run_app(api, name, body)
    if 200 <= response.status < 300:
        payload = _json(response)
        run = payload.get("run") if isinstance(payload, dict) else None
        if not isinstance(run, dict):
            raise UnknownException(f"Tower answered run_app('{name}') without a run.")
        return Run.from_json(run)
    detail = _error_text(response)
    if response.status in (401, 403):
        title = _title(response)
        raise RunAppUnauthorizedError(f"Error running app: {title}: {detail}")
    if response.status == 404:
        raise _app_not_found(name, detail, _error_code(response))
    raise UnknownException(f"Could not run app '{name}' (HTTP {response.status}): {detail}")


def _default_environment() -> str:
    return (
        _env.env_text("TOWER__RUNTIME__ENVIRONMENT_NAME")
        or _env.env_text("TOWER_ENVIRONMENT")
        or DEFAULT_ENVIRONMENT
    )


def _send_run_app(api: _Api, name: str, body: dict[str, Any]) -> _http.HttpResponse:
    # Only a 429 is retried: the server did not act on it. After a network error the
    # run may or may not exist, and starting it twice would be worse than failing.
    def send() -> _http.HttpResponse:
        try:
            return api.send("POST", _run_path(name), body, timeout=REQUEST_TIMEOUT_S)
        except OSError as exc:
            raise UnknownException(
                f"Could not reach the Tower API at {api.base} to run app '{name}': {exc}"
            ) from exc

    response = send()
    for _ in range(MAX_RATE_LIMITED_TRIES - 1):
        if response.status != 429:
            break
        time.sleep(_retry_after(response))
        response = send()
    return response


def _title(response: _http.HttpResponse) -> str:
    payload = _json(response)
    title = payload.get("title") if isinstance(payload, dict) else None
    return str(title) if title else "Unauthorized"


def _app_not_found(name: str, detail: str, code: str) -> AppNotFoundError:
    error = AppNotFoundError(name)
    # Our server also answers 404 when the environment is unknown or has no deployed
    # version: keep the class apps catch, but say which one it was and how to fix it.
    if code and code != "app_not_found" and detail:
        error.args = (f"{error.args[0]} {detail}",)
    return error


def _retry_after(response: _http.HttpResponse) -> float:
    try:
        seconds = float(response.headers.get("retry-after", RETRY_PAUSE_S))
    except ValueError:
        seconds = RETRY_PAUSE_S
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


# ---------------------------------------------------------------------- waiting


def wait_for_run(
    run: RunRef,
    timeout: float | None = DEFAULT_WAIT_TIMEOUT_S,
    raise_on_failure: bool = False,
) -> Run:
    """Block until `run` ends and return it as it ended.

    Raises RunFailedError if it crashed, errored or was cancelled and
    `raise_on_failure` is set; TimeoutException after `timeout` seconds (None waits
    forever); NotFoundException, UnauthorizedException, UnhandledRunStateException,
    or UnknownException when the API cannot be reached.
    """
    successful, failed = _wait([run], timeout, raise_on_failure)
    return (successful or failed)[0]


def wait_for_runs(
    runs: Iterable[RunRef],
    timeout: float | None = DEFAULT_WAIT_TIMEOUT_S,
    raise_on_failure: bool = False,
) -> tuple[list[Run], list[Run]]:
    """Block until every run ends; return (successful, failed), each in the given order.

    With `raise_on_failure`, RunFailedError is raised as soon as any run is seen to
    have failed, without waiting for the others. Other errors as for `wait_for_run`.
    """
    return _wait(list(runs), timeout, raise_on_failure)


def _wait(
    runs: Sequence[RunRef], timeout: float | None, raise_on_failure: bool
) -> tuple[list[Run], list[Run]]:
    waiter = _Waiter(_Api.from_env(), timeout)
    final: dict[int, Run] = {}
    pending = list(range(len(runs)))
    while pending:
        batch = pending[:MAX_RUNS_PER_POLL]
        answers = waiter.current([runs[i] for i in batch])
        for index, answer in zip(batch, answers, strict=True):
            if _has_ended(answer, raise_on_failure):
                final[index] = answer
        pending = [i for i in pending if i not in final]
        if pending and waiter.remaining() <= 0:
            raise TimeoutException(waiter.elapsed())
    ended = [final[i] for i in range(len(runs))]
    return (
        [r for r in ended if r.status in SUCCESSFUL],
        [r for r in ended if r.status in FAILED],
    )


def _has_ended(run: Run, raise_on_failure: bool) -> bool:
    if run.status in SUCCESSFUL:
        return True
    if run.status in FAILED:
        if raise_on_failure:
            raise RunFailedError(run.app_name, run.number, run.status)
        return True
    if run.status in WAITING:
        return False
    raise UnhandledRunStateException(run.status)


class _Waiter:
    """Fetches the runs' next states: by long poll, or by describe polling on an
    older server; retries what the network or a busy server lost."""

    def __init__(self, api: _Api, timeout: float | None) -> None:
        self.api = api
        self.timeout = timeout
        self.started = time.monotonic()
        self.legacy = str(api.base) in _LEGACY_SERVERS
        self.legacy_rounds = 0
        self.failures = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return float("inf") if self.timeout is None else self.timeout - self.elapsed()

    def current(self, runs: list[RunRef]) -> list[Run]:
        """The runs' states: as soon as one has ended, or when the poll times out."""
        if not self.legacy:
            answers = self._long_poll(runs)
            if answers is not None:
                return answers
            self.legacy = True  # this server predates POST /v1/runs/await
            _LEGACY_SERVERS.add(str(self.api.base))
        if self.legacy_rounds:
            time.sleep(max(0.0, min(LEGACY_POLL_S, self.remaining())))
        self.legacy_rounds += 1
        return [self._describe(run) for run in runs]

    def _long_poll(self, runs: list[RunRef]) -> list[Run] | None:
        hold = max(0.0, min(LONG_POLL_S, self.remaining()))
        body = {
            "runs": [{"app_name": r.app_name, "number": int(r.number)} for r in runs],
            "timeout_seconds": hold,
        }
        response = self._send("POST", "/runs/await", body, hold + LONG_POLL_MARGIN_S)
        if response.status == 200:
            payload = _json(response)
            listed = payload.get("runs") if isinstance(payload, dict) else None
            if not isinstance(listed, list) or len(listed) != len(runs):
                raise UnknownException("Tower answered POST /v1/runs/await with no run list.")
            return [Run.from_json(item if isinstance(item, dict) else {}) for item in listed]
        missing_endpoint = response.status == 405 or (
            response.status == 404 and _error_code(response) not in _NOT_FOUND_CODES
        )
        if missing_endpoint:
            return None
        raise _wait_error(response)

    def _describe(self, run: RunRef) -> Run:
        path = _run_path(run.app_name, run.number)
        response = self._send("GET", path, None, REQUEST_TIMEOUT_S)
        if response.status == 200:
            payload = _json(response)
            described = payload.get("run") if isinstance(payload, dict) else None
            if not isinstance(described, dict):
                raise UnknownException(f"Tower answered GET /v1{path} without a run.")
            return Run.from_json(described)
        raise _wait_error(response)

    def _send(self, method: str, path: str, payload: object, timeout: float) -> _http.HttpResponse:
        """A request, retried while the network fails, the server errs (5xx) or asks
        to slow down (429); any other answer is returned."""
        while True:
            try:
                response = self.api.send(method, path, payload, timeout=timeout)
            except OSError as exc:
                self._failed(f"{type(exc).__name__}: {exc}")
                continue
            if response.status == 429:  # not a failure: the server asked us to pace
                self._pause(_retry_after(response))
                continue
            if response.status >= 500:
                self._failed(f"HTTP {response.status}: {_error_text(response)}")
                continue
            self.failures = 0
            return response

    def _failed(self, reason: str) -> None:
        self.failures += 1
        if self.failures >= MAX_NETWORK_FAILURES:
            raise UnknownException(
                f"There was a problem with the Tower API at {self.api.base}: "
                f"{self.failures} attempts in a row failed; the last: {reason}"
            )
        self._pause(RETRY_PAUSE_S * self.failures)

    def _pause(self, seconds: float) -> None:
        if self.remaining() <= 0:
            raise TimeoutException(self.elapsed())
        time.sleep(max(0.0, min(seconds, self.remaining())))


def _wait_error(response: _http.HttpResponse) -> Exception:
    detail = _error_text(response)
    if response.status in (401, 403):
        return UnauthorizedException(detail)
    if response.status == 404:
        return NotFoundException(detail)
    return UnknownException(f"Tower answered HTTP {response.status}: {detail}")
