"""The runner side of the control plane: register, claim, package, status, logs, heartbeat."""

from __future__ import annotations

import base64
import functools
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Insert, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tower.core import crypto, errors
from tower.core.runs import ACTIVE, TERMINAL, RunStatus, check_transition
from tower.server.dispatch import queue
from tower.server.services import apps as apps_service
from tower.server.services import auth, deploys, lifecycle, runner_credentials, vault
from tower.server.services import catalogs as catalogs_service
from tower.server.services import secrets as secrets_service
from tower.server.services.context import RunnerPrincipal, ServerContext, read_session
from tower.server.services.transitions import transition
from tower.server.store import models
from tower.server.store.types import utcnow

HEARTBEAT_INTERVAL_S = 5.0
#: a runner's last sign of life is written at most this often by its claims
ALIVE_WRITE_EVERY = timedelta(seconds=1)
#: heartbeats per lease: a runner may miss two before its runs are declared lost
BEATS_PER_LEASE = 3
MAX_LOG_LINES_PER_BATCH = 5000
MAX_LINE_CHARS = 64 * 1024
# Packages up to this size ride along in the claim answer, saving the runner a round trip.
INLINE_PACKAGE_MAX_BYTES = 256 * 1024
_T = TypeVar("_T")
RUNNER_REPORTS = {RunStatus.RUNNING, RunStatus.EXITED, RunStatus.CRASHED, RunStatus.ERRORED}


@dataclass(frozen=True)
class Registration:
    name: str
    hostname: str
    version: str
    public_key: str
    environment: str | None
    capacity: int


def heartbeat_interval(ctx: ServerContext) -> float:
    """How often runners renew leases: every 5 s, or more often when leases are short."""
    return min(HEARTBEAT_INTERVAL_S, ctx.settings.lease_ttl_seconds / BEATS_PER_LEASE)


def register(ctx: ServerContext, who: RunnerPrincipal, reg: Registration) -> models.Runner:
    crypto.load_public_key(reg.public_key)  # refuse a bad key now, not at the first claim
    with ctx.sessions.begin() as session:
        runner = models.Runner(
            account_id=who.account_id,
            credential_id=who.credential_id,
            name=reg.name,
            hostname=reg.hostname,
            version=reg.version,
            environment=reg.environment or None,
            capacity=max(1, reg.capacity),
            public_key=reg.public_key,
            last_heartbeat_at=utcnow(),
        )
        session.add(runner)
        session.flush()
        return runner


def _seen_alive(runner: models.Runner, now: datetime) -> None:
    """A claim says the runner is alive, as a heartbeat does. Within a second of the
    last word the row is left as it is: a busy runner claims many times a second, and
    what reads the time (liveness, reservations) counts in seconds."""
    last = runner.last_heartbeat_at
    if last is None or now - last >= ALIVE_WRITE_EVERY:
        runner.last_heartbeat_at = now


def get_runner(session: Session, who: RunnerPrincipal, runner_id: uuid.UUID) -> models.Runner:
    runner = session.get(models.Runner, runner_id)
    if runner is None or not runner_credentials.same_runner_identity(
        session, runner.credential_id, who
    ):
        raise errors.NotFound("Unknown runner id: register again.")
    return runner


def check_runner(ctx: ServerContext, who: RunnerPrincipal, runner_id: uuid.UUID) -> None:
    """NotFound unless `runner_id` is a runner of this credential."""
    with read_session(ctx) as session:
        get_runner(session, who, runner_id)


def try_claim(
    ctx: ServerContext, who: RunnerPrincipal, runner_id: uuid.UUID, max_runs: int = 1
) -> list[dict[str, Any]]:
    """Claim up to `max_runs` pending runs for the runner; their assignments (maybe none).

    A runner with several free slots takes a backlog in one transaction and one round
    trip instead of one per run."""
    with ctx.sessions.begin() as session:
        return _claim_in(ctx, session, who, runner_id, max_runs)


def _claim_in(
    ctx: ServerContext,
    session: Session,
    who: RunnerPrincipal,
    runner_id: uuid.UUID,
    max_runs: int,
) -> list[dict[str, Any]]:
    """`try_claim` inside the caller's transaction."""
    now = utcnow()
    lease = now + timedelta(seconds=ctx.settings.lease_ttl_seconds)
    runner = get_runner(session, who, runner_id)
    _seen_alive(runner, now)
    # The claim is a plain statement, which does not flush: a batch's reports must be
    # written first (a run they put back in the queue is claimable at once).
    session.flush()
    run_ids = queue.claim_runs(
        session,
        runner_id=runner.id,
        account_id=runner.account_id,
        environment=runner.environment,
        now=now,
        lease_until=lease,
        reserved_since=now - timedelta(seconds=ctx.settings.runner_reservation_seconds),
        limit=max_runs,
    )
    if not run_ids:
        return []
    claimed = _load_claimed(session, run_ids)
    handout = _Handout(ctx, session, runner)
    # The runtime values are read before the attempts are added, so reading them
    # flushes nothing: every attempt and transition row is inserted at the commit, in
    # one flush (one statement per table), instead of in an extra flush at the first
    # query of an assignment. (Only a retry's first line number queries after that.)
    for one in claimed:
        handout.runtime_document(one.run)
    attempts = [_open_attempt(session, one.run, runner, now) for one in claimed]
    return [
        _assignment(handout, one, attempt) for one, attempt in zip(claimed, attempts, strict=True)
    ]


@dataclass(frozen=True)
class _Claimed:
    """A run just claimed, with the rows its assignment names."""

    run: models.Run
    app: models.App
    version: models.AppVersion
    environment: models.Environment
    account: models.Account


# The claim statement moved the rows behind the session's back: `populate_existing`
# overwrites a copy the session may already hold. One query for all the runs claimed.
_CLAIMED_ROWS = (
    select(models.Run, models.App, models.AppVersion, models.Environment, models.Account)
    .join(models.App, models.App.id == models.Run.app_id)
    .join(models.AppVersion, models.AppVersion.id == models.Run.version_id)
    .join(models.Environment, models.Environment.id == models.Run.environment_id)
    .join(models.Account, models.Account.id == models.Run.account_id)
    .where(models.Run.id.in_(bindparam("run_ids", expanding=True)))
    # Handed out oldest first, as they were queued.
    .order_by(models.Run.created_at, models.Run.number)
    .execution_options(populate_existing=True)
)


def _load_claimed(session: Session, run_ids: list[uuid.UUID]) -> list[_Claimed]:
    rows = session.execute(_CLAIMED_ROWS, {"run_ids": run_ids})
    return [_Claimed(*row) for row in rows]


class _Handout:
    """What every assignment of one claim shares: the runner (its key), and the runtime
    values per (account, environment), read once per claim (one transaction, one
    snapshot) however many runs of that environment it takes."""

    def __init__(self, ctx: ServerContext, session: Session, runner: models.Runner) -> None:
        self.ctx = ctx
        self.session = session
        self.runner = runner
        self._runtime: dict[tuple[uuid.UUID, uuid.UUID], str] = {}

    def runtime_document(self, run: models.Run) -> str:
        """The run's secrets and catalog variables as JSON (sealed per run by the caller)."""
        key = (run.account_id, run.environment_id)
        if key not in self._runtime:
            self._runtime[key] = _runtime_document(self.ctx, self.session, run)
        return self._runtime[key]


def _open_attempt(
    session: Session, run: models.Run, runner: models.Runner, now: datetime
) -> models.RunAttempt:
    # The claim statement moved the row; record that move like every other transition.
    check_transition(RunStatus.PENDING, RunStatus.STARTING)
    attempt = models.RunAttempt(
        account_id=run.account_id,
        run_id=run.id,
        seq=run.num_attempts,
        status=RunStatus.STARTING.value,
        runner_id=runner.id,
        fencing_token=lifecycle.new_fencing_token(),
        starting_at=now,
    )
    session.add(attempt)
    session.add(
        models.RunTransition(
            account_id=run.account_id,
            run_id=run.id,
            attempt_seq=attempt.seq,
            from_status=RunStatus.PENDING.value,
            to_status=RunStatus.STARTING.value,
            at=now,
        )
    )
    return attempt


def _assignment(handout: _Handout, claimed: _Claimed, attempt: models.RunAttempt) -> dict[str, Any]:
    ctx, session = handout.ctx, handout.session
    run, app, version, account = claimed.run, claimed.app, claimed.version, claimed.account
    account_key = ctx.keys.account_key(account.id, account.wrapped_key)
    data_key = crypto.unwrap_key(
        account_key, version.wrapped_data_key, deploys.package_aad(version.id)
    )
    inline = (
        base64.b64encode(ctx.blobs.get(version.blob_key)).decode()
        if version.package_size <= INLINE_PACKAGE_MAX_BYTES
        else None
    )
    sandbox = apps_service.sandbox_settings(app)
    return {
        "run_id": str(run.id),
        "attempt_seq": attempt.seq,
        "fencing_token": attempt.fencing_token,
        # A retry numbers its lines after the earlier attempts' (line_num is per run).
        "first_line_num": _first_line_num(session, run, attempt),
        "run_number": run.number,
        "app_name": app.name,
        "app_version": version.version,
        "version_id": str(version.id),
        "account_name": account.name,
        "environment": claimed.environment.name,
        "parameters": {p["name"]: p["value"] for p in run.parameters},
        "sealed_runtime": _sealed_runtime(handout, run),
        "invoke": version.invoke,
        "package_url": f"/v1/runner/runs/{run.id}/package",
        "package_inline": inline,
        "package_sha256": version.package_sha256,
        "package_signature": _signature(ctx, version),
        "package_key": vault.runner_seals.wrap(handout.runner.public_key, data_key),
        "package_aad": deploys.package_aad(version.id).decode(),
        "content_checksum": version.content_checksum,
        "tower_url": ctx.settings.resolved_public_url,
        "run_token": auth.issue_jwt(
            ctx,
            account_id=run.account_id,
            user_id=run.created_by_id,
            ttl=auth.RUN_TOKEN_TTL,
            run_id=run.id,
        ),
        # The app's sandbox settings as they are at claim time; the runner clamps the
        # limits to its own maximums (tower.runner.sandbox.RunRequest).
        "limits": sandbox.limits(),
        "isolate_network": sandbox.isolate_network,
        "is_scheduled": run.initiator.get("type") == "tower_scheduler",
        "schedule_id": run.initiator.get("details", {}).get("schedule_id"),
        "schedule_name": run.initiator.get("details", {}).get("schedule_name"),
    }


_LAST_LINE = select(func.max(models.RunLogLine.line_num)).where(
    models.RunLogLine.run_id == bindparam("run_id")
)


def _first_line_num(session: Session, run: models.Run, attempt: models.RunAttempt) -> int:
    # Only runners write log lines, each for the attempt it holds (fenced): before a
    # run's first attempt there are none, so only a retry needs to look.
    if attempt.seq == 1:
        return 1
    last_line = session.scalar(_LAST_LINE, {"run_id": run.id})
    return (last_line or 0) + 1


def package_verify_key(ctx: ServerContext) -> str:
    """The public half of the package signing key (base64 of its raw 32 bytes)."""
    return crypto.verify_key_b64(vault.package_signing_key(ctx))


def _signature(ctx: ServerContext, version: models.AppVersion) -> str:
    # Versions stored before signing existed are signed on first dispatch; the key is
    # loaded at start-up, so this never opens a transaction of its own.
    if version.package_signature is None:
        version.package_signature = deploys.sign_package(
            vault.package_signing_key(ctx),
            version.id,
            version.package_sha256,
            version.content_checksum,
        )
    return version.package_signature


def _sealed_runtime(handout: _Handout, run: models.Run) -> str:
    """The run's secrets and catalog variables, encrypted to the claiming runner's key.

    The only form in which secret values leave the control plane for a run: the runner
    opens it in memory with its private key (see tower.runner.runtime_values).
    """
    return vault.runner_seals.seal(handout.runner.public_key, handout.runtime_document(run))


def _runtime_document(ctx: ServerContext, session: Session, run: models.Run) -> str:
    secrets = secrets_service.effective_secrets(ctx, session, run.account_id, run.environment_id)
    catalog_variables, sensitive = catalogs_service.runtime_variables(
        ctx, session, run.account_id, run.environment_id
    )
    document = {"secrets": secrets, "catalog_variables": catalog_variables, "masked": sensitive}
    return json.dumps(document)


def _held_run(session: Session, who: RunnerPrincipal, run_id: uuid.UUID) -> models.Run:
    run = session.get(models.Run, run_id, with_for_update=True)
    _check_run_of(run, who)
    return run


def _check_run_of(run: models.Run | None, who: RunnerPrincipal) -> None:
    if run is None or (who.account_id is not None and run.account_id != who.account_id):
        raise errors.RunNotFound("No such run for this runner.")


@dataclass(frozen=True)
class _Held:
    """A run locked for a runner's report, its current attempt and its app."""

    run: models.Run
    attempt: models.RunAttempt
    app: models.App | None


# The run (locked), the attempt the runner names and the run's app in one query.
_HELD_ROWS = (
    select(models.Run, models.RunAttempt, models.App)
    .outerjoin(
        models.RunAttempt,
        (models.RunAttempt.run_id == models.Run.id) & (models.RunAttempt.seq == bindparam("seq")),
    )
    .outerjoin(models.App, models.App.id == models.Run.app_id)
    .where(models.Run.id == bindparam("run_id"))
    .with_for_update(of=models.Run)
    .execution_options(populate_existing=True)
)


#: runs locked for a batch of reports: run id → (run, its current attempt, its app)
_HeldRows = dict[uuid.UUID, tuple[models.Run, models.RunAttempt | None, models.App | None]]

# Every run a batch reports on, locked (in id order), with its current attempt and app.
_HELD_BATCH_ROWS = (
    select(models.Run, models.RunAttempt, models.App)
    .outerjoin(
        models.RunAttempt,
        (models.RunAttempt.run_id == models.Run.id)
        & (models.RunAttempt.seq == models.Run.num_attempts),
    )
    .outerjoin(models.App, models.App.id == models.Run.app_id)
    .where(models.Run.id.in_(bindparam("run_ids", expanding=True)))
    .order_by(models.Run.id)
    .with_for_update(of=models.Run)
    .execution_options(populate_existing=True)
)


def _lock_held(session: Session, run_ids: set[uuid.UUID]) -> _HeldRows:
    """The runs a batch reports on, locked in one query instead of one per report. The
    rows stay locked for the transaction, so what the batch changes in memory is all
    that changes them: each report reads them from here."""
    if not run_ids:
        return {}
    rows = session.execute(_HELD_BATCH_ROWS, {"run_ids": sorted(run_ids)})
    return {run.id: (run, attempt, app) for run, attempt, app in rows}


def _held_attempt(
    session: Session,
    who: RunnerPrincipal,
    run_id: uuid.UUID,
    attempt_seq: int,
    fencing_token: str,
    locked: _HeldRows | None = None,
) -> _Held:
    """The run and the attempt a runner reports for, if it is still the run's current
    one (fencing); RunNotFound or StaleAttempt otherwise. `locked`: the batch's runs,
    already locked (`_lock_held`); else the run is locked and read here."""
    if locked is not None:
        run, current, app = locked.get(run_id, (None, None, None))
        attempt = current if current is not None and current.seq == attempt_seq else None
    else:
        row = session.execute(_HELD_ROWS, {"run_id": run_id, "seq": attempt_seq}).first()
        run, attempt, app = row if row is not None else (None, None, None)
    _check_run_of(run, who)
    if attempt_seq != run.num_attempts:
        raise errors.StaleAttempt(
            f"Attempt {attempt_seq} of run {run.id} is superseded by attempt {run.num_attempts}."
        )
    if attempt is None:
        raise errors.StaleAttempt(f"Run {run.id} has no attempt {attempt_seq}.")
    if not secrets.compare_digest(attempt.fencing_token, fencing_token):
        raise errors.StaleAttempt(
            f"The fencing token does not match attempt {attempt_seq} of run {run.id}."
        )
    return _Held(run, attempt, app)


def package_for(ctx: ServerContext, who: RunnerPrincipal, run_id: uuid.UUID) -> bytes:
    with ctx.sessions.begin() as session:
        run = _held_run(session, who, run_id)
        if RunStatus(run.status) not in ACTIVE:
            raise errors.Conflict(f"Run {run_id} is {run.status}; its package is not handed out.")
        version = session.get(models.AppVersion, run.version_id)
        blob_key = version.blob_key
    return ctx.blobs.get(blob_key)


@dataclass(frozen=True)
class StatusReport:
    """What a runner says about its attempt in one request."""

    attempt_seq: int
    fencing_token: str
    status: RunStatus
    exit_code: int | None = None
    message: str | None = None
    #: the attempt's last log lines, stored with the status in one transaction
    lines: tuple[dict[str, Any], ...] = ()
    #: how long before the report the app started (a runner may fold `running` into
    #: the final report of a short run); the runner's clock never enters the record
    started_seconds_ago: float | None = None


def report_status(
    ctx: ServerContext, who: RunnerPrincipal, run_id: uuid.UUID, report: StatusReport
) -> RunStatus:
    """Apply a runner's report on its attempt; answers the run's status afterwards."""
    wake = lifecycle.Wakeups()
    with ctx.sessions.begin() as session:
        answer = _report_in(ctx, session, who, run_id, report, wake)
    wake.fire(ctx.notifier)
    if isinstance(answer, errors.StaleAttempt):
        raise answer
    return answer


def _report_in(
    ctx: ServerContext,
    session: Session,
    who: RunnerPrincipal,
    run_id: uuid.UUID,
    report: StatusReport,
    wake: lifecycle.Wakeups,
    locked: _HeldRows | None = None,
) -> RunStatus | errors.StaleAttempt:
    """`report_status` inside the caller's transaction. A report that comes after the
    control plane ended the attempt is answered StaleAttempt, returned rather than
    raised: its log lines are kept, so what the caller has done must be committed."""
    status = report.status
    if status not in RUNNER_REPORTS:
        raise errors.InvalidInput(
            f"A runner may report {sorted(s.value for s in RUNNER_REPORTS)}, not '{status}'."
        )
    _check_batch(report.lines)
    held = _held_attempt(session, who, run_id, report.attempt_seq, report.fencing_token, locked)
    run, attempt = held.run, held.attempt
    _store_lines(session, run, report.attempt_seq, report.lines)
    if report.lines:
        wake.run_changed(run)  # log followers read the new lines
    ended_first = _ended_first(attempt, status)
    if ended_first:
        return errors.StaleAttempt(
            f"Attempt {report.attempt_seq} of run {run_id} already ended {ended_first}."
        )
    if RunStatus(attempt.status) == status:
        return RunStatus(run.status)  # a re-send after a lost answer: only its lines count
    return _apply_report(ctx, session, held, report, wake)


def _ended_first(attempt: models.RunAttempt, reported: RunStatus) -> str | None:
    """How the attempt ended, if the control plane ended it (cancel, timeout, lost
    lease) before this report; None while the runner's report still counts."""
    current = RunStatus(attempt.status)
    return attempt.status if current in TERMINAL and current != reported else None


def _apply_report(
    ctx: ServerContext,
    session: Session,
    held: _Held,
    report: StatusReport,
    wake: lifecycle.Wakeups,
) -> RunStatus:
    run, attempt = held.run, held.attempt
    status = report.status
    now = utcnow()
    wake.run_changed(run)
    if status == RunStatus.RUNNING or _folds_running(attempt, report):
        _start_attempt(ctx, session, held, _started_at(attempt, now, report))
    if status in TERMINAL:
        # The app is loaded (held.app) and stays referenced: end_attempt finds it in
        # the session instead of loading it again, and both changes flush together.
        lifecycle.end_attempt(
            session,
            run,
            attempt,
            status,
            exit_code=report.exit_code,
            message=report.message,
            now=now,
            wake=wake,
        )
    return RunStatus(run.status)


def _folds_running(attempt: models.RunAttempt, report: StatusReport) -> bool:
    """A runner that did not report `running` for a short run says in its final report
    when the app started; the attempt then goes `starting → running → <final>`."""
    return (
        RunStatus(attempt.status) == RunStatus.STARTING
        and report.status in (RunStatus.EXITED, RunStatus.CRASHED)
        and report.started_seconds_ago is not None
    )


def _started_at(attempt: models.RunAttempt, now: datetime, report: StatusReport) -> datetime:
    if report.started_seconds_ago is None:
        return now
    started = now - timedelta(seconds=report.started_seconds_ago)
    return max(started, attempt.starting_at) if attempt.starting_at else started


def _start_attempt(ctx: ServerContext, session: Session, held: _Held, started_at: datetime) -> None:
    run = held.run
    transition(session, run, RunStatus.RUNNING, at=started_at, attempt=held.attempt)
    run.lease_expires_at = utcnow() + timedelta(seconds=ctx.settings.lease_ttl_seconds)
    lifecycle.mark_running(run, held.app, started_at)


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> None:
    # One executemany of a statement compiled once, not a multi-row VALUES compiled anew
    # for every batch.
    session.connection().execute(_log_insert(session.get_bind().dialect.name), rows)


@functools.cache
def _log_insert(dialect: str) -> Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(models.RunLogLine.__table__).on_conflict_do_nothing()


def _check_batch(lines: Sequence[dict[str, Any]]) -> None:
    if len(lines) > MAX_LOG_LINES_PER_BATCH:
        raise errors.InvalidInput(f"At most {MAX_LOG_LINES_PER_BATCH} log lines per batch.")


def _store_lines(
    session: Session, run: models.Run, attempt_seq: int, lines: Sequence[dict[str, Any]]
) -> None:
    """Insert an attempt's log lines; a line number seen before is a re-send, skipped."""
    if not lines:
        return
    rows = [
        {
            "account_id": run.account_id,
            "run_id": run.id,
            "line_num": line["line_num"],
            "attempt_seq": attempt_seq,
            "channel": line["channel"],
            "content": line["content"][:MAX_LINE_CHARS],
            "reported_at": line["reported_at"],
        }
        for line in lines
    ]
    _insert_ignoring_duplicates(session, rows)


def ingest_logs(ctx: ServerContext, who: RunnerPrincipal, batch: LogBatch) -> int:
    """Store a runner's log lines for its attempt; answers how many it took."""
    wake = lifecycle.Wakeups()
    with ctx.sessions.begin() as session:
        accepted = _ingest_in(session, who, batch, wake)
    wake.fire(ctx.notifier)
    return accepted


@dataclass(frozen=True)
class LogBatch:
    """Log lines a runner ships for its attempt of a run."""

    run_id: uuid.UUID
    attempt_seq: int
    fencing_token: str
    lines: Sequence[dict[str, Any]]


def _ingest_in(
    session: Session,
    who: RunnerPrincipal,
    batch: LogBatch,
    wake: lifecycle.Wakeups,
    locked: _HeldRows | None = None,
) -> int:
    """`ingest_logs` inside the caller's transaction; answers how many lines it took."""
    _check_batch(batch.lines)
    if not batch.lines:
        return 0
    held = _held_attempt(session, who, batch.run_id, batch.attempt_seq, batch.fencing_token, locked)
    run = held.run
    _store_lines(session, run, batch.attempt_seq, batch.lines)
    wake.run_changed(run)
    return len(batch.lines)


@dataclass
class BatchOutcome:
    """What became of each item of a runner's batch, in the order given: log batches
    (lines taken) and reports (the run's status), or the error that refused the item;
    the runs claimed, or why the claim failed."""

    logs: list[int | errors.TowerError]
    reports: list[RunStatus | errors.TowerError]
    assignments: list[dict[str, Any]]
    claim_error: errors.TowerError | None = None


def apply_batch(
    ctx: ServerContext,
    who: RunnerPrincipal,
    runner_id: uuid.UUID,
    logs: Sequence[LogBatch],
    reports: Sequence[tuple[uuid.UUID, StatusReport]],
    claim_max_runs: int,
) -> BatchOutcome:
    """Log batches, then status reports, then a claim of up to `claim_max_runs` runs
    (0: none), in one transaction: one that is refused (stale, unknown, invalid) is
    undone alone and the others stand exactly as their own request would have left
    them. One transaction instead of one per item: a busy runner's batch waits for the
    database's write lock once.

    Refusals are rare, so the batch is first applied without a savepoint per item (each
    costs statements and a flush); only if an item is refused is it all undone and
    applied again with one savepoint per item."""
    try:
        return _apply_batch_in(ctx, who, runner_id, logs, reports, claim_max_runs, savepoints=False)
    except _Refused:
        return _apply_batch_in(ctx, who, runner_id, logs, reports, claim_max_runs, savepoints=True)


class _Refused(Exception):
    """An item of a batch applied without savepoints was refused: undo the batch."""


#: how each item of a batch is applied: `_all_or_none` or `_each` (with savepoints)
_Apply = Callable[[Session, Callable[[], Any]], Any]


def _apply_batch_in(
    ctx: ServerContext,
    who: RunnerPrincipal,
    runner_id: uuid.UUID,
    logs: Sequence[LogBatch],
    reports: Sequence[tuple[uuid.UUID, StatusReport]],
    claim_max_runs: int,
    *,
    savepoints: bool,
) -> BatchOutcome:
    each: _Apply = _each if savepoints else _all_or_none
    wake = lifecycle.Wakeups()
    with ctx.sessions.begin() as session:
        # Without savepoints, every run is locked and read at once; with them, each
        # item reads its own run inside its savepoint, as its own request would.
        locked = (
            None
            if savepoints
            else _lock_held(session, {b.run_id for b in logs} | {i for i, _ in reports})
        )
        outcome = BatchOutcome(
            logs=[
                each(session, lambda b=b: _ingest_in(session, who, b, wake, locked)) for b in logs
            ],
            reports=[
                each(session, lambda i=i, r=r: _report_in(ctx, session, who, i, r, wake, locked))
                for i, r in reports
            ],
            assignments=[],
        )
        if claim_max_runs:
            claim = functools.partial(_claim_in, ctx, session, who, runner_id, claim_max_runs)
            claimed = each(session, claim)
            if isinstance(claimed, errors.TowerError):
                outcome.claim_error = claimed
            else:
                outcome.assignments = claimed
    wake.fire(ctx.notifier)
    return outcome


def _all_or_none(session: Session, apply: Callable[[], _T]) -> _T:
    """`apply()` as it is; when it is refused, the whole batch is (see apply_batch)."""
    try:
        return apply()
    except errors.TowerError as exc:
        raise _Refused from exc


def _each(session: Session, apply: Callable[[], _T]) -> _T | errors.TowerError:
    """`apply()` in a savepoint: its changes are undone when it is refused (its error
    is answered) and stand otherwise (a StaleAttempt it answers keeps them)."""
    try:
        with session.begin_nested():
            return apply()
    except errors.TowerError as exc:
        return exc


def heartbeat(
    ctx: ServerContext,
    who: RunnerPrincipal,
    runner_id: uuid.UUID,
    run_ids: list[uuid.UUID],
    *,
    renew: bool = True,
    ended_since: datetime | None = None,
) -> list[uuid.UUID]:
    """Renew leases of the runner's runs (unless `renew` is off); answer those it must
    stop: cancelled, timed out, lost and retried elsewhere, or unknown. A run it ended
    itself (its final report arrived first) is not among them.

    `ended_since`: also answer runs not in `run_ids` whose attempt on this runner the
    control plane ended at or after that moment. A long poll names the runs held when
    it began; one claimed while it waits, then cancelled, is found this way."""
    now = utcnow()
    lease = now + timedelta(seconds=ctx.settings.lease_ttl_seconds)
    with ctx.sessions.begin() as session:
        runner = get_runner(session, who, runner_id)
        runner.last_heartbeat_at = now
        claimed_since = _ended_since(session, runner, run_ids, ended_since)
        if not run_ids:
            return claimed_since
        mine = (
            models.Run.id.in_(run_ids),
            models.Run.runner_id == runner.id,
            models.Run.status.in_(lifecycle.HELD),
        )
        if renew:
            session.execute(
                update(models.Run)
                .where(*mine)
                .values(lease_expires_at=lease)
                .execution_options(synchronize_session=False)
            )
        still_mine = set(session.scalars(select(models.Run.id).where(*mine)))
        gone = [run_id for run_id in run_ids if run_id not in still_mine]
        if gone:
            gone = _not_ended_by(session, runner, gone)
    return gone + claimed_since


# Attempts the control plane ends: a cancel, a timeout or a lost lease (`errored`).
_ENDED_BY_CONTROL_PLANE = (RunStatus.CANCELLED.value, RunStatus.ERRORED.value)


def _ended_since(
    session: Session, runner: models.Runner, run_ids: list[uuid.UUID], since: datetime | None
) -> list[uuid.UUID]:
    """Runs not in `run_ids` with an attempt on `runner` that ended cancelled or
    errored at or after `since` (none when `since` is None). A runner that reported
    `errored` itself may be named once: it stops nothing and beats on."""
    if since is None:
        return []
    stmt = select(models.RunAttempt.run_id).where(
        models.RunAttempt.runner_id == runner.id,
        models.RunAttempt.ended_at >= since,
        models.RunAttempt.status.in_(_ENDED_BY_CONTROL_PLANE),
    )
    named = set(run_ids)
    return sorted({run_id for run_id in session.scalars(stmt) if run_id not in named}, key=str)


# Runs whose current attempt the runner ended itself: only a runner reports `exited`
# or `crashed`. It named them because its report was still on its way when it beat.
_ENDED_BY_ITS_RUNNER = (
    select(models.Run.id)
    .join(
        models.RunAttempt,
        (models.RunAttempt.run_id == models.Run.id)
        & (models.RunAttempt.seq == models.Run.num_attempts),
    )
    .where(
        models.Run.id.in_(bindparam("run_ids", expanding=True)),
        models.RunAttempt.runner_id == bindparam("runner_id"),
        models.RunAttempt.status.in_([RunStatus.EXITED.value, RunStatus.CRASHED.value]),
    )
)


def _not_ended_by(
    session: Session, runner: models.Runner, run_ids: list[uuid.UUID]
) -> list[uuid.UUID]:
    """`run_ids` less the runs whose current attempt `runner` itself reported ended:
    telling it to stop those would end its long poll at once for nothing, again at
    each beat until the reports are acknowledged (a busy runner beat several times a
    second)."""
    ended = set(session.scalars(_ENDED_BY_ITS_RUNNER, {"run_ids": run_ids, "runner_id": runner.id}))
    return [run_id for run_id in run_ids if run_id not in ended]
