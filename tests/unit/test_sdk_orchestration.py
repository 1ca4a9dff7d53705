"""tower.run_app / wait_for_run / wait_for_runs over real HTTP.

Against a real control plane on loopback (the API tests' server, on SQLite) with a
fake runner that finishes runs through the runner protocol; and against a small
scripted HTTP server where an odd answer is needed (500, 503, 429, chunked bodies,
an older server without POST /v1/runs/await).
"""

from __future__ import annotations

import copy
import json
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.api import conftest as api_conftest
from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package
from tests.live import free_port

import tower
from tower import _orchestration
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

api_server = api_conftest.api_server  # the API tests' real server, reused here
bootstrapped_template = api_conftest.bootstrapped_template


@pytest.fixture
def dialect() -> str:
    # The SDK does not care which database the server uses.
    return "sqlite"


@pytest.fixture
def deployed(api_server: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ApiServer:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        assert deploy(api, "hello", make_package(tmp_path / "pkg")).status_code == 201
    monkeypatch.setenv("TOWER_URL", api_server.url)
    monkeypatch.setenv("TOWER_API_KEY", api_server.api_key)
    return api_server


def finish_later(server: ApiServer, outcomes: list[tuple[str, int]], delay: float = 0.3) -> None:
    """In the background: claim the pending runs in order, then end each after `delay`
    with its (status, exit_code)."""
    runner = FakeRunner(server)

    def drive() -> None:
        for status, code in outcomes:
            assignment = runner.claim(wait=10)
            assert assignment is not None
            runner.status(assignment, "running")
            time.sleep(delay)
            runner.status(assignment, status, exit_code=code)

    threading.Thread(target=drive, daemon=True).start()


# ----------------------------------------------------------------- run_app, real server


def test_run_app_starts_a_run(deployed: ApiServer) -> None:
    run = tower.run_app("hello", parameters={"friend": "Ada"})
    assert isinstance(run, _orchestration.Run)
    assert (run.app_name, run.number, run.status, run.environment) == (
        "hello",
        1,
        "pending",
        "default",
    )
    assert run.run_id and run.link.endswith("/apps/hello/runs/1") and run.created_at
    assert _orchestration.RunParameter("friend", "Ada", False) in run.parameters


def test_run_app_names_the_calling_run_as_parent(
    deployed: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tower.run_app("hello")
    monkeypatch.setenv("TOWER__RUNTIME__RUN_ID", parent.run_id)
    child = tower.run_app("hello")
    with deployed.client() as api:
        described = api.get(f"/apps/hello/runs/{child.number}").json()["run"]
    assert described["parent_run_id"] == parent.run_id
    assert described["initiator"]["type"] == "tower_run"


def test_run_app_unknown_app(deployed: ApiServer) -> None:
    with pytest.raises(AppNotFoundError, match="App 'nope' not found in the Tower"):
        tower.run_app("nope")


def test_run_app_environment_without_a_version_says_so(deployed: ApiServer) -> None:
    with pytest.raises(AppNotFoundError, match="Environment 'staging' does not exist"):
        tower.run_app("hello", environment="staging")


def test_run_app_other_errors_carry_the_servers_message(deployed: ApiServer) -> None:
    with pytest.raises(UnknownException, match=r"HTTP 422.*Unknown parameter 'nope'"):
        tower.run_app("hello", parameters={"nope": "1"})


def test_run_app_refused_credentials(deployed: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_API_KEY", "sk-not-a-key")
    with pytest.raises(RunAppUnauthorizedError) as caught:
        tower.run_app("hello")
    # Both what the official SDK raises (RuntimeError) and what its name says.
    assert isinstance(caught.value, RuntimeError)
    assert isinstance(caught.value, UnauthorizedException)
    assert str(caught.value).startswith("Error running app: Unauthorized")


# ------------------------------------------------------------- waiting, real server


def test_wait_for_run_returns_the_finished_run(deployed: ApiServer) -> None:
    run = tower.run_app("hello")
    finish_later(deployed, [("exited", 0)])
    started = time.monotonic()
    final = tower.wait_for_run(run, timeout=30)
    assert (final.number, final.status, final.exit_code) == (1, "exited", 0)
    assert final.status_group == "successful" and final.ended_at
    assert time.monotonic() - started < 5  # a long poll, not 2 s polling rounds


def test_wait_for_run_failure(deployed: ApiServer) -> None:
    first, second = tower.run_app("hello"), tower.run_app("hello")
    finish_later(deployed, [("crashed", 3), ("crashed", 4)], delay=0.1)
    final = tower.wait_for_run(first, timeout=30, raise_on_failure=False)
    assert (final.status, final.exit_code, final.status_group) == ("crashed", 3, "failed")
    with pytest.raises(RunFailedError, match=r"Run hello#2 failed with status 'crashed'"):
        tower.wait_for_run(second, timeout=30, raise_on_failure=True)


def test_wait_for_run_times_out(deployed: ApiServer) -> None:
    run = tower.run_app("hello")
    started = time.monotonic()
    with pytest.raises(TimeoutException, match="A timeout occurred after"):
        tower.wait_for_run(run, timeout=1)
    assert 1.0 <= time.monotonic() - started < 4


def test_wait_for_runs_splits_successes_and_failures(deployed: ApiServer) -> None:
    runs = [tower.run_app("hello") for _ in range(3)]
    finish_later(deployed, [("exited", 0), ("crashed", 1), ("exited", 0)], delay=0.1)
    ok, failed = tower.wait_for_runs(runs, timeout=30)
    assert [r.number for r in ok] == [1, 3] and [r.number for r in failed] == [2]
    assert [r.status for r in failed] == ["crashed"]
    assert tower.wait_for_runs([], timeout=1) == ([], [])


def test_wait_for_runs_raises_at_the_first_failure(deployed: ApiServer) -> None:
    still_running, crashing = tower.run_app("hello"), tower.run_app("hello")
    runner = FakeRunner(deployed)
    runner.status(runner.claim(), "running")  # run 1 stays active throughout
    finish_later(deployed, [("crashed", 2)])
    started = time.monotonic()
    with pytest.raises(RunFailedError, match="hello#2"):
        tower.wait_for_runs([still_running, crashing], timeout=30, raise_on_failure=True)
    assert time.monotonic() - started < 5


def test_wait_for_unknown_run(deployed: ApiServer) -> None:
    # Any object with app_name and number will do (the official SDK's Run, say).
    with pytest.raises(NotFoundException, match="no run #99"):
        tower.wait_for_run(SimpleNamespace(app_name="hello", number=99), timeout=5)


def test_wait_with_refused_credentials(
    deployed: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tower.run_app("hello")
    monkeypatch.setenv("TOWER_API_KEY", "sk-not-a-key")
    with pytest.raises(UnauthorizedException):
        tower.wait_for_run(run, timeout=5)


# ---------------------------------------------------------- a scripted HTTP server


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


Answer = tuple[int, Any] | tuple[int, Any, dict[str, str]]


@dataclass
class FakeTower:
    """Answers each request with `handler(method, path, body)`: (status, json[, headers]).
    A `bytes` body is sent as is; the header `Transfer-Encoding: chunked` chunks it."""

    handler: Callable[[str, str, Any], Answer]
    seen: list[Seen] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def fake_tower(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeTower]]:
    servers: list[ThreadingHTTPServer] = []

    def start(handler: Callable[[str, str, Any], Answer]) -> FakeTower:
        fake = FakeTower(handler)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(fake))
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
        monkeypatch.setenv("TOWER_URL", fake.url)
        return fake

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _handler_class(fake: FakeTower) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.seen.append(Seen(self.command, self.path, headers, body, time.monotonic()))
            status, payload, *extra = fake.handler(self.command, self.path, body)
            out_headers = extra[0] if extra else {}
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in out_headers.items():
                self.send_header(name, value)
            if out_headers.get("Transfer-Encoding") == "chunked":
                self.end_headers()
                for start in range(0, len(data), 7):
                    piece = data[start : start + 7]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            self.close_connection = True

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    return Handler


def run_json(number: int = 1, status: str = "pending", **extra: Any) -> dict[str, Any]:
    return {
        "$link": f"http://x/apps/hello/runs/{number}",
        "app_name": "hello",
        "number": number,
        "run_id": f"00000000-0000-0000-0000-00000000000{number}",
        "status": status,
        "environment": "default",
        "parameters": [],
        "some_future_field": {"ignored": True},
        **extra,
    }


def error_json(status: int, detail: str, code: str = "") -> dict[str, Any]:
    return {"status": status, "title": "Error", "detail": detail, "code": code}


def test_run_app_wire(
    fake_tower: Callable[..., FakeTower], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_tower(lambda method, path, body: (201, {"run": run_json()}))
    monkeypatch.setenv("TOWER_URL", fake.url + "/v1/")  # a base with /v1 is used as is
    monkeypatch.setenv("TOWER_JWT", "jwt-token")
    monkeypatch.setenv("TOWER_API_KEY", "sk-key")
    monkeypatch.setenv("TOWER_ENVIRONMENT", "staging")
    monkeypatch.setenv("TOWER__RUNTIME__ENVIRONMENT_NAME", "production")
    monkeypatch.setenv("TOWER__RUNTIME__RUN_ID", "11111111-2222-3333-4444-555555555555")
    run = tower.run_app("hello", parameters={"n": 1})  # type: ignore[dict-item]
    tower.run_app("hello", environment="dev")
    monkeypatch.delenv("TOWER_JWT")
    monkeypatch.delenv("TOWER__RUNTIME__ENVIRONMENT_NAME")
    monkeypatch.setenv("TOWER__RUNTIME__RUN_ID", " ")
    tower.run_app("hello")
    monkeypatch.delenv("TOWER_ENVIRONMENT")
    tower.run_app("hello")
    first, explicit, by_key, plain = fake.seen
    assert (first.method, first.path) == ("POST", "/v1/apps/hello/runs")
    assert first.headers["authorization"] == "Bearer jwt-token"
    assert "x-api-key" not in first.headers
    assert first.headers["content-type"] == "application/json"
    assert first.body == {
        "environment": "production",
        "parameters": {"n": "1"},
        "parent_run_id": "11111111-2222-3333-4444-555555555555",
    }
    assert explicit.body["environment"] == "dev"
    assert by_key.headers["x-api-key"] == "sk-key" and "authorization" not in by_key.headers
    assert by_key.body["environment"] == "staging" and by_key.body["parent_run_id"] is None
    assert plain.body["environment"] == "default"
    assert run.number == 1 and run.link == "http://x/apps/hello/runs/1"


def test_run_app_server_error(fake_tower: Callable[..., FakeTower]) -> None:
    fake_tower(lambda *_: (500, error_json(500, "Internal error; error_id abc123")))
    with pytest.raises(UnknownException, match=r"HTTP 500\): Internal error; error_id abc123"):
        tower.run_app("hello")


def test_run_app_is_retried_when_rate_limited(fake_tower: Callable[..., FakeTower]) -> None:
    answers = iter(
        [(429, error_json(429, "slow down"), {"Retry-After": "0"}), (201, {"run": run_json()})]
    )
    fake = fake_tower(lambda *_: next(answers))
    assert tower.run_app("hello").number == 1
    assert len(fake.seen) == 2


def test_chunked_answers_are_read(fake_tower: Callable[..., FakeTower]) -> None:
    body = json.dumps({"run": run_json(7)}).encode()
    fake_tower(lambda *_: (201, body, {"Transfer-Encoding": "chunked"}))
    assert tower.run_app("hello").number == 7


def test_falls_back_to_polling_an_older_server(fake_tower: Callable[..., FakeTower]) -> None:
    polls = iter(["running", "exited"])

    def older_server(method: str, path: str, body: Any) -> Answer:
        if path == "/v1/runs/await":
            return 404, {"title": "Not Found", "status": 404, "detail": "no such route"}
        return 200, {"run": run_json(1, next(polls))}

    fake = fake_tower(older_server)
    started = time.monotonic()
    final = tower.wait_for_run(SimpleNamespace(app_name="hello", number=1), timeout=30)
    assert final.status == "exited"
    describes = [s for s in fake.seen if s.method == "GET"]
    assert [s.path for s in describes] == ["/v1/apps/hello/runs/1"] * 2
    assert describes[1].at - describes[0].at >= _orchestration.LEGACY_POLL_S - 0.05
    assert time.monotonic() - started < 10
    # The server is remembered: the next wait polls at once, without asking again.
    polls = iter(["exited"])
    tower.wait_for_run(SimpleNamespace(app_name="hello", number=1), timeout=30)
    assert [s.path for s in fake.seen].count("/v1/runs/await") == 1


def test_waits_by_long_poll_for_the_runs_still_active(fake_tower: Callable[..., FakeTower]) -> None:
    answers = iter(
        [
            (200, {"runs": [run_json(1, "running"), run_json(2, "exited")]}),
            (200, {"runs": [run_json(1, "cancelled")]}),
        ]
    )
    fake = fake_tower(lambda *_: next(answers))
    refs = [SimpleNamespace(app_name="hello", number=n) for n in (1, 2)]
    ok, failed = tower.wait_for_runs(refs, timeout=100)
    assert [r.number for r in ok] == [2] and [(r.number, r.status) for r in failed] == [
        (1, "cancelled")
    ]
    first, second = fake.seen
    assert (first.method, first.path) == ("POST", "/v1/runs/await")
    assert first.body["runs"] == [
        {"app_name": "hello", "number": 1},
        {"app_name": "hello", "number": 2},
    ]
    assert 0 < first.body["timeout_seconds"] <= _orchestration.LONG_POLL_S
    assert second.body["runs"] == [{"app_name": "hello", "number": 1}]


def test_unhandled_run_state(fake_tower: Callable[..., FakeTower]) -> None:
    fake_tower(lambda *_: (200, {"runs": [run_json(1, "hibernating")]}))
    with pytest.raises(UnhandledRunStateException, match="'hibernating' was unexpected"):
        tower.wait_for_run(SimpleNamespace(app_name="hello", number=1), timeout=5)


def test_transient_server_errors_are_retried(
    fake_tower: Callable[..., FakeTower], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_orchestration, "RETRY_PAUSE_S", 0.01)
    answers = iter(
        [
            (503, b"upstream restarting"),
            (429, error_json(429, "slow down"), {"Retry-After": "0"}),
            (200, {"runs": [run_json(1, "running")]}),
            (502, b""),
            (200, {"runs": [run_json(1, "exited")]}),
        ]
    )
    fake = fake_tower(lambda *_: next(answers))
    assert tower.wait_for_run(SimpleNamespace(app_name="hello", number=1)).status == "exited"
    assert len(fake.seen) == 5
    # Each long poll asks the server to hold it (a timeout=None wait asks the default).
    assert fake.seen[2].body["timeout_seconds"] == _orchestration.LONG_POLL_S


def test_persistent_server_errors_give_up(
    fake_tower: Callable[..., FakeTower], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_orchestration, "RETRY_PAUSE_S", 0.01)
    fake = fake_tower(lambda *_: (500, error_json(500, "database is down")))
    with pytest.raises(UnknownException, match=r"5 attempts in a row failed.*database is down"):
        tower.wait_for_run(SimpleNamespace(app_name="hello", number=1), timeout=30)
    assert len(fake.seen) == _orchestration.MAX_NETWORK_FAILURES


def test_unreachable_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_orchestration, "RETRY_PAUSE_S", 0.01)
    monkeypatch.setenv("TOWER_URL", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(UnknownException, match="problem with the Tower API"):
        tower.wait_for_run(SimpleNamespace(app_name="hello", number=1), timeout=30)
    with pytest.raises(UnknownException, match="Could not reach the Tower API"):
        tower.run_app("hello")


def _closed_port() -> int:
    port = free_port()
    with socket.socket() as probe:  # nothing listens there
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_bad_tower_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_URL", "ftp://example.com")
    with pytest.raises(UnknownException, match="TOWER_URL"):
        tower.run_app("hello")


def test_run_is_an_immutable_value() -> None:
    data = {
        **run_json(4, "exited", exit_code="0"),
        "parameters": [{"name": "n", "value": "1"}, "junk"],
    }
    run = _orchestration.Run.from_json(data)
    assert (run.number, run.status, run.exit_code, run.num_attempts) == (4, "exited", 0, 0)
    assert run.parameters == (_orchestration.RunParameter("n", "1"),)
    assert run == pickle.loads(pickle.dumps(run)) and hash(run) == hash(copy.copy(run))
    with pytest.raises(AttributeError, match="immutable"):
        run.status = "running"  # type: ignore[misc]
    assert _orchestration.Run.from_json({}).app_name == ""


# ------------------------------------------------------------------- import weight


def test_orchestration_stays_off_httpx_and_pydantic(fake_tower: Callable[..., FakeTower]) -> None:
    fake = fake_tower(
        lambda method, path, body: (
            (201, {"run": run_json()})
            if method == "POST" and path.endswith("/runs")
            else (200, {"runs": [run_json(1, "exited")]})
        )
    )
    heavy = ["httpx", "pydantic", "dataclasses", "urllib.request"]
    code = (
        "import sys, json, tower\n"
        "final = tower.wait_for_run(tower.run_app('hello'), timeout=10)\n"
        f"print(json.dumps([final.status, [m for m in {heavy!r} if m in sys.modules]]))\n"
    )
    env = {"TOWER_URL": fake.url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["exited", []]
