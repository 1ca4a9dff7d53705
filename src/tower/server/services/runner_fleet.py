"""Runners as the account sees them: list them, mint credentials, choose self-hosted-only.

The runner protocol itself (register, claim, report) lives in `services.runners`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tower.core import errors
from tower.core.runs import RunStatus
from tower.server.services import runner_credentials
from tower.server.services.context import Principal, ServerContext, read_session
from tower.server.services.runner_credentials import IssuedCredential
from tower.server.services.runners import heartbeat_interval
from tower.server.store import models
from tower.server.store.types import utcnow

#: runners not seen for this long drop out of the list (each start registers anew)
LISTED_FOR = timedelta(days=7)
MAX_CREDENTIAL_NAME = 128
#: a runner holds its runs through `starting` and `running`
_HELD = (RunStatus.STARTING.value, RunStatus.RUNNING.value)


@dataclass(frozen=True)
class RunnerView:
    row: models.Runner
    online: bool
    running: int
    #: True for the installation's shared pool (serves every account)
    shared: bool


def online_window(ctx: ServerContext) -> timedelta:
    """A runner is online while its last heartbeat is younger than this (a lease TTL,
    and never less than three heartbeats)."""
    return timedelta(seconds=max(ctx.settings.lease_ttl_seconds, 3 * heartbeat_interval(ctx)))


def _is_installation_admin(session: Session, principal: Principal) -> bool:
    if principal.user_id is None:
        return False
    user = session.get(models.User, principal.user_id)
    return bool(user and user.is_admin)


def list_runners(ctx: ServerContext, principal: Principal) -> list[RunnerView]:
    """The account's own runners; installation admins also see the shared pool."""
    now = utcnow()
    online_since = now - online_window(ctx)
    with read_session(ctx) as session:
        owners = [models.Runner.account_id == principal.account_id]
        if _is_installation_admin(session, principal):
            owners.append(models.Runner.account_id.is_(None))
        rows = session.scalars(
            select(models.Runner)
            .where(or_(*owners))
            .where(models.Runner.last_heartbeat_at >= now - LISTED_FOR)
            .order_by(models.Runner.last_heartbeat_at.desc())
        ).all()
        running = _running_counts(session, [row.id for row in rows])
    return [
        RunnerView(
            row=row,
            online=row.last_heartbeat_at is not None and row.last_heartbeat_at >= online_since,
            running=running.get(row.id, 0),
            shared=row.account_id is None,
        )
        for row in rows
    ]


def _running_counts(session: Session, runner_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not runner_ids:
        return {}
    counts = session.execute(
        select(models.Run.runner_id, func.count())
        .where(models.Run.runner_id.in_(runner_ids), models.Run.status.in_(_HELD))
        .group_by(models.Run.runner_id)
    ).all()
    return dict(counts)


def mint_credential(
    ctx: ServerContext, principal: Principal, *, name: str | None, ttl: timedelta | None
) -> IssuedCredential:
    """A runner credential for the caller's account: runners using it take only its runs."""
    label = (name or "").strip() or f"runner-{utcnow():%Y%m%d-%H%M%S}"
    if len(label) > MAX_CREDENTIAL_NAME:
        raise errors.InvalidInput(
            f"A runner name has at most {MAX_CREDENTIAL_NAME} characters; choose a shorter one."
        )
    return runner_credentials.mint(
        ctx, name=label, account_id=principal.account_id, ttl=ttl, principal=principal
    )


def self_hosted_only(ctx: ServerContext, principal: Principal) -> bool:
    with read_session(ctx) as session:
        return bool(
            session.scalar(
                select(models.Account.self_hosted_only).where(
                    models.Account.id == principal.account_id
                )
            )
        )


def set_self_hosted_only(ctx: ServerContext, principal: Principal, enabled: bool) -> bool:
    """Turn self-hosted-only mode on or off; queued runs follow the new rule at once."""
    with ctx.sessions.begin() as session:
        account = session.get(models.Account, principal.account_id)
        account.self_hosted_only = enabled
    return enabled
