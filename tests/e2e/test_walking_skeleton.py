"""The walking skeleton as a user drives it: `tower up`, then deploy, run, logs — real processes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import write_app
from tests.live import REPO, LiveTower, free_port, tower_env

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-skeleton")]
EXAMPLES = REPO / "examples"


def _run_status(tower: LiveTower, app: str, number: int) -> dict:
    with tower.api() as api:
        return api.get(f"/apps/{app}/runs/{number}").json()["run"]


def test_hello_world_create_deploy_run_show_logs(tower: LiveTower) -> None:
    created = tower.tower("apps", "create", "--name=hello-world")
    assert created.returncode == 0, created.stderr
    deployed = tower.tower("deploy", cwd=EXAMPLES / "hello-world")
    assert deployed.returncode == 0, deployed.stderr
    assert "Version `v1`" in deployed.stdout
    run = tower.tower("run", "--parameter=friend=Ada", cwd=EXAMPLES / "hello-world")
    assert run.returncode == 0, run.stdout + run.stderr
    program = [line for line in run.stdout.splitlines() if "Hello, Ada! Boo to Carl" in line]
    assert len(program) == 5
    assert program[0][:4].isdigit() and " | " in program[0]  # "YYYY-MM-DD HH:MM:SS | …"
    shown = tower.tower("apps", "show", "hello-world")
    assert shown.returncode == 0 and "exited" in shown.stdout
    logs = tower.tower("apps", "logs", "hello-world#1")
    assert logs.stdout.count("Hello, Ada! Boo to Carl") == 5
    listed = tower.tower("apps", "list")
    assert "hello-world" in listed.stdout and "Greets" not in listed.stdout
    run_json = _run_status(tower, "hello-world", 1)
    assert run_json["status"] == "exited" and run_json["exit_code"] == 0
    params = {p["name"]: p["value"] for p in run_json["parameters"]}
    assert params == {"friend": "Ada", "foe": "Carl"}


def test_sse_stream_replays_a_finished_run(tower: LiveTower) -> None:
    tower.tower("deploy", "--create", cwd=EXAMPLES / "hello-world")
    tower.tower("run", cwd=EXAMPLES / "hello-world")
    with tower.api() as api:
        number = api.get("/apps/hello-world").json()["runs"][0]["number"]
        path = f"/apps/hello-world/runs/{number}/logs/stream"
        with api.stream("GET", path) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            data = [
                json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")
            ]
    program = [d["content"] for d in data if d["channel"] == "program"]
    assert program == ["Hello, Steve! Boo to Carl"] * 5
    assert [d["line_num"] for d in data] == list(range(1, len(data) + 1))


@pytest.mark.parametrize(
    ("example", "app", "expected"),
    [
        ("with-requirements", "humanized-sizes", "1500000 bytes is 1.5 MB"),
        ("with-pyproject", "table-printer", "table-printer"),
        ("shell-script", "shell-steps", "step 1: hello, world"),
        ("shared-code", "shared-code", "Greetings, Tower, from shared code!"),
    ],
)
def test_example_apps_run_remotely(tower: LiveTower, example: str, app: str, expected: str) -> None:
    deployed = tower.tower("deploy", "--create", cwd=EXAMPLES / example)
    assert deployed.returncode == 0, deployed.stderr
    run = tower.tower("run", cwd=EXAMPLES / example)
    assert run.returncode == 0, run.stdout + run.stderr
    assert expected in run.stdout


def test_crash_ends_crashed_with_exit_code(tower: LiveTower, tmp_path: Path) -> None:
    body = "import sys, time\nprint('about to fail', flush=True)\ntime.sleep(0.5)\nsys.exit(3)\n"
    app = write_app(tmp_path, "crasher", "main.py", body)
    assert tower.tower("deploy", "--create", cwd=app).returncode == 0
    run = tower.tower("run", cwd=app)
    assert run.returncode == 1
    assert "about to fail" in run.stdout and "exit code 3" in (run.stdout + run.stderr)
    status = _run_status(tower, "crasher", 1)
    assert (status["status"], status["exit_code"]) == ("crashed", 3)


def test_broken_dependency_ends_errored_with_installer_output(
    tower: LiveTower, tmp_path: Path
) -> None:
    app = write_app(
        tmp_path,
        "broken-deps",
        "main.py",
        "print('never')\n",
        requirements__txt="this-package-does-not-exist-tower-test==1.0\n",
    )
    assert tower.tower("deploy", "--create", cwd=app).returncode == 0
    run = tower.tower("run", cwd=app)
    assert run.returncode == 1
    status = _run_status(tower, "broken-deps", 1)
    assert status["status"] == "errored" and status["exit_code"] is None
    assert "requirements.txt" in status["status_message"]
    with tower.api() as api:
        lines = api.get("/apps/broken-deps/runs/1/logs").json()["log_lines"]
    setup = "\n".join(line["content"] for line in lines if line["channel"] == "setup")
    assert "this-package-does-not-exist-tower-test" in setup
    assert not [line for line in lines if line["channel"] == "program"]


def test_detached_run_prints_number_and_link(tower: LiveTower) -> None:
    tower.tower("deploy", "--create", cwd=EXAMPLES / "hello-world")
    run = tower.tower("run", "--detached", cwd=EXAMPLES / "hello-world")
    assert run.returncode == 0
    assert "Run #" in run.stdout and "/apps/hello-world/runs/" in run.stdout


def test_unknown_parameter_is_refused_with_its_name(tower: LiveTower) -> None:
    tower.tower("deploy", "--create", cwd=EXAMPLES / "hello-world")
    run = tower.tower("run", "--parameter=enemy=Bob", cwd=EXAMPLES / "hello-world")
    assert run.returncode == 1 and "enemy" in run.stdout + run.stderr


def test_deploy_without_app_and_without_tty_says_how(tower: LiveTower, tmp_path: Path) -> None:
    app = write_app(tmp_path, "not-created-yet", "main.py", "print(1)\n")
    result = tower.tower("deploy", cwd=app)
    assert result.returncode == 1 and "--create" in result.stdout + result.stderr


def test_local_run_uses_the_runner_code(tower: LiveTower) -> None:
    run = tower.tower("run", "--local", "--parameter=foe=nobody", cwd=EXAMPLES / "hello-world")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("Hello, Steve! Boo to nobody") == 5


def test_restart_keeps_data_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    key = "sk-e2e-headless-bootstrap-key-0123456789"
    live = LiveTower(tmp_path, free_port(), tower_env(tmp_path, TOWER_ADMIN_API_KEY=key))
    live.start()
    with httpx.Client(base_url=f"{live.url}/v1", headers={"X-API-Key": key}) as api:
        assert api.post("/apps", json={"name": "survivor"}).status_code == 201
    children = psutil.Process(live.process.pid).children(recursive=True)
    assert children, "tower up should have started a runner process"
    assert live.stop(signal.SIGINT) == 0
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    live.start()
    try:
        with httpx.Client(base_url=f"{live.url}/v1", headers={"X-API-Key": key}) as api:
            assert api.get("/apps/survivor").status_code == 200
        assert not (live.home / "admin-api-key").exists()  # the given key is not written out
        assert live.tower("apps", "list").stdout.strip().startswith("* survivor")
    finally:
        live.stop()


def test_cancel_stops_the_app_on_the_runner(tower: LiveTower, tmp_path: Path) -> None:
    body = (
        "import time\nfor i in range(600):\n    print('tick', i, flush=True)\n    time.sleep(0.1)\n"
    )
    app = write_app(tmp_path, "long-runner", "main.py", body)
    assert tower.tower("deploy", "--create", cwd=app).returncode == 0
    assert tower.tower("run", "--detached", cwd=app).returncode == 0
    deadline = time.monotonic() + 60
    while _run_status(tower, "long-runner", 1)["status"] != "running":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.2)
    # The app runs sandboxed (it cannot write outside its run dir), so the test looks
    # for its processes: they work in the run's package directory. (An interpreter the
    # runner pre-started for the next run waits in a directory of its own.)
    work_root = str(tower.home / "runner" / "work")
    assert _app_processes(work_root), "the app should be running on the runner"
    cancelled = tower.tower("apps", "cancel", "long-runner#1")
    assert cancelled.returncode == 0, cancelled.stderr
    assert _run_status(tower, "long-runner", 1)["status"] == "cancelled"
    # The runner learns of it at its next heartbeat and stops the process group.
    deadline = time.monotonic() + 10
    while _app_processes(work_root):
        assert time.monotonic() < deadline, "the app kept running after it was cancelled"
        time.sleep(0.2)


def _app_processes(work_root: str) -> list[psutil.Process]:
    """Processes working in a run's package directory under `work_root`."""
    found = []
    for process in psutil.process_iter(["cwd"]):
        cwd = process.info["cwd"] or ""
        if cwd.startswith(work_root) and "/package" in cwd:
            found.append(process)
    return found
