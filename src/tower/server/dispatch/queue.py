"""The queue is the runs table: claiming is one atomic UPDATE … RETURNING.

SQLite serializes writers (BEGIN IMMEDIATE), so the sub-select and the update
cannot interleave; PostgreSQL uses FOR UPDATE SKIP LOCKED so concurrent
claimers skip each other's rows instead of waiting.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tower.core.runs import RunStatus
from tower.server.store import models


def claim_next_run(
    session: Session,
    *,
    runner_id: uuid.UUID,
    account_id: uuid.UUID | None,
    environment: str | None,
    now: datetime,
    lease_until: datetime,
) -> uuid.UUID | None:
    """Move the oldest eligible pending run to `starting`; return its id, or None."""
    candidate = (
        select(models.Run.id)
        .where(models.Run.status == RunStatus.PENDING.value)
        .order_by(models.Run.created_at)
        .limit(1)
    )
    if account_id is not None:
        candidate = candidate.where(models.Run.account_id == account_id)
    if environment is not None:
        candidate = candidate.join(
            models.Environment, models.Environment.id == models.Run.environment_id
        ).where(models.Environment.name == environment)
    if session.get_bind().dialect.name == "postgresql":
        candidate = candidate.with_for_update(skip_locked=True, of=models.Run)
    stmt = (
        update(models.Run)
        .where(models.Run.id == candidate.scalar_subquery())
        .where(models.Run.status == RunStatus.PENDING.value)
        .values(
            status=RunStatus.STARTING.value,
            # A retried run keeps its first attempt's start (see services.transitions).
            starting_at=func.coalesce(models.Run.starting_at, now),
            pending_deadline_at=None,
            runner_id=runner_id,
            lease_expires_at=lease_until,
            num_attempts=models.Run.num_attempts + 1,
        )
        .returning(models.Run.id)
        .execution_options(synchronize_session=False)
    )
    return session.scalar(stmt)
