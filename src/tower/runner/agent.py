"""The runner agent: claim runs from the control plane and execute them.

Lifecycle:
1. remove work dirs left by a crashed predecessor; generate an RSA-2048 key in
   memory (never written to disk);
2. register, retrying with backoff while the control plane is not up yet;
3. long-poll claims (`CLAIM_WAIT_S`) whenever one of `capacity` slots is free; each
   assignment runs in a worker thread: download → unwrap the package key → decrypt
   → check sha256 and MANIFEST checksum → extract → execute (report `running` when
   the app starts) → flush logs → report the final status → wipe the work dir;
4. a heartbeat thread long-polls `heartbeat` back to back: each call renews the
   leases of the runs in progress at once, and the answer comes early when a run
   must stop, so a cancel reaches the app within milliseconds;
5. SIGTERM/SIGINT: stop claiming, let runs finish for `SHUTDOWN_GRACE_S`, then
   cancel the rest (reported `errored`); a second signal cancels them at once.

Every report about a run carries its attempt's `fencing_token`; a 409 means the
attempt was superseded (e.g. its lease expired and the run was retried elsewhere),
and the runner stops the run without reporting anything more about it. Reports that
fail because the control plane is down are retried, with a short backoff, until
`report_deadline_s`; the log lines of an attempt always go before its final status.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gc
import importlib.metadata
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tower.client import ApiError, ConnectionFailed
from tower.client.runner_api import RunnerApi, status_report_body
from tower.client.timestamps import parse_timestamp
from tower.core.crypto import (
    generate_rsa_private_key,
    open_sealed,
    package_statement,
    public_key_pem_spki,
    rsa_unwrap,
    verify_signature,
)
from tower.core.errors import IntegrityError, InvalidInput, TowerError
from tower.core.package import Manifest, extract_package, sha256_hex
from tower.core.runs import RunStatus
from tower.runner import credentials as runner_credentials
from tower.runner import workdirs
from tower.runner.environment import RunContext
from tower.runner.execute import Outcome, execute
from tower.runner.logs import LogShipper
from tower.runner.packages import PackageCache
from tower.runner.reporter import (
    REPORT_BACKOFF_MAX_S,
    Delivery,
    Report,
    Reporter,
    Slots,
    is_transient,
)
from tower.runner.runtime_values import OpenedKeys, RuntimeValues, open_runtime_values
from tower.runner.sandbox import RunRequest, Sandbox
from tower.runner.settings import (
    RunnerSettings,
    SettingsError,
    installer_environment,
    run_parent_environment,
)
from tower.runner.timers import Timer, Timers
from tower.runner.venvs import SETUP_CHANNEL, VenvCache
from tower.runner.warm import WarmPool

logger = logging.getLogger(__name__)

#: long-poll wait of one claim (s)
CLAIM_WAIT_S = 30.0
#: used when the control plane does not say (s)
DEFAULT_HEARTBEAT_INTERVAL_S = 5.0
#: how long runs may keep going after a stop request before they are cancelled (s)
SHUTDOWN_GRACE_S = 30.0
#: backoff while the control plane is unreachable (register, claim, heartbeat) (s)
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
#: how long stopping waits for a heartbeat call in flight (the thread is a daemon) (s)
HEARTBEAT_JOIN_S = 1.0
#: how often a worker slot is re-checked while all are busy (s)
SLOT_POLL_S = 0.5
#: attempts for package downloads
DOWNLOAD_ATTEMPTS = 3
INTEGRITY_MESSAGE = "package integrity check failed: "
#: package signatures found valid, remembered (runs of one version carry the same one)
VERIFIED_SIGNATURES = 256
STALE_STATUS = 409
#: statuses of a claim that mean "this runner is unknown, register again"
UNKNOWN_RUNNER_STATUSES = frozenset({404, 410})


class RunFailed(TowerError):
    """A run could not be started (package download, integrity, extraction)."""


class CancelReason:
    SERVER = "server"
    SHUTDOWN = "shutdown"
    STALE = "stale"


@dataclass
class ActiveRun:
    """A run this runner is responsible for."""

    run_id: str
    attempt_seq: int
    #: proves to the control plane that this attempt is still the run's current one
    fencing_token: str = ""
    #: the attempt's first log line number (line numbers continue across attempts)
    first_line_num: int = 1
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str | None = None
    running_reported: bool = False
    #: sends `running` once the app has run for a moment (see `_report_running_soon`)
    running_timer: Timer | None = None
    running_report: threading.Thread | None = None
    #: when the app started (monotonic), for a `running` folded into the final report
    app_started: float | None = None
    #: set once the app is gone: a `running` report still waiting is not sent
    app_ended: threading.Event = field(default_factory=threading.Event)
    #: the run's slot went with its final report (the reporter frees or reuses it)
    slot_handed_over: bool = False
    #: the control plane has the final status: nothing left to renew or to stop
    final_delivered: bool = False

    @classmethod
    def from_assignment(cls, assignment: dict[str, Any]) -> ActiveRun:
        """The run of a claim answer (KeyError, TypeError, ValueError when malformed)."""
        return cls(
            run_id=str(assignment["run_id"]),
            attempt_seq=int(assignment.get("attempt_seq") or 1),
            fencing_token=str(assignment.get("fencing_token") or ""),
            first_line_num=max(1, int(assignment.get("first_line_num") or 1)),
        )


def runner_version() -> str:
    try:
        return importlib.metadata.version("tower-oss")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@functools.lru_cache(maxsize=VERIFIED_SIGNATURES)
def _verified(public_key: str, statement: bytes, signature: str) -> bool:
    """`verify_signature`, once per (key, statement, signature): the same inputs give the
    same answer, and a run of a version that ran before skips the curve arithmetic.
    Only a valid signature is remembered (a failure raises, which is not cached)."""
    verify_signature(public_key, statement, signature)
    return True


class Agent:
    """One runner process. `run()` blocks until `stop()`; tests run it in a thread."""

    def __init__(
        self,
        settings: RunnerSettings,
        *,
        api: RunnerApi | None = None,
        venvs: VenvCache | None = None,
        claim_wait_s: float = CLAIM_WAIT_S,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        sandbox: Sandbox | None = None,
        credential_origin: runner_credentials.Origin | None = None,
    ) -> None:
        self.settings = settings
        self._owns_api = api is None
        self.api = api or RunnerApi(
            settings.url,
            settings.require_token(),
            ca_bundle=settings.ca_bundle,
            client_certificate=settings.client_certificate,
        )
        #: where a rotated credential is saved (see `runner_credentials.resolve`)
        self.credential_origin = credential_origin or runner_credentials.Origin(
            settings.url, runner_credentials.token_digest(settings.require_token())
        )
        #: when to rotate the credential (None: it never expires); set at registration
        self.rotate_after: datetime | None = None
        self.venvs = venvs or VenvCache(
            settings.venvs_dir,
            uv_cache_dir=settings.uv_cache_dir,
            sdk_dir=settings.sdk_dir,
            python=settings.python,
            base_env=installer_environment(),
            max_mb=settings.venv_cache_max_mb,
        )
        #: decided (and warned about) once, at start: bubblewrap, run uids, limits
        self.sandbox = sandbox or Sandbox(settings.sandbox_config())
        self._owns_sandbox = sandbox is None
        self.claim_wait_s = claim_wait_s
        self.shutdown_grace_s = shutdown_grace_s
        self.private_key = generate_rsa_private_key()
        #: RSA decryptions made with it, reused when the control plane reuses a wrap
        self._opened_keys = OpenedKeys()
        self.packages = PackageCache(settings.runner_dir / "packages")
        #: the runs' work dirs (and warm slots), reused from one run to the next
        self.run_dirs = workdirs.RunDirs(settings.work_dir)
        self.runner_id: str | None = None
        #: verifies package signatures; learned at registration unless pinned
        self.package_key: str | None = settings.package_key
        self.heartbeat_interval_s = DEFAULT_HEARTBEAT_INTERVAL_S
        self.registered = threading.Event()
        self._parent_env = run_parent_environment()
        #: pre-started interpreters for recently used apps (None: TOWER_RUNNER_WARM_START=off)
        self.warm: WarmPool | None = None
        if settings.warm_start:
            self.warm = WarmPool(
                self.sandbox,
                self.venvs,
                self.run_dirs,
                self._parent_env,
                max_keys=settings.warm_keys,
                idle_s=settings.warm_idle_s,
                forks=settings.fork_start,
            )
        self._stop = threading.Event()
        self._done = threading.Event()
        self._slots = threading.BoundedSemaphore(settings.capacity)
        self._lock = threading.Lock()
        #: by (run_id, attempt_seq): a lost attempt may still be winding down here when
        #: this runner claims the run's next attempt
        self._runs: dict[tuple[str, int], ActiveRun] = {}
        self._workers: list[threading.Thread] = []
        #: what a run may need later (its `running` report, a log shipping thread)
        self.timers = Timers()
        #: cuts a heartbeat pause short: a run was claimed, or the agent is done
        self._heartbeat_wake = threading.Event()
        self.reporter = Reporter(
            self.api,
            lambda: self.runner_id,
            Slots(
                take_free=self._take_free_slots,
                release=self._release_slots,
                start=self._start_worker,
                claiming=lambda: not self._stop.is_set(),
            ),
        )

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Register, then claim and execute runs until stopped; returns the exit code."""
        try:
            return self._serve()
        finally:
            self.timers.close()
            if self.warm is not None:
                self.warm.close()
            self.run_dirs.close()
            self.packages.close()
            if self._owns_sandbox:
                self.sandbox.close()
            if self._owns_api:
                self.api.close()

    def _serve(self) -> int:
        workdirs.remove_leftovers(self.settings.work_dir)
        if not self._register():
            return 0
        gc.freeze()
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        heartbeat.start()
        self.reporter.start()
        try:
            self._claim_loop()
        finally:
            self.reporter.stop_claiming()
            self._drain()
            self.reporter.close()
            self._done.set()
            self._heartbeat_wake.set()
            heartbeat.join(HEARTBEAT_JOIN_S)
        return 0

    def stop(self, *, cancel_runs: bool = False) -> None:
        """Stop claiming; with `cancel_runs` (or when asked twice), cancel runs now."""
        if self._stop.is_set() or cancel_runs:
            self._cancel_all(CancelReason.SHUTDOWN)
        elif self.runner_id is not None:
            # From another thread: this may run in a signal handler, in the middle of
            # the claim call it is about to end.
            threading.Thread(target=self._end_claim, name="stop-claims", daemon=True).start()
        self._stop.set()

    def _end_claim(self) -> None:
        """End the claim long-poll in flight, so stopping does not wait it out; the
        control plane then claims nothing more for this runner."""
        assert self.runner_id is not None
        try:
            self.api.stop_claims(self.runner_id)
        except (ApiError, ConnectionFailed) as exc:
            # An older control plane, or an unreachable one: the long poll just runs out.
            logger.info("could not end the claim in flight (%s)", exc)

    def active_run_ids(self) -> list[str]:
        """The runs whose leases the heartbeat renews: not those already reported
        ended (their workers may still be wiping their directories)."""
        with self._lock:
            return sorted({key[0] for key, run in self._runs.items() if not run.final_delivered})

    def _register(self) -> bool:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            try:
                answer = self.api.register(
                    name=self.settings.name,
                    hostname=socket.gethostname(),
                    version=runner_version(),
                    public_key=public_key_pem_spki(self.private_key),
                    environment=self.settings.environment,
                    capacity=self.settings.capacity,
                )
            except (ApiError, ConnectionFailed) as exc:
                if not is_transient(exc):
                    raise _registration_error(exc) from exc
                logger.info("control plane not ready (%s); retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self._registered(answer)
            return True
        return False

    def _registered(self, answer: dict[str, Any]) -> None:
        self.runner_id = str(answer["runner_id"])
        announced = answer.get("package_signing_key")
        if self.settings.package_key and announced and announced != self.settings.package_key:
            logger.warning(
                "the control plane announces package signing key %s, not the pinned "
                "TOWER_RUNNER_PACKAGE_KEY %s: its packages will be refused",
                announced,
                self.settings.package_key,
            )
        self.package_key = self.settings.package_key or announced
        interval = answer.get("heartbeat_interval_seconds") or DEFAULT_HEARTBEAT_INTERVAL_S
        self.heartbeat_interval_s = float(interval)
        self.rotate_after = parse_timestamp(answer.get("credential_rotate_after"))
        self.registered.set()
        logger.info("runner %s registered as %s", self.settings.name, self.runner_id)

    # ------------------------------------------------------------------ claiming

    def _claim_loop(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=SLOT_POLL_S):
                continue
            free = 1 + self._take_free_slots(self.settings.capacity - 1)
            try:
                assignments = self._claim(free)
            except (ApiError, ConnectionFailed) as exc:
                self._release_slots(free)
                logger.warning("claim failed (%s); retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_START_S
            self._release_slots(free - len(assignments))
            for assignment in assignments:
                self._start_worker(assignment)

    def _take_free_slots(self, most: int) -> int:
        """Take up to `most` free slots without waiting (a backlog is claimed in one
        request); answers how many."""
        taken = 0
        while taken < most and self._slots.acquire(blocking=False):
            taken += 1
        return taken

    def _release_slots(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _claim(self, max_runs: int) -> list[dict[str, Any]]:
        assert self.runner_id is not None
        try:
            return self.api.claim(self.runner_id, self.claim_wait_s, max_runs)[:max_runs]
        except ApiError as exc:
            if exc.status not in UNKNOWN_RUNNER_STATUSES:
                raise
            logger.warning("the control plane does not know this runner; registering again")
            self._register()
            return []

    def _start_worker(self, assignment: dict[str, Any]) -> None:
        try:
            run = ActiveRun.from_assignment(assignment)
        except (KeyError, TypeError, ValueError):
            logger.error("ignoring a malformed assignment: %r", assignment)
            self._slots.release()
            return
        with self._lock:
            older = [
                held
                for (run_id, seq), held in self._runs.items()
                if run_id == run.run_id and seq < run.attempt_seq
            ]
            self._runs[(run.run_id, run.attempt_seq)] = run
        for stale in older:
            # The server names runs, not attempts, and this runner still holds the run,
            # so no heartbeat would tell the older attempt that it was superseded.
            self._cancel_run(stale, CancelReason.STALE)
        worker = threading.Thread(
            target=self._work, args=(assignment, run), name=f"run-{run.run_id}", daemon=True
        )
        self._workers = [w for w in self._workers if w.is_alive()]
        self._workers.append(worker)
        worker.start()
        self._heartbeat_wake.set()  # renew its lease, and hear of its cancel, from now on

    def _work(self, assignment: dict[str, Any], run: ActiveRun) -> None:
        try:
            self._process(assignment, run)
        except Exception:
            logger.exception("run %s: unexpected runner failure", run.run_id)
        finally:
            with self._lock:
                self._runs.pop((run.run_id, run.attempt_seq), None)
            if not run.slot_handed_over:
                self._slots.release()

    # ------------------------------------------------------------------ one run

    def _process(self, assignment: dict[str, Any], run: ActiveRun) -> None:
        logger.info("run %s attempt %s claimed", run.run_id, run.attempt_seq)
        on_stale = lambda: self._cancel_run(run, CancelReason.STALE)  # noqa: E731
        runtime, sealed_failure = self._runtime_values(assignment)
        shipper = LogShipper(
            self.api,
            run.run_id,
            run.attempt_seq,
            fencing_token=run.fencing_token,
            first_line_num=run.first_line_num,
            deadline_s=self.settings.report_deadline_s,
            on_stale=on_stale,
            redact=runtime.masker() or None,
            send=lambda lines: self.reporter.ship_logs(
                run.run_id, run.attempt_seq, run.fencing_token, lines
            ),
        ).start(self.timers)
        with self.run_dirs.open(run.run_id) as work:
            try:
                if sealed_failure is not None:
                    shipper(SETUP_CHANNEL, sealed_failure)
                    outcome = Outcome(RunStatus.ERRORED, None, sealed_failure)
                else:
                    outcome = self._execute(assignment, run, work, shipper, runtime)
            except Exception as exc:
                logger.exception("run %s failed in the runner", run.run_id)
                outcome = Outcome(RunStatus.ERRORED, None, f"The runner failed: {exc}")
                shipper(SETUP_CHANNEL, outcome.message or "")
            finally:
                run.app_ended.set()
                last_lines = shipper.hand_over()
            if shipper.stale:
                self._cancel_run(run, CancelReason.STALE)
            self._report_final(run, outcome, last_lines)
        logger.info("run %s finished: %s", run.run_id, outcome.status)

    def _runtime_values(self, assignment: dict[str, Any]) -> tuple[RuntimeValues, str | None]:
        """The run's secrets and catalog variables, or why they could not be opened."""
        try:
            return open_runtime_values(self.private_key, assignment, self._opened_keys), None
        except (IntegrityError, InvalidInput) as exc:
            return RuntimeValues(), f"The run's secrets could not be decrypted: {exc.message}"

    def _execute(
        self,
        assignment: dict[str, Any],
        run: ActiveRun,
        work: Path,
        shipper: LogShipper,
        runtime: RuntimeValues,
    ) -> Outcome:
        if run.cancel.is_set():
            return Outcome(RunStatus.CANCELLED, None, "The run was cancelled before it started.")
        package_dir = self.run_dirs.package_dir(work)
        try:
            manifest = self._fetch_package(assignment, package_dir)
        except RunFailed as exc:
            shipper(SETUP_CHANNEL, exc.message)
            return Outcome(RunStatus.ERRORED, None, exc.message)
        return execute(
            package_dir,
            manifest,
            self._context(assignment, runtime),
            self.venvs,
            shipper,
            work_dir=work,
            parent_env=self._parent_env,
            on_started=lambda began: self._report_running_soon(run, began),
            cancel=run.cancel,
            cancel_grace_s=self.settings.cancel_grace_s,
            sandbox=self.sandbox,
            request=RunRequest.from_assignment(assignment),
            warm=self.warm,
        )

    def _fetch_package(self, assignment: dict[str, Any], dest: Path) -> Manifest:
        """The run's package at `dest`: its signature checked, then copied from the
        packages this runner opened before, or downloaded, decrypted, verified and
        extracted (and kept for the next run of it)."""
        sha256 = str(assignment.get("package_sha256") or "").lower()
        try:
            checksum = str(assignment.get("content_checksum") or "")
            self._verify_signature(assignment, sha256, checksum)
        except (IntegrityError, InvalidInput) as exc:
            raise RunFailed(INTEGRITY_MESSAGE + exc.message) from exc
        known = self.packages.copy_to(sha256, dest)
        if known is not None:
            return known
        inline = assignment.get("package_inline")
        blob = _decode_inline(inline) if inline else self._download(str(assignment["run_id"]))
        try:
            manifest = self._open_package(assignment, blob, dest)
        except (IntegrityError, InvalidInput) as exc:
            raise RunFailed(INTEGRITY_MESSAGE + exc.message) from exc
        self.packages.keep(sha256, dest, manifest)
        return manifest

    def _download(self, run_id: str) -> bytes:
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            try:
                return self.api.download_package(run_id)
            except (ApiError, ConnectionFailed) as exc:
                if attempt == DOWNLOAD_ATTEMPTS or not is_transient(exc):
                    raise RunFailed(f"Could not download the package: {exc}") from exc
                time.sleep(BACKOFF_START_S * 2**attempt)
        raise AssertionError("unreachable")

    def _open_package(self, assignment: dict[str, Any], blob: bytes, dest: Path) -> Manifest:
        wrapped = str(assignment.get("package_key") or "")
        key = rsa_unwrap(self.private_key, wrapped, self._opened_keys)
        aad = str(assignment.get("package_aad") or "").encode()
        data = open_sealed(key, blob, aad)
        expected = str(assignment.get("package_sha256") or "").lower()
        actual = sha256_hex(data)
        if actual != expected:
            raise IntegrityError(f"the package sha256 is {actual}, expected {expected}")
        manifest = extract_package(data, dest)
        checksum = str(assignment.get("content_checksum") or "")
        if manifest.checksum != checksum:
            raise IntegrityError(
                f"the MANIFEST checksum is {manifest.checksum}, expected {checksum}"
            )
        return manifest

    def _verify_signature(self, assignment: dict[str, Any], sha256: str, checksum: str) -> None:
        """The control plane signed (version, sha256, checksum) when it stored the package:
        what we unpacked is what it stored, not a blob substituted on the way."""
        signature = assignment.get("package_signature")
        if not signature or not self.package_key:
            raise IntegrityError("the package carries no signature this runner can check")
        statement = package_statement(str(assignment.get("version_id") or ""), sha256, checksum)
        _verified(self.package_key, statement, str(signature))

    def _context(self, assignment: dict[str, Any], runtime: RuntimeValues) -> RunContext:
        return RunContext(
            environment=str(assignment.get("environment") or "default"),
            parameters={str(k): str(v) for k, v in (assignment.get("parameters") or {}).items()},
            secrets=runtime.secrets,
            catalog_variables=runtime.catalog_variables,
            run_id=str(assignment["run_id"]),
            run_number=assignment.get("run_number"),
            app_name=assignment.get("app_name"),
            team_name=assignment.get("account_name"),
            runner_name=self.settings.name,
            runner_id=self.runner_id,
            is_tower_managed=True,
            is_local=False,
            is_manual_run=not assignment.get("is_scheduled", False),
            schedule_id=assignment.get("schedule_id"),
            schedule_name=assignment.get("schedule_name"),
            tower_url=assignment.get("tower_url") or self.settings.url,
            jwt=assignment.get("run_token"),
        )

    # ------------------------------------------------------------------ reporting

    def _report_running_soon(self, run: ActiveRun, began: float) -> None:
        """Report `running` a moment after the app started, in the background.

        A short run ends within `running_report_delay_s`, and its final report says
        when it started instead: one request instead of two, and no thread. A running
        report is retried for minutes while the control plane is down, and the worker
        must keep watching the app meanwhile: it gets a thread of its own once due."""
        run.app_started = began
        run.running_timer = self.timers.call_later(
            self.settings.running_report_delay_s, lambda: self._start_running_report(run)
        )

    def _start_running_report(self, run: ActiveRun) -> None:
        with self._lock:  # against `_report_final`: started before the app ended, or never
            if run.app_ended.is_set():
                return  # the final report carries `started_seconds_ago`
            run.running_report = threading.Thread(
                target=self._report_running, args=(run,), name=f"running-{run.run_id}", daemon=True
            )
            run.running_report.start()

    def _report_running(self, run: ActiveRun) -> None:
        if self._report(run, RunStatus.RUNNING, None, None):
            run.running_reported = True

    def _report_final(self, run: ActiveRun, outcome: Outcome, lines: list[dict[str, Any]]) -> None:
        with self._lock:
            run.app_ended.set()
            running_report = run.running_report
        if run.running_timer is not None:
            run.running_timer.cancel()
        if running_report is not None:
            running_report.join()  # `running` must not arrive after the final status
        if run.reason in (CancelReason.SERVER, CancelReason.STALE):
            # The control plane already decided this run's fate; its last lines still count.
            self._ship_last_lines(run, lines)
            return
        status, message = outcome.status, outcome.message
        if status == RunStatus.CANCELLED:
            status = RunStatus.ERRORED
            message = "The runner shut down before the run finished."
        if self._report(run, status, outcome.exit_code, message, lines=lines, frees_slot=True):
            run.final_delivered = True

    def _ship_last_lines(self, run: ActiveRun, lines: list[dict[str, Any]]) -> None:
        if lines and run.reason != CancelReason.STALE:
            self._deliver(
                run,
                "the last log lines",
                lambda: self.api.send_logs(
                    run.run_id, run.attempt_seq, lines, fencing_token=run.fencing_token
                ),
            )

    def _report(
        self,
        run: ActiveRun,
        status: RunStatus,
        exit_code: int | None,
        message: str | None,
        *,
        lines: list[dict[str, Any]] | None = None,
        frees_slot: bool = False,
    ) -> bool:
        """Report a status (with the attempt's last log lines, and its start when
        `running` was not reported); False if it did not get through. With
        `frees_slot`, the run's slot goes with the report (the reporter may claim the
        next run for it in the same request)."""
        body = status_report_body(
            run.attempt_seq,
            str(status),
            exit_code,
            message,
            fencing_token=run.fencing_token,
            lines=lines,
        )
        deadline = time.monotonic() + self.settings.report_deadline_s
        started = None if run.running_reported else run.app_started
        report = Report(run.run_id, body, deadline, frees_slot=frees_slot, app_started=started)
        if frees_slot:
            run.slot_handed_over = True
        delivery = self.reporter.send(report)
        if delivery == Delivery.STALE:
            logger.info("run %s: %s rejected (%s); stopping it", run.run_id, status, report.detail)
            self._cancel_run(run, CancelReason.STALE)
        return delivery == Delivery.DELIVERED

    def _deliver(self, run: ActiveRun, what: str, send: Callable[[], object]) -> bool:
        """Send a report, retrying transient failures for up to `report_deadline_s`;
        False if it did not get through."""
        deadline = time.monotonic() + self.settings.report_deadline_s
        backoff = BACKOFF_START_S
        while True:
            try:
                send()
                return True
            except (ApiError, ConnectionFailed) as exc:
                if isinstance(exc, ApiError) and exc.status == STALE_STATUS:
                    logger.info("run %s: %s rejected (%s); stopping it", run.run_id, what, exc)
                    self._cancel_run(run, CancelReason.STALE)
                    return False
                if not is_transient(exc) or time.monotonic() >= deadline:
                    logger.error("run %s: could not report %s: %s", run.run_id, what, exc)
                    return False
                logger.warning("run %s: %s not reported yet (%s)", run.run_id, what, exc)
            time.sleep(backoff)
            backoff = min(backoff * 2, REPORT_BACKOFF_MAX_S)

    # ------------------------------------------------------------------ heartbeats, cancel

    def _heartbeat_loop(self) -> None:
        """Long-poll heartbeats back to back, each with the runs in progress right then.

        The server renews the leases at once and holds the answer up to the interval
        unless a run must stop, so leases are renewed about every interval and a
        cancel arrives in milliseconds.
        """
        backoff = BACKOFF_START_S
        while not self._done.is_set():
            self._heartbeat_wake.clear()
            started = time.monotonic()
            try:
                to_cancel = self._beat()
            except (ApiError, ConnectionFailed) as exc:
                logger.warning("heartbeat failed (%s); retrying in %.1fs", exc, backoff)
                self._done.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_START_S
            self._rotate_if_due()
            if not self._cancel_named(to_cancel):
                self._pace_heartbeat(started)

    # ------------------------------------------------------------------ credentials

    def _rotate_if_due(self) -> None:
        """Swap in a new credential once most of the current one's lifetime has passed;
        runs in progress keep going (requests in flight finish with the old one)."""
        if self.rotate_after is None or datetime.now(UTC) < self.rotate_after:
            return
        try:
            answer = self.api.rotate_credentials()
        except (ApiError, ConnectionFailed) as exc:
            logger.warning(
                "credential rotation failed (%s); retrying after the next heartbeat", exc
            )
            return
        self.settings = runner_credentials.save_rotated(
            self.settings, self.credential_origin, answer
        )
        self.api.use_credentials(self.settings.require_token(), self.settings.client_certificate)
        self.rotate_after = parse_timestamp(answer.get("credential_rotate_after"))
        logger.info(
            "rotated the runner credential; the new one expires at %s", answer.get("expires_at")
        )

    def _beat(self) -> list[str]:
        assert self.runner_id is not None
        return self.api.heartbeat(
            self.runner_id, self.active_run_ids(), wait_seconds=self.heartbeat_interval_s
        )

    def _cancel_named(self, run_ids: list[str]) -> bool:
        """Cancel the runs the control plane named; True if that stopped a run."""
        stopped = [run_id for run_id in run_ids if self.cancel(run_id, CancelReason.SERVER)]
        return bool(stopped)

    def _pace_heartbeat(self, started: float) -> None:
        """After an answer that stopped nothing, keep about an interval between calls.

        A server answers early and empty when it does not long-poll (an older one),
        when this runner has no run, or — again and again — while a cancelled run is
        still in its grace period. Calling again at once would spin. A run claimed
        meanwhile cuts the pause short, so its lease is renewed from the start.
        """
        remaining = self.heartbeat_interval_s - (time.monotonic() - started)
        if remaining > 0:
            self._heartbeat_wake.wait(remaining)

    def cancel(self, run_id: str, reason: str = CancelReason.SERVER) -> bool:
        """Stop a run in progress (every attempt of it here); False when this runner
        does not have it, or it is already being stopped."""
        with self._lock:
            attempts = [
                run
                for (held, _), run in self._runs.items()
                if held == run_id and not run.final_delivered
            ]
        stopped = [self._cancel_run(run, reason) for run in attempts]
        return any(stopped)

    def _cancel_run(self, run: ActiveRun, reason: str) -> bool:
        """Set the run's cancel flag; False if it was already set."""
        with self._lock:
            first = not run.cancel.is_set()
            # A stale attempt must never report again, whatever stopped it first.
            if first or reason == CancelReason.STALE:
                run.reason = reason
            run.cancel.set()
        if first:
            logger.info("cancelling run %s (%s)", run.run_id, reason)
        return first

    def _cancel_all(self, reason: str) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            self._cancel_run(run, reason)

    def _drain(self) -> None:
        """Let the runs in progress finish within the grace, then cancel the rest."""
        deadline = time.monotonic() + self.shutdown_grace_s
        for worker in list(self._workers):
            worker.join(max(0.0, deadline - time.monotonic()))
        if any(worker.is_alive() for worker in self._workers):
            logger.warning(
                "runs still in progress after %.0fs; cancelling them", self.shutdown_grace_s
            )
            self._cancel_all(CancelReason.SHUTDOWN)
        for worker in self._workers:
            worker.join()


def _decode_inline(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise RunFailed(f"The inline package is not valid base64: {exc}") from exc


class RegistrationRejected(SettingsError):
    """The control plane refused the runner's token."""


def _registration_error(exc: Exception) -> TowerError:
    if isinstance(exc, ApiError) and exc.status == 403 and "mutual TLS" in exc.detail:
        # The token is fine; the connection lacks the client certificate.
        return SettingsError(f"The control plane refused the runner: {exc.detail}")
    if isinstance(exc, ApiError) and exc.status in (401, 403):
        return RegistrationRejected(
            f"The control plane rejected the runner token ({exc.status}: {exc.detail}). "
            "Check TOWER_RUNNER_TOKEN; mint a new one with `tower up` or "
            "`POST /v1/runners/credentials`."
        )
    return TowerError(f"Could not register the runner: {exc}")


def _run_agent(resolved: runner_credentials.Resolved) -> int:
    agent = Agent(resolved.settings, credential_origin=resolved.origin)
    with _signals_stop(agent):
        return agent.run()


@contextmanager
def _signals_stop(agent: Agent) -> Iterator[None]:
    """SIGTERM/SIGINT stop the agent (twice: cancel runs now), in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler: Callable[[int, Any], None] = lambda signum, frame: agent.stop()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(settings: RunnerSettings | None = None) -> int:
    """Entry point of `tower runner`: run an agent until SIGTERM/SIGINT."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        # Every long-poll would otherwise log a line at INFO.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        configured = settings or RunnerSettings.from_env()
        resolved = runner_credentials.resolve(configured)
        try:
            return _run_agent(resolved)
        except RegistrationRejected:
            if not resolved.from_saved:
                raise
            logger.info("the saved runner credential was rejected; minting a new one")
            runner_credentials.forget(configured)
            if configured.token and not configured.api_key:
                raise
            return _run_agent(
                runner_credentials.resolve(dataclasses.replace(configured, token=None))
            )
    except TowerError as exc:
        logger.error("%s", exc.message)
        return 1
