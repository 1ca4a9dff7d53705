"""API keys of an account: list, mint (optionally with fewer scopes), delete.

Only a key's hash and a masked identifier are stored; the key itself exists once, in
the answer to the request that minted it. Authentication (services.auth) reads the
table on every request, so a deleted or expired key stops working at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tower.core import crypto, errors, scopes
from tower.server.services import audit, auth
from tower.server.services.context import Principal, ServerContext, owned, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

MAX_NAME_LENGTH = 128


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
            owned(
                select(models.ApiKey, models.User.email)
                .outerjoin(models.User, models.User.id == models.ApiKey.user_id)
                .order_by(models.ApiKey.created_at, models.ApiKey.id),
                models.ApiKey,
                principal,
            )
        ).all()
    return [ApiKeyView(row, email or "") for row, email in rows]


def create_api_key(
    ctx: ServerContext,
    principal: Principal,
    *,
    name: str,
    expires_at: datetime | None = None,
    scope_text: str | None = None,
    team: str | None = None,
) -> ApiKeyView:
    name = _valid_name(name)
    _check_team(principal, team)
    requested = scopes.parse_scopes(scope_text)
    _check_within_caller(principal, requested)
    expires_at = _valid_expiry(expires_at)
    key = crypto.new_token(auth.API_KEY_PREFIX)
    with ctx.sessions.begin() as session:
        row = models.ApiKey(
            account_id=principal.account_id,
            user_id=principal.user_id,
            name=name,
            identifier=masked_identifier(key),
            key_hash=crypto.hash_token(key),
            scopes=scopes.format_scopes(requested),
            expires_at=expires_at,
        )
        session.add(row)
        session.flush()
        owner = _owner_name(session, row)
        audit.record(
            session,
            principal,
            "api_key.create",
            f"api-keys/{row.identifier}",
            name=name,
            scopes=row.scopes,
            expires_at=expires_at.isoformat() if expires_at else None,
        )
    return ApiKeyView(row, owner, key=key)


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
            owned(
                select(models.ApiKey).where(
                    or_(
                        models.ApiKey.identifier == identifier,
                        models.ApiKey.key_hash == crypto.hash_token(identifier),
                    )
                ),
                models.ApiKey,
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


def _valid_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise errors.InvalidInput(
            f"An API key needs a name of 1 to {MAX_NAME_LENGTH} characters.",
            location="body.name",
            value=name,
        )
    return name


def _check_team(principal: Principal, team: str | None) -> None:
    # Teams are not built yet: the only team a key can belong to is the caller's account.
    if team is None or team == principal.account_name:
        return
    raise errors.NotFound(
        f"No such team {team!r}. Leave `team` out to create the key in {principal.account_name!r}."
    )


def _check_within_caller(principal: Principal, requested: frozenset[str] | None) -> None:
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


def _valid_expiry(expires_at: datetime | None) -> datetime | None:
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
    user = session.get(models.User, row.user_id) if row.user_id else None
    return user.email if user else ""
