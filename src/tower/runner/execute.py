"""The one execution path, shared by the runner agent and `tower run --local`.

Given an extracted package, its MANIFEST and a :class:`RunContext`: build or reuse
the venv (its output goes to the `setup` channel), start the app in its own process
group with a scrubbed environment, stream its output to the `program` channel, and
map the result to a run status (contract §7.7):

- exit 0 → `exited`; non-zero → `crashed` (signals as 128+N, see `process`);
- missing script, dependency install failure, failure to start → `errored`;
- `cancel` set → the app is terminated (SIGTERM, grace, SIGKILL) → `cancelled`.

A cancel is acted on at once, whatever the run is doing: while the venv is being
built the installer (uv) is killed and the app never starts; while the app runs its
process group gets SIGTERM the moment `cancel` is set, and SIGKILL after the grace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import marshal
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tower.core.package import Manifest
from tower.core.runs import RunStatus, outcome_for_exit_code
from tower.runner import workdirs
from tower.runner.environment import RunContext, RunPaths, build_environment
from tower.runner.fork_boot import GATE_GO
from tower.runner.forks import ForkTemplate, ForkUnavailable
from tower.runner.process import AppProcess, command_for, script_relpath
from tower.runner.sandbox import (
    Jail,
    Limits,
    LimitWatch,
    Mounts,
    NetworkMode,
    RunRequest,
    Sandbox,
    SandboxUnavailable,
    local_catalog_dirs,
    venv_install_dirs,
)
from tower.runner.venvs import SETUP_CHANNEL, DependencyInstallError, Venv, VenvCache
from tower.runner.warm import WarmPool, WarmProcess, WarmSpec, needs_exec

logger = logging.getLogger(__name__)

#: how often the wait loop looks for a cancel; the app's exit wakes it at once (s)
EXIT_POLL_INTERVAL_S = 0.05
CANCELLED_BEFORE_START = "The run was cancelled before it started."
#: default SIGTERM → SIGKILL grace when a run is cancelled (s)
DEFAULT_CANCEL_GRACE_S = 10.0
WARM_START_LINE = "Starting the app in a pre-started interpreter"
#: MANIFEST version 1 packages are flat: the app dir is the package root
FLAT_MANIFEST_VERSION = 1

LineSink = Callable[[str, str], None]


@dataclass(frozen=True)
class Outcome:
    """How a run ended: `exited`, `crashed`, `errored` or `cancelled`."""

    status: RunStatus
    exit_code: int | None = None
    message: str | None = None
    #: True when an existing venv was reused, False when one was built, None if none was needed
    venv_cache_hit: bool | None = None
    #: True when the app ran in a pre-started interpreter (see `tower.runner.warm`)
    warm_start: bool = False
    #: True when the app was forked from a template (see `tower.runner.forks`)
    fork_start: bool = False


def app_layout(package_dir: Path, manifest: Manifest) -> tuple[Path, tuple[Path, ...]]:
    """The app dir and the import-path dirs of an extracted package."""
    if manifest.version <= FLAT_MANIFEST_VERSION:
        app_dir = package_dir
    else:
        app_dir = package_dir / manifest.app_dir_name
    return app_dir, tuple(package_dir / path for path in manifest.import_paths)


def execute(
    package_dir: Path,
    manifest: Manifest,
    ctx: RunContext,
    venvs: VenvCache,
    sink: LineSink,
    *,
    work_dir: Path,
    parent_env: Mapping[str, str],
    on_started: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
    sandbox: Sandbox | None = None,
    request: RunRequest | None = None,
    warm: WarmPool | None = None,
) -> Outcome:
    """Run the app of an extracted package to completion and say how it ended.

    With a `sandbox` the app runs confined (limits, its own uid, bubblewrap; see
    `tower.runner.sandbox`) as the run's `request` asks; without one it runs as the
    caller's user, unconfined (`tower run --local`). With a `warm` pool a sandboxed
    app starts in a pre-started interpreter when one fits (see `tower.runner.warm`)."""
    app_dir, module_dirs = app_layout(package_dir, manifest)
    script = app_dir / script_relpath(manifest.invoke)
    if not script.is_file():
        return _errored(sink, f"The app's script {manifest.invoke!r} is not in the package.")
    if _is_set(cancel):
        return Outcome(RunStatus.CANCELLED, None, CANCELLED_BEFORE_START)
    with contextlib.ExitStack() as in_use:  # the venv cannot be evicted while in use
        try:
            venv = in_use.enter_context(venvs.use(app_dir, sink, cancel))
        except DependencyInstallError as exc:
            if _is_set(cancel):  # the installer failed because the cancel killed it
                return Outcome(RunStatus.CANCELLED, None, CANCELLED_BEFORE_START)
            return _errored(sink, exc.message, headline=exc.message.splitlines()[0])
        if _is_set(cancel):
            return Outcome(RunStatus.CANCELLED, None, CANCELLED_BEFORE_START, venv.cache_hit)
        argv = command_for(manifest.invoke, app_dir, venv.path)
        life = _Lifetime(work_dir, on_started, cancel, cancel_grace_s)

        def run_env() -> dict[str, str]:  # a warm start builds its own, for its slot
            paths = _run_paths(work_dir, app_dir, module_dirs, venv)
            return build_environment(ctx, paths, parent_env)

        if sandbox is None:
            workdirs.home_and_tmp(work_dir)
            process = AppProcess(argv, cwd=app_dir, env=run_env(), on_line=sink)
            outcome = life.run(process, sink)
            return dataclasses.replace(outcome, venv_cache_hit=venv.cache_hit)
        shared = _shared_dirs(ctx, sandbox, sink)
        readable = (venv.path, *venv_install_dirs(venv.path))
        request = dataclasses.replace(request or RunRequest(), shared_dirs=shared)
        own_dirs = _own_dirs(work_dir, package_dir)
        mounts = Mounts(own_dirs, readable, app_dir, shared)
        run = _SandboxedRun(sandbox, request, own_dirs, mounts)
        env: dict[str, str] | None = None
        outcome = None
        if warm is not None and _may_start_warm(argv, venv, package_dir, work_dir):
            preload = warm.preload_for(venv, manifest.checksum, app_dir)
            spec = WarmSpec(venv, request, readable, preload)
            if _may_fork(warm, sandbox, spec, work_dir):
                # Only to see whether the template can serve the run: a run forked
                # ahead gets the environment of its own slot.
                env = run_env()
                fork = _ForkStart(warm, spec, run)
                template = fork.template_for(env)
                if template is not None:
                    ahead = _WarmStart(warm, spec, ctx, parent_env, sink, forked=True)
                    outcome = ahead.execute(package_dir, manifest, life)
                    if outcome is None and not _is_set(cancel):
                        workdirs.home_and_tmp(work_dir)
                        outcome = fork.execute(template, argv, env, sink, life)
            else:
                start = _WarmStart(warm, spec, ctx, parent_env, sink)
                outcome = start.execute(package_dir, manifest, life)
        if outcome is None:
            if _is_set(cancel):  # cancelled while waiting for a warm interpreter
                return Outcome(RunStatus.CANCELLED, None, CANCELLED_BEFORE_START, venv.cache_hit)
            workdirs.home_and_tmp(work_dir)
            outcome = run.execute(argv, env or run_env(), sink, life)
        return dataclasses.replace(outcome, venv_cache_hit=venv.cache_hit)


def _may_start_warm(argv: list[str], venv: Venv, package_dir: Path, work_dir: Path) -> bool:
    """A plain Python script of a package in its work dir (it moves into the warm
    interpreter's slot)."""
    plain = len(argv) == 2 and argv[0] == str(venv.python)
    return plain and package_dir != work_dir and work_dir in package_dir.parents


def _may_fork(pool: WarmPool, sandbox: Sandbox, spec: WarmSpec, work_dir: Path) -> bool:
    """Whether the run may be forked from a template (see `tower.runner.forks`): one
    that shares the network, in a work dir of the pool's work root (the host
    directory a template shows besides the venv and the catalogs)."""
    isolated = spec.request.isolate_network or sandbox.config.network == NetworkMode.NONE
    return pool.forks and not isolated and work_dir.parent == pool.work_root


def _shared_dirs(ctx: RunContext, sandbox: Sandbox, sink: LineSink) -> tuple[Path, ...]:
    """Local-file catalogs of the run: the sandbox lets it write them, as the runner's
    uid (a run uid could not write files earlier runs of the account made)."""
    dirs = local_catalog_dirs(ctx.catalog_variables, [sandbox.config.state_dir])
    if dirs:
        where = ", ".join(str(d) for d in dirs)
        sink(SETUP_CHANNEL, f"The run can write its local catalog storage: {where}")
    return tuple(dirs)


def _own_dirs(work_dir: Path, package_dir: Path) -> tuple[Path, ...]:
    """The run's own directories: its work dir, and its package dir unless inside it."""
    if work_dir == package_dir or work_dir in package_dir.parents:
        return (work_dir,)
    return (work_dir, package_dir)


@dataclass(frozen=True)
class _SandboxedRun:
    sandbox: Sandbox
    request: RunRequest
    own_dirs: tuple[Path, ...]
    mounts: Mounts

    def execute(
        self, argv: list[str], env: dict[str, str], sink: LineSink, life: _Lifetime
    ) -> Outcome:
        def start(jail: Jail, watch: LimitWatch) -> tuple[Outcome, AppProcess]:
            command, start_env = jail.command_and_env(argv, self.mounts, env)
            process = AppProcess(
                command,
                cwd=self.mounts.cwd,
                env=start_env,
                on_line=watch,
                preexec=jail.preexec(),
                popen_extra=jail.popen_user(),
                wrapped=jail.wrapped,
                dies_with_parent=jail.gated,
                prepare=jail.prepare(),
            )
            return life.run(process, watch), process

        outcome = _confined(self.sandbox, self.request, self.own_dirs, sink, start)
        assert outcome is not None  # a cold start never falls back
        return outcome


def _confined(
    sandbox: Sandbox,
    request: RunRequest,
    own_dirs: tuple[Path, ...],
    sink: LineSink,
    start: Callable[[Jail, LimitWatch], tuple[Outcome | None, AppProcess | None]],
) -> Outcome | None:
    """Run the app `start` starts in a jail of its own (its notes said, its directories
    handed over); how it ended, a crash that a limit caused explained; None when
    `start` gave up before anything of the run executed."""
    watch = LimitWatch(sink)
    try:
        with sandbox.confine(request) as jail:
            for note in jail.notes:
                sink(SETUP_CHANNEL, note)
            jail.hand_over(own_dirs)
            outcome, process = start(jail, watch)
            if outcome is None or process is None:
                return outcome
            limits = jail.limits
            oom_killed = jail.oom_killed()  # before the cgroup goes with the jail
    except SandboxUnavailable as exc:
        return _errored(sink, str(exc))
    return _explained(outcome, watch, limits, process, sink, oom_killed=oom_killed)


def _explained(
    outcome: Outcome,
    watch: LimitWatch,
    limits: Limits,
    process: AppProcess,
    sink: LineSink,
    *,
    oom_killed: bool,
) -> Outcome:
    """A crash that a limit caused says so (`oom_killed`: the run's memory cgroup says
    the kernel killed it for memory)."""
    if outcome.status != RunStatus.CRASHED:
        return outcome
    reason = watch.explain(limits, process.killed_by, oom_killed=oom_killed)
    if reason is None:
        return outcome
    sink(SETUP_CHANNEL, f"The run crashed: {reason}.")
    message = f"{reason[:1].upper()}{reason[1:]} (exit code {outcome.exit_code})."
    return dataclasses.replace(outcome, message=message)


@dataclass(frozen=True)
class _ForkStart:
    """A run forked from its (venv, request) pair's template, confined as a cold start
    would be: its own uid lease, cgroup and limits (set before its gate opens)."""

    pool: WarmPool
    spec: WarmSpec
    #: how the run would start cold: its sandbox, request and directories
    cold: _SandboxedRun

    def template_for(self, env: dict[str, str]) -> ForkTemplate | None:
        """The template that may fork a run with `env`, or None when it must start cold
        (no template running, or a variable only an exec would honour)."""
        template = self.pool.template(self.spec)
        if template is None:
            return None
        problem = needs_exec(env, template.environment)
        if problem is not None:
            logger.info("starting the app cold: %s", problem)
            return None
        return template

    def execute(
        self,
        template: ForkTemplate,
        argv: list[str],
        env: dict[str, str],
        sink: LineSink,
        life: _Lifetime,
    ) -> Outcome | None:
        """How the run forked from `template` ended, or None when it must start cold
        (the template could not fork it; nothing of the run has executed then)."""
        cold = self.cold

        def start(jail: Jail, watch: LimitWatch) -> tuple[Outcome | None, AppProcess | None]:
            own = (*cold.own_dirs, *cold.mounts.shared)
            setup = template.setup(jail.uid, own, cold.mounts.readable)
            process = AppProcess(
                argv,
                cwd=self.cold.mounts.cwd,
                env=env,
                on_line=watch,
                wrapped=True,
                launch=functools.partial(template.fork, setup, confine=jail.confiner()),
                gate_message=GATE_GO + marshal.dumps(self._private(argv, env)),
            )
            try:
                process.start()
            except ForkUnavailable as exc:
                self.pool.fork_failed(template, exc)
                return None, None
            except OSError as exc:  # as for a cold start: it could not be confined
                return _errored(sink, f"The app could not be started: {exc}."), process
            return dataclasses.replace(life.started(process), fork_start=True), process

        return _confined(cold.sandbox, cold.request, cold.own_dirs, sink, start)

    def _private(self, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
        """The rest of the run, sent to the forked process itself (secrets never pass
        through the template, whose memory later forks inherit)."""
        return {
            # bubblewrap sets PWD to the directory it starts the app in
            "env": {**env, "PWD": str(self.cold.mounts.cwd)},
            "cwd": str(self.cold.mounts.cwd),
            "argv": argv[1:],
        }


@dataclass(frozen=True)
class _WarmStart:
    """A run started in a pre-started interpreter, or (`forked`) in the run its pair's
    fork template forked ahead: its package moves into the process's slot, which
    becomes the run's directory (HOME, TMPDIR, cwd)."""

    pool: WarmPool
    spec: WarmSpec
    ctx: RunContext
    parent_env: Mapping[str, str]
    sink: LineSink
    forked: bool = False

    def execute(
        self,
        package_dir: Path,
        manifest: Manifest,
        life: _Lifetime,
    ) -> Outcome | None:
        """How the run ended, or None when it must start cold (no interpreter, or
        none that fits; nothing of the run has executed then)."""
        if self.forked:
            warm = self.pool.take_forked(self.spec, life.cancel)
        else:
            warm = self.pool.take(self.spec, life.cancel)
        if warm is None:
            return None
        watch = LimitWatch(self.sink)
        try:
            if not self._hand_over(warm, package_dir, manifest, life.work_dir, watch):
                return None
            began = time.monotonic()
            if not self.forked:
                self.sink(SETUP_CHANNEL, WARM_START_LINE)
            _notify_started(life.on_started, began)
            if self.forked:
                self.pool.fork_ahead(self.spec)
            outcome = _wait(warm.process, life.cancel, life.grace_s)
            how = {"fork_start": True} if self.forked else {"warm_start": True}
            outcome = dataclasses.replace(outcome, **how)
            oom_killed = warm.jail.oom_killed()  # before the cgroup goes with the jail
            return _explained(
                outcome, watch, warm.jail.limits, warm.process, self.sink, oom_killed=oom_killed
            )
        finally:
            warm.close()

    def _hand_over(
        self,
        warm: WarmProcess,
        package_dir: Path,
        manifest: Manifest,
        work_dir: Path,
        watch: LimitWatch,
    ) -> bool:
        """Move the package into the slot and send the run; False (the package back
        where it was) when the interpreter does not fit the run or is gone."""
        moved = warm.slot / package_dir.relative_to(work_dir)
        app_dir, module_dirs = app_layout(moved, manifest)
        paths = _run_paths(warm.slot, app_dir, module_dirs, self.spec.venv)
        env = build_environment(self.ctx, paths, self.parent_env)
        here, here_modules = app_layout(package_dir, manifest)
        problem = warm.unsuitable(env, (here, *here_modules))
        if problem is not None:
            logger.info("starting the app cold: %s", problem)
            return False
        if warm.jail.wrapped:  # bubblewrap sets PWD to the directory it starts the app in
            env["PWD"] = str(app_dir)
        moved.parent.mkdir(parents=True, exist_ok=True)
        package_dir.rename(moved)
        script = app_dir / script_relpath(manifest.invoke)
        try:
            warm.jail.hand_over((warm.slot,))
            warm.hand_over({"env": env, "cwd": str(app_dir), "argv": [str(script)]}, watch)
        except OSError as exc:
            logger.warning("the warm interpreter is gone (%s); starting the app cold", exc)
            moved.rename(package_dir)
            return False
        return True


@dataclass(frozen=True)
class _Lifetime:
    """What watching a started app takes: its run's work dir (where its process group
    is recorded for a crash clean-up), whom to tell it started, its cancel."""

    work_dir: Path
    #: told when (time.monotonic) the app started
    on_started: Callable[[float], None] | None
    cancel: threading.Event | None
    grace_s: float

    def run(self, process: AppProcess, sink: LineSink) -> Outcome:
        """Start the app and wait for it."""
        try:
            process.start()
        except OSError as exc:
            return _errored(sink, f"The app could not be started: {exc}.")
        return self.started(process)

    def started(self, process: AppProcess) -> Outcome:
        """Wait for a started app."""
        began = process.began_at if process.began_at is not None else time.monotonic()
        workdirs.record_app_group(self.work_dir, process.pid)
        _notify_started(self.on_started, began)
        return _wait(process, self.cancel, self.grace_s)


def _is_set(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


def _run_paths(
    work_dir: Path, app_dir: Path, module_dirs: tuple[Path, ...], venv: Venv
) -> RunPaths:
    """The run's paths in `work_dir`; its HOME and TMPDIR are made only by a start
    that uses them (a warm interpreter's slot has its own already)."""
    home, tmp = workdirs.home_and_tmp_paths(work_dir)
    return RunPaths(app_dir, module_dirs, venv.path, home, tmp)


def _notify_started(on_started: Callable[[float], None] | None, began: float) -> None:
    if on_started is None:
        return
    try:
        on_started(began)
    except Exception:  # reporting "running" must not take the app down
        logger.exception("on_started hook failed")


def _wait(process: AppProcess, cancel: threading.Event | None, grace_s: float) -> Outcome:
    try:
        code = _exit_or_cancel(process, cancel)
        if code is None:
            code = process.terminate(grace_s)
            return Outcome(RunStatus.CANCELLED, code, "The run was cancelled.")
    except BaseException:  # Ctrl-C or a crash of the caller: never leave the app behind
        process.terminate(grace_s)
        raise
    return _finished(code, process.killed_by)


def _exit_or_cancel(process: AppProcess, cancel: threading.Event | None) -> int | None:
    """The app's exit code the moment it exits, or None within `EXIT_POLL_INTERVAL_S`
    of `cancel` being set (an exit is on the path of every run; a cancel is rare)."""
    while True:
        code = process.poll(EXIT_POLL_INTERVAL_S)
        if code is not None:
            return code
        if cancel is not None and cancel.is_set():
            return None


def _finished(code: int, killed_by: int | None) -> Outcome:
    status = outcome_for_exit_code(code)
    if status == RunStatus.EXITED:
        return Outcome(status, code)
    if killed_by is not None:
        name = _signal_name(killed_by)
        return Outcome(status, code, f"The app was killed by {name} (exit code {code}).")
    return Outcome(status, code, f"The app exited with code {code}.")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _errored(sink: LineSink, message: str, *, headline: str | None = None) -> Outcome:
    sink(SETUP_CHANNEL, headline or message)
    return Outcome(RunStatus.ERRORED, None, message)
