"""/v1/audit-events: the account's audit log, newest first, in pages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.api.listing import PageQuery, PageSizeQuery
from tower.server.services import audit_queries, run_queries
from tower.server.services.audit_queries import EventView

router = APIRouter(prefix="/v1", tags=["audit"])

# Reading who did what across the account is an account administrator's view: the same
# scope as reading the team (the teams branch restricts it to the admin role at merge).
AUDIT_SCOPE = "teams:read"

ActionQuery = Annotated[
    str | None,
    Query(description="One action (`secret.create`) or a resource's (`secret` or `secret.*`)."),
]
InstantQuery = Annotated[str | None, Query(description="RFC 3339 (since inclusive, until not).")]


def event_json(view: EventView) -> dict[str, Any]:
    event = view.event
    return {
        "id": str(event.id),
        "created_at": serializers.ts(event.created_at),
        "action": event.action,
        "target": event.target,
        "actor": {
            "user_id": str(event.actor_user_id) if event.actor_user_id else None,
            "email": view.actor_email,
            "credential_kind": event.actor_kind,
            "credential": event.actor_credential,
        },
        "details": event.details,
    }


@router.get("/audit-events", **scoped(AUDIT_SCOPE))
def list_audit_events(
    ctx: ContextDep,
    principal: PrincipalDep,
    action: ActionQuery = None,
    since: InstantQuery = None,
    until: InstantQuery = None,
    page: PageQuery = 1,
    page_size: PageSizeQuery = 20,
) -> dict[str, Any]:
    flt = audit_queries.make_filter(action=action, since=since, until=until)
    views, total = audit_queries.list_events(ctx, principal, flt, run_queries.Page(page, page_size))
    return {
        "audit_events": [event_json(view) for view in views],
        "pages": serializers.pages(page, page_size, total),
    }
