"""`tower up` keeps its local runner alive: the backoff policy and the supervisor, on real
child processes (a sleeping Python stands in for the runner)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tower.cli.up import (
    RESTART_FIRST_DELAY_S,
    RESTART_MAX_DELAY_S,
    RESTART_RESET_AFTER_S,
    RunnerSupervisor,
    describe_exit,
    restart_delay,
)


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    delays: list[float] = []
    previous = None
    for _ in range(8):
        previous = restart_delay(previous, uptime_s=0.5)
        delays.append(previous)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert (RESTART_FIRST_DELAY_S, RESTART_MAX_DELAY_S) == (1, 30)


def test_backoff_starts_over_after_a_minute_up() -> None:
    assert restart_delay(16, uptime_s=RESTART_RESET_AFTER_S - 1) == 30
    assert restart_delay(16, uptime_s=RESTART_RESET_AFTER_S) == 1
    assert restart_delay(30, uptime_s=3600) == 1


@pytest.mark.parametrize(
    ("returncode", "words"),
    [
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
        (1, "exit code 1"),
        (0, "exit code 0, though nothing asked it to stop"),
    ],
)
def test_exit_is_described_in_words(returncode: int, words: str) -> None:
    assert describe_exit(returncode) == words


class Starts:
    """Starts real stand-in runners and remembers every one."""

    def __init__(self, code: str = "import time; time.sleep(60)") -> None:
        self.code = code
        self.processes: list[subprocess.Popen[bytes]] = []

    def __call__(self) -> subprocess.Popen[bytes]:
        # As from a terminal: a test worker may run with SIGINT ignored, which a child
        # would inherit (and then sleep through the Ctrl-C a test sends it).
        process = subprocess.Popen([sys.executable, "-c", self.code], preexec_fn=_default_sigint)
        self.processes.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_killed_runner_is_restarted_and_stop_ends_the_new_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    starts = Starts()
    supervisor = RunnerSupervisor(starts, server_stopping=lambda: False)
    try:
        supervisor.start()
        first = starts.processes[0]
        first.send_signal(signal.SIGKILL)
        _wait_for(lambda: len(starts.processes) == 2)
        assert supervisor.process is starts.processes[1]
        err = capsys.readouterr().err
        assert "The local runner exited (killed by SIGKILL); restarting it in 1 s." in err
        supervisor.stop()
        # The current runner is stopped (SIGTERM), not the first, long-dead one.
        assert starts.processes[1].poll() == -signal.SIGTERM
        time.sleep(0.3)
        assert len(starts.processes) == 2
    finally:
        starts.kill_all()


def test_a_runner_exiting_zero_on_its_own_is_restarted_and_said_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    starts = Starts(code="pass")
    supervisor = RunnerSupervisor(starts, server_stopping=lambda: False)
    try:
        supervisor.start()
        _wait_for(lambda: len(starts.processes) == 2)
        supervisor.stop()
        err = capsys.readouterr().err
        assert "exit code 0, though nothing asked it to stop" in err
        assert "restarting it in 1 s." in err
    finally:
        starts.kill_all()


def test_no_restart_while_tower_up_stops(capsys: pytest.CaptureFixture[str]) -> None:
    starts = Starts()
    stopping = False
    supervisor = RunnerSupervisor(starts, server_stopping=lambda: stopping)
    try:
        supervisor.start()
        # Ctrl-C: the runner (same process group) and `tower up` are told together.
        stopping = True
        starts.processes[0].send_signal(signal.SIGINT)
        starts.processes[0].wait()
        time.sleep(RESTART_FIRST_DELAY_S + 1)
        assert len(starts.processes) == 1
        assert "restarting" not in capsys.readouterr().err
        supervisor.stop()
    finally:
        starts.kill_all()


def test_stop_before_start_starts_nothing() -> None:
    starts = Starts()
    supervisor = RunnerSupervisor(starts, server_stopping=lambda: False)
    supervisor.stop()
    supervisor.start()
    assert starts.processes == [] and supervisor.process is None
