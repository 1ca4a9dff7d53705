"""Service accounts: non-human members of an account, for CI and other machines.

A service account has a role in its account (`tower.core.roles`) and acts only through
its own API keys. Managing them is team administration (`teams:update`, admins only).
Deleting one revokes its keys (they cascade) and cancels the runs it started that are
still in flight.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tower.core import crypto, errors, roles, scopes
from tower.core.runs import ACTIVE
from tower.server.dispatch.notifier import SCHEDULER_TOPIC
from tower.server.services import access, api_keys, audit, lifecycle, schedules
from tower.server.services.api_keys import ApiKeyView
from tower.server.services.context import Principal, ServerContext, owned, read_session
from tower.server.store import models, rows
from tower.server.store.types import utcnow

MANAGE_SCOPE = "teams:update"
MAX_NAME_LENGTH = 128


@dataclass(frozen=True)
class ServiceAccountView:
    row: models.ServiceAccount
    creator_name: str


@dataclass(frozen=True)
class Deleted:
    service_account: ServiceAccountView
    revoked_keys: int
    cancelled_runs: int
    disabled_schedules: int


def _authorize(principal: Principal) -> None:
    access.authorize_in(principal, principal.account_name, principal.role, MANAGE_SCOPE)


def _valid_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise errors.InvalidInput(
            f"A service account needs a name of 1 to {MAX_NAME_LENGTH} characters.",
            location="body.name",
            value=name,
        )
    return name


def _valid_metadata(metadata: str | None) -> str | None:
    if metadata is None:
        return None
    try:
        json.loads(metadata)
    except ValueError as exc:
        raise errors.InvalidInput(
            f"`metadata` must be a JSON document ({exc}).", location="body.metadata"
        ) from exc
    return metadata


def _view(session: Session, row: models.ServiceAccount) -> ServiceAccountView:
    user = session.get(models.User, row.created_by_id) if row.created_by_id else None
    return ServiceAccountView(row, user.email if user else "")


def _get(session: Session, principal: Principal, id_or_name: str) -> models.ServiceAccount:
    """The caller's service account by id or name; another account's answers 404."""
    condition = models.ServiceAccount.name == id_or_name
    with contextlib.suppress(ValueError):
        condition = or_(condition, models.ServiceAccount.id == uuid.UUID(id_or_name))
    row = session.scalar(
        owned(select(models.ServiceAccount), models.ServiceAccount, principal).where(condition)
    )
    if row is None:
        raise errors.NotFound(
            f"No service account {id_or_name!r} in {principal.account_name!r}. "
            "`GET /v1/service-accounts` lists them."
        )
    return row


def _check_name_free(session: Session, principal: Principal, name: str) -> None:
    taken = session.scalar(
        owned(select(models.ServiceAccount.id), models.ServiceAccount, principal).where(
            models.ServiceAccount.name == name
        )
    )
    if taken:
        raise errors.AlreadyExists(
            f"A service account named {name!r} already exists in {principal.account_name!r}.",
            location="body.name",
            value=name,
        )


def create(
    ctx: ServerContext,
    principal: Principal,
    *,
    name: str,
    role: str,
    metadata: str | None = None,
) -> ServiceAccountView:
    _authorize(principal)
    name, role, metadata = _valid_name(name), roles.parse_role(role), _valid_metadata(metadata)
    with ctx.sessions.begin() as session:
        _check_name_free(session, principal, name)
        row = models.ServiceAccount(
            account_id=principal.account_id,
            name=name,
            role=role,
            metadata_json=metadata,
            created_by_id=principal.user_id,
        )
        session.add(row)
        session.flush()
        audit.record(session, principal, "service_account.create", _target(row), role=role)
        return _view(session, row)


def _target(row: models.ServiceAccount) -> str:
    return f"service-accounts/{row.name}"


def list_all(ctx: ServerContext, principal: Principal) -> list[ServiceAccountView]:
    _authorize(principal)
    with read_session(ctx) as session:
        rows = session.scalars(
            owned(select(models.ServiceAccount), models.ServiceAccount, principal).order_by(
                models.ServiceAccount.created_at, models.ServiceAccount.name
            )
        ).all()
        return [_view(session, row) for row in rows]


def describe(ctx: ServerContext, principal: Principal, id_or_name: str) -> ServiceAccountView:
    _authorize(principal)
    with read_session(ctx) as session:
        return _view(session, _get(session, principal, id_or_name))


def update(
    ctx: ServerContext,
    principal: Principal,
    id_or_name: str,
    *,
    name: str | None = None,
    role: str | None = None,
    metadata: str | None = None,
) -> ServiceAccountView:
    """Rename, change the role (its keys act with the new role at once), or replace the
    metadata."""
    _authorize(principal)
    with ctx.sessions.begin() as session:
        row = _get(session, principal, id_or_name)
        if name is not None and name.strip() != row.name:
            new_name = _valid_name(name)
            _check_name_free(session, principal, new_name)
            row.name = new_name
        if role is not None:
            row.role = roles.parse_role(role)
        if metadata is not None:
            row.metadata_json = _valid_metadata(metadata)
        row.updated_at = utcnow()
        session.flush()
        audit.record(session, principal, "service_account.update", _target(row), role=row.role)
        return _view(session, row)


def delete(ctx: ServerContext, principal: Principal, id_or_name: str) -> Deleted:
    """Revoke its keys, disable the schedules it created, cancel its runs still in
    flight, then delete it."""
    _authorize(principal)
    wake = lifecycle.Wakeups()
    with ctx.sessions.begin() as session:
        row = _get(session, principal, id_or_name)
        view = _view(session, row)
        keys = session.scalars(
            select(models.ApiKey).where(models.ApiKey.service_account_id == row.id)
        ).all()
        for key in keys:
            session.delete(key)
        runs = session.scalars(
            select(models.Run)
            .join(models.ServiceAccountRun, models.ServiceAccountRun.run_id == models.Run.id)
            .where(
                models.ServiceAccountRun.service_account_id == row.id,
                models.Run.status.in_([status.value for status in ACTIVE]),
            )
            .with_for_update()
        ).all()
        now = utcnow()
        for run in runs:
            lifecycle.cancel(session, run, now=now, wake=wake)
        disabled = schedules.disable_owned_by(session, row.id)
        audit.record(
            session,
            principal,
            "service_account.delete",
            _target(row),
            revoked_keys=len(keys),
            cancelled_runs=len(runs),
            disabled_schedules=disabled,
        )
        session.delete(row)
    wake.fire(ctx.notifier)
    ctx.notifier.notify(SCHEDULER_TOPIC)
    return Deleted(view, len(keys), len(runs), disabled)


def record_run(session: Session, principal: Principal, run_id: uuid.UUID) -> None:
    """Remember that the caller's service account started run `run_id` (if it is one)."""
    if principal.service_account_id:
        rows.append(
            session,
            models.ServiceAccountRun,
            run_id=run_id,
            service_account_id=principal.service_account_id,
        )


# -- the service account's own API keys -----------------------------------------------


def list_keys(ctx: ServerContext, principal: Principal, id_or_name: str) -> list[ApiKeyView]:
    _authorize(principal)
    with read_session(ctx) as session:
        row = _get(session, principal, id_or_name)
        keys = session.scalars(
            select(models.ApiKey)
            .where(models.ApiKey.service_account_id == row.id)
            .order_by(models.ApiKey.created_at, models.ApiKey.id)
        ).all()
        return [ApiKeyView(key, row.name) for key in keys]


def create_key(
    ctx: ServerContext,
    principal: Principal,
    id_or_name: str,
    *,
    name: str,
    scope_text: str | None = None,
    expires_at: datetime | None = None,
) -> ApiKeyView:
    """A key acting as the service account (with its role), shown once. Without `scopes`
    it may do whatever the role allows."""
    _authorize(principal)
    name = api_keys.validate_name(name)
    requested = scopes.parse_scopes(scope_text)
    api_keys.check_within_caller(principal, requested)
    expires_at = api_keys.validate_expiry(expires_at)
    with ctx.sessions.begin() as session:
        row = _get(session, principal, id_or_name)
        _check_within_role(row, requested)
        return api_keys.mint(
            session,
            account_id=row.account_id,
            user_id=None,
            service_account_id=row.id,
            name=name,
            requested=requested,
            expires_at=expires_at,
        )


def _check_within_role(row: models.ServiceAccount, requested: frozenset[str] | None) -> None:
    beyond = sorted(s for s in requested or () if not roles.role_allows(row.role, s))
    if beyond:
        raise errors.InvalidInput(
            f"Service account {row.name!r} has the `{row.role}` role, which does not allow "
            f"{', '.join(beyond)}: its key could never use them. Leave them out or give "
            "the service account the `admin` role.",
            location="body.scopes",
        )


def delete_key(ctx: ServerContext, principal: Principal, id_or_name: str, identifier: str) -> None:
    """Revoke one of its keys, by the masked identifier a list shows or the full key."""
    _authorize(principal)
    identifier = identifier.strip()
    with ctx.sessions.begin() as session:
        row = _get(session, principal, id_or_name)
        matches = session.scalars(
            select(models.ApiKey).where(
                models.ApiKey.service_account_id == row.id,
                or_(
                    models.ApiKey.identifier == identifier,
                    models.ApiKey.key_hash == crypto.hash_token(identifier),
                ),
            )
        ).all()
        if len(matches) != 1:
            raise (
                errors.NotFound(
                    f"Service account {row.name!r} has no API key {identifier!r}. "
                    f"`GET /v1/service-accounts/{row.name}/api-keys` lists them."
                )
                if not matches
                else errors.Conflict(
                    f"More than one key is listed as {identifier!r}; give the full key."
                )
            )
        session.delete(matches[0])
