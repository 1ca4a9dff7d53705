"""Runs forked from a fork template, with real bubblewrap, real uids and real
processes: a forked run sees what a cold one sees, has no more privileges, ends the
way a cold one ends, is cancelled and limited the same, and whatever does not fit a
template starts cold.

These need root (a uid per run) and a working `bwrap`, like tests/runner/test_warm.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import NEEDS_ROOT_AND_BWRAP, Sink, alive, group_members, wait_until, worker_uids
from test_warm import Runner as PoolRunner

from tower.core.runs import RunStatus
from tower.runner import workdirs
from tower.runner.execute import CANCELLED_BEFORE_START, Outcome
from tower.runner.sandbox import RunRequest, uid_processes
from tower.runner.settings import RunnerSettings, SettingsError
from tower.runner.venvs import VenvCache
from tower.runner.warm import WarmProcess

pytestmark = [
    pytest.mark.xdist_group("runner-uv"),
    NEEDS_ROOT_AND_BWRAP,
]

#: uids only these tests lease (test_sandbox.py and test_warm.py have their own), a
#: range per xdist worker
TEST_UIDS = worker_uids(2_101_000)
#: where the runners of these tests have their home (see `runner_home`)
RUNNER_HOMES = "/var/tmp"
#: how long a template may take to start in these tests (s)
TEMPLATE_WAIT_S = 30.0


class Runner(PoolRunner):
    """test_warm's runner with fork templates, leasing this file's uids."""

    def __init__(self, root: Path, venvs: VenvCache, **pool: float) -> None:
        super().__init__(root, venvs, uids=TEST_UIDS, forks=True, **pool)
        assert self.pool.forks, "a root runner with bwrap keeps fork templates"

    def prime(self, app_dir: Path, **kwargs: object) -> tuple[Outcome, Sink]:
        """Run the app once, cold (no template for its pair yet), and wait until the
        pool has started the pair's template."""
        before = self.pool.template_count()
        outcome, sink = self.run(app_dir, **kwargs)  # type: ignore[arg-type]
        assert not outcome.fork_start, "the first run of a pair starts cold"
        wait_until(lambda: self.pool.template_count() > before, timeout=TEMPLATE_WAIT_S)
        return outcome, sink

    def forked(self, app_dir: Path, **kwargs: object) -> tuple[Outcome, Sink]:
        """Run the app once cold, wait for its template, then run it again (forked)."""
        self.prime(app_dir, **kwargs)
        outcome, sink = self.run(app_dir, **kwargs)  # type: ignore[arg-type]
        assert outcome.fork_start, sink.lines
        return outcome, sink

    def ready_ahead(self, app_dir: Path, **kwargs: object) -> WarmProcess:
        """Run the app cold and forked, and wait for the run its template forks ahead
        for the next run of the pair (set up, confined, waiting at its gate)."""
        self.forked(app_dir, **kwargs)
        wait_until(lambda: self.pool.forked_count() == 1, timeout=TEMPLATE_WAIT_S)
        ((waiting,),) = self.pool._ahead.values()
        return waiting

    def forked_ahead(self, app_dir: Path, **kwargs: object) -> tuple[Outcome, Sink]:
        """Run the app in the run its template forked ahead (see `ready_ahead`)."""
        waiting = self.ready_ahead(app_dir, **kwargs)
        outcome, sink = self.run(app_dir, **kwargs)  # type: ignore[arg-type]
        assert outcome.fork_start, sink.lines
        assert_took(self, waiting)
        return outcome, sink

    def template_pid(self) -> int:
        """The pid of the pool's only template (its bubblewrap)."""
        (template,) = self.pool._templates.values()
        return template.process.pid


def assert_took(runner: Runner, waiting: WarmProcess) -> None:
    """The run forked ahead served a run: it ended, and the pool holds it no more."""
    assert waiting.process.exited(), "the run forked ahead ran the app"
    assert all(held is not waiting for kept in runner.pool._ahead.values() for held in kept)


@pytest.fixture
def runner_home() -> Iterator[Path]:
    """The runner's home, outside /tmp (which a forked run's own /tmp covers): a
    forked run must not see the runner's work root, where a run's own dir is bound."""
    home = Path(tempfile.mkdtemp(prefix="tower-forks-", dir=RUNNER_HOMES))
    yield home
    shutil.rmtree(home)


@pytest.fixture
def runner(runner_home: Path, venv_cache: VenvCache) -> Iterator[Runner]:
    box = Runner(runner_home, venv_cache)
    yield box
    templates = [template.process.pid for template in box.pool._templates.values()]
    box.close()
    assert not any(alive(pid) for pid in templates), "an idle template stops with the pool"
    _no_process_left()
    work = box.settings.work_dir
    assert not work.exists() or list(work.iterdir()) == [], "every run dir and slot was wiped"


def _no_process_left(runner: Runner | None = None) -> None:
    """No run uid has a process left (but the `runner`'s run forked ahead, once there)."""
    spared = _uids_ahead(runner) if runner is not None else set()
    for uid in set(TEST_UIDS) - spared:
        assert uid_processes(uid) == [], f"run uid {uid} has processes left"


def _uids_ahead(runner: Runner) -> set[int]:
    """The uid of the run the pool forks ahead, once it waits (it drops to its uid as
    soon as it is confined)."""
    wait_until(lambda: runner.pool.forked_count() == 1, timeout=TEMPLATE_WAIT_S)
    return {waiting.jail.uid for kept in runner.pool._ahead.values() for waiting in kept}


# ---------------------------------------------------------------- what a run sees

#: what an app can see of how it was started, with its run dir written as <RUN>;
#: `sys.modules` first, before the script's own imports
INTROSPECT_APP = """\
import sys
modules = sorted(sys.modules)
import json, os
run_dir = os.path.dirname(os.environ["HOME"])
def plain(value):
    return json.loads(json.dumps(value).replace(run_dir, "<RUN>"))
print(json.dumps(plain({
    "name": __name__,
    "file": __file__,
    "argv": sys.argv,
    "orig_argv": sys.orig_argv[1:],
    "cwd": os.getcwd(),
    "path": sys.path,
    "env": dict(os.environ),
    "flags": list(sys.flags),
    "modules": modules,
    "stdin": os.read(0, 10).decode(),
    "fds": sorted(os.listdir("/proc/self/fd")),
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
    "groups": os.getgroups(),
    "umask": os.umask(0o22),
})), flush=True)
"""


@pytest.mark.parametrize("ahead", [False, True], ids=["forked-now", "forked-ahead"])
def test_a_forked_run_sees_what_a_cold_run_sees(
    runner: Runner, make_app: Callable[..., Path], ahead: bool
) -> None:
    app = make_app({"main.py": INTROSPECT_APP})
    cold, cold_sink = runner.run(app, warm=False)
    forked, forked_sink = runner.forked_ahead(app) if ahead else runner.forked(app)
    assert (cold.status, cold.fork_start) == (RunStatus.EXITED, False), cold_sink.lines
    assert (forked.status, forked.fork_start) == (RunStatus.EXITED, True), forked_sink.lines
    seen_cold, seen_forked = (json.loads(sink.program()[0]) for sink in (cold_sink, forked_sink))
    for seen in (seen_cold, seen_forked):
        seen["env"].pop("TOWER__RUNTIME__RUN_ID")
        uid = seen["ids"][0]
        assert uid in TEST_UIDS
        assert seen.pop("ids") == [uid] * 4
    differing = set(seen_forked["env"].items()) ^ set(seen_cold["env"].items())
    assert differing == set(), "the same environment"
    extra = sorted(set(seen_forked["modules"]) - set(seen_cold["modules"]))
    missing = sorted(set(seen_cold["modules"]) - set(seen_forked["modules"]))
    assert (extra, missing) == ([], []), "the same modules loaded before the script's imports"
    assert seen_forked == seen_cold
    assert seen_forked["name"] == "__main__"
    assert seen_forked["env"]["PWD"] == seen_forked["cwd"]
    assert seen_forked["stdin"] == ""
    assert seen_forked["fds"] == ["0", "1", "2", "3"], "3: the listing's own; no pipe left open"
    assert seen_forked["groups"] == []


#: an app of the SDK: what of it was imported before the script, and what it reads
SDK_APP = """\
import sys
ahead = sorted(name for name in sys.modules if name.partition(".")[0] == "tower")
import os
import tower
print(*ahead, sep=",")
print(os.getuid(), tower.secret("API_KEY"), *sorted(os.listdir("/proc/self/fd")))
"""
SDK_MODULES = "tower,tower._env,tower._http,tower._orchestration,tower.exceptions,tower.info"


@pytest.mark.parametrize("ahead", [False, True], ids=["forked-now", "forked-ahead"])
def test_an_app_of_the_sdk_forked_ahead_has_it_imported_under_its_own_uid(
    runner: Runner, make_app: Callable[..., Path], ahead: bool
) -> None:
    app = make_app({"main.py": SDK_APP})
    secrets = {"API_KEY": "s3cret"}
    run = runner.forked_ahead if ahead else runner.forked
    outcome, sink = run(app, secrets=secrets)
    assert (outcome.status, outcome.fork_start) == (RunStatus.EXITED, True), sink.lines
    imported, (uid, secret, *fds) = sink.program()[0], sink.program()[1].split()
    # Forked now, the app imports the SDK itself, as a cold start would.
    assert imported == (SDK_MODULES if ahead else "")
    assert int(uid) in TEST_UIDS and secret == "s3cret"
    assert fds == ["0", "1", "2", "3"], "3: the listing's own; no pipe left open"


def test_a_package_shadowing_what_was_imported_ahead_is_forked_for_its_run(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    shadowing = make_app(
        {
            "main.py": "import tower\nimport http\nprint(http.MINE)\n",
            "http/__init__.py": "MINE = 1\n",
        }
    )
    waiting = runner.ready_ahead(make_app({"main.py": "import tower\n"}))
    assert waiting.wait_ready(TEMPLATE_WAIT_S) and "http" in (waiting.modules or ())
    outcome, sink = runner.run(shadowing)
    assert (outcome.status, outcome.fork_start) == (RunStatus.EXITED, True), sink.lines
    assert sink.program() == ["1"]
    assert waiting.process.exited() and not waiting.slot.exists(), "it served no run"


def test_a_pair_whose_run_found_its_run_forked_ahead_importing_keeps_two(
    runner: Runner, make_app: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app({"main.py": "import tower\nprint('hi')\n"})
    runner.ready_ahead(app)
    importing = [True]
    real_wait_ready = WarmProcess.wait_ready

    def wait_ready(self: WarmProcess, timeout: float, cancel: object = None) -> bool:
        if timeout == 0 and importing:  # the run's first look: still importing the SDK
            importing.clear()
            return False
        return real_wait_ready(self, timeout, cancel)  # type: ignore[arg-type]

    monkeypatch.setattr(WarmProcess, "wait_ready", wait_ready)
    outcome, sink = runner.run(app)
    assert (outcome.status, outcome.fork_start, sink.program()) == (RunStatus.EXITED, True, ["hi"])
    wait_until(lambda: runner.pool.forked_count() == 2, timeout=TEMPLATE_WAIT_S)
    ((first, second),) = runner.pool._ahead.values()
    assert first.jail.uid != second.jail.uid and first.slot != second.slot
    outcome, sink = runner.run(app)
    assert (outcome.fork_start, sink.program()) == (True, ["hi"])
    assert_took(runner, first)


def test_a_run_cancelled_while_its_run_forked_ahead_imports_never_starts(
    runner: Runner, make_app: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app({"main.py": "import tower\nprint('hi')\n"})
    runner.ready_ahead(app)

    def wait_ready(self: WarmProcess, timeout: float, cancel: object = None) -> bool:
        # Its imports never finish: only the run's cancel ends the wait early.
        if isinstance(cancel, threading.Event):
            cancel.wait(timeout)
        else:
            time.sleep(timeout)
        return False

    monkeypatch.setattr(WarmProcess, "wait_ready", wait_ready)
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    began = time.monotonic()
    outcome, sink = runner.run(app, cancel=cancel)
    assert (outcome.status, outcome.message) == (RunStatus.CANCELLED, CANCELLED_BEFORE_START)
    assert time.monotonic() - began < 5, "the wait for its imports heeds the cancel"
    assert sink.program() == [], "the app never ran"


#: what a run may do and see beyond its own directories, as JSON
PRIVILEGES_APP = """\
import json, os, subprocess, sys
fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
names = ("CapPrm", "CapEff", "CapAmb", "CapBnd", "NoNewPrivs")
run_dir = os.path.dirname(os.environ["HOME"])
tmp = sorted(os.listdir("/tmp"))
with open("/tmp/left-by-a-run", "w") as marker:
    marker.write("x")
def write(path):
    try:
        with open(path, "w") as target:
            target.write("pwned")
    except OSError as exc:
        return exc.errno
    return 0
child = subprocess.Popen(["sleep", "30"])
pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
child.kill()
child.wait()
print(json.dumps({
    "status": {name: fields[name].strip() for name in names},
    "uid": os.getuid(),
    "run_dir": os.path.basename(run_dir),
    "work_root": sorted(os.listdir(os.path.dirname(run_dir))),
    "pids": pids,
    "child": child.pid,
    "tmp": tmp,
    "shm": sorted(os.listdir("/dev/shm")),
    "venv_write": write(os.path.join(sys.prefix, "pwned")),
}))
"""


def _tmp_tops(*paths: Path) -> list[str]:
    """The entries of /tmp a sandbox shows for `paths` (the parents of its binds)."""
    return sorted({p.relative_to("/tmp").parts[0] for p in paths if p.is_relative_to("/tmp")})


def test_a_forked_run_has_no_privileges_and_sees_only_its_own(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": PRIVILEGES_APP})
    runner.prime(app)
    other_run = runner.settings.work_dir / "other-run"
    other_run.mkdir()
    (other_run / "result.csv").write_text("another run's data\n")
    try:
        first, first_sink = runner.run(app)  # forked when it came
        wait_until(lambda: runner.pool.forked_count() == 1, timeout=TEMPLATE_WAIT_S)
        ((waiting,),) = runner.pool._ahead.values()
        second, second_sink = runner.run(app)  # in the run forked ahead
        assert_took(runner, waiting)
    finally:
        shutil.rmtree(other_run)
    assert (first.status, first.fork_start) == (RunStatus.EXITED, True), first_sink.lines
    assert (second.status, second.fork_start) == (RunStatus.EXITED, True), second_sink.lines
    assert not Path("/tmp/left-by-a-run").exists(), "its /tmp is not the host's"
    venv_dir = runner.venvs.root
    for seen in (json.loads(sink.program()[0]) for sink in (first_sink, second_sink)):
        assert seen["status"] == {
            "CapPrm": "0000000000000000",
            "CapEff": "0000000000000000",
            "CapAmb": "0000000000000000",
            "CapBnd": seen["status"]["CapBnd"],
            "NoNewPrivs": "1",
        }
        assert seen["uid"] in TEST_UIDS
        assert seen["work_root"] == [seen["run_dir"]], "no other run, no template slot"
        assert seen["pids"] == [1, 2, seen["child"]], "its init, itself and its child only"
        # /tmp holds only the parents of what is bound there (the venvs of these
        # tests are under /tmp); the first run's file is gone.
        assert seen["tmp"] == _tmp_tops(runner.settings.work_dir, venv_dir)
        assert seen["shm"] == []
        assert seen["venv_write"] in (13, 30), "EACCES or EROFS: the venv is read-only"


CATALOG_APP = """\
import os, sys
fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
print("uid", os.getuid(), os.getgroups())
print("caps", *(fields[name].strip() for name in ("CapPrm", "CapEff", "CapAmb", "CapBnd")))
print("no new privs", fields["NoNewPrivs"].strip())
with open(os.path.join(os.environ["CATALOG_DIR"], "written-by-the-run"), "w") as out:
    out.write("rows")
try:
    open(os.path.join(sys.prefix, "pwned"), "w")
except OSError as exc:
    print("venv", exc.errno)
"""


def test_a_run_sharing_a_catalog_dir_is_forked_as_root_without_capabilities(
    runner: Runner, make_app: Callable[..., Path], tmp_path: Path
) -> None:
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    catalog = {
        "PYICEBERG_CATALOG__DEFAULT__URI": f"sqlite:///{catalog_dir}/catalog.db",
        "CATALOG_DIR": str(catalog_dir),
    }
    outcome, sink = runner.forked(make_app({"main.py": CATALOG_APP}), catalog=catalog)
    assert outcome.status == RunStatus.EXITED, sink.lines
    zero = "0000000000000000"
    assert sink.program() == [
        "uid 0 []",
        f"caps {zero} {zero} {zero} {zero}",
        "no new privs 1",
        "venv 30",  # EROFS: root's files, but a read-only view of them
    ]
    assert (catalog_dir / "written-by-the-run").read_text() == "rows"


# ---------------------------------------------------------------- how a run ends

#: (app, status, exit code) of the ways an app ends, the same forked as cold
ENDINGS = {
    "exit 0": ("print('fine')\n", RunStatus.EXITED, 0),
    "sys.exit(3)": ("import sys\nprint('bye')\nsys.exit(3)\n", RunStatus.CRASHED, 3),
    # stdout goes nowhere: the message must come on stderr
    "sys.exit(message)": (
        "import os, sys\n"
        "os.dup2(os.open('/dev/null', os.O_WRONLY), 1)\n"
        "print('on stdout')\n"
        "sys.exit('goodbye on stderr')\n",
        RunStatus.CRASHED,
        1,
    ),
    "an exception": (
        "def boom():\n    raise ValueError('no')\n\nboom()\n",
        RunStatus.CRASHED,
        1,
    ),
    "SIGTERM": (
        "import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGTERM)\n",
        RunStatus.CRASHED,
        143,
    ),
    # the interpreter shuts down (threads joined, atexit run), then dies of SIGINT
    "an uncaught Ctrl-C": (
        "import atexit, sys, threading, time\n"
        "atexit.register(lambda: print('atexit ran', file=sys.stderr, flush=True))\n"
        "late = lambda: (time.sleep(0.3), print('thread done', file=sys.stderr, flush=True))\n"
        "threading.Thread(target=late).start()\n"
        "raise KeyboardInterrupt\n",
        RunStatus.CRASHED,
        130,
    ),
}


def _in_package(line: str, work_root: Path) -> str:
    """A traceback line with the run's own directory left out."""
    return line.replace(str(work_root), "<WORK>").split("<WORK>/", 1)[-1].split("/", 1)[-1]


def test_a_forked_run_ends_as_a_cold_run_ends(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    runner.prime(make_app({"main.py": "print('prime')\n"}))
    ends: dict[str, tuple[Outcome, Sink]] = {}
    for case, (code, status, exit_code) in ENDINGS.items():
        app = make_app({"main.py": code})
        cold, cold_sink = runner.run(app, warm=False)
        forked, forked_sink = runner.run(app)
        assert forked.fork_start and not cold.fork_start, case
        assert (forked.status, forked.exit_code) == (status, exit_code), (case, forked_sink.lines)
        assert (forked.status, forked.exit_code, forked.message) == (
            cold.status,
            cold.exit_code,
            cold.message,
        ), case
        work = runner.settings.work_dir
        cold_lines = [_in_package(line, work) for line in cold_sink.program()]
        assert [_in_package(line, work) for line in forked_sink.program()] == cold_lines, case
        ends[case] = forked, forked_sink
    assert ends["sys.exit(message)"][1].program() == ["goodbye on stderr"]
    assert ends["an exception"][1].program()[-1] == "ValueError: no"
    interrupted = ends["an uncaught Ctrl-C"][1].program()
    assert interrupted[-3:] == ["KeyboardInterrupt", "thread done", "atexit ran"], interrupted
    killed, killed_sink = ends["SIGTERM"]
    assert killed_sink.program() == ["before"]
    assert killed.message == "The app was killed by SIGTERM (exit code 143)."


def test_an_uncaught_exception_shows_only_the_scripts_frames(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    helper = "def boom():\n    raise ValueError('no')\n"
    app = make_app({"main.py": "import helper\n\nhelper.boom()\n", "helper.py": helper})
    outcome, sink = runner.forked(app)
    assert (outcome.status, outcome.exit_code) == (RunStatus.CRASHED, 1)
    program = sink.program()
    assert program[0] == "Traceback (most recent call last):"
    files = [line.strip().split(",")[0] for line in program if line.startswith("  File ")]
    assert [name.rsplit("/", 1)[-1] for name in files] == ['main.py"', 'helper.py"'], program
    assert program[-1] == "ValueError: no"
    message = make_app({"main.py": "import sys\nsys.exit('goodbye')\n"})
    outcome, sink = runner.run(message)
    assert (outcome.fork_start, outcome.exit_code, sink.program()) == (True, 1, ["goodbye"])


#: an app that leaves its end to the interpreter: a thread still running, an atexit
#: callback, files open in `__main__` and in a module, a long output
ENDING_APP = """\
import atexit, os, threading, time
import helper
home = os.environ["HOME"]
log = open(os.path.join(home, "main.txt"), "w")
log.write("from __main__\\n")
helper.keep_open(os.path.join(home, "helper.txt"))
printed = threading.Event()
def late():
    printed.wait()
    time.sleep(0.3)  # the script has ended by then: the exit waits for this thread
    print("thread done", flush=True)
threading.Thread(target=late).start()
atexit.register(print, "atexit ran")
print("\\n".join(str(i) for i in range(200_000)))
print("main done")
printed.set()
"""
HELPER = """\
kept = None
def keep_open(path):
    global kept
    kept = open(path, "w")
    kept.write("from a module global\\n")
"""


def test_a_forked_run_ends_its_threads_atexit_and_files_as_a_cold_one(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": ENDING_APP, "helper.py": HELPER})
    files: dict[str, dict[str, str]] = {}

    def keep(name: str) -> Callable[[Path], None]:
        def look(work: Path) -> None:
            home, _ = workdirs.home_and_tmp(work)
            files[name] = {path.name: path.read_text() for path in home.glob("*.txt")}

        return look

    _, cold_sink = runner.run(app, warm=False, look=keep("cold"))
    runner.prime(make_app({"main.py": "print('prime')\n"}))
    forked, forked_sink = runner.run(app, look=keep("forked"))
    assert (forked.status, forked.fork_start) == (RunStatus.EXITED, True), forked_sink.lines[-5:]
    expected = [str(i) for i in range(200_000)] + ["main done", "thread done", "atexit ran"]
    assert forked_sink.program() == expected
    assert cold_sink.program() == expected
    assert (
        files["forked"]
        == files["cold"]
        == {
            "main.txt": "from __main__\n",
            "helper.txt": "from a module global\n",
        }
    )


# ---------------------------------------------------------------- cancel and limits

#: seconds the runner gives a cancelled app (the `Runner`'s cancel_grace_s)
GRACE_S = 2.0


def _cancelled(runner: Runner, app: Path, after_s: float) -> tuple[Outcome, Sink, float, int]:
    """Run `app`, cancelling it `after_s` after it started; the outcome, its lines,
    how long the run took after the cancel, and the app's process group."""
    cancel = threading.Event()
    cancelled_at: list[float] = []
    groups: list[int] = []

    def cancel_later() -> None:
        def fire() -> None:
            # The app (the oldest process of the run's uid) leads the run's group.
            groups.append(os.getpgid(min(_run_pids(runner))))
            cancelled_at.append(time.monotonic())
            cancel.set()

        threading.Timer(after_s, fire).start()

    outcome, sink = runner.run(app, cancel=cancel, on_started=cancel_later)
    return outcome, sink, time.monotonic() - cancelled_at[0], groups[0]


def test_cancel_gives_a_forked_app_its_grace_then_kills_its_group(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    runner.prime(make_app({"main.py": "print('prime')\n"}))
    stubborn = make_app(
        {
            "main.py": (
                "import signal, subprocess, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "child = subprocess.Popen(['sleep', '60'])\n"
                "print('working', flush=True)\n"
                "time.sleep(60)\n"
            )
        }
    )
    outcome, sink, took, group = _cancelled(runner, stubborn, after_s=1.0)
    assert (outcome.status, outcome.fork_start) == (RunStatus.CANCELLED, True), sink.lines
    assert sink.program() == ["working"]
    assert GRACE_S <= took < GRACE_S + 3, "SIGKILL after the grace"
    assert group_members(group) == [] and not alive(group), "its whole group is gone"
    _no_process_left(runner)

    polite = make_app(
        {
            "main.py": (
                "import signal, sys, time\n"
                "def stop(signum, frame):\n"
                "    print('cleaning up', flush=True)\n"
                "    sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, stop)\n"
                "print('working', flush=True)\n"
                "time.sleep(60)\n"
            )
        }
    )
    outcome, sink, took, group = _cancelled(runner, polite, after_s=1.0)
    assert (outcome.status, outcome.fork_start) == (RunStatus.CANCELLED, True), sink.lines
    assert sink.program() == ["working", "cleaning up"]
    assert took < GRACE_S, "it ended within its grace"
    assert group_members(group) == []


def _primed(runner: Runner, app_dir: Path, *, ahead: bool, **kwargs: object) -> WarmProcess | None:
    """Run `app_dir` until its pair has a template, and (`ahead`) a run forked ahead,
    which the next run of the pair takes."""
    if ahead:
        return runner.ready_ahead(app_dir, **kwargs)
    runner.prime(app_dir, **kwargs)
    return None


@pytest.mark.parametrize("ahead", [False, True], ids=["forked-now", "forked-ahead"])
def test_a_forked_run_hits_its_memory_limit_and_says_so(
    runner: Runner, make_app: Callable[..., Path], ahead: bool
) -> None:
    request = RunRequest(limits={"memory_mb": 256})
    waiting = _primed(
        runner, make_app({"main.py": "print('prime')\n"}), ahead=ahead, request=request
    )
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))\n"
    outcome, sink = runner.run(make_app({"main.py": hog}), request=request)
    assert (outcome.status, outcome.fork_start) == (RunStatus.CRASHED, True), sink.lines
    if waiting is not None:
        assert_took(runner, waiting)
    assert (outcome.message or "").startswith("The app exceeded the memory limit of 256 MiB")
    assert "The run crashed: the app exceeded the memory limit of 256 MiB." in sink.setup()


def _cgroup(pid: int, version: int) -> str:
    """The memory cgroup of `pid`, as the host sees it."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    wanted = (lambda line: ":memory:" in line) if version == 1 else (lambda ln: ln[:3] == "0::")
    return next(line for line in lines if wanted(line)).split(":", 2)[2]


def _run_pids(runner: Runner) -> list[int]:
    """The processes of runs under way (not of the run forked ahead)."""
    spared = _uids_ahead(runner)
    return [pid for uid in TEST_UIDS if uid not in spared for pid in uid_processes(uid)]


@pytest.mark.parametrize("ahead", [False, True], ids=["forked-now", "forked-ahead"])
def test_a_forked_runs_processes_are_in_its_cgroup_with_its_limits(
    runner: Runner, make_app: Callable[..., Path], ahead: bool
) -> None:
    cgroups = runner.sandbox.cgroups
    if cgroups is None:
        pytest.skip("needs a writable memory cgroup")
    waiting = _primed(runner, make_app({"main.py": "print('prime')\n"}), ahead=ahead)
    app = make_app(
        {
            "main.py": (
                "import subprocess, time\n"
                "child = subprocess.Popen(['sleep', '60'])\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n"
            )
        }
    )
    cancel = threading.Event()
    ended: list[Outcome] = []
    thread = threading.Thread(target=lambda: ended.append(runner.run(app, cancel=cancel)[0]))
    thread.start()
    try:
        wait_until(lambda: len(_run_pids(runner)) == 2, timeout=20)  # the app and its child
        app_pid = min(_run_pids(runner))
        group = int(Path(f"/proc/{app_pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
        # The forked process (root's: it leads the group and is the namespace's init),
        # the app and its child: all of them in the run's own cgroup.
        members = group_members(group)
        assert len(members) == 3 and set(_run_pids(runner)) < set(members), members
        where = {_cgroup(pid, cgroups.version) for pid in members}
        assert len(where) == 1 and where.pop().rsplit("/", 1)[-1].startswith("tower-run-")
        limits = Path(f"/proc/{app_pid}/limits").read_text()
        assert "Max processes             64                   64" in limits, limits
        assert "Max cpu time              60                   65" in limits, limits
    finally:
        cancel.set()
        thread.join(30)
    assert [outcome.fork_start for outcome in ended] == [True]
    if waiting is not None:
        assert_took(runner, waiting)


# ---------------------------------------------------------------- what starts cold

PLAIN_APP = "print('hi')\n"


def test_what_a_template_cannot_serve_starts_cold(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": PLAIN_APP})
    runner.prime(app)
    colds = {
        # variables Python or the dynamic linker read when a process starts,
        "PYTHONHASHSEED": runner.run(app, secrets={"PYTHONHASHSEED": "1"}),
        "LD_PRELOAD": runner.run(app, secrets={"LD_PRELOAD": ""}),
        # and one the C library reads when a program starts
        "GLIBC_TUNABLES": runner.run(app, secrets={"GLIBC_TUNABLES": "glibc.malloc.check=0"}),
        # another request, and a pair that never gets a template
        "no network": runner.run(app, request=RunRequest(isolate_network=True)),
        "no network again": runner.run(app, request=RunRequest(isolate_network=True)),
    }
    for case, (outcome, sink) in colds.items():
        assert (outcome.status, outcome.fork_start) == (RunStatus.EXITED, False), case
        assert sink.program() == ["hi"], (case, sink.lines)
    assert runner.pool.template_count() == 1, "only the plain pair has a template"
    outcome, sink = runner.run(app)
    assert (outcome.fork_start, sink.program()) == (True, ["hi"]), "its template still serves"


def _template_interpreter(bwrap_pid: int) -> int:
    """The template's Python: the child of its bubblewrap."""
    (child,) = Path(f"/proc/{bwrap_pid}/task/{bwrap_pid}/children").read_text().split()
    return int(child)


def test_a_killed_template_is_replaced_and_its_pair_starts_cold_meanwhile(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": PLAIN_APP})
    runner.forked(app)
    killed = runner.template_pid()
    os.kill(_template_interpreter(killed), signal.SIGKILL)
    wait_until(lambda: not alive(killed), timeout=10)
    outcome, sink = runner.run(app)
    assert (outcome.status, outcome.fork_start, sink.program()) == (RunStatus.EXITED, False, ["hi"])
    wait_until(lambda: runner.pool.template_count() == 1, timeout=TEMPLATE_WAIT_S)
    assert runner.template_pid() != killed
    outcome, sink = runner.run(app)
    assert (outcome.status, outcome.fork_start, sink.program()) == (RunStatus.EXITED, True, ["hi"])


def test_without_fork_templates_runs_start_cold_or_warm(
    tmp_path: Path, venv_cache: VenvCache, make_app: Callable[..., Path]
) -> None:
    settings = RunnerSettings.from_env({"TOWER_RUNNER_FORK_START": "off"}, dotenv_path=tmp_path)
    assert settings.fork_start is False
    assert RunnerSettings.from_env({}, dotenv_path=tmp_path).fork_start is True
    with pytest.raises(SettingsError, match="TOWER_RUNNER_FORK_START must be one of on, off"):
        RunnerSettings.from_env({"TOWER_RUNNER_FORK_START": "maybe"}, dotenv_path=tmp_path)
    box = PoolRunner(tmp_path / "home", venv_cache, uids=TEST_UIDS, forks=False)
    try:
        assert box.pool.forks is False
        app = make_app({"main.py": PLAIN_APP})
        first, _ = box.run(app)
        wait_until(lambda: box.pool.idle_count() == 1, timeout=TEMPLATE_WAIT_S)
        second, sink = box.run(app)
        assert (first.fork_start, second.fork_start, second.warm_start) == (False, False, True)
        assert sink.program() == ["hi"]
        assert box.pool.template_count() == 0
    finally:
        box.close()
    _no_process_left()
    assert list(box.settings.work_dir.iterdir()) == []


# ---------------------------------------------------------------- the pool's end, and company


def test_closing_the_pool_spares_a_forked_run_and_stops_its_template(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app(
        {"main.py": "import time\nprint('working', flush=True)\ntime.sleep(1.5)\nprint('done')\n"}
    )
    runner.prime(app)
    template = runner.template_pid()
    started = threading.Event()
    ended: list[tuple[Outcome, Sink]] = []
    thread = threading.Thread(target=lambda: ended.append(runner.run(app, on_started=started.set)))
    thread.start()
    assert started.wait(10)
    runner.pool.close()
    assert thread.is_alive(), "the run goes on"
    assert alive(template), "its template waits for its runs (they die with it)"
    thread.join(30)
    ((outcome, sink),) = ended
    assert (outcome.status, outcome.fork_start) == (RunStatus.EXITED, True), (outcome, sink.lines)
    assert sink.program() == ["working", "done"]
    wait_until(lambda: not alive(template), timeout=10)
    assert runner.pool.template_count() == 0


def test_closing_the_pool_ends_the_run_forked_ahead_and_wipes_its_slot(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    waiting = runner.ready_ahead(make_app({"main.py": PLAIN_APP}))
    template, slot = runner.template_pid(), waiting.slot
    assert not waiting.process.exited() and alive(waiting.process.pid) and slot.is_dir()
    runner.pool.close()
    assert waiting.process.exited(), "nothing of a run started there"
    assert not slot.exists()
    wait_until(lambda: not alive(template), timeout=10)
    _no_process_left()


def test_a_run_forked_ahead_goes_with_its_template(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": PLAIN_APP})
    waiting = runner.ready_ahead(app)
    killed = runner.template_pid()
    os.kill(_template_interpreter(killed), signal.SIGKILL)
    wait_until(lambda: not alive(killed), timeout=10)
    outcome, sink = runner.run(app)
    assert (outcome.status, outcome.fork_start, sink.program()) == (RunStatus.EXITED, False, ["hi"])
    assert waiting.process.exited() and not waiting.slot.exists()
    assert runner.pool.forked_count() == 0


TOGETHER_APP = """\
import os, time
run_dir = os.path.dirname(os.environ["HOME"])
began = time.monotonic()
time.sleep(1.0)
print(os.getuid(), os.path.basename(run_dir), *sorted(os.listdir(os.path.dirname(run_dir))))
print(began, time.monotonic())
"""


def test_two_forked_runs_at_once_see_only_their_own(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": TOGETHER_APP})
    runner.prime(app)
    ended: list[tuple[Outcome, Sink]] = []
    threads = [threading.Thread(target=lambda: ended.append(runner.run(app))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [(o.status, o.fork_start) for o, _ in ended] == [(RunStatus.EXITED, True)] * 2
    seen = [sink.program() for _, sink in ended]
    (uid_a, dir_a, *listing_a), (uid_b, dir_b, *listing_b) = (lines[0].split() for lines in seen)
    assert uid_a != uid_b and dir_a != dir_b
    assert (listing_a, listing_b) == ([dir_a], [dir_b])
    (began_a, end_a), (began_b, end_b) = (map(float, lines[1].split()) for lines in seen)
    assert began_a < end_b and began_b < end_a, "the two ran at the same time"
