"""Pre-started ("warm") interpreters with real bubblewrap, real uids and real processes:
a warm run sees what a cold one sees, ends the way a cold one ends, and never meets
another run's interpreter.

These need root (a uid per run) and a working `bwrap`, like tests/runner/test_sandbox.py.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from control_plane import FakeControlPlane, FakeRun
from procs import NEEDS_ROOT_AND_BWRAP, Sink, alive, wait_until, worker_uids
from test_agent import AgentThread

from tower.core.crypto import hybrid_encrypt, load_public_key
from tower.core.package import build_package, extract_package
from tower.core.runs import RunStatus
from tower.core.towerfile import load_towerfile
from tower.runner import workdirs
from tower.runner.agent import Agent
from tower.runner.environment import RunContext
from tower.runner.execute import WARM_START_LINE, Outcome, execute
from tower.runner.sandbox import Limits, RunRequest, Sandbox, SandboxConfig, uid_processes
from tower.runner.settings import RunnerSettings, SettingsError, run_parent_environment
from tower.runner.venvs import VenvCache
from tower.runner.warm import WarmPool, WarmProcess

pytestmark = [
    pytest.mark.xdist_group("runner-uv"),
    NEEDS_ROOT_AND_BWRAP,
]

#: uids only these tests lease (apart from test_sandbox.py's), a range per xdist worker
TEST_UIDS = worker_uids(2_100_500)
LIMITS = Limits(memory_mb=1024, cpu_seconds=60, file_size_mb=64, processes=64)

#: what an app can see of how it was started, with its run dir written as <RUN>
INTROSPECT_APP = """\
import json, os, sys
import tower
run_dir = os.path.dirname(os.environ["HOME"])
def plain(value):
    return json.loads(json.dumps(value).replace(run_dir, "<RUN>"))
main = sys.modules["__main__"]
print(json.dumps(plain({
    "name": __name__,
    "file": __file__,
    "argv": sys.argv,
    "orig_argv": sys.orig_argv[1:],
    "cwd": os.getcwd(),
    "path": sys.path,
    "env": dict(os.environ),
    "main_keys": sorted(k for k in vars(main) if k.startswith("__")),
    "main_other": sorted(k for k in vars(main) if not k.startswith("__")),
    "spec": repr(main.__spec__),
    "package": main.__package__,
    "stdin": os.read(0, 10).decode(),
    "fds": sorted(os.listdir("/proc/self/fd")),
    "uid": os.getuid(),
    "secret": tower.secret("API_KEY"),
})), flush=True)
"""


class Runner:
    """A runner's home, sandbox and warm pool; runs apps exactly like the agent.

    Without fork templates unless `forks`: apps that do not import the SDK would be
    forked (tests/runner/test_forks.py) instead of started in a warm interpreter."""

    def __init__(
        self,
        root: Path,
        venvs: VenvCache,
        *,
        uids: range = TEST_UIDS,
        forks: bool = False,
        **pool: float,
    ) -> None:
        self.settings = RunnerSettings(home=root)
        self.venvs = venvs
        self.sandbox = Sandbox(
            SandboxConfig(
                default_limits=LIMITS,
                max_limits=LIMITS,
                run_uids=uids,
                state_dir=self.settings.runner_dir,
            )
        )
        assert self.sandbox.bwrap is not None
        #: as the agent has them: its runs' dirs and its interpreters' slots, reused
        self.run_dirs = workdirs.RunDirs(self.settings.work_dir)
        self.pool = WarmPool(
            self.sandbox,
            venvs,
            self.run_dirs,
            run_parent_environment(),
            forks=forks,
            **pool,
        )

    def run(
        self,
        app_dir: Path,
        *,
        warm: bool = True,
        secrets: dict[str, str] | None = None,
        request: RunRequest | None = None,
        cancel: threading.Event | None = None,
        on_started: Callable[[], None] | None = None,
        catalog: dict[str, str] | None = None,
        look: Callable[[Path], None] | None = None,
    ) -> tuple[Outcome, Sink]:
        """Run the app; `catalog`: the run's catalog variables; `look` is called with
        the run's work dir once the app ended, before the dir is wiped."""
        built = build_package(load_towerfile(app_dir))
        sink = Sink()
        run_id = str(uuid.uuid4())
        context = RunContext(run_id=run_id, secrets=secrets or {}, catalog_variables=catalog or {})
        with self.run_dirs.open(run_id) as work:
            manifest = extract_package(built.data, work / "package")
            outcome = execute(
                work / "package",
                manifest,
                context,
                self.venvs,
                sink,
                work_dir=work,
                parent_env=run_parent_environment(),
                on_started=(lambda _began: on_started()) if on_started else None,
                cancel=cancel,
                cancel_grace_s=2.0,
                sandbox=self.sandbox,
                request=request,
                warm=self.pool if warm else None,
            )
            if look is not None:
                look(work)
        return outcome, sink

    def close(self) -> None:
        """Close the pool, then remove the dirs and cgroups kept for reuse (as the
        agent stops)."""
        self.pool.close()
        self.run_dirs.close()
        self.sandbox.close()

    def warmed(self, app_dir: Path, **kwargs: object) -> tuple[Outcome, Sink]:
        """Run the app once cold so the pool learns it, wait for its warm interpreter,
        then run it again (warm)."""
        self.run(app_dir, **kwargs)  # type: ignore[arg-type]
        wait_until(lambda: self.pool.idle_count() >= 1, timeout=30)
        return self.run(app_dir, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def runner(tmp_path: Path, venv_cache: VenvCache) -> Iterator[Runner]:
    box = Runner(tmp_path / "home", venv_cache)
    yield box
    box.close()
    for uid in TEST_UIDS:
        assert uid_processes(uid) == [], f"run uid {uid} has processes left"
    work = box.settings.work_dir
    assert not work.exists() or list(work.iterdir()) == [], "every slot was wiped"


def test_a_warm_run_sees_what_a_cold_run_sees(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": INTROSPECT_APP})
    cold, cold_sink = runner.run(app, warm=False, secrets={"API_KEY": "s3cret"})
    warm, warm_sink = runner.warmed(app, secrets={"API_KEY": "s3cret"})
    assert (cold.status, cold.warm_start) == (RunStatus.EXITED, False), cold_sink.lines
    assert (warm.status, warm.warm_start) == (RunStatus.EXITED, True), warm_sink.lines
    assert WARM_START_LINE in warm_sink.setup()
    seen_cold, seen_warm = (json.loads(sink.program()[0]) for sink in (cold_sink, warm_sink))
    for seen in (seen_cold, seen_warm):
        seen["env"].pop("TOWER__RUNTIME__RUN_ID")
        assert seen.pop("uid") in TEST_UIDS
    differing = set(seen_warm["env"].items()) ^ set(seen_cold["env"].items())
    assert differing == set(), "the same environment"
    assert seen_warm == seen_cold
    assert seen_warm["name"] == "__main__"
    assert seen_warm["secret"] == "s3cret"
    assert seen_warm["main_other"] == ["json", "main", "os", "plain", "run_dir", "sys", "tower"]
    assert seen_warm["fds"] == ["0", "1", "2", "3"], "no pipe of the runner is left open"


MARKING_APP = """\
import os, sys
# Which interpreter: its start time (in clock ticks, which two can share) and its
# string hash seed, drawn at random when each interpreter starts.
ticks = open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]
started = f"{ticks}-{hash('which interpreter')}"
print(started, os.getuid(), hasattr(sys, "tower_test_mark"))
sys.tower_test_mark = True
"""


def test_consecutive_runs_never_share_an_interpreter_or_a_uid(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": MARKING_APP})
    runner.warmed(app)
    seen = []
    for _ in range(3):
        wait_until(lambda: runner.pool.idle_count() >= 1, timeout=30)
        outcome, sink = runner.run(app)
        assert outcome.warm_start, sink.lines
        seen.append(sink.program()[0].split())
    assert len({started for started, _, _ in seen}) == 3, f"three interpreters: {seen}"
    assert all(mark == "False" for _, _, mark in seen), "no interpreter served twice"
    # The next run's interpreter was started (under its own lease) while this one ran.
    uids = [uid for _, uid, _ in seen]
    assert all(a != b for a, b in itertools.pairwise(uids)), uids


#: an app interrupted by an uncaught Ctrl-C: it still shuts down (atexit runs) first
CTRL_C_APP = """\
import atexit, sys
atexit.register(lambda: print("atexit ran", file=sys.stderr, flush=True))
raise KeyboardInterrupt
"""


def test_exit_codes_and_crashes_are_those_of_a_cold_start(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    failing = make_app({"main.py": "import sys\nprint('bye')\nsys.exit(3)\n"})
    outcome, sink = runner.warmed(failing)
    assert (outcome.status, outcome.exit_code, outcome.warm_start) == (RunStatus.CRASHED, 3, True)
    assert sink.program() == ["bye"]

    crashing = make_app({"main.py": "def boom():\n    raise ValueError('no')\n\nboom()\n"})
    cold, cold_sink = runner.run(crashing, warm=False)
    warm, warm_sink = runner.warmed(crashing)
    assert warm.warm_start
    assert (warm.status, warm.exit_code) == (cold.status, cold.exit_code) == (RunStatus.CRASHED, 1)
    run_dir = "/".join(str(runner.settings.work_dir).split("/"))

    def traceback(sink: Sink) -> list[str]:
        lines = [line.split(run_dir)[-1] for line in sink.program()]
        return [line.split("/", 2)[-1] if line.startswith("/") else line for line in lines]

    assert traceback(warm_sink) == traceback(cold_sink)
    assert warm_sink.program()[0] == "Traceback (most recent call last):"
    assert warm_sink.program()[-1] == "ValueError: no"
    assert len(warm_sink.program()) == len(cold_sink.program())

    interrupted = make_app({"main.py": CTRL_C_APP})
    cold, cold_sink = runner.run(interrupted, warm=False)
    warm, warm_sink = runner.warmed(interrupted)
    assert warm.warm_start
    ended = (RunStatus.CRASHED, 130)
    assert (warm.status, warm.exit_code) == (cold.status, cold.exit_code) == ended
    assert traceback(warm_sink) == traceback(cold_sink)
    assert warm_sink.program()[-2:] == ["KeyboardInterrupt", "atexit ran"]

    broken = make_app({"main.py": "x = (\n"})
    cold, cold_sink = runner.run(broken, warm=False)
    warm, warm_sink = runner.warmed(broken)
    assert warm.warm_start and warm.exit_code == cold.exit_code == 1
    assert warm_sink.program()[-1] == cold_sink.program()[-1]


def test_a_limit_ends_a_warm_run_saying_the_limit(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    hog = make_app({"main.py": "x = bytearray(2 * 1024 * 1024 * 1024)\n"})
    outcome, _ = runner.warmed(hog)
    assert outcome.warm_start
    assert outcome.status == RunStatus.CRASHED
    assert (outcome.message or "").startswith("The app exceeded the memory limit of 1024 MiB")


def test_cancel_gives_a_warm_app_its_grace_then_kills_its_group(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app(
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
    first_cancel = threading.Event()
    # Cancelled a second after it started (not after it was submitted: building the
    # venv may take longer, and a run cancelled before it starts teaches the pool nothing).
    runner.run(
        app,
        cancel=first_cancel,
        on_started=lambda: threading.Timer(1.0, first_cancel.set).start(),
    )  # cold; its pair gets an interpreter meanwhile
    wait_until(lambda: runner.pool.idle_count() >= 1, timeout=30)
    cancel = threading.Event()
    started = threading.Event()
    timer = threading.Timer(1.5, cancel.set)
    timer.start()
    try:
        outcome, sink = runner.run(app, cancel=cancel, on_started=started.set)
    finally:
        timer.cancel()
    assert started.is_set()
    assert (outcome.status, outcome.warm_start) == (RunStatus.CANCELLED, True)
    assert sink.program() == ["working", "cleaning up"]


def test_what_does_not_fit_starts_cold(runner: Runner, make_app: Callable[..., Path]) -> None:
    app = make_app({"main.py": "print('hi')\n"})
    runner.warmed(app)
    wait_until(lambda: runner.pool.idle_count() >= 1, timeout=30)
    # Another request (network isolation) is another pair: no interpreter for it yet.
    outcome, _ = runner.run(app, request=RunRequest(isolate_network=True))
    assert (outcome.status, outcome.warm_start) == (RunStatus.EXITED, False)
    # A secret Python reads when it starts cannot reach a started interpreter.
    outcome, sink = runner.run(app, secrets={"PYTHONHASHSEED": "7"})
    assert (outcome.status, outcome.warm_start) == (RunStatus.EXITED, False), sink.lines
    # A package that brings a module the interpreter imported already (here `http`,
    # which the SDK's pre-import brings in for an app that imports `tower`).
    shadowing = make_app(
        {
            "main.py": "import tower\nimport http\nprint(http.MINE)\n",
            "http/__init__.py": "MINE = 1\n",
        }
    )
    runner.run(shadowing)  # cold: the first of its pair
    wait_until(lambda: runner.pool.idle_count() >= 2, timeout=30)
    outcome, sink = runner.run(shadowing)
    assert (outcome.status, outcome.warm_start) == (RunStatus.EXITED, False), sink.lines
    assert sink.program() == ["1"]


def test_a_pair_whose_run_found_its_interpreter_starting_keeps_two(
    runner: Runner, make_app: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app({"main.py": "print('hi')\n"})
    runner.run(app)  # cold: the pool learns the pair
    wait_until(lambda: runner.pool.idle_count() == 1, timeout=30)
    assert [len(waiting) for waiting in runner.pool._idle.values()] == [1], "a pair keeps one"
    starting = [True]
    real_wait_ready = WarmProcess.wait_ready

    def wait_ready(self: WarmProcess, timeout: float, cancel: object = None) -> bool:
        if timeout == 0 and starting:  # the run's first look: still importing
            starting.clear()
            return False
        return real_wait_ready(self, timeout, cancel)  # type: ignore[arg-type]

    monkeypatch.setattr(WarmProcess, "wait_ready", wait_ready)
    outcome, sink = runner.run(app)
    assert (outcome.status, outcome.warm_start) == (RunStatus.EXITED, True), sink.lines
    wait_until(lambda: [len(w) for w in runner.pool._idle.values()] == [2], timeout=30)
    first, second = next(iter(runner.pool._idle.values()))
    assert first.process.pid != second.process.pid
    outcome, sink = runner.run(app)
    assert outcome.warm_start, sink.lines
    assert first.process.exited() and not second.process.exited(), "the older one served"


def test_idle_interpreters_expire_and_stop_with_the_pool(
    tmp_path: Path, venv_cache: VenvCache, make_app: Callable[..., Path]
) -> None:
    box = Runner(tmp_path / "home", venv_cache, idle_s=0.5)
    try:
        box.run(make_app({"main.py": "print('hi')\n"}))
        wait_until(lambda: box.pool.idle_count() == 1, timeout=30)
        ((warm,),) = box.pool._idle.values()  # one pair, one interpreter
        pid = warm.process.pid
        # The spawner looks for expired interpreters every few seconds.
        wait_until(lambda: box.pool.idle_count() == 0, timeout=15)
        wait_until(lambda: not alive(pid), timeout=5)
        box.run(make_app({"main.py": "print('again')\n"}))
        wait_until(lambda: box.pool.idle_count() == 1, timeout=30)
    finally:
        box.close()
    assert box.pool.idle_count() == 0
    time.sleep(0.1)
    for uid in TEST_UIDS:
        assert uid_processes(uid) == []
    assert list(box.settings.work_dir.iterdir()) == []


def test_closing_the_pool_spares_a_run_in_a_warm_interpreter(
    runner: Runner, make_app: Callable[..., Path]
) -> None:
    app = make_app({"main.py": "import time\nprint('working', flush=True)\ntime.sleep(1.5)\n"})
    runner.run(app)
    wait_until(lambda: runner.pool.idle_count() == 1, timeout=30)
    started = threading.Event()
    ended: list[tuple[Outcome, Sink]] = []
    thread = threading.Thread(target=lambda: ended.append(runner.run(app, on_started=started.set)))
    thread.start()
    assert started.wait(10)
    runner.pool.close()  # its spawner started the run's interpreter
    assert thread.is_alive(), "closing does not wait for the run"
    thread.join(30)
    ((outcome, sink),) = ended
    assert (outcome.status, outcome.warm_start) == (RunStatus.EXITED, True), (outcome, sink.lines)


# ---------------------------------------------------------------- through the agent

SECRET_APP = """\
import os, sys
print("secret", os.environ.get("API_KEY"), "param", os.environ.get("friend"))
for i in range(50):
    print("line", i)
sys.exit(int(os.environ.get("code", "0")))
"""


def _agent(url: str, home: Path, venvs: VenvCache, **settings: object) -> Agent:
    config = RunnerSettings(
        url=url,
        token="rt-test",
        name="warm-runner",
        capacity=2,
        home=home,
        python=sys.executable,
        cancel_grace_s=1.0,
        run_uids=TEST_UIDS,
        fork_start=False,  # warm interpreters, not fork templates (see `Runner`)
        # `running` at once: a run cancelled right after it starts still reports it.
        running_report_delay_s=0.0,
        **settings,  # type: ignore[arg-type]
    )
    return Agent(config, venvs=venvs, claim_wait_s=0.3)


def _channel(run: FakeRun, channel: str) -> list[str]:
    return [line["content"] for _, line in sorted(run.lines.items()) if line["channel"] == channel]


def _program(run: FakeRun) -> list[str]:
    return _channel(run, "program")


def _setup(run: FakeRun) -> list[str]:
    return _channel(run, "setup")


def _sealed(plane: FakeControlPlane, secrets: dict[str, str]) -> str:
    assert plane.public_key_pem is not None
    return hybrid_encrypt(load_public_key(plane.public_key_pem), json.dumps({"secrets": secrets}))


@pytest.fixture
def plane() -> Iterator[FakeControlPlane]:
    fake = FakeControlPlane().start()
    yield fake
    fake.stop()


def _no_run_uid_left() -> None:
    for uid in TEST_UIDS:
        assert uid_processes(uid) == [], f"run uid {uid} has processes left"


def test_the_agent_starts_the_next_run_of_an_app_warm(
    plane: FakeControlPlane, make_app: Callable[..., Path], venv_cache: VenvCache, tmp_path: Path
) -> None:
    package = build_package(load_towerfile(make_app({"main.py": SECRET_APP})))
    home = tmp_path / "home"
    agent = _agent(plane.url, home, venv_cache)
    assert agent.warm is not None
    with AgentThread(agent):
        assert agent.registered.wait(20)
        first = plane.enqueue(package, parameters={"friend": "Ada"})
        plane.wait_for(first.finished)
        wait_until(lambda: agent.warm is not None and agent.warm.idle_count() == 1, timeout=30)
        sealed = _sealed(plane, {"API_KEY": "s3cret"})
        second = plane.enqueue(
            package, parameters={"friend": "Bob", "code": "4"}, sealed_runtime=sealed
        )
        plane.wait_for(second.finished)
    assert WARM_START_LINE not in _setup(first)
    assert WARM_START_LINE in _setup(second)
    assert first.status_names == ["running", "exited"]
    assert second.status_names == ["running", "crashed"]
    assert second.statuses[-1]["exit_code"] == 4
    # The secret reached the app (its value is masked in logs, as for any run); every
    # line arrived, in order, numbered without a gap.
    assert _program(second) == ["secret *** param Bob"] + [f"line {i}" for i in range(50)]
    assert sorted(second.lines) == list(range(1, len(second.lines) + 1))
    # Stopping the agent stopped the interpreter it had pre-started for the next run.
    _no_run_uid_left()
    assert list((home / "runner" / "work").iterdir()) == []


def test_a_warm_run_is_cancelled_like_any_other(
    plane: FakeControlPlane, make_app: Callable[..., Path], venv_cache: VenvCache, tmp_path: Path
) -> None:
    app = "import time\nprint('sleeping', flush=True)\ntime.sleep(120)\n"
    package = build_package(load_towerfile(make_app({"main.py": app})))
    agent = _agent(plane.url, tmp_path / "home", venv_cache)
    with AgentThread(agent):
        first = plane.enqueue(package)
        plane.wait_for(lambda: "sleeping" in _program(first))
        wait_until(lambda: agent.warm is not None and agent.warm.idle_count() == 1, timeout=30)
        second = plane.enqueue(package)
        plane.wait_for(lambda: "sleeping" in _program(second))
        assert WARM_START_LINE in _setup(second)
        for run in (first, second):
            plane.cancel(run.run_id)
        wait_until(lambda: not agent.active_run_ids(), timeout=20)
    assert first.status_names == second.status_names == ["running"]
    _no_run_uid_left()


def test_warm_start_off_starts_every_run_cold(
    plane: FakeControlPlane, make_app: Callable[..., Path], venv_cache: VenvCache, tmp_path: Path
) -> None:
    settings = RunnerSettings.from_env({"TOWER_RUNNER_WARM_START": "off"}, dotenv_path=tmp_path)
    assert settings.warm_start is False
    package = build_package(load_towerfile(make_app({"main.py": "print('cold')\n"})))
    agent = _agent(plane.url, tmp_path / "home", venv_cache, warm_start=False)
    assert agent.warm is None
    with AgentThread(agent):
        runs = [plane.enqueue(package) for _ in range(2)]
        for run in runs:
            plane.wait_for(run.finished)
    assert all(WARM_START_LINE not in _setup(run) for run in runs)
    assert all(_program(run) == ["cold"] for run in runs)


def test_warm_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="TOWER_RUNNER_WARM_START must be one of on, off"):
        RunnerSettings.from_env({"TOWER_RUNNER_WARM_START": "maybe"}, dotenv_path=Path("/nowhere"))
    settings = RunnerSettings.from_env(
        {"TOWER_RUNNER_WARM_KEYS": "2", "TOWER_RUNNER_WARM_IDLE_SECONDS": "30"},
        dotenv_path=Path("/nowhere"),
    )
    assert (settings.warm_start, settings.warm_keys, settings.warm_idle_s) == (True, 2, 30.0)
