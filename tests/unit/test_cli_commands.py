"""The `tower` commands end to end against an in-memory fake of the Tower API.

The fake speaks HTTP through httpx.MockTransport, so the real TowerApi, error
mapping and SSE parsing are exercised; only the server is replaced.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from tests.unit.cli_fakes import URL, error, isolate_config, serve, tower

from tower.cli import common, config, follow
from tower.cli import deploy as deploy_module
from tower.client.api import TowerApi
from tower.core import crypto


def run_obj(number: int, status: str, **extra: Any) -> dict[str, Any]:
    run = {
        "$link": f"{URL}/apps/hello/runs/{number}",
        "app_name": "hello",
        "app_version": "v1",
        "number": number,
        "status": status,
        "environment": "default",
        "exit_code": None,
        "scheduled_at": "2025-01-01T00:00:00Z",
        "started_at": None,
        "ended_at": None,
    }
    return run | extra


def log_line(num: int, content: str) -> dict[str, Any]:
    return {
        "attempt_seq": 1,
        "channel": "program",
        "content": content,
        "line_num": num,
        "reported_at": f"2025-01-01T00:00:{num:02d}Z",
        "run_id": "r-1",
    }


@dataclass
class Connection:
    """One SSE connection the fake serves: these lines, then a clean close or a drop."""

    lines: list[dict[str, Any]]
    drop: bool = False
    raise_exc: BaseException | None = None


@dataclass
class FakeTower:
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: statuses describe_run returns one by one (the last one sticks)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    version: dict[str, Any] = field(default_factory=lambda: {"version": "v1"})
    override: Callable[[httpx.Request], httpx.Response | None] | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: dict[str, Any] = field(default_factory=dict)

    def add_app(self, name: str, description: str = "") -> None:
        self.apps[name] = {"name": name, "short_description": description}

    def calls(self, method: str) -> list[str]:
        return [r.url.path for r in self.requests if r.method == method]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = request.read()
        if self.override and (response := self.override(request)) is not None:
            return response
        path, method = request.url.path.removeprefix("/v1"), request.method
        if method == "POST" and path.endswith("/deploy"):
            self.bodies["deploy"] = body
            return httpx.Response(201, json={"version": self.version})
        if body:
            self.bodies[f"{method} {path}"] = json.loads(body)
        return self.route(method, path, request)

    def route(self, method: str, path: str, request: httpx.Request) -> httpx.Response:
        if (method, path) == ("GET", "/apps"):
            summaries = [{"app": app, "runs": []} for app in self.apps.values()]
            return httpx.Response(200, json={"apps": summaries, "pages": {}})
        if (method, path) == ("POST", "/apps"):
            payload = json.loads(request.content)
            self.add_app(payload["name"], payload.get("short_description", ""))
            return httpx.Response(201, json={"app": self.apps[payload["name"]]})
        match = re.fullmatch(r"/apps/([^/]+)(/runs(?:/(\d+)(/logs(/stream)?)?)?)?", path)
        if not match:
            return error(404, f"No route {path}")
        name, runs, number, logs, stream = match.groups()
        if name not in self.apps:
            return error(404, f"App '{name}' was not found.")
        if not runs:
            if method == "DELETE":
                return httpx.Response(200, json={"app": self.apps.pop(name)})
            return httpx.Response(200, json={"app": self.apps[name], "runs": self.runs})
        if number is None:
            run = run_obj(len(self.runs) + 1, "pending")
            self.runs.append(run)
            return httpx.Response(201, json={"run": run})
        if stream:
            return self.stream()
        if logs:
            return httpx.Response(200, json={"log_lines": self.logs})
        if method == "POST":
            return httpx.Response(200, json={"run": run_obj(int(number), "cancelled")})
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(200, json={"run": status, "$links": {"self": "x"}})

    def stream(self) -> httpx.Response:
        if not self.connections:
            return httpx.Response(200, headers={"content-type": "text/event-stream"})
        conn = self.connections.pop(0) if len(self.connections) > 1 else self.connections[0]

        def chunks() -> Iterator[bytes]:
            yield b": connected\n\n"
            for line in conn.lines:
                yield f"event: log\ndata: {json.dumps(line)}\n\n".encode()
            if conn.raise_exc is not None:
                raise conn.raise_exc
            if conn.drop:
                raise httpx.ReadError("connection reset by peer")

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=chunks())


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_config(tmp_path, monkeypatch)
    # Reconnects in tests should not wait.
    monkeypatch.setattr(follow, "FIRST_BACKOFF_S", 0.0)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTower:
    return serve(FakeTower(), monkeypatch)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hello"
    directory.mkdir()
    (directory / "Towerfile").write_text(
        '[app]\nname = "hello"\nscript = "./main.py"\ndescription = "Says hello"\n'
    )
    (directory / "main.py").write_text("print('hello')\n")
    return directory


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- apps --------------------------------------------------------------------------------


def test_apps_list(fake: FakeTower) -> None:
    fake.add_app("my-first-app")
    fake.add_app("my-second-app", "A simple app.")
    result = tower("apps", "list")
    assert result.exit_code == 0, result.output
    assert result.stdout == "* my-first-app\n  No description\n* my-second-app\n  A simple app.\n"
    assert fake.requests[0].url.params["num_runs"] == "0"


def test_apps_create(fake: FakeTower) -> None:
    result = tower("apps", "create", "--name", "new-app", "--description", "Shows off")
    assert result.exit_code == 0, result.output
    assert 'Success! App "new-app" was created' in result.stdout
    assert "✔ Creating app... Done!" in result.stderr
    assert fake.bodies["POST /apps"] == {"name": "new-app", "short_description": "Shows off"}


def test_apps_show_table(fake: FakeTower) -> None:
    fake.add_app("hello", "Says hello")
    fake.runs = [
        run_obj(
            11,
            "exited",
            started_at="2024-11-19T20:14:46Z",
            ended_at="2024-11-19T20:14:55Z",
        ),
        run_obj(
            12,
            "crashed",
            started_at="2024-11-20T08:46:11Z",
            ended_at="2024-11-20T08:47:14Z",
            num_attempts=3,
        ),
        run_obj(13, "pending", num_attempts=0),
    ]
    result = tower("apps", "show", "hello", "-e", "prod")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[:4] == ["Name: hello", "Description:", "Says hello", "Recent runs:"]
    table = "\n".join(out[4:])
    # The official columns first, in their order; the attempts count is added last.
    assert re.search(r"#\s+Status\s+Start Time\s+Elapsed Time\s+Attempts", table)
    rows = [line.split() for line in out[4:] if line.strip()[:2].strip().isdigit()]
    assert rows == [
        ["13", "pending", "-", "-", "0"],
        ["12", "crashed", "2024-11-20", "08:46:11", "1m", "3s", "3"],
        # a server that leaves num_attempts out gets a dash, not a crash
        ["11", "exited", "2024-11-19", "20:14:46", "9s", "-"],
    ]
    assert fake.requests[0].url.params["environment"] == "prod"


def test_apps_show_unknown_app_is_a_clean_error(fake: FakeTower) -> None:
    result = tower("apps", "show", "nope")
    assert result.exit_code == 1
    assert "App 'nope' was not found." in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("ref", [["hello#2"], ["hello", "2"]])
def test_apps_logs_for_a_run(fake: FakeTower, ref: list[str]) -> None:
    fake.add_app("hello")
    fake.logs = [log_line(1, "Hello, world!"), log_line(2, "Bye")]
    result = tower("apps", "logs", *ref)
    assert result.exit_code == 0, result.output
    assert result.stdout == "2025-01-01 00:00:01 | Hello, world!\n2025-01-01 00:00:02 | Bye\n"
    assert fake.calls("GET") == ["/v1/apps/hello/runs/2/logs"]


def test_apps_logs_latest_run(fake: FakeTower) -> None:
    fake.add_app("hello")
    fake.runs = [run_obj(3, "exited"), run_obj(5, "exited"), run_obj(4, "exited")]
    fake.logs = [log_line(1, "x")]
    result = tower("apps", "logs", "hello")
    assert result.exit_code == 0, result.output
    assert fake.calls("GET") == ["/v1/apps/hello", "/v1/apps/hello/runs/5/logs"]


def test_apps_logs_no_runs(fake: FakeTower) -> None:
    fake.add_app("hello")
    result = tower("apps", "logs", "hello")
    assert result.exit_code == 0
    assert result.stdout == "No runs found\n"


def test_apps_logs_follow(fake: FakeTower) -> None:
    fake.add_app("hello")
    fake.connections = [Connection([log_line(1, "a"), log_line(2, "b")])]
    fake.statuses = [run_obj(1, "exited")]
    fake.logs = [log_line(1, "a"), log_line(2, "b")]
    result = tower("apps", "logs", "-f", "hello#1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "2025-01-01 00:00:01 | a\n2025-01-01 00:00:02 | b\n"


def test_apps_delete_without_tty_proceeds(fake: FakeTower) -> None:
    fake.add_app("hello")
    result = tower("apps", "delete", "hello")
    assert result.exit_code == 0, result.output
    assert 'Success! App "hello" was deleted' in result.stdout
    assert "hello" not in fake.apps


def test_apps_delete_on_tty_asks(fake: FakeTower, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add_app("hello")
    monkeypatch.setattr(common, "stdin_is_tty", lambda: True)
    result = tower("apps", "delete", "hello", input="n\n")
    assert result.exit_code == 1
    assert "cannot be undone" in result.output
    assert fake.calls("DELETE") == []

    result = tower("apps", "delete", "hello", "--yes")
    assert result.exit_code == 0, result.output
    assert fake.calls("DELETE") == ["/v1/apps/hello"]


def test_apps_cancel(fake: FakeTower) -> None:
    fake.add_app("hello")
    result = tower("apps", "cancel", "hello#4")
    assert result.exit_code == 0, result.output
    assert fake.calls("POST") == ["/v1/apps/hello/runs/4"]
    assert "Run #4 of app `hello` is now cancelled" in result.stdout


# -- errors and credentials ----------------------------------------------------------------


def test_not_logged_in() -> None:
    result = tower("apps", "list")
    assert result.exit_code == 1
    assert result.stderr.strip() == config.NOT_LOGGED_IN
    assert_no_traceback(result)


def test_rejected_credentials(fake: FakeTower) -> None:
    fake.override = lambda request: error(401, "bad token")
    result = tower("apps", "list")
    assert result.exit_code == 1
    assert "Not logged in or the credentials were rejected" in result.stderr
    assert_no_traceback(result)


def test_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(
        config,
        "make_api",
        lambda cfg=None: TowerApi(URL, api_key="k", transport=httpx.MockTransport(refuse)),
    )
    result = tower("apps", "list")
    assert result.exit_code == 1
    assert "Could not reach the Tower API at http://tower.test" in result.stderr
    assert_no_traceback(result)


def test_real_config_reaches_the_session_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the factory patched: the session file's URL and team JWT are used."""
    from tower.cli import session

    session.save_session(
        None,
        "http://127.0.0.1:1",
        {"user": {}, "token": {"jwt": "j"}, "teams": []},
    )
    result = tower("apps", "list")
    assert result.exit_code == 1
    assert "Could not reach the Tower API at http://127.0.0.1:1" in result.stderr


# -- deploy ------------------------------------------------------------------------------


def test_deploy_existing_app(fake: FakeTower, app_dir: Path) -> None:
    fake.add_app("hello")
    result = tower("deploy", "-d", str(app_dir))
    assert result.exit_code == 0, result.output
    assert "✔ Building package... Done!" in result.stderr
    assert "Deploying to Tower..." in result.stderr
    assert (
        "Success! Version `v1` of app `hello` has been deployed to environment 'default'!"
        in result.stdout
    )
    upload = next(r for r in fake.requests if r.url.path.endswith("/deploy"))
    assert (
        upload.headers["X-Tower-Checksum-SHA256"]
        == hashlib.sha256(fake.bodies["deploy"]).hexdigest()
    )
    assert upload.headers["Content-Type"] == "application/tar"
    assert dict(upload.url.params) == {"environment": "default"}
    assert fake.bodies["deploy"][:2] == b"\x1f\x8b"  # a gzip stream, uploaded as is


def test_deploy_to_all_environments(fake: FakeTower, app_dir: Path) -> None:
    fake.add_app("hello")
    fake.version = {"version": "7"}
    result = tower("deploy", "-d", str(app_dir), "--all")
    assert result.exit_code == 0, result.output
    assert "Version `v7` of app `hello` has been deployed to all environments!" in result.stdout
    upload = next(r for r in fake.requests if r.url.path.endswith("/deploy"))
    assert dict(upload.url.params) == {"all_environments": "true"}


def test_deploy_environment_and_all_conflict(fake: FakeTower, app_dir: Path) -> None:
    result = tower("deploy", "-d", str(app_dir), "--all", "-e", "prod")
    assert result.exit_code == 2
    assert "either --environment or --all" in result.output


def test_deploy_missing_app_without_tty_fails_with_the_fix(fake: FakeTower, app_dir: Path) -> None:
    result = tower("deploy", "-d", str(app_dir))
    assert result.exit_code == 1
    assert "App 'hello' does not exist" in result.stderr
    assert "--create" in result.stderr
    assert "tower apps create --name hello" in result.stderr
    assert fake.calls("POST") == []
    assert_no_traceback(result)


def test_deploy_create_uses_the_towerfile_description(fake: FakeTower, app_dir: Path) -> None:
    result = tower("deploy", "-d", str(app_dir), "--create", "-e", "prod")
    assert result.exit_code == 0, result.output
    assert fake.bodies["POST /apps"] == {"name": "hello", "short_description": "Says hello"}
    assert "deployed to environment 'prod'!" in result.stdout


def test_deploy_missing_app_on_tty_asks(
    fake: FakeTower, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy_module, "stdin_is_tty", lambda: True)
    result = tower("deploy", "-d", str(app_dir), input="\n")
    assert result.exit_code == 0, result.output
    assert "App 'hello' does not exist. Create it? [Y/n]" in result.output
    assert "hello" in fake.apps

    fake.apps.clear()
    result = tower("deploy", "-d", str(app_dir), input="n\n")
    assert result.exit_code == 1
    assert "Deploy cancelled" in result.stderr


def test_deploy_bad_towerfile(fake: FakeTower, app_dir: Path) -> None:
    (app_dir / "Towerfile").write_text('[app]\nname = "hello"\n')
    result = tower("deploy", "-d", str(app_dir))
    assert result.exit_code == 1
    assert "[app].script is missing" in result.stderr
    assert fake.requests == []
    assert_no_traceback(result)


def test_deploy_server_error_is_reported(fake: FakeTower, app_dir: Path) -> None:
    fake.add_app("hello")

    def reject(request: httpx.Request) -> httpx.Response | None:
        if request.url.path.endswith("/deploy"):
            return error(422, "Checksum mismatch: upload again.")
        return None

    fake.override = reject
    result = tower("deploy", "-d", str(app_dir))
    assert result.exit_code == 1
    assert "Checksum mismatch: upload again." in result.stderr


def upload_key(fake: FakeTower) -> str | None:
    upload = next(r for r in fake.requests if r.url.path.endswith("/deploy"))
    return upload.headers.get("X-Tower-Idempotency-Key")


def test_deploy_explicit_and_disabled_idempotency_key(fake: FakeTower, app_dir: Path) -> None:
    fake.add_app("hello")
    assert tower("deploy", "-d", str(app_dir), "--idempotency-key", "k1").exit_code == 0
    assert upload_key(fake) == "k1"
    fake.requests.clear()
    assert tower("deploy", "-d", str(app_dir), "--no-idempotency-key").exit_code == 0
    assert upload_key(fake) is None


def test_deploy_reports_an_old_version_for_a_repeated_key(fake: FakeTower, app_dir: Path) -> None:
    fake.add_app("hello")
    created = datetime.now(UTC) - timedelta(hours=2)
    fake.version = {
        "version": "v3",
        "idempotency_key": "k1",
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }
    result = tower("deploy", "-d", str(app_dir), "--idempotency-key", "k1")
    assert result.exit_code == 0, result.output
    assert f"No changes since k1 (deployed on {created:%Y-%m-%d %H:%M:%S} UTC)" in result.stdout

    fake.version["created_at"] = datetime.now(UTC).isoformat()
    result = tower("deploy", "-d", str(app_dir), "--idempotency-key", "k1")
    assert "No changes" not in result.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_deploy_uses_git_head_of_a_clean_worktree(fake: FakeTower, app_dir: Path) -> None:
    fake.add_app("hello")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(app_dir), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert tower("deploy", "-d", str(app_dir)).exit_code == 0
    assert upload_key(fake) == git("rev-parse", "HEAD")

    fake.requests.clear()
    (app_dir / "main.py").write_text("print('changed')\n")
    assert tower("deploy", "-d", str(app_dir)).exit_code == 0
    assert upload_key(fake) is None


def test_deploy_outside_git_sends_no_key(fake: FakeTower, app_dir: Path) -> None:
    fake.add_app("hello")
    assert deploy_module.git_head_if_clean(app_dir) is None
    assert tower("deploy", "-d", str(app_dir)).exit_code == 0
    assert upload_key(fake) is None


# -- run ---------------------------------------------------------------------------------


def test_run_detached(fake: FakeTower, app_dir: Path) -> None:
    fake.add_app("hello")
    result = tower("run", "-d", str(app_dir), "--detached", "-p", "friend=Nick", "-p", "x=a=b")
    assert result.exit_code == 0, result.output
    assert "✔ Scheduling run... Done!" in result.stderr
    assert result.stdout == (
        f"Success! Run #1 for app `hello` has been scheduled\nSee more: {URL}/apps/hello/runs/1\n"
    )
    assert fake.bodies["POST /apps/hello/runs"] == {
        "environment": "default",
        "parameters": {"friend": "Nick", "x": "a=b"},
    }


def test_run_named_app_needs_no_towerfile(fake: FakeTower, tmp_path: Path) -> None:
    fake.add_app("other")
    result = tower("run", "other", "-d", str(tmp_path), "--detached", "-e", "prod")
    assert result.exit_code == 0, result.output
    assert fake.bodies["POST /apps/other/runs"]["environment"] == "prod"


def test_run_bad_parameter_is_a_usage_error(fake: FakeTower) -> None:
    result = tower("run", "hello", "-p", "oops")
    assert result.exit_code == 2
    assert "'oops' is not KEY=VALUE" in result.output
    assert "--parameter" in result.output
    assert fake.requests == []


def test_run_unknown_app(fake: FakeTower) -> None:
    result = tower("run", "ghost")
    assert result.exit_code == 1
    assert "App 'ghost' was not found." in result.stderr
    assert "tower deploy" in result.stderr
    assert_no_traceback(result)


def test_run_follows_logs_until_exited(fake: FakeTower) -> None:
    fake.add_app("hello")
    fake.connections = [Connection([log_line(1, "Hello"), log_line(2, "world")])]
    fake.statuses = [run_obj(1, "exited", exit_code=0)]
    fake.logs = [log_line(1, "Hello"), log_line(2, "world")]
    result = tower("run", "hello")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Success! Run #1 for app `hello` has been scheduled\n"
        "2025-01-01 00:00:01 | Hello\n"
        "2025-01-01 00:00:02 | world\n"
        "Success! Run #1 exited cleanly.\n"
    )


def test_run_reconnects_after_a_drop_and_fills_gaps(fake: FakeTower) -> None:
    fake.add_app("hello")
    fake.connections = [
        Connection([log_line(1, "one")], drop=True),
        Connection([], drop=False),  # closed early while the run still runs
        Connection([log_line(1, "one"), log_line(2, "two")]),
    ]
    fake.statuses = [run_obj(1, "running"), run_obj(1, "running"), run_obj(1, "exited")]
    fake.logs = [log_line(1, "one"), log_line(2, "two"), log_line(3, "three")]
    result = tower("run", "hello")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if " | " in line]
    assert lines == [
        "2025-01-01 00:00:01 | one",
        "2025-01-01 00:00:02 | two",
        "2025-01-01 00:00:03 | three",
    ]
    streams = [p for p in fake.calls("GET") if p.endswith("/stream")]
    assert len(streams) == 3


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (run_obj(1, "crashed", exit_code=3), "Run #1 crashed with exit code 3"),
        (run_obj(1, "errored", status_message="runner lost"), "Run #1 errored: runner lost"),
        (run_obj(1, "errored"), "Run #1 errored."),
        (run_obj(1, "cancelled"), "Run #1 was cancelled."),
    ],
)
def test_run_failures_exit_1(fake: FakeTower, run: dict[str, Any], message: str) -> None:
    fake.add_app("hello")
    fake.statuses = [run]
    result = tower("run", "hello")
    assert result.exit_code == 1
    assert message in result.stderr


def test_run_ctrl_c_stops_following_only(fake: FakeTower) -> None:
    fake.add_app("hello")
    fake.connections = [Connection([log_line(1, "hi")], raise_exc=KeyboardInterrupt())]
    fake.statuses = [run_obj(1, "running")]
    result = tower("run", "hello")
    assert result.exit_code == 130
    assert "tower apps logs hello#1" in result.stderr
    assert [r for r in fake.requests if r.method == "POST"][-1].url.path == "/v1/apps/hello/runs"


def test_run_stream_forbidden_is_fatal(fake: FakeTower) -> None:
    fake.add_app("hello")

    def forbid(request: httpx.Request) -> httpx.Response | None:
        return error(403, "No access to logs.") if request.url.path.endswith("/stream") else None

    fake.override = forbid
    fake.statuses = [run_obj(1, "running")]
    result = tower("run", "hello")
    assert result.exit_code == 1
    assert "No access to logs." in result.stderr


def test_run_local(fake: FakeTower, app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tower.runner.local as local

    calls: list[dict[str, Any]] = []

    def fake_run_local(directory: Path, **kwargs: Any) -> int:
        calls.append({"directory": directory, **kwargs})
        kwargs["out"]("2024-11-20 08:44:45 | Hello, world!")
        return 0

    monkeypatch.setattr(local, "run_local", fake_run_local)
    result = tower("run", "--local", "-d", str(app_dir), "-p", "friend=Nick", "-e", "dev")
    assert result.exit_code == 0, result.output
    assert "✔ Building package... Done!" in result.stderr
    assert result.stdout == (
        "Success! App `hello` has been launched\n"
        "2024-11-20 08:44:45 | Hello, world!\n"
        "Success! Your app exited cleanly.\n"
    )
    (call,) = calls
    assert call["directory"] == app_dir
    assert call["parameters"] == {"friend": "Nick"}
    assert call["secrets"] == {}
    # The app sees `local`; `-e dev` only chose whose secrets it would have got.
    assert call["environment"] == "local"
    assert call["tower_url"] is None and call["jwt"] is None
    assert fake.requests == []


def exports_to_the_key_sent(request: httpx.Request) -> httpx.Response | None:
    """Answers the export endpoints as the server does: every value encrypted to the
    public key in the request, never in the clear."""
    if request.method != "POST" or not request.url.path.endswith("/export"):
        return None
    key = crypto.load_public_key(json.loads(request.content)["public_key"])
    pages = {"page": 1, "page_size": 100, "num_pages": 1, "total": 1}
    if request.url.path == "/v1/secrets/export":
        secret = {"name": "TOKEN", "encrypted_value": crypto.hybrid_encrypt(key, "t0ken")}
        return httpx.Response(200, json={"secrets": [secret], "pages": pages})
    properties = [
        {"name": "uri", "encrypted_value": crypto.hybrid_encrypt(key, "https://lake")},
        {
            "name": "credential",
            "encrypted_value": crypto.hybrid_encrypt(key, "id:s3cret"),
            "environment_variable": "LAKE_CREDENTIAL",
        },
    ]
    catalog = {"name": "lake", "type": "lakekeeper", "properties": properties}
    return httpx.Response(200, json={"catalogs": [catalog], "pages": pages})


def test_run_local_crash_and_credentials(
    fake: FakeTower, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tower.runner.local as local

    calls: list[dict[str, Any]] = []

    def fake_run_local(directory: Path, **kwargs: Any) -> int:
        calls.append(kwargs)
        return 1

    monkeypatch.setattr(local, "run_local", fake_run_local)
    monkeypatch.setenv("TOWER_JWT", "jwt-1")
    monkeypatch.setenv("TOWER_URL", "http://srv:9")
    fake.override = exports_to_the_key_sent
    result = tower("run", "--local", "-d", str(app_dir), "-e", "prod")
    assert result.exit_code == 1
    assert "Your local run did not exit cleanly." in result.stderr
    assert calls[0]["tower_url"] == "http://srv:9"
    assert calls[0]["jwt"] == "jwt-1"
    # With credentials the run gets the environment's values, opened on this machine.
    assert calls[0]["secrets"] == {"TOKEN": "t0ken"}
    assert calls[0]["catalog_variables"] == {
        "PYICEBERG_CATALOG__LAKE__URI": "https://lake",
        "LAKE_CREDENTIAL": "id:s3cret",
    }
    assert calls[0]["masked"] == ("id:s3cret",)
    exports = [json.loads(r.content) for r in fake.requests]
    assert [body["environment"] for body in exports] == ["prod", "prod"]
    assert exports[0]["public_key"] == exports[1]["public_key"]  # one key for both


def test_run_local_rejects_another_app_name(app_dir: Path) -> None:
    result = tower("run", "other", "--local", "-d", str(app_dir))
    assert result.exit_code == 2
    assert "not `other`" in result.output


# -- misc --------------------------------------------------------------------------------


def test_version() -> None:
    result = tower("version")
    assert result.exit_code == 0
    assert result.stdout.startswith("tower ")
    assert tower("--version").stdout.startswith("tower, version ")


def test_runner_start_delegates(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    agent = types.ModuleType("tower.runner.agent")
    agent.main = lambda: 7  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tower.runner.agent", agent)
    assert tower("runner", "start").exit_code == 7
