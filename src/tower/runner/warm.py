"""Pre-started ("warm") app interpreters: a run skips the sandbox and Python start-up.

For each recently used (venv, sandbox request) pair the pool keeps ONE interpreter
already started in exactly the sandbox a cold start would get — its own uid lease,
the same limits, network mode and bubblewrap view, the scrubbed environment minus
what only the run knows — that has imported the Tower SDK and waits on a pipe (see
`warm_boot`). Its run directory is a *slot*: an empty work dir (`<work>/<uuid>`,
locked and swept like a run dir) bound into the sandbox; when a run takes the
interpreter, the run's package is renamed into the slot and the run's environment,
cwd and argv are written to the pipe. The interpreter then runs the script as
`__main__`. Its output pipes, process group, cancel, exit code and limits are those
of an ordinary app process, because it is one (`AppProcess`). The pool then starts
the next interpreter for that pair in the background. A *busy* pair, one whose run
found its interpreter still starting (runs that start runs come faster than an
interpreter starts), keeps two.

A warm interpreter serves ONE run and is never reused; when the run ends its uid's
processes are killed and its slot is wiped, as for a cold run. Idle interpreters
expire after `idle_s`; at most `max_keys` pairs are kept (least recently used go);
all are killed when the runner stops, and a crashed runner's are killed at the next
start (their slots hold a process-group record, their uids no live lease).

Spawning happens on one long-lived thread: PR_SET_PDEATHSIG (and bubblewrap's
`--die-with-parent`) fire when the spawning *thread* exits, so a short-lived thread
would take its interpreter down with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import marshal
import os
import queue
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from tower.runner import workdirs
from tower.runner.environment import RunPaths, interpreter_environment
from tower.runner.fork_boot import GATE_GO
from tower.runner.forks import ForkTemplate, start_template
from tower.runner.process import AppProcess, readable_within
from tower.runner.sandbox import Jail, Mounts, RunRequest, Sandbox, privileged_unsafe
from tower.runner.venvs import Venv, VenvCache

logger = logging.getLogger(__name__)

#: (venv, request) pairs with warm interpreters kept at most unless configured
DEFAULT_MAX_KEYS = 4
#: an idle warm interpreter is stopped after this long unless configured (s)
DEFAULT_IDLE_S = 120.0
#: how long a run waits for a taken interpreter to finish its imports (s)
READY_WAIT_S = 10.0
READY_POLL_S = 0.05
#: how often the spawner looks for expired interpreters when it has nothing to do (s)
EXPIRY_CHECK_S = 5.0
#: how long stopping the pool waits for a spawn in progress (s)
SPAWNER_JOIN_S = 15.0
#: how often a closed pool's spawner looks whether what it started has ended (s)
OUTLIVE_POLL_S = 0.1
#: output lines held back before a run takes the interpreter
MAX_HELD_LINES = 1000
#: this project's SDK modules worth importing ahead of a run (`run_app` and friends)
SDK_MODULES = ("tower", "tower._orchestration", "tower._http")
SDK_DIST_INFO_GLOB = "lib/python*/site-packages/tower_oss-*.dist-info"
#: `import tower…` / `from tower… import`, at the start of a line
SDK_IMPORT = re.compile(rb"^[ \t]*(?:import|from)[ \t]+tower\b", re.MULTILINE)
MAX_SCANNED_SOURCES = 200
#: packages whose pre-import choice the pool remembers (forgotten all at once beyond)
MAX_REMEMBERED_PACKAGES = 1024
MAX_SCANNED_BYTES = 1024 * 1024
#: variables Python reads at start-up (besides PYTHON*), or the dynamic linker does
STARTUP_VARIABLES = frozenset({"LANG", "LANGUAGE", "TZ"})
STARTUP_PREFIXES = ("PYTHON", "LD_", "LC_")

#: interpreters kept for a *busy* pair: one whose run found its interpreter still
#: starting (runs come faster than one starts, e.g. a chain of runs that start runs)
BUSY_PAIR_INTERPRETERS = 2
#: fork templates that fail in a row before the pool stops using them
MAX_FORK_FAILURES = 3
#: what the spawner starts: a warm interpreter, a fork template, or a run forked ahead
WARM, TEMPLATE, FORKED = "warm", "template", "forked"

LineSink = Callable[[str, str], None]
Key = tuple[str, str]


@cache
def bootstrap_source() -> str:
    """The code a warm interpreter runs with `python -c`."""
    return Path(__file__).with_name("warm_boot.py").read_text(encoding="utf-8")


def read_at_startup(name: str) -> bool:
    """Whether an interpreter takes `name` into account only when it starts.

    PYTHONPATH is the exception: the bootstrap puts its entries on `sys.path` itself."""
    if name == "PYTHONPATH":
        return False
    return name in STARTUP_VARIABLES or name.startswith(STARTUP_PREFIXES)


def needs_exec(env: Mapping[str, str], started: Mapping[str, str]) -> str | None:
    """Why a run with `env` needs an interpreter of its own, not one that started with
    `started` (a variable read only at start-up differs), or None."""
    for name in sorted(set(env) | set(started)):
        if env.get(name) == started.get(name):
            continue
        if read_at_startup(name):
            return f"the run sets {name}, which Python reads when it starts"
        if privileged_unsafe(name):
            return f"the run sets {name}, which the C library reads when a program starts"
    return None


def sdk_modules(venv_dir: Path, app_dir: Path | None = None) -> tuple[str, ...]:
    """The modules to pre-import in a venv for the app in `app_dir`: the SDK's, when
    the venv's SDK is this project's (an app's own `tower` from PyPI might read its
    environment at import) and the app imports it (the imports cost an app that does
    not use them CPU time for nothing)."""
    if not any(venv_dir.glob(SDK_DIST_INFO_GLOB)):
        return ()
    return SDK_MODULES if app_dir is None or imports_sdk(app_dir) else ()


def imports_sdk(app_dir: Path) -> bool:
    """Whether a Python file of the app (among the first few, up to a size) imports
    `tower`."""
    sources = itertools.islice(app_dir.rglob("*.py"), MAX_SCANNED_SOURCES)
    for source in sources:
        with contextlib.suppress(OSError):
            if SDK_IMPORT.search(source.read_bytes()[:MAX_SCANNED_BYTES]):
                return True
    return False


def shadowed(modules: Iterable[str], import_dirs: Iterable[Path]) -> list[str]:
    """The top-level `modules` a file or directory in `import_dirs` would provide
    instead (`x.py`, `x/`, `x.cpython-311-x86_64-linux-gnu.so`, ...)."""
    provided: set[str] = set()
    for directory in import_dirs:
        with contextlib.suppress(OSError):
            provided.update(entry.name.split(".", 1)[0] for entry in directory.iterdir())
    return sorted(provided.intersection(modules))


@dataclass(frozen=True)
class WarmSpec:
    """What a warm interpreter is started for: a venv and a sandbox request (its
    limits, network, and the account's shared catalog directories: an interpreter
    that can write one account's catalog only ever serves a run that can too)."""

    venv: Venv
    request: RunRequest
    #: what the sandbox shows read-only: the venv and the Python install it links to
    readable: tuple[Path, ...]
    #: the modules the interpreter imports before its run arrives (`sdk_modules`)
    preload: tuple[str, ...] = ()

    @cached_property
    def key(self) -> Key:
        request = json.dumps(dataclasses.asdict(self.request), sort_keys=True, default=str)
        return str(self.venv.path), f"{request} {' '.join(self.preload)}"


class HeldLines:
    """A line sink that holds lines until a run takes the process, then forwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[tuple[str, str]] = []
        self._target: LineSink | None = None

    def __call__(self, channel: str, content: str) -> None:
        with self._lock:
            if self._target is None:
                if len(self._held) < MAX_HELD_LINES:
                    self._held.append((channel, content))
                return
            target = self._target
        target(channel, content)

    def attach(self, target: LineSink) -> None:
        """Forward from now on, after what was held (in order)."""
        with self._lock:
            for channel, content in self._held:
                target(channel, content)
            self._held.clear()
            self._target = target

    def held(self) -> list[str]:
        with self._lock:
            return [content for _, content in self._held]


class WarmProcess:
    """One pre-started interpreter, its slot, its uid lease and its pipes.

    Or one run forked ahead from its pair's fork template: set up in its
    slot, confined, its privileges dropped and its `preload` modules imported, waiting
    for its run behind its gate (the control pipe; see `fork_boot`)."""

    def __init__(
        self,
        spec: WarmSpec,
        slot: Path,
        jail: Jail,
        process: AppProcess,
        lines: HeldLines,
        pipes: tuple[int, int | None],
        resources: ExitStack,
    ) -> None:
        """`pipes`: where the run is written, and where the interpreter says it is
        ready (None: it is, having nothing to import)."""
        self.spec = spec
        self.slot = slot
        self.jail = jail
        self.process = process
        self.started = time.monotonic()
        self._control, self._ready = pipes
        #: top-level modules it imported ahead of the run; None until it is ready
        self.modules: tuple[str, ...] | None = () if self._ready is None else None
        self._lines = lines
        self._resources = resources
        self._buffer = b""
        self._closed = False

    @property
    def environment(self) -> dict[str, str]:
        """The environment it started with."""
        return self.process.env

    def wait_ready(self, timeout: float, cancel: threading.Event | None = None) -> bool:
        """Wait until it has imported its modules; False if it died, did not make it in
        time, or `cancel` was set."""
        ready = self._ready
        if ready is None:  # nothing to import
            return True
        deadline = time.monotonic() + timeout
        while self.modules is None:
            if cancel is not None and cancel.is_set():
                return False
            remaining = deadline - time.monotonic()
            wait = max(0.0, min(remaining, READY_POLL_S))
            if readable_within(ready, wait) and not self._read_ready():
                return False
            if self.modules is None and remaining <= 0:
                return False
        return True

    def _read_ready(self) -> bool:
        assert self._ready is not None
        chunk = os.read(self._ready, 65536)
        if not chunk:
            return False  # it exited before it was ready
        self._buffer += chunk
        if b"\n" in self._buffer:
            # Plain text, never unpickled or unmarshalled: the venv's packages (their
            # .pth files) ran in that interpreter before it wrote this.
            line = self._buffer.split(b"\n", 1)[0]
            self.modules = tuple(line.decode("utf-8", errors="replace").split())
        return True

    def unsuitable(self, env: Mapping[str, str], import_dirs: Iterable[Path]) -> str | None:
        """Why this interpreter cannot serve a run with `env` whose package puts
        `import_dirs` on sys.path, or None when it can."""
        problem = needs_exec(env, self.environment)
        if problem is not None:
            return problem
        names = shadowed(self.modules or (), import_dirs)
        if names:
            return f"the package provides modules it imported already: {', '.join(names)}"
        return None

    def hand_over(self, run: Mapping[str, Any], sink: LineSink) -> None:
        """Send the run (env, cwd, argv, path) and connect its output to `sink`;
        OSError when the interpreter is gone. `marshal`: the interpreter reads it
        without importing anything (json would load `re` and more into every app)."""
        data = marshal.dumps(dict(run))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._control, view) :]
        finally:
            self._close_control()
        self._lines.attach(sink)

    def close(self) -> None:
        """Stop it if it still runs; release its uid (killing what is left under it),
        its venv pin and its slot. Only the first call does anything."""
        if self._closed:
            return
        self._closed = True
        self._close_control()
        if self._ready is not None:
            with contextlib.suppress(OSError):
                os.close(self._ready)
        if self.process.poll(0) is None:
            self.process.terminate(0)
        held = self._lines.held()
        if held:
            logger.info("a warm interpreter said before its run: %s", " | ".join(held[-20:]))
        self._resources.close()

    def _close_control(self) -> None:
        if self._control >= 0:
            with contextlib.suppress(OSError):
                os.close(self._control)
            self._control = -1


def _first_waiting(waiting: OrderedDict[Key, list[WarmProcess]], key: Key) -> WarmProcess | None:
    """Take the oldest process waiting for `key` out of `waiting` (the pool's lock is held)."""
    processes = waiting.get(key, [])
    first = processes.pop(0) if processes else None
    if not processes:
        waiting.pop(key, None)
    return first


class WarmPool:
    """The runner's warm interpreters (one per (venv, request) pair, two for a busy
    one), fork templates and runs forked ahead."""

    def __init__(
        self,
        sandbox: Sandbox,
        venvs: VenvCache,
        run_dirs: workdirs.RunDirs,
        parent_env: Mapping[str, str],
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        idle_s: float = DEFAULT_IDLE_S,
        forks: bool = True,
    ) -> None:
        """`forks`: keep fork templates too (see `tower.runner.forks`), where this
        runner can (root, bubblewrap, a uid per run)."""
        self.sandbox = sandbox
        self.venvs = venvs
        #: where interpreters' slots come from (and return to, for reuse)
        self.run_dirs = run_dirs
        self.parent_env = dict(parent_env)
        self.max_keys = max_keys
        self.idle_s = idle_s
        self._lock = threading.Lock()
        #: the interpreters waiting for each pair, oldest first
        self._idle: OrderedDict[Key, list[WarmProcess]] = OrderedDict()
        #: pairs that keep BUSY_PAIR_INTERPRETERS (until their interpreters expire)
        self._busy: set[Key] = set()
        self._pending: set[tuple[str, Key]] = set()
        #: what the interpreters of each pair import: the same every time (one venv,
        #: one bootstrap), so a run need not wait for the imports to check its package
        self._modules: dict[Key, tuple[str, ...]] = {}
        #: what each package's interpreters pre-import, by (venv, MANIFEST checksum):
        #: the package's sources are scanned once, not on every run
        self._preloads: dict[tuple[str, str], tuple[str, ...]] = {}
        #: fork templates, by the same keys (at most `max_keys`, least recently used go)
        self.forks = forks and sandbox.is_root and sandbox.bwrap is not None
        self._templates: OrderedDict[Key, ForkTemplate] = OrderedDict()
        #: per template, runs forked ahead (one, two for a busy pair), oldest first: set
        #: up in a slot and confined, waiting for a run. Joining a memory cgroup can wait
        #: for the kernel (an RCU grace period, ~10 ms), forking takes a few, importing
        #: the SDK tens: ahead of the run, none of it delays it.
        self._ahead: OrderedDict[Key, list[WarmProcess]] = OrderedDict()
        self._fork_failures = 0
        self._queue: queue.Queue[tuple[str, WarmSpec] | None] = queue.Queue()
        self._spawner: threading.Thread | None = None
        #: set once the spawner starts nothing more (what `close` waits for)
        self._spawning_over = threading.Event()
        #: what the spawner started and has not seen end (the spawner's own list)
        self._started: list[AppProcess] = []
        self._closed = False

    @property
    def work_root(self) -> Path:
        """Where the runner's run dirs (and the pool's slots) are."""
        return self.run_dirs.root

    def take(self, spec: WarmSpec, cancel: threading.Event | None = None) -> WarmProcess | None:
        """The warm interpreter for `spec`, ready, or None (start the app cold). Either
        way one is started in the background for the next run of this pair."""
        with self._lock:
            if self._closed:
                return None
            warm = _first_waiting(self._idle, spec.key)
        starting = warm is not None and not warm.wait_ready(0)
        with self._lock:
            if starting:
                self._busy.add(spec.key)  # the next run may come as soon: keep two
            if not self._closed:
                self._want(spec)
        if warm is None:
            return None
        return self._when_ready(spec, warm, cancel)

    def _when_ready(
        self, spec: WarmSpec, warm: WarmProcess, cancel: threading.Event | None
    ) -> WarmProcess | None:
        """`warm` once it has imported its modules, or at once when they are known
        (what it imports is the same every time: the run is handed over and starts
        once they are done); None (it is closed) when it did not make it in time."""
        known = self._modules.get(spec.key)
        if warm.wait_ready(0 if known is not None else READY_WAIT_S, cancel):
            self._modules[spec.key] = warm.modules or ()
            return warm
        if known is not None and not (cancel is not None and cancel.is_set()):
            # Still importing: the run is handed over now and starts when that is done,
            # as a cold interpreter would start after its own imports.
            warm.modules = known
            return warm
        logger.warning("a warm interpreter was not ready in time; starting the app cold")
        warm.close()
        return None

    def take_forked(
        self, spec: WarmSpec, cancel: threading.Event | None = None
    ) -> WarmProcess | None:
        """The run forked ahead for `spec` by its template, or None (fork it now; the
        next one is forked ahead in the background; or `cancel` was set while it was
        still getting ready). Who takes one calls `fork_ahead` once its run has
        started: forking the next meanwhile would slow this one."""
        with self._lock:
            if self._closed or not self.forks:
                return None
            forked = _first_waiting(self._ahead, spec.key)
            # Runs come faster than runs are forked ahead (and import): keep two.
            if forked is None and (FORKED, spec.key) in self._pending:
                self._busy.add(spec.key)
        if forked is not None and forked.process.exited():  # its template went
            forked.close()
            forked = None
        if forked is None:
            self.fork_ahead(spec)
            return None
        if not forked.wait_ready(0):
            with self._lock:
                self._busy.add(spec.key)
        return self._when_ready(spec, forked, cancel)

    def fork_ahead(self, spec: WarmSpec) -> None:
        """Have the template of `spec` fork a run ahead, unless the pair has its number."""
        with self._lock:
            if not self._closed and spec.key in self._templates:
                self._want(spec, FORKED)

    def preload_for(self, venv: Venv, checksum: str, app_dir: Path) -> tuple[str, ...]:
        """The modules the interpreters for this package pre-import (`sdk_modules`),
        decided the first time its content (`checksum`) runs in `venv`."""
        key = (str(venv.path), checksum)
        with self._lock:
            known = self._preloads.get(key)
        if known is None:
            known = sdk_modules(venv.path, app_dir)
            with self._lock:
                if len(self._preloads) >= MAX_REMEMBERED_PACKAGES:
                    self._preloads.clear()
                self._preloads[key] = known
        return known

    def template(self, spec: WarmSpec) -> ForkTemplate | None:
        """The fork template for `spec` when one is running, else None (start the app
        cold: one is started in the background for the next run of this pair)."""
        with self._lock:
            if self._closed or not self.forks:
                return None
            template = self._templates.get(spec.key)
            if template is not None and template.takes_runs():
                self._templates.move_to_end(spec.key)
                self._fork_failures = 0
                return template
            self._templates.pop(spec.key, None)
            self._want(spec, TEMPLATE)
            forked = self._ahead.pop(spec.key, [])
        for waiting in forked:
            waiting.close()
        if template is not None:
            logger.warning("a fork template stopped; starting a new one")
            template.close()
        return None

    def fork_failed(self, template: ForkTemplate, error: Exception) -> None:
        """Forget a template that could not fork a run (the next run of its pair starts
        another); after `MAX_FORK_FAILURES` in a row, stop using templates."""
        with self._lock:
            if self._templates.get(template.key) is template:
                del self._templates[template.key]
            self._fork_failures += 1
            if self._fork_failures >= MAX_FORK_FAILURES:
                self.forks = False
            forked = self._ahead.pop(template.key, [])
        for waiting in forked:
            waiting.close()
        template.close()  # once the runs forked from it have ended
        if self.forks:
            logger.warning("a fork template failed (%s); starting the app cold", error)
        else:
            logger.warning(
                "fork templates failed %d times in a row (last: %s); apps start cold from now on",
                MAX_FORK_FAILURES,
                error,
            )

    def idle_count(self) -> int:
        """Pairs with an interpreter waiting."""
        with self._lock:
            return len(self._idle)

    def forked_count(self) -> int:
        """Runs forked ahead, waiting for a run."""
        with self._lock:
            return sum(len(waiting) for waiting in self._ahead.values())

    def template_count(self) -> int:
        """Fork templates started and not stopped (running or not)."""
        with self._lock:
            return len(self._templates)

    def close(self) -> None:
        """Stop every idle interpreter and template, and the spawner. Runs that took an
        interpreter, or were forked from a template, go on: the spawner's thread, whose
        end would kill them (PR_SET_PDEATHSIG), lives on until they have ended."""
        with self._lock:
            self._closed = True
            idle: list[WarmProcess | ForkTemplate] = [
                warm for kept in (self._idle, self._ahead) for w in kept.values() for warm in w
            ]
            idle += self._templates.values()  # after their runs forked ahead: those hold them
            self._idle.clear()
            self._ahead.clear()
            self._templates.clear()
            spawner = self._spawner
        self._queue.put(None)
        if spawner is not None:
            self._spawning_over.wait(SPAWNER_JOIN_S)
        for process in idle:
            process.close()

    # ------------------------------------------------------------------ the spawner

    def _want(self, spec: WarmSpec, kind: str = WARM) -> None:
        """Have an interpreter (or a template) started for `spec` (the lock is held)."""
        if kind == TEMPLATE:
            full = spec.key in self._templates
        else:
            waiting = self._idle if kind == WARM else self._ahead
            full = len(waiting.get(spec.key, ())) >= self._interpreters_for(spec.key)
        if (kind, spec.key) in self._pending or full:
            return
        self._pending.add((kind, spec.key))
        if self._spawner is None:
            self._spawner = threading.Thread(target=self._spawn_loop, name="warm", daemon=True)
            self._spawner.start()
        self._queue.put((kind, spec))

    def _spawn_loop(self) -> None:
        try:
            self._serve_requests()
        finally:
            self._spawning_over.set()
        # What this thread started dies with it: it ends only once that has ended.
        while any(not process.exited() for process in self._started):
            time.sleep(OUTLIVE_POLL_S)

    def _serve_requests(self) -> None:
        while True:
            try:
                wanted = self._queue.get(timeout=EXPIRY_CHECK_S)
            except queue.Empty:
                wanted = None
            if self._closed:
                return
            self._started = [process for process in self._started if not process.exited()]
            try:
                self._expire()
                if wanted is not None and wanted[0] == TEMPLATE:
                    self._fill_template(wanted[1])
                elif wanted is not None and wanted[0] == FORKED:
                    self._fill_forked(wanted[1])
                elif wanted is not None:
                    self._fill(wanted[1])
            except Exception:  # the spawner must outlive one failure (it owns the PDEATHSIG)
                logger.exception("the warm interpreter pool failed")

    def _fill(self, spec: WarmSpec) -> None:
        try:
            warm: WarmProcess | None = self._spawn(spec)
        except Exception as exc:
            logger.warning("could not pre-start an interpreter for %s: %s", spec.venv.key, exc)
            warm = None
        self._add_waiting(WARM, spec, warm, self._idle)

    def _add_waiting(
        self,
        kind: str,
        spec: WarmSpec,
        made: WarmProcess | None,
        waiting: OrderedDict[Key, list[WarmProcess]],
    ) -> None:
        """Keep what the spawner `made` of `kind` (an interpreter, or a run forked
        ahead) for `spec` among `waiting` (at most `max_keys` pairs; the least recently
        made go), and ask for a busy pair's second one."""
        surplus = []
        with self._lock:
            # `_want` asks for one at a time, and only below the pair's number.
            self._pending.discard((kind, spec.key))
            if made is not None and self._closed:
                surplus.append(made)
            elif made is not None:
                waiting.setdefault(spec.key, []).append(made)
                waiting.move_to_end(spec.key)
                while len(waiting) > self.max_keys:
                    surplus.extend(waiting.popitem(last=False)[1])
                if spec.key in waiting:
                    self._want(spec, kind)  # a busy pair's second one
        for extra in surplus:
            extra.close()

    def _interpreters_for(self, key: Key) -> int:
        """How many interpreters a pair keeps (the lock is held)."""
        return BUSY_PAIR_INTERPRETERS if key in self._busy else 1

    def _fill_forked(self, spec: WarmSpec) -> None:
        with self._lock:
            template = self._templates.get(spec.key)
        forked = None
        if template is not None and template.takes_runs():
            try:
                forked = self._fork_ahead(spec, template)
            except Exception as exc:  # the run forks when it comes, and says why if it fails
                logger.info("could not fork a run ahead for %s: %s", spec.venv.key, exc)
        self._add_waiting(FORKED, spec, forked, self._ahead)

    def _fill_template(self, spec: WarmSpec) -> None:
        try:
            template: ForkTemplate | None = start_template(
                self.sandbox,
                spec.key,
                spec.venv.python,
                spec.readable,
                spec.request.shared_dirs,
                self.work_root,
                self.parent_env,
            )
        except Exception as exc:
            logger.warning("could not start a fork template for %s: %s", spec.venv.key, exc)
            template = None
        if template is not None:
            self._started.append(template.process)
        self._keep_template(spec, template)

    def _keep_template(self, spec: WarmSpec, made: ForkTemplate | None) -> None:
        """Keep the template the spawner `made` for `spec` (at most `max_keys`; the
        least recently made go), unless the pool closed meanwhile or has one for `spec`
        already."""
        surplus: list[ForkTemplate] = []
        with self._lock:
            self._pending.discard((TEMPLATE, spec.key))
            if made is not None and (self._closed or spec.key in self._templates):
                surplus.append(made)
            elif made is not None:
                self._templates[spec.key] = made
                while len(self._templates) > self.max_keys:
                    surplus.append(self._templates.popitem(last=False)[1])
        for extra in surplus:
            extra.close()

    def _expire(self) -> None:
        now = time.monotonic()

        def idle(key: Key, process: WarmProcess) -> bool:
            return now - process.started >= self.idle_s

        def orphaned_or_idle(key: Key, process: WarmProcess) -> bool:
            return key not in self._templates or idle(key, process)

        with self._lock:
            unused = [key for key, t in self._templates.items() if now - t.last_used >= self.idle_s]
            retired = [self._templates.pop(key) for key in unused]
            stale = self._expired(self._idle, idle)
            # A run forked ahead holds its template: it goes with it, or when as old as
            # an idle interpreter goes (one whose template was replaced meanwhile).
            stale += self._expired(self._ahead, orphaned_or_idle)
        for warm in stale:
            warm.close()
        for template in retired:
            template.close()

    def _expired(
        self,
        waiting: OrderedDict[Key, list[WarmProcess]],
        done: Callable[[Key, WarmProcess], bool],
    ) -> list[WarmProcess]:
        """Take out of `waiting` what is `done` (the lock is held)."""
        stale: list[WarmProcess] = []
        for key, processes in list(waiting.items()):
            kept = []
            for process in processes:
                (stale if done(key, process) else kept).append(process)
            processes[:] = kept
            if not processes:  # an idle pair is no longer a busy one
                del waiting[key]
                self._busy.discard(key)
        return stale

    def _spawn(self, spec: WarmSpec) -> WarmProcess:
        """Start an interpreter for `spec` in a slot of its own under its own uid lease."""
        resources = ExitStack()
        try:
            slot = resources.enter_context(self.run_dirs.open(str(uuid.uuid4())))
            home, tmp = workdirs.home_and_tmp(slot)
            resources.enter_context(self.venvs.pinned(spec.venv.key))
            jail = resources.enter_context(self.sandbox.confine(spec.request))
            jail.hand_over((slot,))
            paths = RunPaths(slot, (), spec.venv.path, home, tmp)
            env = interpreter_environment(paths, self.parent_env)
            process, lines, pipes = self._start(spec, slot, jail, env)
            self._started.append(process)
        except BaseException:
            resources.close()
            raise
        workdirs.record_app_group(slot, process.pid)
        return WarmProcess(spec, slot, jail, process, lines, pipes, resources)

    def _fork_ahead(self, spec: WarmSpec, template: ForkTemplate) -> WarmProcess:
        """Fork a run of `spec` from `template` into a slot of its own under its own uid lease
        and cgroup, set up and confined as a forked run is, its privileges dropped and
        its `preload` imported, waiting until a run is handed over (through the gate,
        its control pipe, opened with `GATE_GO` at once)."""
        resources = ExitStack()
        ready_read, ready_write = os.pipe() if spec.preload else (None, None)
        gate = None
        try:
            slot = resources.enter_context(self.run_dirs.open(str(uuid.uuid4())))
            workdirs.home_and_tmp(slot)
            resources.enter_context(self.venvs.pinned(spec.venv.key))
            jail = resources.enter_context(self.sandbox.confine(spec.request))
            jail.hand_over((slot,))
            own = (slot, *spec.request.shared_dirs)
            setup = template.setup(jail.uid, own, spec.readable, spec.preload)
            lines = HeldLines()
            fork = functools.partial(
                template.fork, setup, confine=jail.confiner(), ready=ready_write
            )
            process = AppProcess(
                [str(spec.venv.python), "(a run forked ahead)"],
                cwd=slot,
                env=template.environment,
                on_line=lines,
                wrapped=True,
                launch=fork,
                gate_message=None,
            )
            process.start()
            # Not among `_started`: it dies with its template, not with this thread.
            gate = process.take_gate()
            os.write(gate, GATE_GO)  # confined: on to its imports, then it waits for its run
        except BaseException:
            for fd in (gate, ready_read):
                if fd is not None:
                    os.close(fd)
            resources.close()
            raise
        finally:
            if ready_write is not None:
                os.close(ready_write)
        workdirs.record_app_group(slot, process.pid)
        pipes = (gate, ready_read)
        return WarmProcess(spec, slot, jail, process, lines, pipes, resources)

    def _start(
        self, spec: WarmSpec, slot: Path, jail: Jail, env: dict[str, str]
    ) -> tuple[AppProcess, HeldLines, tuple[int, int]]:
        control_read, control_write = os.pipe()
        ready_read, ready_write = os.pipe()
        argv = [str(spec.venv.python), "-c", bootstrap_source()]
        argv += [str(control_read), str(ready_write), *spec.preload]
        mounts = Mounts((slot,), spec.readable, slot, spec.request.shared_dirs)
        lines = HeldLines()
        process = AppProcess(
            jail.command(argv, mounts),
            cwd=slot,
            env=env,
            on_line=lines,
            preexec=jail.preexec(),
            popen_extra={**jail.popen_user(), "pass_fds": (control_read, ready_write)},
            wrapped=jail.wrapped,
            dies_with_parent=jail.gated,
            prepare=jail.prepare(),
        )
        try:
            process.start()
        except BaseException:
            for fd in (control_write, ready_read):
                os.close(fd)
            raise
        finally:  # the child's ends: only it holds them now
            os.close(control_read)
            os.close(ready_write)
        return process, lines, (control_write, ready_read)
