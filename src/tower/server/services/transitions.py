"""Applying run status changes: the state machine in tower.core decides, this records."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from tower.core.runs import RunStatus, check_transition, is_terminal
from tower.server.store import models, rows
from tower.server.store.types import utcnow

_TIMESTAMP_FIELD = {
    RunStatus.PENDING: "pending_at",
    RunStatus.STARTING: "starting_at",
    RunStatus.RUNNING: "started_at",
    RunStatus.CANCELLED: "cancelled_at",
}

_LATEST_WINS = frozenset({"pending_at", "cancelled_at"})


def transition(
    session: Session,
    run: models.Run,
    target: RunStatus,
    *,
    at: datetime | None = None,
    attempt: models.RunAttempt | None = None,
) -> None:
    """Move `run` (and its current attempt) to `target`, timestamped; raises InvalidTransition."""
    current = RunStatus(run.status)
    check_transition(current, target)
    at = at or utcnow()
    run.status = str(target)
    field = _TIMESTAMP_FIELD.get(target)
    # A retried run keeps the times of its first attempt (its duration spans them all);
    # each attempt has its own in run_attempts.
    if field and (field in _LATEST_WINS or getattr(run, field) is None):
        setattr(run, field, at)
    if is_terminal(target):
        run.ended_at = at
        run.lease_expires_at = None
    elif target == RunStatus.RETRYING:
        # The run is active again: the failed attempt's end and exit code live on its
        # attempt row, not on the run.
        run.ended_at = None
        run.exit_code = None
    if attempt is not None:
        _update_attempt(attempt, target, at)
    _record(session, run, current, target, at, attempt.seq if attempt else None)


def _record(
    session: Session,
    run: models.Run,
    current: RunStatus,
    target: RunStatus,
    at: datetime,
    attempt_seq: int | None,
) -> None:
    """Write the transition's row at once (no unit of work: runs change status many
    times a second). A run being created (`queue_run` hands it over unwritten) is
    written first, as this change leaves it."""
    if inspect(run).transient:
        rows.insert_now(session, run)
    rows.append(
        session,
        models.RunTransition,
        account_id=run.account_id,
        run_id=run.id,
        attempt_seq=run.num_attempts if attempt_seq is None else attempt_seq,
        from_status=str(current),
        to_status=str(target),
        at=at,
    )


def _update_attempt(attempt: models.RunAttempt, target: RunStatus, at: datetime) -> None:
    attempt.status = str(target)
    if target == RunStatus.STARTING:
        attempt.starting_at = at
    elif target == RunStatus.RUNNING:
        attempt.started_at = at
    elif is_terminal(target):
        attempt.ended_at = at


def find_attempt(session: Session, run_id: uuid.UUID, seq: int) -> models.RunAttempt | None:
    """Attempt `seq` of a run (the current one is `run.num_attempts`)."""
    return session.scalar(
        select(models.RunAttempt).where(
            models.RunAttempt.run_id == run_id, models.RunAttempt.seq == seq
        )
    )
