"""What happens to a run between its attempts: outcomes, retries, deadlines, lost runners.

Every status change goes through `transitions.transition` (the table in
tower.core.runs decides); this module decides *which* change follows an event:

- an attempt ends (runner report, lost lease, running timeout): the run ends, or,
  when its retry policy allows, goes `retrying` and back to `pending` after the delay;
- a pending run waits longer than its app's `pending_timeout`: `errored`;
- the clock: `sweep` acts on every deadline that has passed and says when the next
  one falls, so the control plane's clock loop sleeps exactly that long.

Functions that change runs take a `Wakeups` and record whom to wake; the caller
fires it after the transaction commits (waking before the commit would let a
waiter read the old row).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tower.core.retries import RetryPolicy, next_retry
from tower.core.runs import RunStatus
from tower.server.dispatch.notifier import QUEUE_TOPIC, Notifier, run_topic, runner_topic
from tower.server.services.transitions import find_attempt, transition
from tower.server.store import models
from tower.server.store.types import utcnow

CLOCK_TOPIC = "clock"
#: the clock loop re-checks at least this often (other control planes change runs too)
CLOCK_MAX_SLEEP_S = 1.0
RUNNER_LOST_MESSAGE = "runner lost: no heartbeat before the lease expired"
#: the statuses in which a runner holds the run (and renews its lease)
HELD = (RunStatus.STARTING.value, RunStatus.RUNNING.value)


@dataclass
class Wakeups:
    """Topics to notify once the transaction that changed the runs has committed."""

    topics: set[str] = field(default_factory=set)

    def run_changed(self, run: models.Run) -> None:
        self.topics.add(run_topic(run.id))

    def runner_must_stop(self, runner_id: uuid.UUID | None) -> None:
        if runner_id is not None:
            self.topics.add(runner_topic(runner_id))

    def queue_changed(self) -> None:
        self.topics.add(QUEUE_TOPIC)

    def clock_changed(self) -> None:
        # Only for deadlines that may fall before the clock's next look (it looks at
        # least every CLOCK_MAX_SLEEP_S): waking it costs a sweep, so timeouts of a
        # second or more, set on every run, don't.
        self.topics.add(CLOCK_TOPIC)

    def fire(self, notifier: Notifier) -> None:
        for topic in self.topics:
            notifier.notify(topic)


def policy_of(owner: models.App | models.Run) -> RetryPolicy:
    return RetryPolicy(
        max_retries=owner.max_retries,
        retry_delay_seconds=owner.retry_delay_seconds,
        use_exponential_backoff=owner.use_exponential_backoff,
    )


def apply_policy(owner: models.App | models.Run, policy: RetryPolicy) -> None:
    owner.max_retries = policy.max_retries
    owner.retry_delay_seconds = policy.retry_delay_seconds
    owner.use_exponential_backoff = policy.use_exponential_backoff


def enqueue(session: Session, run: models.Run, app: models.App, now: datetime) -> None:
    """Move a run to `pending`, with the deadline its app's pending_timeout sets. A
    run being created is written here (see `transition`), in its pending state."""
    run.pending_deadline_at = (
        now + timedelta(seconds=app.pending_timeout) if app.pending_timeout > 0 else None
    )
    run.retry_at = None
    transition(session, run, RunStatus.PENDING, at=now)


def new_fencing_token() -> str:
    return secrets.token_urlsafe(24)


def mark_running(run: models.Run, app: models.App, now: datetime) -> None:
    """Start the running_timeout clock of the attempt that just started."""
    run.running_deadline_at = (
        now + timedelta(seconds=app.running_timeout) if app.running_timeout > 0 else None
    )


def end_attempt(
    session: Session,
    run: models.Run,
    attempt: models.RunAttempt | None,
    outcome: RunStatus,
    *,
    exit_code: int | None,
    message: str | None,
    now: datetime,
    wake: Wakeups,
) -> None:
    """Record how the current attempt ended, then retry the run or let it end."""
    transition(session, run, outcome, at=now, attempt=attempt)
    run.exit_code = exit_code
    if attempt is not None:
        attempt.exit_code = exit_code
    run.status_message = message
    run.running_deadline_at = None
    wake.run_changed(run)
    app = session.get(models.App, run.app_id)
    delay = next_retry(
        policy_of(run),
        outcome,
        attempts_made=run.num_attempts,
        app_enabled=app is not None and app.status != "disabled",
    )
    if delay is None or app is None:
        return
    transition(session, run, RunStatus.RETRYING, at=now)
    run.retry_at = now + timedelta(seconds=delay)
    if delay == 0:
        enqueue(session, run, app, now)
        wake.queue_changed()
    else:
        wake.clock_changed()


def cancel(session: Session, run: models.Run, *, now: datetime, wake: Wakeups) -> None:
    """Cancel an active run; the runner holding it is told to stop the app."""
    held_by = run.runner_id if run.status in HELD else None
    attempt = find_attempt(session, run.id, run.num_attempts) if held_by else None
    transition(session, run, RunStatus.CANCELLED, at=now, attempt=attempt)
    run.retry_at = run.pending_deadline_at = run.running_deadline_at = None
    wake.run_changed(run)
    wake.runner_must_stop(held_by)


# ---------------------------------------------------------------------- the clock


def sweep(session: Session, wake: Wakeups) -> datetime | None:
    """Act on every deadline that has passed; return when the next one falls."""
    now = utcnow()
    # Most sweeps find nothing due (the clock looks every second): one statement says
    # so, and only a deadline that has passed costs the four locking reads below.
    upcoming = _next_deadline(session)
    if upcoming is None or upcoming > now:
        return upcoming
    _queue_due_retries(session, now, wake)
    _expire_pending(session, now, wake)
    _expire_running(session, now, wake)
    _expire_leases(session, now, wake)
    return _next_deadline(session)


def _due(session: Session, status: RunStatus, column: object, now: datetime) -> list[models.Run]:
    stmt = (
        select(models.Run)
        .where(models.Run.status == status.value, column <= now)  # type: ignore[operator]
        .with_for_update()
    )
    return list(session.scalars(stmt))


def _queue_due_retries(session: Session, now: datetime, wake: Wakeups) -> None:
    for run in _due(session, RunStatus.RETRYING, models.Run.retry_at, now):
        app = session.get(models.App, run.app_id)
        if app is None or app.status == "disabled":
            transition(session, run, RunStatus.ERRORED, at=now)
            run.status_message = "not retried: the app was disabled"
            run.retry_at = None
        else:
            enqueue(session, run, app, now)
            wake.queue_changed()
        wake.run_changed(run)


def _expire_pending(session: Session, now: datetime, wake: Wakeups) -> None:
    for run in _due(session, RunStatus.PENDING, models.Run.pending_deadline_at, now):
        app = session.get(models.App, run.app_id)
        waited = app.pending_timeout if app is not None else 0
        # No attempt was made, so there is nothing to retry: the run ends here.
        transition(session, run, RunStatus.ERRORED, at=now)
        run.pending_deadline_at = None
        run.status_message = (
            f"pending timeout: no runner picked the run up within {waited} s. "
            "Check that a runner is online for this environment, or raise the app's "
            "pending_timeout."
        )
        wake.run_changed(run)


def _expire_running(session: Session, now: datetime, wake: Wakeups) -> None:
    for run in _due(session, RunStatus.RUNNING, models.Run.running_deadline_at, now):
        app = session.get(models.App, run.app_id)
        limit = app.running_timeout if app is not None else 0
        runner_id = run.runner_id
        message = f"running timeout: the run was stopped after {limit} s (running_timeout)"
        _error_current_attempt(session, run, message, now, wake)
        wake.runner_must_stop(runner_id)


def _expire_leases(session: Session, now: datetime, wake: Wakeups) -> None:
    stmt = (
        select(models.Run)
        .where(models.Run.status.in_(HELD), models.Run.lease_expires_at <= now)
        .with_for_update()
    )
    for run in list(session.scalars(stmt)):
        _error_current_attempt(session, run, RUNNER_LOST_MESSAGE, now, wake)


def _error_current_attempt(
    session: Session, run: models.Run, message: str, now: datetime, wake: Wakeups
) -> None:
    """End the run's current attempt `errored` (infrastructure), then retry by policy."""
    attempt = find_attempt(session, run.id, run.num_attempts)
    end_attempt(
        session,
        run,
        attempt,
        RunStatus.ERRORED,
        exit_code=None,
        message=message,
        now=now,
        wake=wake,
    )


# The earliest deadline of each kind, in one statement; the same kinds as the sweeps
# above act on (a status, and the time it waits for).
_NEXT_DEADLINES = select(
    *(
        select(func.min(column)).where(condition).scalar_subquery()
        for column, condition in (
            (models.Run.retry_at, models.Run.status == RunStatus.RETRYING.value),
            (models.Run.pending_deadline_at, models.Run.status == RunStatus.PENDING.value),
            (models.Run.running_deadline_at, models.Run.status == RunStatus.RUNNING.value),
            (models.Run.lease_expires_at, models.Run.status.in_(HELD)),
        )
    )
)


def _next_deadline(session: Session) -> datetime | None:
    due = [moment for moment in session.execute(_NEXT_DEADLINES).one() if moment is not None]
    return min(due) if due else None


def extend_leases_after_restart(session: Session, lease_ttl_s: float) -> int:
    """Give every held run a fresh lease when the control plane starts.

    While the control plane was down no runner could renew anything; expiring those
    leases at once would declare every healthy runner lost. Runners that really are
    gone still lose their runs one TTL later."""
    lease = utcnow() + timedelta(seconds=lease_ttl_s)
    result = session.execute(
        update(models.Run)
        .where(models.Run.status.in_(HELD), models.Run.lease_expires_at < lease)
        .values(lease_expires_at=lease)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)


def descendants(session: Session, root_id: uuid.UUID, *, lock: bool = True) -> list[models.Run]:
    """Every run started (directly or not) by run `root_id`, breadth first."""
    found: list[models.Run] = []
    frontier = [root_id]
    seen = {root_id}
    while frontier:
        stmt = select(models.Run).where(models.Run.parent_run_id.in_(frontier))
        children = list(session.scalars(stmt.with_for_update() if lock else stmt))
        children = [child for child in children if child.id not in seen]
        seen.update(child.id for child in children)
        found.extend(children)
        frontier = [child.id for child in children]
    return found
