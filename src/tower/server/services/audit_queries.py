"""Reading the audit log: one account's events, newest first, filtered by action and time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select

from tower.core import errors
from tower.server.services import run_queries
from tower.server.services.context import Principal, ServerContext, owned, read_session
from tower.server.store import models

AuditEvent = models.AuditEvent


@dataclass(frozen=True)
class AuditFilter:
    """An action (`secret.create`) or a resource's actions (`secret` or `secret.*`), and
    a time window on when they happened (since inclusive, until exclusive)."""

    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def make_filter(
    *, action: str | None = None, since: str | None = None, until: str | None = None
) -> AuditFilter:
    """Validate raw query values (422 naming the bad one)."""
    start = run_queries.parse_instant(since, name="since")
    end = run_queries.parse_instant(until, name="until")
    if start is not None and end is not None and end < start:
        raise errors.InvalidInput(
            f"until ({end.isoformat()}) is before since ({start.isoformat()}): "
            "the window is [since, until).",
            location="query.until",
            value=end.isoformat(),
        )
    return AuditFilter((action or "").strip() or None, start, end)


def _conditions(flt: AuditFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if flt.action:
        resource = flt.action.removesuffix(".*")
        if "." in resource:
            conditions.append(AuditEvent.action == resource)
        else:
            conditions.append(AuditEvent.action.startswith(resource + ".", autoescape=True))
    if flt.since is not None:
        conditions.append(AuditEvent.created_at >= flt.since)
    if flt.until is not None:
        conditions.append(AuditEvent.created_at < flt.until)
    return conditions


@dataclass(frozen=True)
class EventView:
    event: models.AuditEvent
    actor_email: str | None


def list_events(
    ctx: ServerContext, principal: Principal, flt: AuditFilter, page: run_queries.Page
) -> tuple[list[EventView], int]:
    """The caller's account's events, newest first, and how many match in all."""
    conditions = _conditions(flt)
    with read_session(ctx) as session:
        total = session.scalar(
            owned(select(func.count()).select_from(AuditEvent), AuditEvent, principal).where(
                *conditions
            )
        )
        stmt = (
            owned(select(AuditEvent, models.User.email), AuditEvent, principal)
            .outerjoin(models.User, models.User.id == AuditEvent.actor_user_id)
            .where(*conditions)
            .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
            .offset(page.offset)
            .limit(page.limit)
        )
        rows = session.execute(stmt).all()
    return [EventView(event, email) for event, email in rows], int(total or 0)
