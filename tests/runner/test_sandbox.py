"""The sandbox with real bubblewrap, real uids and real processes: escapes attempted
by an app fail, limits end runs with a clear message, and the runner survives.

These need root (a uid per run) and a working `bwrap`; CI has both
(`scripts/system-deps.sh` installs bubblewrap). Elsewhere they skip and say why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import Sink, worker_uids

from tower.core.package import build_package, extract_package
from tower.core.runs import RunStatus
from tower.core.towerfile import load_towerfile
from tower.runner import workdirs
from tower.runner.cgroups import RunCgroup
from tower.runner.environment import RunContext
from tower.runner.execute import Outcome, execute
from tower.runner.process import GATE_CLOSED_EXIT, AppProcess, gate_shell
from tower.runner.sandbox import (
    Jail,
    Limits,
    Mounts,
    RunRequest,
    Sandbox,
    SandboxConfig,
    SandboxMode,
    UidLease,
    uid_processes,
)
from tower.runner.settings import RunnerSettings, run_parent_environment
from tower.runner.venvs import VenvCache

pytestmark = pytest.mark.xdist_group("runner-uv")

#: uids only these tests lease, a range per xdist worker: each test checks that no
#: process of its range outlives its run, which must not see another worker's runs
TEST_UIDS = worker_uids(2_100_000)
DEFAULTS = Limits(memory_mb=512, cpu_seconds=60, file_size_mb=64, processes=64)
MAXIMUMS = Limits(memory_mb=768, cpu_seconds=120, file_size_mb=128, processes=128)


def _bwrap_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root: each run gets its own uid only when the runner is root"
    if shutil.which("bwrap") is None:
        return "needs bubblewrap (`bash scripts/system-deps.sh` installs it)"
    return None


needs_bwrap = pytest.mark.skipif(_bwrap_problem() is not None, reason=_bwrap_problem() or "")


class RunnerHome:
    """A runner's `$TOWER_HOME` with what an app must never reach: another run's
    files, the runner's credentials and its private key."""

    def __init__(self, root: Path) -> None:
        self.settings = RunnerSettings(home=root)
        runner_dir = self.settings.runner_dir
        runner_dir.mkdir(parents=True)
        self.credentials = runner_dir / "credentials.env"
        self.credentials.write_text("TOWER_RUNNER_TOKEN=rt-very-secret\n")
        self.private_key = runner_dir / "runner-key.pem"
        self.private_key.write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
        for path in (self.credentials, self.private_key):
            path.chmod(0o600)
        #: the sandboxes made here, closed with the home (their kept cgroups removed)
        self.sandboxes: list[Sandbox] = []
        self.other_run = self.settings.work_dir / "other-run"
        self.other_run.mkdir(parents=True)
        (self.other_run / "result.csv").write_text("another run's data\n")

    def sandbox(self, **config: object) -> Sandbox:
        options: dict[str, object] = {
            "default_limits": DEFAULTS,
            "max_limits": MAXIMUMS,
            "run_uids": TEST_UIDS,
            "state_dir": self.settings.runner_dir,
        }
        made = Sandbox(SandboxConfig(**{**options, **config}))  # type: ignore[arg-type]
        self.sandboxes.append(made)
        return made

    def close(self) -> None:
        for made in self.sandboxes:
            made.close()

    def run(
        self,
        make_app: Callable[..., Path],
        venvs: VenvCache,
        sandbox: Sandbox,
        code: str,
        *,
        request: RunRequest | None = None,
        parameters: dict[str, str] | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[Outcome, Sink]:
        """Run `code` as an app exactly like the agent: package extracted into the
        run's work dir, executed through `execute` with the runner's sandbox."""
        built = build_package(load_towerfile(make_app({"main.py": code})))
        sink = Sink()
        run_id = f"run-{uuid.uuid4().hex[:8]}"
        with workdirs.run_work_dir(self.settings.work_dir, run_id) as work:
            manifest = extract_package(built.data, work / "package")
            outcome = execute(
                work / "package",
                manifest,
                RunContext(run_id=run_id, parameters=parameters or {}),
                venvs,
                sink,
                work_dir=work,
                parent_env=run_parent_environment(),
                cancel=cancel,
                cancel_grace_s=5.0,
                sandbox=sandbox,
                request=request,
            )
        return outcome, sink


@pytest.fixture
def home(tmp_path: Path) -> Iterator[RunnerHome]:
    made = RunnerHome(tmp_path / "home")
    yield made
    made.close()


@pytest.fixture
def sandbox(home: RunnerHome) -> Iterator[Sandbox]:
    box = home.sandbox()
    assert box.bwrap is not None, "bwrap is installed but does not work on this host"
    yield box
    for uid in TEST_UIDS:
        left = uid_processes(uid)
        assert left == [], f"run uid {uid} has processes after its run: {_describe(left)}"


def _describe(pids: list[int]) -> list[str]:
    """What each leftover process is, for the failure message."""
    described = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            cmdline, state = "(gone)", "?"
        described.append(f"{pid} [{state}] {cmdline}")
    return described


ESCAPE_APP = """\
import json, os, signal

results = {}
def attempt(name, action):
    try:
        action()
        results[name] = "ESCAPED"
    except Exception as exc:
        results[name] = type(exc).__name__

def read(path):
    return lambda: open(path).read()

def write(path):
    def go():
        with open(path, "w") as handle:
            handle.write("pwned")
    return go

runner = int(os.environ["runner_pid"])
attempt("read another run's file", read(os.environ["other_run_file"]))
attempt("list another run's dir", lambda: os.listdir(os.environ["other_run_dir"]))
attempt("read the runner's credentials", read(os.environ["credentials"]))
attempt("read the runner's private key", read(os.environ["private_key"]))
attempt("read the runner's environ", read(f"/proc/{runner}/environ"))
attempt("read /etc/shadow", read("/etc/shadow"))
attempt("signal the runner", lambda: os.kill(runner, signal.SIGKILL))
attempt("signal the runner's group", lambda: os.killpg(runner, signal.SIGKILL))
attempt("write to /usr", write("/usr/pwned"))
attempt("write to /etc", write("/etc/pwned"))
attempt("write next to the run dir", write(os.environ["work_root"] + "/pwned"))
attempt("write into the venv", write(os.environ["VIRTUAL_ENV"] + "/pwned"))
attempt("write into the runner dir", write(os.environ["runner_dir"] + "/pwned"))
print("ESCAPES", json.dumps(results), flush=True)

with open("own-file.txt", "w") as handle:
    handle.write("mine")
with open(os.path.join(os.environ["HOME"], "home-file"), "w") as handle:
    handle.write("mine")
with open(os.environ["tmp_marker"], "w") as handle:
    handle.write("private /tmp")
print("work root holds", sorted(os.listdir(os.environ["work_root"])))
print("system files readable", bool(open("/etc/passwd").read()), os.path.isdir("/etc/ssl"))
print("uid", os.getuid(), "pid", os.getpid())
print("token", os.environ.get("TOWER_RUNNER_TOKEN"))
print("processes", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
"""


@needs_bwrap
def test_escapes_fail_and_the_runner_is_untouched(
    home: RunnerHome,
    sandbox: Sandbox,
    make_app: Callable[..., Path],
    venv_cache: VenvCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOWER_RUNNER_TOKEN", "rt-from-the-runner-env")
    tmp_marker = f"/tmp/tower-escape-{uuid.uuid4().hex}"
    parameters = {
        "runner_pid": str(os.getpid()),
        "other_run_file": str(home.other_run / "result.csv"),
        "other_run_dir": str(home.other_run),
        "credentials": str(home.credentials),
        "private_key": str(home.private_key),
        "work_root": str(home.settings.work_dir),
        "runner_dir": str(home.settings.runner_dir),
        "tmp_marker": tmp_marker,
    }
    outcome, sink = home.run(make_app, venv_cache, sandbox, ESCAPE_APP, parameters=parameters)
    program = sink.program()
    assert outcome.status == RunStatus.EXITED, sink.lines
    escapes = json.loads(next(ln for ln in program if ln.startswith("ESCAPES ")).split(" ", 1)[1])
    assert len(escapes) == 13
    assert {name: result for name, result in escapes.items() if result == "ESCAPED"} == {}
    # Hidden, not merely forbidden: the runner's files and other runs are not there.
    for hidden in ("read another run's file", "read the runner's credentials"):
        assert escapes[hidden] == "FileNotFoundError"
    assert escapes["signal the runner"] == "ProcessLookupError", "another PID namespace"
    run_line = next(ln for ln in program if ln.startswith("work root holds"))
    assert "other-run" not in run_line
    assert "system files readable True True" in program
    uid_line = next(ln for ln in program if ln.startswith("uid "))
    assert int(uid_line.split()[1]) in TEST_UIDS
    assert "token None" in program, "the runner's credentials never reach the app"
    assert program[-1] == "processes [1, 2]", "only bwrap's init and the app itself"
    assert not Path(tmp_marker).exists(), "/tmp was the run's own"
    assert home.credentials.read_text() == "TOWER_RUNNER_TOKEN=rt-very-secret\n"
    assert not (home.settings.work_dir / "pwned").exists()


@needs_bwrap
def test_memory_beyond_the_limit_crashes_the_run_saying_the_limit(
    home: RunnerHome, sandbox: Sandbox, make_app: Callable[..., Path], venv_cache: VenvCache
) -> None:
    # The app asks for far more than the runner allows: it gets the runner's maximum.
    request = RunRequest(limits={"memory_mb": 1_000_000})
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))\n"
    outcome, sink = home.run(make_app, venv_cache, sandbox, hog, request=request)
    assert outcome.status == RunStatus.CRASHED, sink.lines
    assert outcome.message is not None
    assert outcome.message.startswith("The app exceeded the memory limit of 768 MiB"), outcome
    assert ("setup", "The run crashed: the app exceeded the memory limit of 768 MiB.") in (
        sink.lines
    )


@needs_bwrap
def test_without_memory_cgroups_the_address_space_limit_says_the_limit(
    home: RunnerHome, make_app: Callable[..., Path], venv_cache: VenvCache
) -> None:
    sandbox = home.sandbox(memory_cgroups=False)
    assert sandbox.cgroups is None
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))\n"
    outcome, sink = home.run(make_app, venv_cache, sandbox, hog)
    assert outcome.status == RunStatus.CRASHED, sink.lines
    assert (outcome.message or "").startswith("The app exceeded the memory limit of 512 MiB")
    assert any("MemoryError" in line for line in sink.program()), sink.lines


@needs_bwrap
def test_a_fork_bomb_is_contained_and_the_runner_keeps_serving(
    home: RunnerHome, sandbox: Sandbox, make_app: Callable[..., Path], venv_cache: VenvCache
) -> None:
    bomb = "import os\nwhile True:\n    os.fork()\n"
    outcome, sink = home.run(
        make_app, venv_cache, sandbox, bomb, request=RunRequest(limits={"processes": 16})
    )
    assert outcome.status == RunStatus.CRASHED, sink.lines
    assert outcome.message is not None
    assert outcome.message.startswith("The app hit the process limit of 16 processes"), outcome
    # Nothing of the bomb is left (the fixture checks every run uid), and the next run
    # is served as usual.
    outcome, sink = home.run(make_app, venv_cache, sandbox, "print('still serving')\n")
    assert (outcome.status, sink.program()) == (RunStatus.EXITED, ["still serving"])


@needs_bwrap
def test_cpu_time_and_file_size_limits(
    home: RunnerHome, sandbox: Sandbox, make_app: Callable[..., Path], venv_cache: VenvCache
) -> None:
    spin = "while True:\n    pass\n"
    outcome, _ = home.run(
        make_app, venv_cache, sandbox, spin, request=RunRequest(limits={"cpu_seconds": 1})
    )
    assert outcome.status == RunStatus.CRASHED
    assert outcome.message == "The app exceeded the CPU time limit of 1 s (exit code 152)."
    big = "with open('big', 'wb') as f:\n    f.write(b'x' * 3 * 1024 * 1024)\n"
    outcome, _ = home.run(
        make_app, venv_cache, sandbox, big, request=RunRequest(limits={"file_size_mb": 2})
    )
    assert outcome.status == RunStatus.CRASHED
    assert (outcome.message or "").startswith("The app exceeded the file size limit of 2 MiB")


@needs_bwrap
def test_network_isolation_is_per_run(
    home: RunnerHome, sandbox: Sandbox, make_app: Callable[..., Path], venv_cache: VenvCache
) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    app = f"""\
import socket
import subprocess
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
    print("connected")
except OSError as exc:
    print("no network:", type(exc).__name__)
"""
    try:
        _, shared = home.run(make_app, venv_cache, sandbox, app)
        _, isolated = home.run(
            make_app, venv_cache, sandbox, app, request=RunRequest(isolate_network=True)
        )
    finally:
        server.close()
    assert shared.program() == ["connected"]
    assert isolated.program()[0].startswith("no network:")


@needs_bwrap
def test_a_cancel_gives_the_sandboxed_app_its_grace_period(
    home: RunnerHome, sandbox: Sandbox, make_app: Callable[..., Path], venv_cache: VenvCache
) -> None:
    app = """\
import signal, sys, time
def stop(signum, frame):
    print("cleaning up after SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("working", flush=True)
time.sleep(60)
"""
    cancel = threading.Event()
    timer = threading.Timer(1.5, cancel.set)
    timer.start()
    try:
        outcome, sink = home.run(make_app, venv_cache, sandbox, app, cancel=cancel)
    finally:
        timer.cancel()
    assert outcome.status == RunStatus.CANCELLED
    assert sink.program() == ["working", "cleaning up after SIGTERM"]


def test_without_bwrap_the_limits_still_apply(
    home: RunnerHome,
    make_app: Callable[..., Path],
    venv_cache: VenvCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sandbox = home.sandbox(mode=SandboxMode.OFF)
    assert sandbox.bwrap is None
    assert "resource limits only" in caplog.text
    hog = "x = bytearray(2 * 1024 * 1024 * 1024)\n"
    outcome, _ = home.run(make_app, venv_cache, sandbox, hog)
    assert outcome.status == RunStatus.CRASHED
    assert (outcome.message or "").startswith("The app exceeded the memory limit of 512 MiB")


def test_network_isolation_without_bwrap_is_refused(
    home: RunnerHome, make_app: Callable[..., Path], venv_cache: VenvCache
) -> None:
    sandbox = home.sandbox(mode=SandboxMode.OFF)
    outcome, sink = home.run(
        make_app, venv_cache, sandbox, "print('ran')\n", request=RunRequest(isolate_network=True)
    )
    assert outcome.status == RunStatus.ERRORED
    assert "network isolation" in (outcome.message or "")
    assert sink.program() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: run uids exist only when root")
def test_a_new_runner_kills_what_a_crashed_one_left_under_run_uids(home: RunnerHome) -> None:
    uid = TEST_UIDS[-1]
    # A process of a run that left its group (setsid) outlived its crashed runner.
    orphan = subprocess.Popen(
        ["sleep", "60"], user=uid, group=uid, extra_groups=[], start_new_session=True
    )
    try:
        assert uid_processes(uid) == [orphan.pid]
        home.sandbox(mode=SandboxMode.OFF)
        assert orphan.wait(5) == -signal.SIGKILL
        assert uid_processes(uid) == []
    finally:
        orphan.kill()
        orphan.wait()


@needs_bwrap
def test_a_run_uid_left_in_use_is_searched_for_leftovers_at_its_next_lease(
    home: RunnerHome, tmp_path: Path
) -> None:
    uid = TEST_UIDS[-2]
    locks = tmp_path / "run-uids"
    box = home.sandbox(uid_locks=locks, run_uids=range(uid, uid + 1))
    lock = locks / f"{uid}.lock"
    with box.confine(RunRequest()) as jail:
        assert jail.uid == uid and lock.read_bytes() == b"", "marked in use while leased"
    assert lock.read_bytes() == UidLease.CLEAN, "its run was proven to have left nothing"
    # A runner crashed during a run of this uid: the lock says "in use", and a process
    # of the run (one that left its group) outlived it.
    lock.write_bytes(b"")
    orphan = subprocess.Popen(
        ["sleep", "60"], user=uid, group=uid, extra_groups=[], start_new_session=True
    )
    try:
        with box.confine(RunRequest()):
            assert orphan.wait(5) == -signal.SIGKILL
    finally:
        orphan.kill()
        orphan.wait()


@needs_bwrap
def test_an_app_that_cannot_join_its_cgroup_never_starts(sandbox: Sandbox, tmp_path: Path) -> None:
    if sandbox.cgroups is None or gate_shell() is None:
        pytest.skip("needs a writable memory cgroup and dash (the gate's shell)")
    marker = tmp_path / "started"
    work = tmp_path / "work"
    work.mkdir()
    with sandbox.confine(RunRequest()) as jail:
        assert jail.cgroup is not None and jail.gated
        gone = dataclasses.replace(jail, cgroup=RunCgroup(tmp_path / "gone", jail.cgroup.version))
        process = AppProcess(
            gone.command(["/usr/bin/touch", str(marker)], Mounts((work, tmp_path), (), work)),
            cwd=work,
            env={"PATH": "/usr/bin:/bin"},
            on_line=Sink(),
            preexec=gone.preexec(),
            wrapped=True,
            dies_with_parent=True,
            prepare=gone.prepare(),
        )
        with pytest.raises(OSError, match="could not join its memory cgroup"):
            process.start()
        assert process._popen.returncode == GATE_CLOSED_EXIT
    assert not marker.exists()


@needs_bwrap
def test_a_gated_app_starts_in_its_cgroup_with_its_limits(sandbox: Sandbox, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    sink = Sink()
    show = "cat /proc/self/limits; exec sleep 60"
    with sandbox.confine(RunRequest(limits={"cpu_seconds": 7})) as jail:
        process = AppProcess(
            jail.command(["/bin/sh", "-c", show], Mounts((work,), (), work)),
            cwd=work,
            env={"PATH": "/usr/bin:/bin"},
            on_line=sink,
            preexec=jail.preexec(),
            wrapped=True,
            dies_with_parent=True,
            prepare=jail.prepare(),
        )
        process.start()
        # moved in before the gate opened: all it starts is in the cgroup too
        assert jail.cgroup is None or process.pid in jail.cgroup.pids()
        process.terminate(1.0)
    limits = {line.split("  ")[0]: line.split()[-3:] for line in sink.program()}
    assert limits["Max cpu time"] == ["7", "12", "seconds"]
    assert limits["Max processes"][:2] == ["64", "64"], "its own uid: a process limit"


@needs_bwrap
def test_loader_variables_of_the_app_reach_the_app_only(
    home: RunnerHome, make_app: Callable[..., Path], venv_cache: VenvCache, sandbox: Sandbox
) -> None:
    # A preload that cannot be found makes the dynamic linker complain once per
    # program that got it: the gate's shell, bwrap and setpriv run with privileges
    # and must not; the app (python) gets the variable as set.
    outcome, sink = home.run(
        make_app,
        venv_cache,
        sandbox,
        "import os\nprint('preload', os.environ['LD_PRELOAD'], os.environ['GCONV_PATH'])\n",
        parameters={"LD_PRELOAD": "./not-there.so", "GCONV_PATH": "/nowhere"},
    )
    assert outcome.status == RunStatus.EXITED, sink.lines
    assert "preload ./not-there.so /nowhere" in sink.program()
    complaints = [text for _, text in sink.lines if "not-there.so" in text and "ld.so" in text]
    assert len(complaints) == 1, complaints


def test_privileged_processes_get_no_loader_variables() -> None:
    jail = Jail(
        limits=DEFAULTS,
        uid=4242,
        bwrap="/usr/bin/bwrap",
        setpriv="/usr/bin/setpriv",
        isolate_network=False,
    )
    mounts = Mounts(writable=(), readable=(), cwd=Path("/work/run"))
    env = {"LD_PRELOAD": "./x.so", "MALLOC_CHECK_": "3", "GLIBC_TUNABLES": "t", "HOME": "/h"}
    command, start_env = jail.command_and_env(["python", "main.py"], mounts, env)
    assert start_env == {"HOME": "/h"}
    tail = command[command.index("--no-new-privs") + 2 :]
    assert tail == [
        "/usr/bin/env",
        *("LD_PRELOAD=./x.so", "MALLOC_CHECK_=3", "GLIBC_TUNABLES=t"),
        *("python", "main.py"),
    ]
    plain, same = jail.command_and_env(["python", "main.py"], mounts, {"HOME": "/h"})
    assert plain[-2:] == ["python", "main.py"] and "/usr/bin/env" not in plain
    assert same == {"HOME": "/h"}
