"""The runner agent against a fake control plane speaking the real HTTP protocol."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from control_plane import FakeControlPlane, FakeRun

from tower.core.package import BuiltPackage, build_package
from tower.core.towerfile import load_towerfile
from tower.runner.agent import Agent, main
from tower.runner.settings import RunnerSettings
from tower.runner.venvs import VenvCache

pytestmark = pytest.mark.xdist_group("runner-uv")

ENV_APP = """\
import os
print("hello", os.environ.get("friend"))
for name in ("RUN_ID", "RUN_NUMBER", "APP_NAME", "TEAM_NAME", "IS_TOWER_MANAGED", "RUNNER_ID"):
    print(name, os.environ.get("TOWER__RUNTIME__" + name))
print("jwt", os.environ.get("TOWER_JWT"))
"""
SLEEPY_APP = "import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n"


@pytest.fixture
def plane() -> Iterator[FakeControlPlane]:
    fake = FakeControlPlane().start()
    yield fake
    fake.stop()


class AgentThread:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(agent.run()), daemon=True)

    def __enter__(self) -> Agent:
        self.thread.start()
        return self.agent

    def __exit__(self, *exc: object) -> None:
        self.agent.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the agent did not stop"
        assert self.result == [0]


def make_agent(url: str, home: Path, venvs: VenvCache, *, shutdown_grace_s: float = 10.0) -> Agent:
    settings = RunnerSettings(
        url=url,
        token="rt-test",
        name="test-runner",
        capacity=2,
        home=home,
        python=sys.executable,
        cancel_grace_s=1.0,
    )
    return Agent(settings, venvs=venvs, claim_wait_s=0.3, shutdown_grace_s=shutdown_grace_s)


@pytest.fixture
def package_of(make_app: Callable[..., Path]) -> Callable[[str], BuiltPackage]:
    def build(code: str) -> BuiltPackage:
        return build_package(load_towerfile(make_app({"main.py": code})))

    return build


def program(run: FakeRun) -> list[str]:
    return [
        line["content"] for _, line in sorted(run.lines.items()) if line["channel"] == "program"
    ]


def test_runs_an_app_end_to_end(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    leftover = home / "runner" / "work" / "crashed-run"
    leftover.mkdir(parents=True)
    run = plane.enqueue(package_of(ENV_APP), parameters={"friend": "Ada"})
    with AgentThread(make_agent(plane.url, home, venv_cache)) as agent:
        plane.wait_for(run.finished)
        assert not leftover.exists()
        plane.wait_for(lambda: len(plane.heartbeats) >= 2)
    assert run.status_names == ["running", "exited"]
    assert run.statuses[-1]["exit_code"] == 0
    assert sorted(run.lines) == list(range(1, len(run.lines) + 1))
    lines = program(run)
    assert lines[0] == "hello Ada"
    assert f"RUN_ID {run.run_id}" in lines
    assert "RUN_NUMBER 7" in lines
    assert "TEAM_NAME admin" in lines
    assert "IS_TOWER_MANAGED true" in lines
    assert "RUNNER_ID runner-1" in lines
    assert "jwt ey.run.token" in lines
    first_program = min(n for n, line in run.lines.items() if line["channel"] == "program")
    assert all(run.lines[n]["channel"] == "setup" for n in range(1, first_program))
    registration = plane.registrations[0]
    assert registration["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert (registration["name"], registration["capacity"]) == ("test-runner", 2)
    assert agent.active_run_ids() == []
    assert list((home / "runner" / "work").iterdir()) == []


def test_integrity_failure_is_errored(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of("print('never')\n"), package_sha256="0" * 64)
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        plane.wait_for(run.finished)
    assert run.status_names == ["errored"]
    assert run.statuses[0]["message"].startswith("package integrity check failed: ")
    assert "sha256" in run.statuses[0]["message"]
    assert any("integrity" in line["content"] for line in run.lines.values())


def test_cancel_from_heartbeat(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of(SLEEPY_APP))
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)) as agent:
        plane.wait_for(lambda: "sleeping" in program(run))
        plane.cancel(run.run_id)
        deadline = time.monotonic() + 20
        while agent.active_run_ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert agent.active_run_ids() == []
    assert run.status_names == ["running"], "a cancelled run gets no final report"


def test_shutdown_cancels_runs_after_grace(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of(SLEEPY_APP))
    agent = make_agent(plane.url, tmp_path / "home", venv_cache, shutdown_grace_s=0.5)
    with AgentThread(agent):
        plane.wait_for(lambda: "sleeping" in program(run))
    assert run.status_names == ["running", "errored"]
    assert run.statuses[-1]["message"] == "The runner shut down before the run finished."


def test_registers_once_the_control_plane_is_up(venv_cache: VenvCache, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agent = make_agent(f"http://127.0.0.1:{port}", tmp_path / "home", venv_cache)
    with AgentThread(agent):
        time.sleep(0.8)
        assert not agent.registered.is_set()
        late = FakeControlPlane(port).start()
        try:
            assert agent.registered.wait(20)
            assert agent.runner_id == "runner-1"
        finally:
            agent.stop()
            late.stop()


def test_main_finishes_runs_on_sigterm(
    plane: FakeControlPlane,
    make_app: Callable[..., Path],
    venv_cache: VenvCache,
    runner_root: Path,
) -> None:
    app = make_app({"main.py": "import time\nprint('working', flush=True)\ntime.sleep(1)\n"})
    venv_cache.ensure(app, lambda channel, content: None)  # main() shares the session's venvs
    run = plane.enqueue(build_package(load_towerfile(app)))
    settings = RunnerSettings(
        url=plane.url, token="rt-test", name="sig", capacity=1, home=runner_root
    )

    def terminate_when_running() -> None:
        plane.wait_for(lambda: "working" in program(run))
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_when_running, daemon=True).start()
    assert main(settings) == 0
    assert run.status_names == ["running", "exited"]
