"""Start a user app in its own process group and stream its output line by line.

Exit codes: a process killed by signal N is reported as `128 + N` (the shell
convention), so a run's exit code is always a non-negative integer; SIGKILL is 137.

The app runs in its own session, so it does not die with the runner by itself. On
Linux the kernel is asked to SIGKILL it when the runner goes (`PR_SET_PDEATHSIG`),
by a `preexec_fn` or, for bubblewrap, by bwrap itself (`--die-with-parent`); what the
app started in its group is killed by the next runner's start-up clean-up (see
`workdirs`).

A `preexec_fn` makes CPython `fork()` the whole runner and run Python in the child
(milliseconds for a runner of ~100 MB); without one it uses `vfork()`, a fraction of
that. So a process that asks for its own parent-death signal (`dies_with_parent`)
is started without any, and what a `preexec_fn` would do to it (join a cgroup, set
limits) is done from outside while it waits at a *gate*: a shell that reads a line
from its stdin, then execs the command (`prepare`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import IO, Protocol

from tower.runner.output_pump import output_pump

logger = logging.getLogger(__name__)

#: longest chunk delivered as one line; longer lines are split (bytes)
MAX_LINE_BYTES = 64 * 1024
#: how long to wait for the output pipes to drain after the app exited (s)
DRAIN_TIMEOUT_S = 5.0
#: how long to wait for the process to die after SIGKILL (s)
KILL_WAIT_S = 5.0
#: exit codes for signals follow the shell convention
SIGNAL_EXIT_BASE = 128
#: highest signal number a wrapper's `128 + N` exit status can stand for
MAX_SIGNAL = 64
#: prctl(2) option: the signal the kernel sends the child when its parent thread exits
PR_SET_PDEATHSIG = 1
#: the script of the shell a gated process waits in: it execs the command once it
#: reads a line on its stdin; at end of file (the runner could not prepare it, or is
#: gone) it exits with GATE_CLOSED_EXIT and nothing starts. The command gets
#: /dev/null as stdin.
GATE_SCRIPT = 'read -r _ || exit 125; exec "$@" </dev/null'
GATE_CLOSED_EXIT = 125
#: where the gate's shell may be (see `gate_shell`)
GATE_SHELLS = ("/bin/dash", "/usr/bin/dash")

LineCallback = Callable[[str, str], None]


class Launched(Protocol):
    """What `AppProcess` needs of a started process: `Popen`'s pid, output pipes,
    exit status and waiting (a run forked from a template is not a `Popen`)."""

    pid: int
    returncode: int | None
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def command_for(script: str, app_dir: Path, venv_dir: Path) -> list[str]:
    """The argv that runs `script` (a Towerfile `script`, e.g. `./main.py`)."""
    path = app_dir / script_relpath(script)
    if path.suffix == ".sh":
        return ["bash", str(path)]
    return [str(venv_dir / "bin" / "python"), str(path)]


def script_relpath(script: str) -> str:
    """`./main.py` → `main.py`; the script path relative to the app dir."""
    relpath = script.strip()
    while relpath.startswith("./"):
        relpath = relpath[2:]
    return relpath


def exit_code_of(returncode: int) -> int:
    """Popen's return code as a run exit code (`-N` for signal N becomes `128 + N`)."""
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


def decode_line(raw: bytes) -> str:
    """One output line as text, without its line ending."""
    text = raw.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


class AppProcess:
    """One running app: its process group, its output (read by the runner's output pump),
    and how to stop it."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        on_line: LineCallback,
        channel: str = "program",
        preexec: Callable[[], None] | None = None,
        popen_extra: Mapping[str, object] | None = None,
        wrapped: bool = False,
        dies_with_parent: bool = False,
        prepare: Callable[[int], None] | None = None,
        launch: Callable[[int], Launched] | None = None,
        gate_message: bytes | None = b"\n",
    ) -> None:
        """`preexec` replaces the default die-with-parent hook (it should include it);
        `popen_extra` adds Popen arguments (e.g. `user`); `wrapped` says the process is
        a wrapper (bubblewrap) that exits with the app's status, 128+N for signal N;
        `dies_with_parent` says the command asks for its parent-death signal itself
        (bwrap's `--die-with-parent`): without a `preexec` it then gets no hook;
        `prepare` starts it behind the gate, called with its pid before the gate
        opens (an OSError from it keeps the gate closed and fails `start`); `launch`
        starts the process instead of `Popen` (a run forked from a template), given the
        read end of its gate: it must wait until `gate_message` arrives there, and exit
        without starting anything at end of file. A `gate_message` of None keeps the
        gate shut once the process is prepared: `take_gate` hands its write end over."""
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.on_line = on_line
        self.channel = channel
        self.preexec = preexec
        self.popen_extra = dict(popen_extra or {})
        self.wrapped = wrapped
        self.dies_with_parent = dies_with_parent
        self.prepare = prepare
        self.launch = launch
        self.gate_message = gate_message
        #: the write end of a gate kept shut (`gate_message` None), until taken
        self._shut_gate: int | None = None
        self._proc: subprocess.Popen[bytes] | Launched | None = None
        #: readable once the process exits (a Linux pidfd), so a wait wakes at once
        self._exit_fd: int | None = None
        #: set once the app's stdout, then stderr, reached end of file and was read
        self._drained: list[threading.Event] = []
        #: the signal that ended the process, if one did
        self.killed_by: int | None = None
        #: when (time.monotonic) the command was let go: Popen returned or the gate opened
        self.began_at: float | None = None

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def _popen(self) -> subprocess.Popen[bytes] | Launched:
        if self._proc is None:
            raise RuntimeError("the process has not been started")
        return self._proc

    def start(self) -> None:
        """Start the process (raises OSError when it cannot be started)."""
        if self.launch is not None:
            self._launch(self.launch)
        else:
            self._spawn()
        # Behind a gate kept shut it has not begun.
        self.began_at = time.monotonic() if self._shut_gate is None else None
        self._exit_fd = _pidfd(self._popen.pid)
        for stream in (self._popen.stdout, self._popen.stderr):
            assert stream is not None
            self._drained.append(output_pump.watch(stream, self._emit_raw, MAX_LINE_BYTES))

    def _launch(self, launch: Callable[[int], Launched]) -> None:
        gate_read, gate_write = os.pipe()
        try:
            self._proc = launch(gate_read)
        except BaseException:
            os.close(gate_write)
            raise
        finally:
            os.close(gate_read)
        self._open_gate(gate_write)

    def _spawn(self) -> None:
        shell = gate_shell() if self.prepare is not None else None
        if self.prepare is not None and shell is None:
            raise OSError("no shell to start the app behind a gate (dash) on this host")
        gate = os.pipe() if shell is not None else None
        argv = [shell, "-c", GATE_SCRIPT, "tower-gate", *self.argv] if shell else self.argv
        try:
            self._proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdin=gate[0] if gate else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                preexec_fn=self._preexec_fn(),
                **self.popen_extra,  # type: ignore[arg-type]
            )
        except BaseException:
            if gate:
                os.close(gate[1])
            raise
        finally:
            if gate:
                os.close(gate[0])
        if gate:
            self._open_gate(gate[1])

    def _open_gate(self, gate: int) -> None:
        """Prepare the waiting process, then let it exec its command; when preparing
        fails, close the gate (it exits, nothing started) and raise."""
        assert self._proc is not None
        try:
            if self.prepare is not None:
                self.prepare(self._proc.pid)
            if self.gate_message is None:
                self._shut_gate = gate
                return
            message = memoryview(self.gate_message)
            while message:
                message = message[os.write(gate, message) :]
        except BaseException:
            os.close(gate)
            self._proc.wait()
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()
            raise
        os.close(gate)

    def take_gate(self) -> int:
        """The write end of the gate kept shut (see `gate_message`): the caller writes
        what the process waits for there, and closes it."""
        if self._shut_gate is None:
            raise RuntimeError("no gate was kept shut for this process")
        gate, self._shut_gate = self._shut_gate, None
        return gate

    def _preexec_fn(self) -> Callable[[], None] | None:
        if self.preexec is not None or self.dies_with_parent:
            return self.preexec
        return die_with_parent_hook()

    def _emit_raw(self, raw: bytes) -> None:
        # A sink that raises is logged by the pump, which goes on reading.
        self.on_line(self.channel, decode_line(raw))

    def poll(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds; the exit code once finished, else None.

        Returns the moment the process exits: `Popen.wait(timeout)` alone sleeps in
        steps of up to 50 ms, which every app that starts another and waits for it
        would pay once per link."""
        if self._exit_fd is not None and self._popen.returncode is None:
            if not readable_within(self._exit_fd, timeout):
                return None
            timeout = KILL_WAIT_S  # it has exited: reaping it takes no time
        try:
            self._popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._finish()

    def exited(self) -> bool:
        """Whether the process has exited (one started with `Popen` is not reaped; a
        launched one is asked, see `Launched.poll`)."""
        if self._proc is None or self._proc.returncode is not None:
            return self._proc is not None
        if not isinstance(self._proc, subprocess.Popen):
            return self._proc.poll() is not None
        try:
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            return os.waitid(os.P_PID, self._proc.pid, flags) is not None
        except ChildProcessError:  # reaped by another thread meanwhile
            return True

    def wait(self) -> int:
        """Wait for the process to exit and its output to drain; returns the exit code."""
        self._popen.wait()
        return self._finish()

    def _finish(self) -> int:
        # Whatever the app left behind in its group (background children) dies with it;
        # output already in the pipes stays readable, so nothing is lost.
        self._signal_group(signal.SIGKILL)
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        for drained in self._drained:
            drained.wait(DRAIN_TIMEOUT_S)
        returncode = self._popen.returncode
        self.killed_by = -returncode if returncode < 0 else None
        if self.wrapped and SIGNAL_EXIT_BASE < returncode <= SIGNAL_EXIT_BASE + MAX_SIGNAL:
            self.killed_by = returncode - SIGNAL_EXIT_BASE
        return exit_code_of(returncode)

    def terminate(self, grace_s: float) -> int:
        """SIGTERM the whole group, wait up to `grace_s`, then SIGKILL; returns the exit code."""
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM, spare_leader=self.wrapped)
            try:
                self._popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                logger.info("pid %s ignored SIGTERM for %.1fs; killing", self.pid, grace_s)
                self._signal_group(signal.SIGKILL)
                self._popen.wait(timeout=KILL_WAIT_S)
        return self._finish()

    def _signal_group(self, signum: int, *, spare_leader: bool = False) -> None:
        """Signal the app's process group. `spare_leader`: all but the group leader —
        bubblewrap dies of SIGTERM and would take the app down at once (SIGKILL by
        die-with-parent), when the app should get its grace period."""
        if not spare_leader:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)
            return
        for pid in group_members(self.pid):
            if pid != self.pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signum)


def readable_within(fd: int, timeout: float | None) -> bool:
    """Whether `fd` is readable (or at end of file) within `timeout` seconds (None: no
    limit). poll(), not select(): a runner's descriptors may number beyond 1024."""
    waiter = select.poll()
    waiter.register(fd, select.POLLIN)
    return bool(waiter.poll(None if timeout is None else timeout * 1000))


@cache
def gate_shell() -> str | None:
    """The shell gated processes wait in: dash, which takes nothing but variables from
    its environment — it runs with the app's environment (secrets and parameters by
    any name) before the sandbox, as the runner's user. bash, even as `sh`, would
    run code from some (imported functions, SHELLOPTS with PS4). None without dash."""
    for path in GATE_SHELLS:
        if os.access(path, os.X_OK):
            return path
    return None


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when `pid` exits (Linux 5.3+), or None."""
    open_pidfd = getattr(os, "pidfd_open", None)
    if open_pidfd is None:
        return None
    try:
        return open_pidfd(pid)
    except OSError:  # an older kernel, or a seccomp profile that forbids it
        return None


def proc_files(name: str) -> Iterator[tuple[int, str]]:
    """(pid, text of /proc/<pid>/<name>) for every live process (none without /proc).

    The pids come from a plain listing, and a process that exits before its file is
    read is skipped. Globbing /proc instead looks at each entry, and that fails
    (ESRCH) for a process that went after the listing."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return
    for pid in names:
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/{name}", encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:  # exited while we looked
            continue
        yield int(pid), text


def group_members(pgid: int) -> list[int]:
    """Live processes of process group `pgid`, from /proc (empty without /proc)."""
    members = []
    for pid, stat in proc_files("stat"):
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(pid)
    return members


@cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, or None where there is none (not Linux, no libc found)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The interpreter links libc, so its own symbols include prctl.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def die_with_parent_hook() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the kernel SIGKILL the child when the runner dies.

    PR_SET_PDEATHSIG fires when the *thread* that spawned the child exits, not only
    the process. That is what we want: an app is spawned by its run's worker thread,
    which lives (waiting on the app) until the app is gone. None where unsupported.
    """
    prctl = _prctl()  # resolved here: the child should run as little Python as possible
    if prctl is None:
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the runner died before the request took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent
