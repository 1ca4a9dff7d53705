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

import functools
import uuid
from datetime import datetime

from sqlalchemy import Update, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from tower.core.runs import RunStatus
from tower.server.store import models
from tower.server.store.types import UTCDateTime


def claim_runs(
    session: Session,
    *,
    runner_id: uuid.UUID,
    account_id: uuid.UUID | None,
    environment: str | None,
    now: datetime,
    lease_until: datetime,
    reserved_since: datetime,
    limit: int = 1,
) -> list[uuid.UUID]:
    """Move the oldest `limit` pending runs this runner may take to `starting` in one
    statement; their ids, in no particular order (maybe none).

    `reserved_since`: tagged runners seen after this moment reserve their environment.
    """
    stmt = _claim_statement(
        session.get_bind().dialect.name,
        of_account=account_id is not None,
        tagged=environment is not None,
    )
    values = {
        "claim_runner": runner_id,
        "claim_account_id": account_id,
        "claim_environment": environment,
        "claim_now": now,
        "claim_lease_until": lease_until,
        "claim_reserved_since": reserved_since,
        "claim_limit": max(1, limit),
    }
    # On the session's connection, as a plain statement: the ORM's bulk-update path
    # (autoflush, identity-map bookkeeping) costs more than the statement itself, and
    # the claim moves rows the session holds no copy of yet (see runners._CLAIMED_ROWS).
    return list(session.connection().execute(stmt, values).scalars())


@functools.cache
def _claim_statement(dialect: str, *, of_account: bool, tagged: bool) -> Update:
    """The claim statement for one kind of runner, built once (every claim runs it);
    the runner's values are bound parameters, named `claim_*`: an UPDATE's execution
    parameter named like a column of `runs` would set that column."""
    candidate = (
        select(models.Run.id)
        .join(models.Environment, models.Environment.id == models.Run.environment_id)
        .where(models.Run.status == RunStatus.PENDING.value)
        .where(_account_rule(of_account))
        .where(_environment_rule(tagged))
        .order_by(models.Run.created_at)
        .limit(bindparam("claim_limit"))
    )
    if dialect == "postgresql":
        # Locked and materialized once: as a plain IN sub-select PostgreSQL may scan it
        # again while updating and, skipping rows it already locked, take more than
        # the limit.
        locked = candidate.with_for_update(skip_locked=True, of=models.Run)
        chosen = locked.cte("claimed").prefix_with("MATERIALIZED")
        candidate = select(chosen.c.id)
    return (
        update(models.Run)
        .where(models.Run.id.in_(candidate))
        .where(models.Run.status == RunStatus.PENDING.value)
        .values(
            status=RunStatus.STARTING.value,
            # A retried run keeps its first attempt's start (see services.transitions).
            starting_at=func.coalesce(
                models.Run.starting_at, bindparam("claim_now", type_=UTCDateTime())
            ),
            pending_deadline_at=None,
            runner_id=bindparam("claim_runner"),
            lease_expires_at=bindparam("claim_lease_until", type_=UTCDateTime()),
            num_attempts=models.Run.num_attempts + 1,
        )
        .returning(models.Run.id)
        .execution_options(synchronize_session=False)
    )


def _account_rule(of_account: bool) -> ColumnElement[bool]:
    if of_account:
        return models.Run.account_id == bindparam("claim_account_id")
    self_hosted_only = select(models.Account.id).where(models.Account.self_hosted_only)
    return models.Run.account_id.not_in(self_hosted_only)


def _environment_rule(tagged: bool) -> ColumnElement[bool]:
    if tagged:
        return models.Environment.name == bindparam("claim_environment")
    tagged_runner = models.Runner
    reserving_runner = exists().where(
        and_(
            tagged_runner.id != bindparam("claim_runner"),
            tagged_runner.environment == models.Environment.name,
            tagged_runner.last_heartbeat_at
            >= bindparam("claim_reserved_since", type_=UTCDateTime()),
            or_(
                tagged_runner.account_id.is_(None),
                tagged_runner.account_id == models.Run.account_id,
            ),
        )
    )
    return ~reserving_runner
