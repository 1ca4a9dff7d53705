"""Fork templates: runs forked from a waiting interpreter instead of started afresh.

Starting a sandboxed Python costs about 17 ms of CPU (bubblewrap, setpriv, the
interpreter's start-up); forking a waiting one costs a few. A *template* is an
interpreter kept per (venv, sandbox request) pair, inside bubblewrap, that forks
each run of that pair and sets it up as bubblewrap and setpriv would have (see
`fork_boot`, which runs in it):

- the same read-only system view, venv and Python install, private /tmp, /dev/shm
  and /proc, its own PID, mount, IPC, UTS and cgroup namespaces, only its own
  directories of the runner's work root;
- the run's own uid lease, memory cgroup and limits, set by the runner from the
  moment the process is forked (while it sets itself up) and before its gate opens
  (`Jail.confiner`), as for a gated cold start;
- no groups, no capabilities, no new privileges once the app code runs.

The template itself runs as root with CAP_SETUID, CAP_SETGID, CAP_SETPCAP and
CAP_SYS_ADMIN only,
and never runs code of the venv's packages: their site-packages directory is hidden
under an empty tmpfs until a forked run has dropped its privileges.

Used only where that holds and changes nothing a run could tell: a root runner with
working bwrap; a plain Python script; a network-sharing request; an environment with
no variable Python, libc or the dynamic linker read at start-up that differs from
the template's (those would need an exec). Anything else, or a template that fails,
starts the app cold.

The pool (`tower.runner.warm`) has each template fork one run ahead, in a slot of
its own, confined, its privileges dropped and (for an app that imports the Tower SDK)
the SDK imported, waiting for its run: the next run of the pair moves its package into
that slot and skips the fork, the cgroup move and those imports.
"""

from __future__ import annotations

import array
import contextlib
import logging
import marshal
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from functools import cache
from pathlib import Path
from typing import IO, Any

from tower.runner import workdirs
from tower.runner.environment import RunPaths, interpreter_environment
from tower.runner.process import AppProcess, readable_within
from tower.runner.sandbox import Mounts, Sandbox, bwrap_argv

logger = logging.getLogger(__name__)

#: all the template needs: switch a forked run's uid and gid, set up its namespaces
TEMPLATE_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SYS_ADMIN")
#: how long a template may take to start (s)
TEMPLATE_READY_S = 10.0
#: how long a forked run may take to set up its namespaces (s)
FORK_SETUP_S = 10.0
#: how long a template told to stop gets to exit by itself (s)
STOP_WAIT_S = 1.0
#: the longest answer the template sends (a pid, or an error)
ANSWER_BYTES = 4096
SITE_PACKAGES_GLOB = "lib/python*/site-packages"
STATUS_READY = b"R"
STATUS_ERROR = b"E"
#: the status pipe was closed with nothing more: only SIGKILL ends the forked process
#: without its saying how the app ended
KILLED = -9


class ForkUnavailable(OSError):
    """The template could not fork the run; nothing of the run has executed."""


@cache
def template_source() -> str:
    """The code a template runs with `python -c`: `fork_boot`, then `warm_boot`."""
    here = Path(__file__).parent
    parts = [(here / name).read_text(encoding="utf-8") for name in ("fork_boot.py", "warm_boot.py")]
    return "\n\n".join(parts)


def site_dirs(venv_dir: Path) -> tuple[Path, ...]:
    """The venv's site-packages directories (hidden in its template)."""
    return tuple(sorted(path for path in venv_dir.glob(SITE_PACKAGES_GLOB) if path.is_dir()))


class ForkedChild:
    """The forked run as `AppProcess` sees a process (a `Popen`'s pid, output pipes,
    `poll` and `wait`). Not the runner's child: its exit status comes on the status
    pipe, written by the forked process before it exits."""

    def __init__(
        self,
        pid: int,
        status: int,
        stdout: IO[bytes],
        stderr: IO[bytes],
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.pid = pid
        self.args = f"forked run {pid}"
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._status = status
        self._said = b""
        self._on_exit = on_exit

    def poll(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.wait(0)
        return None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is not None:
            return self.returncode
        if not readable_within(self._status, timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        while chunk := os.read(self._status, 64):
            self._said += chunk
        os.close(self._status)
        self.returncode = int(self._said) if self._said.isdigit() else KILLED
        if self._on_exit is not None:
            self._on_exit()
        return self.returncode


class ForkTemplate:
    """One template: its bubblewrap process, the socket it takes requests on, and
    its slot (a work dir for its own HOME and TMPDIR)."""

    def __init__(
        self,
        key: Any,
        process: AppProcess,
        connection: socket.socket,
        resources: ExitStack,
        site: tuple[Path, ...],
        environment: Mapping[str, str],
        work_root: Path,
    ) -> None:
        self.key = key
        self.process = process
        self.site = site
        self.work_root = work_root
        self.environment = dict(environment)
        self.last_used = time.monotonic()
        self._connection = connection
        self._resources = resources
        self._lock = threading.Lock()
        self._closed = False
        #: forked runs not ended yet: it is stopped only once there are none (they
        #: die with it)
        self._active = 0

    def setup(
        self,
        uid: int | None,
        own_dirs: Sequence[Path],
        readable: Sequence[Path],
        preload: Sequence[str] = (),
    ) -> dict[str, Any]:
        """What it needs to fork a run and set it up (see `fork_boot`): the run's uid,
        its own directories (writable) and what it reads; the work root is hidden and
        the venv's site-packages shown. The run imports `preload` once its privileges
        are dropped, when forked with a `ready` pipe."""
        return {
            "uid": uid,
            "dirs": [str(path) for path in own_dirs],
            "read": [str(path) for path in readable],
            "hide": str(self.work_root),
            "site": [str(path) for path in self.site],
            "preload": list(preload),
        }

    def wait_ready(self, timeout: float) -> bool:
        """Whether it said it is ready within `timeout`."""
        ready = readable_within(self._connection.fileno(), timeout)
        return ready and self._connection.recv(ANSWER_BYTES) == b"ready"

    def alive(self) -> bool:
        """Whether it still runs (a closed one may, for the runs forked from it)."""
        return not self.process.exited()

    def takes_runs(self) -> bool:
        return not self._closed and self.alive()

    def fork(
        self,
        run: Mapping[str, Any],
        gate: int,
        confine: Callable[[int], None] | None = None,
        ready: int | None = None,
    ) -> ForkedChild:
        """Fork `run` (see `fork_boot` for its keys), waiting at `gate` once set up
        (for `GATE_GO`, then the run itself); ForkUnavailable when that fails (nothing
        of it ran). `confine` is called with the forked pid while the process sets
        itself up: moving a process into a cgroup can wait for the kernel for
        milliseconds (an RCU grace period), time the set-up need not wait behind. An
        OSError from it fails the fork as is. With `ready` (a pipe's write end, the
        caller's still) the run imports its `preload` modules before it reads its run,
        and says which loaded there."""
        self.last_used = time.monotonic()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        status_read, status_write = os.pipe()
        passed = [out_write, err_write, gate, status_write]
        if ready is not None:
            passed.append(ready)
        try:
            pid = self._request(marshal.dumps(dict(run)), passed)
        except BaseException:
            for fd in (out_read, err_read, status_read):
                os.close(fd)
            raise
        finally:
            for fd in (out_write, err_write, status_write):
                os.close(fd)
        stdout, stderr = os.fdopen(out_read, "rb"), os.fdopen(err_read, "rb")
        try:
            if confine is not None:
                confine(pid)
            _await_setup(status_read)
        except BaseException:
            stdout.close()
            stderr.close()
            os.close(status_read)
            raise
        with self._lock:
            self._active += 1
        return ForkedChild(pid, status_read, stdout, stderr, self._ended)

    def _ended(self) -> None:
        with self._lock:
            self._active -= 1
            last = self._closed and self._active == 0
        if last:
            self._stop()

    def _request(self, message: bytes, fds: list[int]) -> int:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        try:
            with self._lock:
                if self._closed:
                    raise ForkUnavailable("the fork template was stopped")
                self._connection.sendmsg([message], rights)
                answer = self._connection.recv(ANSWER_BYTES)
        except ForkUnavailable:
            raise
        except OSError as exc:
            raise ForkUnavailable(f"the fork template is gone ({exc})") from exc
        if not answer.isdigit():
            reason = answer[1:].decode(errors="replace") if answer else "it exited"
            raise ForkUnavailable(f"the fork template could not fork the run: {reason}")
        return int(answer)

    def close(self) -> None:
        """Take no more runs, and stop once the runs forked from it have ended (they
        die with it). Only the first call does anything."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._connection.close()  # end of file: it exits once its runs have
            idle = self._active == 0
        if idle:
            self._stop()

    def _stop(self) -> None:
        if self.process.poll(STOP_WAIT_S) is None:
            self.process.terminate(0)
        self._resources.close()


def _await_setup(status: int) -> None:
    """Wait for the forked process to say it set the run up (`R`) and waits at its gate."""
    readable = readable_within(status, FORK_SETUP_S)
    said = os.read(status, ANSWER_BYTES) if readable else b""
    if said == STATUS_READY:
        return
    if said.startswith(STATUS_ERROR):
        reason = said[1:].decode(errors="replace")
        raise ForkUnavailable(f"the forked run could not be set up: {reason}")
    raise ForkUnavailable("the forked run did not get ready" if not readable else "it exited")


def start_template(
    sandbox: Sandbox,
    key: Any,
    venv_python: Path,
    readable: tuple[Path, ...],
    shared: tuple[Path, ...],
    work_root: Path,
    parent_env: Mapping[str, str],
) -> ForkTemplate:
    """Start a template for the venv of `venv_python` (call it from a thread that lives
    as long as the template: bwrap dies with the thread that started it)."""
    assert sandbox.bwrap is not None
    venv_dir = venv_python.parent.parent
    site = site_dirs(venv_dir)
    if not site:
        raise ForkUnavailable(f"no site-packages directory in {venv_dir}")
    resources = ExitStack()
    try:
        slot = resources.enter_context(workdirs.run_work_dir(work_root, str(uuid.uuid4())))
        home, tmp = workdirs.home_and_tmp(slot)
        env = interpreter_environment(RunPaths(slot, (), venv_dir, home, tmp), parent_env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        resources.callback(ours.close)
        argv = [str(venv_python), "-c", template_source(), "template", str(theirs.fileno())]
        mounts = Mounts((work_root,), readable, slot, shared)
        command = bwrap_argv(
            sandbox.bwrap,
            argv,
            mounts,
            system=sandbox.system,
            isolate_network=False,
            own_pids=False,
            keep_caps=TEMPLATE_CAPS,
            hidden=site,
        )
        process = AppProcess(
            command,
            cwd=slot,
            env=env,
            on_line=_log_line,
            channel="template",
            wrapped=True,
            dies_with_parent=True,
            popen_extra={"pass_fds": (theirs.fileno(),)},
        )
        try:
            process.start()
        finally:
            theirs.close()
        workdirs.record_app_group(slot, process.pid)
    except BaseException:
        resources.close()
        raise
    template = ForkTemplate(key, process, ours, resources, site, env, work_root)
    if not template.wait_ready(TEMPLATE_READY_S):
        template.close()
        raise ForkUnavailable("the fork template did not start")
    return template


def _log_line(channel: str, content: str) -> None:
    logger.info("fork template: %s", content)
