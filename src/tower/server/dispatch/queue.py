"""The queue is the runs table: claiming is one atomic UPDATE … RETURNING.

SQLite serializes writers (BEGIN IMMEDIATE), so the sub-select and the update
cannot interleave; PostgreSQL uses FOR UPDATE SKIP LOCKED so concurrent
claimers skip each other's rows instead of waiting.

Which runs a runner may take (docs/runners.md):

* A runner of one account takes only that account's runs; a runner of the
  installation (the shared pool) takes every account's runs except those of
  accounts in self-hosted-only mode, which wait for a runner of their own.
* A runner tagged with an environment takes only runs of that environment.
* An untagged runner takes runs of any environment that is not *reserved*: an
  environment is reserved for the run's account while a runner tagged with it,
  and allowed to serve that account, has been seen within the reservation window.
  So a tagged runner restarting does not spill its environment's runs onto the
  general pool, and a retired one stops holding them back once the window passes.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

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
    reserved_since: datetime,
) -> uuid.UUID | None:
    """Move the oldest pending run this runner may take to `starting`; its id, or None.

    `reserved_since`: tagged runners seen after this moment reserve their environment.
    """
    candidate = (
        select(models.Run.id)
        .join(models.Environment, models.Environment.id == models.Run.environment_id)
        .where(models.Run.status == RunStatus.PENDING.value)
        .where(_account_rule(account_id))
        .where(_environment_rule(runner_id, environment, reserved_since))
        .order_by(models.Run.created_at)
        .limit(1)
    )
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


def _account_rule(account_id: uuid.UUID | None) -> ColumnElement[bool]:
    if account_id is not None:
        return models.Run.account_id == account_id
    self_hosted_only = select(models.Account.id).where(models.Account.self_hosted_only)
    return models.Run.account_id.not_in(self_hosted_only)


def _environment_rule(
    runner_id: uuid.UUID, environment: str | None, reserved_since: datetime
) -> ColumnElement[bool]:
    if environment is not None:
        return models.Environment.name == environment
    tagged = models.Runner
    reserving_runner = exists().where(
        and_(
            tagged.id != runner_id,
            tagged.environment == models.Environment.name,
            tagged.last_heartbeat_at >= reserved_since,
            or_(tagged.account_id.is_(None), tagged.account_id == models.Run.account_id),
        )
    )
    return ~reserving_runner
