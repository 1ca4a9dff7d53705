"""The audit log: who did what in an account, when, and with which credential.

Every use case that changes something calls `record` inside its own transaction, so
an event exists exactly when its change was committed (a failed change leaves none).
Events never hold secrets: a credential appears as its masked identifier, a secret as
its name and environment, never its value.

Actions are `resource.verb`: app.create/update/delete/deploy/promote, run.create/cancel,
secret.create/update/delete/export, catalog.create/update/delete/export,
environment.create/update/delete, api_key.create/delete, team.create/update/delete,
member.invite/uninvite/join/decline/remove/role/leave,
service_account.create/update/delete. Reading the log: services.audit_queries.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from tower.server.services.context import Principal
from tower.server.store import models, rows

MAX_TARGET_LENGTH = 512


def record(
    session: Session,
    principal: Principal,
    action: str,
    target: str,
    *,
    account_id: uuid.UUID | None = None,
    **details: Any,
) -> None:
    """Add an event for `action` on `target` by `principal` to the caller's transaction.

    The event belongs to `account_id` (default: the account the caller acts in; a team
    change made from one's personal account belongs to the team). `details` must be
    JSON values and never secret (no keys, tokens or secret values).
    """
    rows.append(
        session,
        models.AuditEvent,
        account_id=account_id or principal.account_id,
        actor_user_id=principal.user_id,
        actor_kind=principal.kind,
        actor_credential=_credential(principal),
        action=action,
        target=target[:MAX_TARGET_LENGTH],
        details={k: v for k, v in details.items() if v is not None},
    )


def _credential(principal: Principal) -> str | None:
    if principal.credential:
        return principal.credential
    if principal.run_id:
        return f"run {principal.run_id}"
    return None
