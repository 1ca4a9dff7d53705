"""API keys of an account: list, mint (optionally with fewer scopes), delete.

Only a key's hash and a masked identifier are stored; the key itself exists once, in
the answer to the request that minted it. Authentication (services.auth) reads the
table on every request, so a deleted or expired key stops working at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from tower.core import crypto, errors, scopes
from tower.server.services import access, audit, auth
from tower.server.services.context import Principal, ServerContext, owned, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

MAX_NAME_LENGTH = 128
T = TypeVar("T", bound=tuple[Any, ...])


@dataclass(frozen=True)
class ApiKeyView:
    """A key as callers may see it; `key` is set only right after minting."""

    row: models.ApiKey
    owner_name: str
    key: str | None = None


def masked_identifier(key: str) -> str:
    """`sk-abcd…wxyz`: enough to tell keys apart in a list, useless as a credential."""
    return key[:7] + "…" + key[-4:]


def list_api_keys(ctx: ServerContext, principal: Principal) -> list[ApiKeyView]:
    with read_session(ctx) as session:
        rows = session.execute(
            _visible(
                select(models.ApiKey, models.User.email, models.ServiceAccount.name)
                .outerjoin(models.User, models.User.id == models.ApiKey.user_id)
                .outerjoin(
                    models.ServiceAccount,
                    models.ServiceAccount.id == models.ApiKey.service_account_id,
                )
                .order_by(models.ApiKey.created_at, models.ApiKey.id),
                principal,
            )
        ).all()
    return [ApiKeyView(row, email or sa_name or "") for row, email, sa_name in rows]


def _visible(stmt: Select[T], principal: Principal) -> Select[T]:
    """The account's keys an admin sees and may delete; anyone else only their own."""
    stmt = owned(stmt, models.ApiKey, principal)
    if access.manages_everyones_keys(principal):
        return stmt
    if principal.service_account_id:
        return stmt.where(models.ApiKey.service_account_id == principal.service_account_id)
    return stmt.where(
        models.ApiKey.user_id == principal.user_id, models.ApiKey.service_account_id.is_(None)
    )


def create_api_key(
    ctx: ServerContext,
    principal: Principal,
    *,
    name: str,
    expires_at: datetime | None = None,
    scope_text: str | None = None,
    team: str | None = None,
) -> ApiKeyView:
    """Mint a key for the caller. It acts in the caller's account, or in `team` (a team
    the caller belongs to, by slug): that is how a key targets a team."""
    name = validate_name(name)
    requested = scopes.parse_scopes(scope_text)
    check_within_caller(principal, requested)
    expires_at = validate_expiry(expires_at)
    with ctx.sessions.begin() as session:
        account_id = _target_account(session, principal, team)
        view = mint(
            session,
            account_id=account_id,
            user_id=principal.user_id,
            service_account_id=principal.service_account_id,
            name=name,
            requested=requested,
            expires_at=expires_at,
        )
        audit.record(
            session,
            principal,
            "api_key.create",
            f"api-keys/{view.row.identifier}",
            name=name,
            scopes=view.row.scopes,
            expires_at=expires_at.isoformat() if expires_at else None,
        )
        return view


def mint(
    session: Session,
    *,
    account_id: uuid.UUID,
    user_id: uuid.UUID | None,
    service_account_id: uuid.UUID | None,
    name: str,
    requested: frozenset[str] | None,
    expires_at: datetime | None,
) -> ApiKeyView:
    """Store a new key (its hash) for a person or a service account; the key is in the view."""
    key = crypto.new_token(auth.API_KEY_PREFIX)
    row = models.ApiKey(
        account_id=account_id,
        user_id=user_id,
        service_account_id=service_account_id,
        name=name,
        identifier=masked_identifier(key),
        key_hash=crypto.hash_token(key),
        scopes=scopes.format_scopes(requested),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return ApiKeyView(row, _owner_name(session, row), key=key)


def delete_api_key(ctx: ServerContext, principal: Principal, identifier: str) -> ApiKeyView:
    """Delete by the masked identifier a list shows, or by the full key."""
    identifier = identifier.strip()
    if not identifier:
        raise errors.InvalidInput(
            "Give the key's `identifier` (as `GET /v1/api-keys` lists it) or the key itself.",
            location="body.identifier",
            value=identifier,
        )
    with ctx.sessions.begin() as session:
        matches = session.scalars(
            _visible(
                select(models.ApiKey).where(
                    or_(
                        models.ApiKey.identifier == identifier,
                        models.ApiKey.key_hash == crypto.hash_token(identifier),
                    )
                ),
                principal,
            )
        ).all()
        if not matches:
            raise errors.NotFound(
                f"No API key {identifier!r} in this account. "
                "`GET /v1/api-keys` lists the identifiers."
            )
        if len(matches) > 1:
            # Two keys can share the masked form; only the full key is unambiguous then.
            raise errors.Conflict(
                f"More than one API key is listed as {identifier!r}. "
                "Delete it by giving the full key instead."
            )
        row = matches[0]
        owner = _owner_name(session, row)
        session.delete(row)
        audit.record(
            session, principal, "api_key.delete", f"api-keys/{row.identifier}", name=row.name
        )
    return ApiKeyView(row, owner)


def validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise errors.InvalidInput(
            f"An API key needs a name of 1 to {MAX_NAME_LENGTH} characters.",
            location="body.name",
            value=name,
        )
    return name


def _target_account(session: Session, principal: Principal, team: str | None) -> uuid.UUID:
    """The account a new key acts in: the caller's, or the team named `team` where the
    caller may create keys (their role there must allow `api_keys:create`)."""
    if team is None or team == principal.account_name:
        return principal.account_id
    account = session.scalar(select(models.Account).where(models.Account.name == team))
    role = access.role_in(session, principal, account.id) if account else None
    access.authorize_in(principal, team, role, "api_keys:create")
    assert account is not None
    return account.id


def check_within_caller(principal: Principal, requested: frozenset[str] | None) -> None:
    """A key never exceeds its creator: a scoped key may only mint keys it could act as."""
    if scopes.within(requested, principal.scopes):
        return
    held = scopes.format_scopes(principal.scopes) or "none"
    if requested is None:
        raise errors.Forbidden(
            "This API key has a scope list, so it cannot create a key without one. "
            f"Pass `scopes` with some of: {held}."
        )
    beyond = sorted(s for s in requested if not scopes.allows(principal.scopes, s))
    raise errors.Forbidden(
        f"This API key cannot grant {', '.join(beyond)}: a new key may only have scopes "
        f"its creator holds ({held})."
    )


def validate_expiry(expires_at: datetime | None) -> datetime | None:
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        # A timestamp without an offset is read as UTC, the only zone the API speaks.
        expires_at = expires_at.replace(tzinfo=UTC)
    if expires_at <= utcnow():
        raise errors.InvalidInput(
            "`expires_at` must be in the future.",
            location="body.expires_at",
            value=expires_at.isoformat(),
        )
    return expires_at


def _owner_name(session: Session, row: models.ApiKey) -> str:
    if row.service_account_id:
        service_account = session.get(models.ServiceAccount, row.service_account_id)
        return service_account.name if service_account else ""
    user = session.get(models.User, row.user_id) if row.user_id else None
    return user.email if user else ""
