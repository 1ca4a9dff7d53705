"""`tower up` restarts its local runner when it dies, and stops the current one when it stops.

Real processes: `tower up`, its runner, an app; the runner is killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.conftest import write_app
from tests.live import LiveTower, free_port, tower_env

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e-up-supervision")]
TERMINAL = {"exited", "crashed", "errored", "cancelled"}


def _runner_processes(tower_up: psutil.Process) -> list[psutil.Process]:
    """The embedded runners `tower up` started (`python -m tower.cli.main runner start`)."""
    found = []
    for child in tower_up.children():
        try:
            command = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "tower.cli.main" in command and command[-2:] == ["runner", "start"]:
            found.append(child)
    return found


def _wait_for_new_runner(tower_up: psutil.Process, old_pid: int) -> psutil.Process:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        new = [p for p in _runner_processes(tower_up) if p.pid != old_pid and p.is_running()]
        if new:
            return new[0]
        time.sleep(0.1)
    raise AssertionError("tower up started no new runner")


def _wait_run(live: LiveTower, app: str, number: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    with live.api() as api:
        while True:
            run = api.get(f"/apps/{app}/runs/{number}").json()["run"]
            if run["status"] in TERMINAL or time.monotonic() > deadline:
                return run
            time.sleep(0.1)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_killed_runner_is_restarted_and_sigterm_stops_the_new_one(tmp_path: Path) -> None:
    live = LiveTower(tmp_path, free_port(), tower_env(tmp_path))
    live.start()
    try:
        app = write_app(tmp_path / "apps", "survives-runner-death", "main.py", "print('ran')\n")
        deployed = live.tower("deploy", "--create", cwd=app)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        tower_up = psutil.Process(live.process.pid)
        [first] = _runner_processes(tower_up)

        first.send_signal(signal.SIGKILL)
        second = _wait_for_new_runner(tower_up, first.pid)
        output = live.output()
        assert "The local runner exited (killed by SIGKILL); restarting it in 1 s." in output

        with live.api() as api:
            answer = api.post("/apps/survives-runner-death/runs", json={"parameters": {}})
            assert answer.status_code == 201, answer.text
            number = answer.json()["run"]["number"]
        run = _wait_run(live, "survives-runner-death", number)
        assert run["status"] == "exited", live.output()
        assert _runner_processes(tower_up) == [second]  # one restart, no more

        # SIGTERM to `tower up` alone (not its process group): it must stop the runner
        # it started last itself, and everything under it.
        left = [second, *second.children(recursive=True)]
        os.kill(live.process.pid, signal.SIGTERM)
        assert live.process.wait(30) == 0, live.output()
        assert not [p for p in left if _alive(p)], live.output()
        assert live.output().count("restarting it") == 1  # none while stopping
    finally:
        live.stop()
