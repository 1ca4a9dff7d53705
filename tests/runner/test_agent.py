"""The runner agent against a fake control plane speaking the real HTTP protocol."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from control_plane import FakeControlPlane, FakeRun
from procs import group_members, wait_until

from tower.core.crypto import generate_signing_key, package_statement, sign_b64, verify_key_b64
from tower.core.package import BuiltPackage, build_package
from tower.core.towerfile import load_towerfile
from tower.runner import workdirs
from tower.runner.agent import Agent, main
from tower.runner.settings import RunnerSettings
from tower.runner.venvs import VenvCache

pytestmark = pytest.mark.xdist_group("runner-uv")

ENV_APP = """\
import os
import shutil
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


def make_agent(
    url: str,
    home: Path,
    venvs: VenvCache,
    *,
    shutdown_grace_s: float = 10.0,
    running_report_delay_s: float = 0.0,
    capacity: int = 2,
) -> Agent:
    """An agent that reports `running` at once unless told otherwise, so that tests
    of cancels and retries see every report (folding has tests of its own)."""
    settings = RunnerSettings(
        url=url,
        token="rt-test",
        name="test-runner",
        capacity=capacity,
        home=home,
        python=sys.executable,
        cancel_grace_s=1.0,
        running_report_delay_s=running_report_delay_s,
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
    package = package_of("print('never')\n")
    run = plane.enqueue(package)
    # The control plane signed a sha256 the blob it hands out does not have.
    zeros = "0" * 64
    signature = plane.sign(f"version-of-{run.run_id}", zeros, package.manifest.checksum)
    run.fields.update(package_sha256=zeros, package_signature=signature)
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        plane.wait_for(run.finished)
    assert run.status_names == ["errored"]
    assert run.statuses[0]["message"].startswith("package integrity check failed: ")
    assert "sha256" in run.statuses[0]["message"]
    assert any("integrity" in line["content"] for line in run.lines.values())


def test_a_package_the_control_plane_did_not_sign_is_refused(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    original, substitute = package_of("print('original')\n"), package_of("print('evil')\n")
    forged = {"package_signature": sign_b64(generate_signing_key(), b"anything")}
    # A substituted package: its own digests are consistent, but the signature is the
    # one the control plane made for the original.
    swapped = {
        "package_signature": plane.sign(
            "version-of-swapped", original.sha256, original.manifest.checksum
        ),
        "version_id": "version-of-swapped",
    }
    runs = [
        plane.enqueue(original, **forged),
        plane.enqueue(substitute, **swapped),
        plane.enqueue(original, package_signature=None),
    ]
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        for run in runs:
            plane.wait_for(run.finished)
    messages = [run.statuses[0]["message"] for run in runs]
    assert [run.status_names for run in runs] == [["errored"]] * 3, messages
    assert all(m.startswith("package integrity check failed: ") for m in messages)
    assert "signature does not match" in messages[0] and "signature does not match" in messages[1]
    assert "no signature" in messages[2]
    assert not any("evil" in line["content"] for run in runs for line in run.lines.values())


def test_a_signature_found_valid_once_does_not_pass_another_for_the_same_package(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    """The runner remembers valid signatures, not verdicts about a package."""
    package = package_of("print('fine')\n")
    version = {"version_id": "version-1"}
    valid = plane.sign("version-1", package.sha256, package.manifest.checksum)
    statement = package_statement("version-1", package.sha256, package.manifest.checksum)
    forged = sign_b64(generate_signing_key(), statement)
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        runs = []
        for signature in (valid, forged, valid):  # one after the other
            runs.append(plane.enqueue(package, **version, package_signature=signature))
            plane.wait_for(runs[-1].finished)
    assert [run.status_names[-1] for run in runs] == ["exited", "errored", "exited"]
    assert "signature does not match" in runs[1].statuses[-1]["message"]


def test_a_pinned_package_key_refuses_packages_signed_by_another_control_plane(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    agent = make_agent(plane.url, tmp_path / "home", venv_cache)
    agent.settings = dataclasses.replace(
        agent.settings, package_key=verify_key_b64(generate_signing_key())
    )
    run = plane.enqueue(package_of("print('hi')\n"))
    with AgentThread(agent):
        plane.wait_for(run.finished)
    assert run.status_names == ["errored"]
    assert "signature does not match" in run.statuses[0]["message"]


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


# ---------------------------------------------------------------- runs that never get stuck

#: the grace between SIGTERM and SIGKILL that `make_agent` configures (s)
GRACE_S = 1.0
IGNORES_SIGTERM_APP = """\
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("pgid", os.getpgid(0), flush=True)
time.sleep(120)
"""
TICKING_APP = """\
import os, time
print("pgid", os.getpgid(0), flush=True)
for i in range(1200):
    print("tick", i, flush=True)
    time.sleep(0.1)
"""
COUNTING_APP = """\
import time
for i in range(40):
    print("line", i, flush=True)
    time.sleep(0.05)
"""


def app_pgid(run: FakeRun, home: Path) -> int:
    """The app's process group on the host, as the runner recorded it (inside the
    sandbox's PID namespace the app cannot see its group's leader, bubblewrap)."""
    printed = int(next(line for line in program(run) if line.startswith("pgid ")).split()[1])
    record = workdirs.group_record(RunnerSettings(home=home).work_dir / run.run_id)
    wait_until(lambda: _recorded_pgid(record) is not None)
    recorded = _recorded_pgid(record)
    assert recorded is not None
    assert printed in (recorded, 0), "outside a sandbox the app sees its own group"
    return recorded


def _recorded_pgid(record: Path) -> int | None:
    """The group in the run's lock file, once the runner wrote it there."""
    try:
        return int(json.loads(record.read_text())["pgid"])
    except (OSError, ValueError, KeyError):
        return None


def test_cancel_kills_an_app_ignoring_sigterm_within_grace_plus_one_second(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    # The real default interval: the cancel must not wait for the next heartbeat.
    plane.heartbeat_interval_s = 5.0
    run = plane.enqueue(package_of(IGNORES_SIGTERM_APP))
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)) as agent:
        plane.wait_for(lambda: any(line.startswith("pgid ") for line in program(run)))
        pgid = app_pgid(run, tmp_path / "home")
        assert group_members(pgid)
        beats_before = len(plane.heartbeats)
        plane.cancel(run.run_id)
        assert run.cancelled_at is not None
        wait_until(lambda: not group_members(pgid), timeout=20)
        gone_after = time.monotonic() - run.cancelled_at
        assert gone_after <= GRACE_S + 1.0
        assert gone_after >= GRACE_S - 0.1, "the app ignored SIGTERM, so only SIGKILL ended it"
        wait_until(lambda: not agent.active_run_ids())
        # While the run was being stopped the server named it again at once on every
        # call; the runner must not have spun on that.
        assert len(plane.heartbeats) - beats_before <= 4
    assert run.status_names == ["running"], "a cancelled run gets no final report"


def test_superseded_attempt_is_stopped_and_reports_nothing_more(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of(TICKING_APP))
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)) as agent:
        plane.wait_for(lambda: "tick 3" in program(run))
        pgid = app_pgid(run, tmp_path / "home")
        plane.supersede(run.run_id)  # lease lost, retried elsewhere: the token changed
        wait_until(lambda: not agent.active_run_ids(), timeout=20)
        assert not group_members(pgid)
    assert run.status_names == ["running"]
    assert [kind for kind, _ in plane.rejected] == ["logs"], "one 409 on logs, then silence"


def test_retried_attempt_continues_line_numbers_and_carries_its_token(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of("print('second try')\n"), attempt_seq=2, first_line_num=41)
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        plane.wait_for(run.finished)
    assert run.status_names == ["running", "exited"]
    assert sorted(run.lines) == list(range(41, 41 + len(run.lines)))
    assert program(run) == ["second try"]
    assert {(s["attempt_seq"], s["fencing_token"]) for s in run.statuses} == {(2, run.token)}
    assert plane.rejected == []


def test_a_retry_claimed_by_the_same_runner_supersedes_the_older_attempt(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    quiet_app = "import os, time\nprint('pgid', os.getpgid(0), flush=True)\ntime.sleep(5)\n"
    run = plane.enqueue(package_of(quiet_app))
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        plane.wait_for(lambda: any(line.startswith("pgid ") for line in program(run)))
        first_pgid = app_pgid(run, tmp_path / "home")
        # Attempt 1 lost its lease (say, a network split) and attempt 2 lands here too.
        # Attempt 1 prints nothing more, so only the new claim can tell it to stop.
        plane.retry(run.run_id)
        wait_until(lambda: not group_members(first_pgid), timeout=2.0)
        plane.wait_for(lambda: len([ln for ln in program(run) if ln.startswith("pgid ")]) == 2)
        time.sleep(0.5)
        assert plane.heartbeats[-1]["run_ids"] == [run.run_id], "attempt 2 keeps its lease"
        plane.wait_for(run.finished, timeout=30)
    assert [(s["attempt_seq"], s["status"]) for s in run.statuses] == [
        (1, "running"),
        (2, "running"),
        (2, "exited"),
    ]
    assert [kind for kind, _ in plane.rejected] == [], "attempt 1 reported nothing more"
    assert sorted(run.lines) == list(range(1, len(run.lines) + 1)), "numbering continued"


@pytest.mark.parametrize("outage", ["answers-503", "restarts"])
def test_nothing_is_lost_while_the_control_plane_is_down(
    outage: str,
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of(COUNTING_APP))
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        plane.wait_for(lambda: "line 5" in program(run))
        if outage == "restarts":
            plane.go_down()
        else:
            plane.unavailable = True
        try:
            time.sleep(3.0)  # the app finishes (after ~2 s) while the plane is away
            assert not run.finished()
        finally:
            back = time.monotonic()
            if outage == "restarts":
                plane.come_back()
            else:
                plane.unavailable = False
        plane.wait_for(run.finished, timeout=30)
        resumed_in = time.monotonic() - back
    assert program(run) == [f"line {i}" for i in range(40)], "every line, each once"
    assert sorted(run.lines) == list(range(1, len(run.lines) + 1))
    assert run.status_names == ["running", "exited"]
    assert max(run.line_order.values()) < run.status_order[-1], "lines before the final status"
    assert resumed_in < 5.0, "retries back off at most ~2 s"
    assert plane.batched_logs > 0, "log batches travelled with the status reports"


@pytest.mark.parametrize("long_poll", [True, False], ids=["long-poll", "old-server"])
def test_heartbeats_renew_about_every_interval_without_spinning(
    long_poll: bool,
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    plane.long_poll = long_poll
    run = plane.enqueue(package_of(SLEEPY_APP))
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        plane.wait_for(lambda: "sleeping" in program(run))
        start = len(plane.heartbeats)
        time.sleep(2.0)
        beats = plane.heartbeats[start:]
    interval = plane.heartbeat_interval_s
    assert 2.0 / interval - 4 <= len(beats) <= 2.0 / interval + 3
    assert all(beat["run_ids"] == [run.run_id] for beat in beats)
    assert all(beat["wait_seconds"] == interval for beat in beats)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("bwrap"), reason="needs root and bwrap")
def test_a_run_over_its_memory_limit_crashes_and_the_runner_serves_the_next(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    hog = plane.enqueue(package_of("x = bytearray(1 << 30)\n"), limits={"memory_mb": 256})
    after = plane.enqueue(package_of("print('next run fine')\n"))
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)) as agent:
        assert agent.sandbox.bwrap is not None
        plane.wait_for(hog.finished)
        plane.wait_for(after.finished)
    # A memory cgroup's OOM killer ends the app with SIGKILL (137); an address-space
    # limit lets it fail to allocate and exit 1.
    code = 137 if agent.sandbox.cgroups is not None else 1
    assert hog.status_names == ["running", "crashed"]
    assert hog.statuses[-1]["message"] == (
        f"The app exceeded the memory limit of 256 MiB (exit code {code})."
    )
    assert after.status_names == ["running", "exited"]
    assert program(after) == ["next run fine"]


# ---------------------------------------------------------------- folded reports


def test_running_retried_through_an_outage_still_says_when_the_app_started(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of("import time\nprint('up', flush=True)\ntime.sleep(5)\n"))
    agent = make_agent(plane.url, tmp_path / "home", venv_cache, running_report_delay_s=1.0)
    with AgentThread(agent):
        plane.wait_for(lambda: program(run) == ["up"])  # the app has started
        plane.unavailable = True  # `running`, due a second after the start, must wait
        time.sleep(2.0)
        plane.unavailable = False
        plane.wait_for(lambda: run.status_names[:1] == ["running"])
        running = run.statuses[0]
        plane.wait_for(run.finished)
    # Counted when it finally went, not when it was first due (1 s).
    assert not running.get("folded") and 2.0 <= running["started_seconds_ago"] < 5.0
    assert run.status_names == ["running", "exited"]


def test_a_short_run_is_reported_once_with_its_lines_and_start(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of("print('one')\nprint('two')\n"))
    agent = make_agent(plane.url, tmp_path / "home", venv_cache, running_report_delay_s=30.0)
    with AgentThread(agent):
        plane.wait_for(run.finished)
    # One status report, saying when the app started (the lines it carries depend on
    # timing: a batch due before the app ended went on its own).
    (final,) = [s for s in run.statuses if not s.get("folded")]
    assert final["status"] == "exited" and final["exit_code"] == 0
    assert 0 <= final["started_seconds_ago"] < 30
    assert run.status_names == ["running", "exited"]
    assert program(run) == ["one", "two"]
    assert set(run.deliveries.values()) == {1}, "no line was sent twice"
    assert plane.rejected == []


def test_a_longer_run_reports_running_after_the_delay(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    run = plane.enqueue(package_of("import time\nprint('up', flush=True)\ntime.sleep(1.5)\n"))
    agent = make_agent(plane.url, tmp_path / "home", venv_cache, running_report_delay_s=0.2)
    with AgentThread(agent):
        plane.wait_for(lambda: run.status_names == ["running"])
        running = run.statuses[0]
        plane.wait_for(run.finished)
    assert not running.get("folded") and 0.2 <= running["started_seconds_ago"] < 1.5
    assert run.status_names == ["running", "exited"]
    assert "started_seconds_ago" not in run.statuses[-1], "running was already said"
    assert program(run) == ["up"]


def test_a_backlog_is_claimed_in_one_request(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    runs = [plane.enqueue(package_of(f"print({n})\n")) for n in range(3)]
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache, capacity=3)):
        for run in runs:
            plane.wait_for(run.finished)
    assert plane.claims[0] == 3
    assert [run.status_names for run in runs] == [["running", "exited"]] * 3


def test_final_reports_travel_in_batches_that_claim_the_next_runs(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    runs = [plane.enqueue(package_of(f"print({n})\n")) for n in range(6)]
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache, capacity=2)):
        for run in runs:
            plane.wait_for(run.finished)
    assert [run.status_names for run in runs] == [["running", "exited"]] * 6
    assert [program(run) for run in runs] == [[str(n)] for n in range(6)]
    # The first two runs came from a claim; the others were claimed by the final
    # reports that freed their slots, without a claim request of their own.
    assert plane.claims[0] == 2
    piggybacked = sum(claimed for _, _, claimed in plane.report_batches)
    assert piggybacked == 4 and sum(plane.claims[1:]) == 0
    assert all(asked <= 2 for _, asked, _ in plane.report_batches), "never beyond capacity"


def test_a_control_plane_without_batched_reports_gets_one_per_request(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    plane.batch_reports = False
    runs = [plane.enqueue(package_of(f"print({n})\n")) for n in range(3)]
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache, capacity=2)):
        for run in runs:
            plane.wait_for(run.finished)
    assert [run.status_names for run in runs] == [["running", "exited"]] * 3
    assert plane.report_batches == []
    assert sum(plane.claims) == 3, "the runs came from claims"


def test_a_package_opened_before_is_copied_not_fetched_and_its_runs_do_not_share_changes(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    # Each run prints the note shipped with its package and what its package holds,
    # then scribbles on the note and leaves files and directories in its package.
    package = package_of(
        "import os\n"
        "from pathlib import Path\n"
        "note = Path(__file__).with_name('main.py')\n"
        "top = note.parent.parent\n"
        "print(note.read_text().count('\\n#~'))\n"
        "print(sorted(str(p.relative_to(top)) for p in top.rglob('*')))\n"
        "note.write_text(note.read_text() + '\\n#~')\n"
        "(note.parent / 'made' / 'by').mkdir(parents=True)\n"
        "(note.parent / 'made' / 'by' / 'app.txt').write_text('x')\n"
        "(top / 'out.csv').write_text('a,b')\n"
    )
    runs = [plane.enqueue(package) for _ in range(3)]
    agent = make_agent(plane.url, tmp_path / "home", venv_cache, capacity=1)
    with AgentThread(agent):
        for run in runs:
            plane.wait_for(run.finished)
    first = program(runs[0])
    assert first[0] == "0" and "made" not in first[1] and "out.csv" not in first[1]
    assert [program(run) for run in runs] == [first] * 3, "every run starts from the package"
    assert plane.downloads == [runs[0].run_id], "fetched and opened once"


def test_a_cached_package_still_needs_a_valid_signature(
    plane: FakeControlPlane,
    package_of: Callable[[str], BuiltPackage],
    venv_cache: VenvCache,
    tmp_path: Path,
) -> None:
    package = package_of("print('signed')\n")
    good = plane.enqueue(package)
    forged = plane.enqueue(package, package_signature=plane.sign("another", "x", "y"))
    with AgentThread(make_agent(plane.url, tmp_path / "home", venv_cache)):
        plane.wait_for(forged.finished)
    assert program(good) == ["signed"]
    assert forged.statuses[-1]["status"] == "errored"
    assert "integrity" in forged.statuses[-1]["message"]
