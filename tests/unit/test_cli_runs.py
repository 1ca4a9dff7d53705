"""The run lifecycle commands (`tower runs ...`, `tower apps runs|update|cancel`) end to
end over real HTTP.

A small `http.server` on loopback plays the control plane with canned, contract-shaped
answers and records every request, so the real config loading, TowerApi, httpx
transport and error mapping are all exercised.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result

from tower.cli.main import cli

PARENT_ID = "5f0c3a0e-9a51-4c57-9d0e-0d1f0f6b9a11"


def run_json(app: str, number: int, status: str, **extra: Any) -> dict[str, Any]:
    """A Run with every field the contract requires (§5)."""
    run = {
        "$link": f"http://127.0.0.1/apps/{app}/runs/{number}",
        "app_name": app,
        "app_version": "v3",
        "cancelled_at": None,
        "created_at": "2025-03-01T10:00:00Z",
        "ended_at": "2025-03-01T10:01:05Z",
        "environment": "default",
        "exit_code": 0,
        "initiator": {"type": "tower_cli", "details": {}},
        "is_scheduled": False,
        "num_attempts": 1,
        "number": number,
        "parameters": [],
        "run_id": f"00000000-0000-4000-8000-{number:012d}",
        "scheduled_at": "2025-03-01T10:00:00Z",
        "started_at": "2025-03-01T10:00:02Z",
        "starting_at": "2025-03-01T10:00:01Z",
        "status": status,
        "status_group": "successful" if status == "exited" else "failed",
        "status_message": None,
        "retry_policy": {
            "max_retries": 0,
            "retry_delay_seconds": 0,
            "use_exponential_backoff": False,
        },
        "parent_run_id": None,
    }
    return run | extra


def attempt(seq: int, status: str, exit_code: int | None, minute: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "status": status,
        "starting_at": f"2025-03-01T10:{minute:02d}:00Z",
        "started_at": f"2025-03-01T10:{minute:02d}:01Z",
        "ended_at": f"2025-03-01T10:{minute:02d}:30Z",
        "exit_code": exit_code,
    }


def app_json(name: str = "hello", **extra: Any) -> dict[str, Any]:
    app = {
        "created_at": "2025-01-01T00:00:00Z",
        "health_status": "healthy",
        "is_example": False,
        "is_externally_accessible": False,
        "name": name,
        "next_run_at": None,
        "owner": "me",
        "pending_timeout": 600,
        "running_timeout": 0,
        "schedule": None,
        "short_description": "Says hello",
        "version": "v3",
        "status": "active",
        "retry_policy": {
            "max_retries": 1,
            "retry_delay_seconds": 30,
            "use_exponential_backoff": True,
        },
    }
    return app | extra


def page_of(runs: list[dict[str, Any]], page: int = 1, num_pages: int = 1, total: int = 0):
    total = total or len(runs)
    return {
        "runs": runs,
        "pages": {"page": page, "page_size": 20, "num_pages": num_pages, "total": total},
    }


def problem(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "title": "Error", "detail": detail} | extra


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeControlPlane:
    """Canned answers by (method, path); anything else is a contract-shaped 404."""

    url: str = ""
    routes: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.routes[(method, path)] = (status, body)

    def answer(self, method: str, target: str, raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        body = json.loads(raw) if raw else None
        self.seen.append(Seen(method, parts.path, parse_qs(parts.query), body))
        default = (404, problem(404, f"No route {method} {parts.path}"))
        return self.routes.get((method, parts.path), default)

    def requests(self) -> list[str]:
        return [f"{s.method} {s.path}" for s in self.seen]


class Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.server.fake.answer(self.command, self.path, raw)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output clean."""


class _Server(ThreadingHTTPServer):
    fake: FakeControlPlane


@pytest.fixture
def tower_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeControlPlane]:
    server = _Server(("127.0.0.1", 0), Handler)
    server.fake = FakeControlPlane(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.delenv("TOWER_JWT", raising=False)
    monkeypatch.setenv("TOWER_URL", server.fake.url)
    monkeypatch.setenv("TOWER_API_KEY", "sk-test")
    monkeypatch.setenv("TOWER_CONFIG_DIR", str(tmp_path / "config"))
    try:
        yield server.fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def tower(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def rows(output: str) -> list[list[str]]:
    """The body rows of a table: the lines after the header's rule, split on spaces."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"}) + 1
    return [line.split() for line in lines[start:] if line.strip()]


def assert_clean_failure(result: Result, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- runs list ----------------------------------------------------------------------------


def test_runs_list_across_apps(tower_api: FakeControlPlane) -> None:
    tower_api.on(
        "GET",
        "/v1/runs",
        page_of(
            [
                run_json("hello", 12, "crashed", num_attempts=3, environment="prod", exit_code=1),
                run_json("report", 4, "exited"),
            ],
            num_pages=3,
            total=45,
        ),
    )
    result = tower("runs", "list")
    assert result.exit_code == 0, result.output
    assert tower_api.requests() == ["GET /v1/runs"]
    assert tower_api.seen[0].query == {"page": ["1"], "page_size": ["20"]}
    header = result.stdout.splitlines()[0].split()
    assert header == [
        "App", "#", "Status", "Environment", "Attempts", "Start", "Time", "Elapsed", "Time",
    ]  # fmt: skip
    assert rows(result.stdout) == [
        ["hello", "12", "crashed", "prod", "3", "2025-03-01", "10:00:02", "1m", "3s"],
        ["report", "4", "exited", "default", "1", "2025-03-01", "10:00:02", "1m", "3s"],
    ]
    # The paging hint is decoration: on stderr, so stdout stays a clean table.
    assert "Page 1 of 3 (45 runs). Next: --page 2" in result.stderr
    assert "Next" not in result.stdout


def test_runs_list_of_one_app_sends_the_filters(tower_api: FakeControlPlane) -> None:
    tower_api.on("GET", "/v1/apps/hello/runs", page_of([run_json("hello", 7, "errored")], 2, 2))
    result = tower(
        "runs", "list", "hello", "-s", "crashed", "--status", "ERRORED", "-e", "prod",
        "--page", "2", "--page-size", "5",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert tower_api.requests() == ["GET /v1/apps/hello/runs"]
    assert tower_api.seen[0].query == {
        "status": ["crashed", "errored"],
        "environment": ["prod"],
        "page": ["2"],
        "page_size": ["5"],
    }
    assert rows(result.stdout)[0][:3] == ["hello", "7", "errored"]
    # the last page: nothing to point to
    assert result.stderr == ""


def test_apps_runs_is_the_same_listing(tower_api: FakeControlPlane) -> None:
    tower_api.on("GET", "/v1/apps/hello/runs", page_of([run_json("hello", 1, "exited")]))
    result = tower("apps", "runs", "hello", "--page", "0")
    assert result.exit_code == 0, result.output
    assert tower_api.requests() == ["GET /v1/apps/hello/runs"]
    assert tower_api.seen[0].query == {"page": ["0"], "page_size": ["20"]}
    assert rows(result.stdout) == [
        ["hello", "1", "exited", "default", "1", "2025-03-01", "10:00:02", "1m", "3s"]
    ]


def test_runs_list_json_is_the_api_answer(tower_api: FakeControlPlane) -> None:
    body = page_of([run_json("hello", 2, "exited", status_message="[bold]:smile:[/]")])
    tower_api.on("GET", "/v1/runs", body)
    result = tower("runs", "list", "--json")
    assert result.exit_code == 0, result.output
    # Parsed back unchanged: no Rich markup or emoji codes were applied to the data.
    assert json.loads(result.stdout) == body


def test_runs_list_keeps_long_values_whole_off_a_terminal(tower_api: FakeControlPlane) -> None:
    long_app = "a-very-long-application-name-for-nightly-reports"
    run = run_json(long_app, 123456, "cancelled", environment="staging-eu-west-1-blue")
    tower_api.on("GET", "/v1/runs", page_of([run]))
    result = tower("runs", "list")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    assert rows(result.stdout)[0][:4] == [long_app, "123456", "cancelled", "staging-eu-west-1-blue"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "list"], "No runs yet. Start one with `tower run`.\n"),
        (["runs", "list", "hello"], "No runs of app `hello` yet. Start one with `tower run`.\n"),
        (
            ["runs", "list", "hello", "-s", "running"],
            "No runs of app `hello` match these filters.\n",
        ),
        (["runs", "list", "-e", "prod"], "No runs match these filters.\n"),
    ],
)
def test_runs_list_empty(tower_api: FakeControlPlane, args: list[str], message: str) -> None:
    tower_api.on("GET", "/v1/runs", page_of([]))
    tower_api.on("GET", "/v1/apps/hello/runs", page_of([]))
    result = tower(*args)
    assert result.exit_code == 0, result.output
    assert result.stdout == message


def test_runs_list_past_the_last_page(tower_api: FakeControlPlane) -> None:
    tower_api.on("GET", "/v1/runs", page_of([], page=9, num_pages=2, total=30))
    result = tower("runs", "list", "--page", "9")
    assert result.exit_code == 0, result.output
    assert result.stdout == "No runs on page 9: there are 2 page(s).\n"


def test_runs_list_unknown_app(tower_api: FakeControlPlane) -> None:
    tower_api.on("GET", "/v1/apps/nope/runs", problem(404, "App 'nope' was not found."), 404)
    result = tower("runs", "list", "nope")
    assert_clean_failure(result)
    assert "App 'nope' was not found." in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "finished"], "'finished' is not one of"),
        (["--page-size", "0"], "0 is not in the range 1<=x<=1000"),
        (["--page-size", "1001"], "1001 is not in the range 1<=x<=1000"),
        (["--page", "-1"], "-1 is not in the range x>=0"),
    ],
)
def test_runs_list_bad_options_send_nothing(
    tower_api: FakeControlPlane, args: list[str], message: str
) -> None:
    result = tower("runs", "list", *args)
    assert_clean_failure(result, code=2)
    assert message in result.stderr
    assert tower_api.seen == []


# -- runs show ----------------------------------------------------------------------------


def failed_run() -> dict[str, Any]:
    return run_json(
        "hello",
        3,
        "errored",
        exit_code=None,
        num_attempts=3,
        status_message="runner lost: no heartbeat for 60 s",
        parent_run_id=PARENT_ID,
        retry_policy={"max_retries": 2, "retry_delay_seconds": 30, "use_exponential_backoff": True},
        attempts=[
            attempt(2, "crashed", 1, 2),
            attempt(1, "crashed", 3, 0),
            attempt(3, "errored", None, 4),
        ],
    )


@pytest.mark.parametrize("ref", [["hello#3"], ["hello", "3"]])
def test_runs_show_details_and_attempts(tower_api: FakeControlPlane, ref: list[str]) -> None:
    tower_api.on("GET", "/v1/apps/hello/runs/3", {"run": failed_run(), "$links": {"self": "x"}})
    graph = [
        {"id": {"app_name": "nightly", "number": 7}, "parent_id": None},
        {
            "id": {"app_name": "hello", "number": 3},
            "parent_id": {"app_name": "nightly", "number": 7},
        },
    ]
    tower_api.on("GET", "/v1/apps/hello/runs/3/graph", {"runs": graph})
    result = tower("runs", "show", *ref)
    assert result.exit_code == 0, result.output
    assert tower_api.requests() == ["GET /v1/apps/hello/runs/3", "GET /v1/apps/hello/runs/3/graph"]
    heading, rest = result.stdout.split("\n", 1)
    details_out, attempts_out = rest.split("\n\n", 1)
    assert heading == "Run #3 of app `hello`"
    assert details_out.splitlines() == [
        "Status:        errored",
        "Reason:        runner lost: no heartbeat for 60 s",
        "Exit code:     -",
        "Environment:   default",
        "Version:       v3",
        "Scheduled:     2025-03-01 10:00:00",
        "Started:       2025-03-01 10:00:02",
        "Ended:         2025-03-01 10:01:05",
        "Elapsed:       1m 3s",
        "Attempts:      3",
        "Retry policy:  up to 2 retries, 30s apart, doubling each time",
        "Parent run:    nightly#7",
        "Link:          http://127.0.0.1/apps/hello/runs/3",
    ]
    assert attempts_out.splitlines()[0].split() == [
        "Attempt", "Status", "Start", "Time", "End", "Time", "Exit", "Code",
    ]  # fmt: skip
    assert rows(attempts_out) == [
        ["1", "crashed", "2025-03-01", "10:00:01", "2025-03-01", "10:00:30", "3"],
        ["2", "crashed", "2025-03-01", "10:02:01", "2025-03-01", "10:02:30", "1"],
        ["3", "errored", "2025-03-01", "10:04:01", "2025-03-01", "10:04:30", "-"],
    ]


def test_runs_show_without_parent_or_attempts(tower_api: FakeControlPlane) -> None:
    run = run_json("hello", 1, "pending", started_at=None, ended_at=None, num_attempts=0)
    tower_api.on("GET", "/v1/apps/hello/runs/1", {"run": run | {"attempts": []}, "$links": {}})
    result = tower("runs", "show", "hello#1")
    assert result.exit_code == 0, result.output
    # No parent: the graph is not asked for.
    assert tower_api.requests() == ["GET /v1/apps/hello/runs/1"]
    assert "Parent run" not in result.stdout
    assert "Reason" not in result.stdout
    assert "Retry policy:  no retries" in result.stdout.splitlines()
    assert result.stdout.endswith("\nNo attempts yet.\n")


def test_runs_show_falls_back_to_the_parent_id(tower_api: FakeControlPlane) -> None:
    """A server without the graph endpoint still shows which run started this one."""
    tower_api.on("GET", "/v1/apps/hello/runs/3", {"run": failed_run(), "$links": {}})
    result = tower("runs", "show", "hello#3")
    assert result.exit_code == 0, result.output
    assert f"Parent run:    {PARENT_ID}" in result.stdout.splitlines()


def test_runs_show_latest_run(tower_api: FakeControlPlane) -> None:
    tower_api.on("GET", "/v1/apps/hello/runs", page_of([run_json("hello", 9, "exited")]))
    tower_api.on("GET", "/v1/apps/hello/runs/9", {"run": run_json("hello", 9, "exited")})
    result = tower("runs", "show", "hello")
    assert result.exit_code == 0, result.output
    assert tower_api.requests() == ["GET /v1/apps/hello/runs", "GET /v1/apps/hello/runs/9"]
    assert tower_api.seen[0].query == {"page": ["1"], "page_size": ["1"]}
    assert result.stdout.startswith("Run #9 of app `hello`\n")


def test_runs_show_latest_run_of_an_app_without_runs(tower_api: FakeControlPlane) -> None:
    tower_api.on("GET", "/v1/apps/hello/runs", page_of([]))
    result = tower("runs", "show", "hello")
    assert result.exit_code == 0, result.output
    assert result.stdout == "No runs of app `hello` yet.\n"


def test_runs_show_json(tower_api: FakeControlPlane) -> None:
    body = {"run": failed_run(), "$links": {"self": "x", "next": None, "prev": None}}
    tower_api.on("GET", "/v1/apps/hello/runs/3", body)
    result = tower("runs", "show", "hello#3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == body
    assert tower_api.requests() == ["GET /v1/apps/hello/runs/3"]


def test_runs_show_unknown_run(tower_api: FakeControlPlane) -> None:
    detail = "Run #42 of app 'hello' was not found."
    tower_api.on("GET", "/v1/apps/hello/runs/42", problem(404, detail), 404)
    result = tower("runs", "show", "hello#42")
    assert_clean_failure(result)
    assert detail in result.stderr


@pytest.mark.parametrize("ref", [["hello#0"], ["hello#x"], ["hello#1", "2"]])
def test_runs_show_bad_reference(tower_api: FakeControlPlane, ref: list[str]) -> None:
    result = tower("runs", "show", *ref)
    assert_clean_failure(result, code=2)
    assert tower_api.seen == []


# -- runs graph ---------------------------------------------------------------------------


def test_runs_graph_tree(tower_api: FakeControlPlane) -> None:
    def rid(app: str, number: int) -> dict[str, Any]:
        return {"app_name": app, "number": number}

    edges = [
        {"id": rid("fan", 2), "parent_id": None},
        {"id": rid("leaf", 5), "parent_id": rid("worker", 1)},
        {"id": rid("worker", 2), "parent_id": rid("fan", 2)},
        {"id": rid("worker", 1), "parent_id": rid("fan", 2)},
    ]
    tower_api.on("GET", "/v1/apps/worker/runs/1/graph", {"runs": edges})
    result = tower("runs", "graph", "worker#1")
    assert result.exit_code == 0, result.output
    assert [line.lstrip("│├└─ ") for line in result.stdout.splitlines()] == [
        "fan#2",
        "worker#1",
        "leaf#5",
        "worker#2",
    ]
    # the nesting shows who started whom
    indents = [len(line) - len(line.lstrip("│├└─ ")) for line in result.stdout.splitlines()]
    assert indents == [0, 4, 8, 4]


@pytest.mark.parametrize(
    "edges", [[], [{"id": {"app_name": "hello", "number": 1}, "parent_id": None}]]
)
def test_runs_graph_of_a_lone_run(tower_api: FakeControlPlane, edges: list[Any]) -> None:
    tower_api.on("GET", "/v1/apps/hello/runs/1/graph", {"runs": edges})
    result = tower("runs", "graph", "hello#1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Run #1 of app `hello` neither started nor was started by a run.\n"


# -- apps cancel --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("children", "extra"),
    [
        (0, ""),
        (1, "Also cancelled 1 child run it started.\n"),
        (2, "Also cancelled 2 child runs it started.\n"),
    ],
)
def test_apps_cancel_reports_child_runs(
    tower_api: FakeControlPlane, children: int, extra: str
) -> None:
    body = {"run": run_json("hello", 4, "cancelled"), "cancelled_child_runs": children}
    tower_api.on("POST", "/v1/apps/hello/runs/4", body)
    result = tower("apps", "cancel", "hello", "4")
    assert result.exit_code == 0, result.output
    assert tower_api.requests() == ["POST /v1/apps/hello/runs/4"]
    assert tower_api.seen[0].body is None
    assert result.stdout == f"Success! Run #4 of app `hello` is now cancelled\n{extra}"


def test_apps_cancel_a_finished_run_is_the_servers_message(tower_api: FakeControlPlane) -> None:
    detail = "Run #4 of app 'hello' is already exited; only active runs can be cancelled."
    tower_api.on("POST", "/v1/apps/hello/runs/4", problem(409, detail), 409)
    result = tower("apps", "cancel", "hello#4")
    assert_clean_failure(result)
    assert detail in result.stderr
    assert "Success" not in result.stdout


# -- apps update --------------------------------------------------------------------------


def test_apps_update_sends_only_the_given_fields(tower_api: FakeControlPlane) -> None:
    updated = app_json(status="disabled", short_description="", pending_timeout=90)
    tower_api.on("PUT", "/v1/apps/hello", {"app": updated})
    result = tower(
        "apps", "update", "hello", "--description", "", "--disable", "--pending-timeout", "90"
    )
    assert result.exit_code == 0, result.output
    # No retry option: the app is not read first.
    assert tower_api.requests() == ["PUT /v1/apps/hello"]
    assert tower_api.seen[0].body == {
        "short_description": "",
        "status": "disabled",
        "pending_timeout": 90,
    }
    lines = result.stdout.splitlines()
    assert lines[0] == 'Success! App "hello" was updated'
    assert lines[1:] == [
        "Status:           disabled",
        "Description:      No description",
        "Pending timeout:  1m 30s",
        "Running timeout:  no limit",
        "Retry policy:     up to 1 retry, 30s apart, doubling each time",
    ]


def test_apps_update_merges_the_retry_policy(tower_api: FakeControlPlane) -> None:
    tower_api.on("GET", "/v1/apps/hello", {"app": app_json(), "runs": []})
    new_policy = {"max_retries": 3, "retry_delay_seconds": 30, "use_exponential_backoff": True}
    tower_api.on("PUT", "/v1/apps/hello", {"app": app_json(retry_policy=new_policy)})
    result = tower("apps", "update", "hello", "--max-retries", "3", "--enable")
    assert result.exit_code == 0, result.output
    assert tower_api.requests() == ["GET /v1/apps/hello", "PUT /v1/apps/hello"]
    # The policy goes whole: the delay and backoff the app had are kept.
    assert tower_api.seen[1].body == {"status": "active", "retry_policy": new_policy}
    assert "Retry policy:     up to 3 retries, 30s apart, doubling each time" in result.stdout


def test_apps_update_retry_policy_of_an_app_without_one(tower_api: FakeControlPlane) -> None:
    app = app_json()
    del app["retry_policy"]
    tower_api.on("GET", "/v1/apps/hello", {"app": app, "runs": []})
    tower_api.on("PUT", "/v1/apps/hello", {"app": app_json()})
    result = tower(
        "apps", "update", "hello", "--retry-delay", "3600", "--no-exponential-backoff",
        "--running-timeout", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert tower_api.seen[1].body == {
        "running_timeout": 0,
        "retry_policy": {
            "max_retries": 0,
            "retry_delay_seconds": 3600,
            "use_exponential_backoff": False,
        },
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-retries", "11"], "11 is not in the range 0<=x<=10"),
        (["--max-retries", "-1"], "-1 is not in the range 0<=x<=10"),
        (["--retry-delay", "3601"], "3601 is not in the range 0<=x<=3600"),
        (["--pending-timeout", "-5"], "-5 is not in the range x>=0"),
        (["--running-timeout", "soon"], "'soon' is not a valid integer"),
    ],
)
def test_apps_update_bad_ranges_send_nothing(
    tower_api: FakeControlPlane, args: list[str], message: str
) -> None:
    result = tower("apps", "update", "hello", *args)
    assert_clean_failure(result, code=2)
    assert message in result.stderr
    assert tower_api.seen == []


def test_apps_update_sends_sandbox_settings_and_shows_them(tower_api: FakeControlPlane) -> None:
    updated = app_json(memory_mb=256, cpu_seconds=None, processes=None, isolate_network=True)
    tower_api.on("PUT", "/v1/apps/hello", {"app": updated})
    result = tower("apps", "update", "hello", "--memory-mb", "256", "--isolate-network")
    assert result.exit_code == 0, result.output
    assert tower_api.requests() == ["PUT /v1/apps/hello"]
    assert tower_api.seen[0].body == {"memory_mb": 256, "isolate_network": True}
    assert "Sandbox:          memory 256 MB; no network" in result.stdout


def test_apps_update_resets_a_limit_with_zero(tower_api: FakeControlPlane) -> None:
    reset = app_json(memory_mb=None, isolate_network=False)
    tower_api.on("PUT", "/v1/apps/hello", {"app": reset})
    result = tower("apps", "update", "hello", "--memory-mb", "0", "--no-isolate-network")
    assert result.exit_code == 0, result.output
    assert tower_api.seen[0].body == {"memory_mb": 0, "isolate_network": False}
    assert "Sandbox:          the runner's default limits; network" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memory-mb", "-1"], "-1 is not in the range 0<=x<=1048576"),
        (["--processes", "65537"], "65537 is not in the range 0<=x<=65536"),
        (["--cpu-seconds", "soon"], "'soon' is not a valid integer"),
    ],
)
def test_apps_update_bad_sandbox_limits_send_nothing(
    tower_api: FakeControlPlane, args: list[str], message: str
) -> None:
    result = tower("apps", "update", "hello", *args)
    assert_clean_failure(result, code=2)
    assert message in result.stderr
    assert tower_api.seen == []


def test_apps_update_needs_something_to_change(tower_api: FakeControlPlane) -> None:
    result = tower("apps", "update", "hello")
    assert_clean_failure(result, code=2)
    assert "Nothing to update" in result.stderr
    assert tower_api.seen == []


def test_apps_update_server_rejection_is_shown(tower_api: FakeControlPlane) -> None:
    """The server is the authority: its validation errors reach the user."""
    body = problem(
        422,
        "The request is not valid.",
        errors=[{"location": "body.pending_timeout", "message": "pending_timeout is too long"}],
    )
    tower_api.on("PUT", "/v1/apps/hello", body, 422)
    result = tower("apps", "update", "hello", "--pending-timeout", "99999999")
    assert_clean_failure(result)
    assert "The request is not valid." in result.stderr
    assert "pending_timeout is too long" in result.stderr


def test_apps_update_unknown_app(tower_api: FakeControlPlane) -> None:
    tower_api.on("GET", "/v1/apps/nope", problem(404, "App 'nope' was not found."), 404)
    result = tower("apps", "update", "nope", "--max-retries", "2")
    assert_clean_failure(result)
    assert "App 'nope' was not found." in result.stderr
    assert tower_api.requests() == ["GET /v1/apps/nope"]
