"""App processes: output streaming, exit codes, termination of the whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tower.runner.process import (
    GATE_CLOSED_EXIT,
    AppProcess,
    command_for,
    decode_line,
    exit_code_of,
    gate_shell,
    group_members,
    proc_files,
)

needs_gate_shell = pytest.mark.skipif(gate_shell() is None, reason="needs dash (the gate shell)")

#: a stand-in runner: starts an app (`sleep 60`) the way the runner does, prints its pid
MINI_RUNNER = """
import os, time
from pathlib import Path
from tower.runner.process import AppProcess
app = AppProcess(["sleep", "60"], cwd=Path("."), env={"PATH": os.environ["PATH"]},
                 on_line=lambda channel, text: None)
app.start()
print(app.pid, flush=True)
time.sleep(60)
"""


class Lines:
    """A thread-safe line sink that records (channel, content)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, channel: str, content: str) -> None:
        with self.lock:
            self.items.append((channel, content))

    def contents(self) -> list[str]:
        return [content for _, content in self.items]


def start(tmp_path: Path, code: str, lines: Lines, *, suffix: str = ".py") -> AppProcess:
    script = tmp_path / f"app{suffix}"
    script.write_text(code)
    argv = ["bash", str(script)] if suffix == ".sh" else [sys.executable, str(script)]
    proc = AppProcess(argv, cwd=tmp_path, env={"PATH": os.environ["PATH"]}, on_line=lines)
    proc.start()
    return proc


def test_stdout_and_stderr_lines(tmp_path: Path) -> None:
    lines = Lines()
    code = (
        "import sys\n"
        "print('to stdout')\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.stdout.write('no newline at end')\n"
    )
    assert start(tmp_path, code, lines).wait() == 0
    assert sorted(lines.contents()) == ["no newline at end", "to stderr", "to stdout"]
    assert {channel for channel, _ in lines.items} == {"program"}


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    lines = Lines()
    code = "import sys\nsys.stdout.buffer.write(b'caf\\xe9\\r\\n')\n"
    start(tmp_path, code, lines).wait()
    assert lines.contents() == ["caf\ufffd"]


def test_exit_codes(tmp_path: Path) -> None:
    assert start(tmp_path, "raise SystemExit(3)\n", Lines()).wait() == 3
    assert start(tmp_path, "exit 0\n", Lines(), suffix=".sh").wait() == 0
    killed = start(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", Lines())
    assert killed.wait() == 128 + signal.SIGKILL
    assert killed.killed_by == signal.SIGKILL


def test_terminate_graceful(tmp_path: Path) -> None:
    lines = Lines()
    proc = start(tmp_path, "import time\nprint('up', flush=True)\ntime.sleep(60)\n", lines)
    _wait_for(lambda: lines.contents() == ["up"])
    assert proc.terminate(grace_s=5) == 128 + signal.SIGTERM


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    lines = Lines()
    code = "trap 'echo got TERM' TERM\necho ready\nwhile true; do sleep 0.1; done\n"
    proc = start(tmp_path, code, lines, suffix=".sh")
    _wait_for(lambda: "ready" in lines.contents())
    started = time.monotonic()
    assert proc.terminate(grace_s=0.5) == 128 + signal.SIGKILL
    assert time.monotonic() - started < 5
    assert "got TERM" in lines.contents()


def test_background_children_die_with_the_app(tmp_path: Path) -> None:
    lines = Lines()
    code = "sleep 300 &\necho $!\n"
    proc = start(tmp_path, code, lines, suffix=".sh")
    assert proc.wait() == 0
    child = int(lines.contents()[0])
    _wait_for(lambda: not _alive(child))


def test_app_dies_when_the_runner_is_killed(tmp_path: Path) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", MINI_RUNNER], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdout is not None
        app_pid = int(runner.stdout.readline())
        assert _alive(app_pid)
        runner.kill()  # kill -9: the runner gets no chance to clean up
        runner.wait()
        _wait_for(lambda: not _alive(app_pid))
    finally:
        runner.kill()
        runner.wait()


def test_poll(tmp_path: Path) -> None:
    proc = start(tmp_path, "import time\ntime.sleep(0.5)\n", Lines())
    assert proc.poll(0.01) is None
    assert proc.poll(10) == 0


def test_exited_says_whether_it_ended_without_reaping_it(tmp_path: Path) -> None:
    lines = Lines()
    proc = start(tmp_path, "import sys, time\ntime.sleep(0.3)\nsys.exit(4)\n", lines)
    assert not proc.exited()
    deadline = time.monotonic() + 10
    while not proc.exited():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert Path(f"/proc/{proc.pid}").exists(), "a zombie: not reaped yet"
    assert proc.wait() == 4, "its owner still gets its exit status"
    assert proc.exited()


def test_helpers(tmp_path: Path) -> None:
    assert command_for("./main.py", tmp_path / "app", tmp_path / "v") == [
        str(tmp_path / "v" / "bin" / "python"),
        str(tmp_path / "app" / "main.py"),
    ]
    assert command_for("./run.sh", tmp_path, tmp_path / "v") == ["bash", str(tmp_path / "run.sh")]
    assert exit_code_of(-9) == 137
    assert exit_code_of(2) == 2
    assert decode_line(b"abc\r\n") == "abc"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@needs_gate_shell
def test_a_gated_process_starts_once_prepared_with_stdin_from_dev_null(tmp_path: Path) -> None:
    prepared: list[int] = []
    lines = Lines()
    code = "import sys\nprint('stdin', repr(sys.stdin.read()))\n"
    (tmp_path / "app.py").write_text(code)
    proc = AppProcess(
        [sys.executable, str(tmp_path / "app.py")],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        on_line=lines,
        dies_with_parent=True,
        prepare=prepared.append,
    )
    proc.start()
    assert prepared == [proc.pid], "prepared before it started, under the same pid"
    assert proc.wait() == 0
    assert lines.contents() == ["stdin ''"]


@needs_gate_shell
def test_a_gate_that_fails_to_prepare_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "started"

    def refuse(pid: int) -> None:
        raise OSError("no cgroup for you")

    proc = AppProcess(
        ["touch", str(marker)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
        on_line=Lines(),
        dies_with_parent=True,
        prepare=refuse,
    )
    with pytest.raises(OSError, match="no cgroup for you"):
        proc.start()
    assert proc._popen.returncode == GATE_CLOSED_EXIT
    assert not marker.exists()


@needs_gate_shell
def test_the_gate_shell_runs_no_code_from_the_apps_environment(tmp_path: Path) -> None:
    """The gate runs with the app's environment (secrets and parameters by any name)
    outside the sandbox: names that make bash run code must do nothing."""
    marker = tmp_path / "pwned"
    lines = Lines()
    hostile = {
        "BASH_FUNC_read%%": f"() {{ touch {marker}; }}",
        "SHELLOPTS": "xtrace",
        "PS4": f"$(touch {marker})",
        "ENV": str(tmp_path / "rc"),
        "BASH_ENV": str(tmp_path / "rc"),
    }
    (tmp_path / "rc").write_text(f"touch {marker}\n")
    proc = AppProcess(
        ["echo", "started"],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], **hostile},
        on_line=lines,
        dies_with_parent=True,
        prepare=lambda pid: None,
    )
    proc.start()
    assert proc.wait() == 0
    assert lines.contents() == ["started"]
    assert not marker.exists()


def test_proc_files_skips_processes_gone_after_the_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names nothing now, as for a process that just exited
    real_listdir = os.listdir

    def listing(path: str) -> list[str]:
        names = real_listdir(path)
        return [*names, str(gone.pid), "self"] if path == "/proc" else names

    monkeypatch.setattr(os, "listdir", listing)
    seen = dict(proc_files("status"))
    assert os.getpid() in seen and gone.pid not in seen
    assert seen[os.getpid()].startswith("Name:")
    assert group_members(os.getpgid(0))  # this test's own group, at least
