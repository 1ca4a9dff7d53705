"""The audit log: who did what in an account, when, and with which credential.

Every use case that changes something calls `record` inside its own transaction, so
an event exists exactly when its change was committed (a failed change leaves none).
Events never hold secrets: a credential appears as its masked identifier, a secret as
its name and environment, never its value.

Actions are `resource.verb`: app.create/update/delete/deploy/promote, run.create/cancel,
secret.create/update/delete/export, catalog.create/update/delete/export,
environment.create/update/delete, api_key.create/delete. (Membership changes are
recorded by the teams use cases.) Reading the log: services.audit_queries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tower.server.services.context import Principal
from tower.server.store import models

MAX_TARGET_LENGTH = 512


def record(
    session: Session, principal: Principal, action: str, target: str, **details: Any
) -> models.AuditEvent:
    """Add an event for `action` on `target` by `principal` to the caller's transaction.

    `details` must be JSON values and never secret (no keys, tokens or secret values).
    """
    event = models.AuditEvent(
        account_id=principal.account_id,
        actor_user_id=principal.user_id,
        actor_kind=principal.kind,
        actor_credential=_credential(principal),
        action=action,
        target=target[:MAX_TARGET_LENGTH],
        details={k: v for k, v in details.items() if v is not None},
    )
    session.add(event)
    return event


def _credential(principal: Principal) -> str | None:
    if principal.credential:
        return principal.credential
    if principal.run_id:
        return f"run {principal.run_id}"
    return None
