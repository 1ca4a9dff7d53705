"""Sign-up, sessions, device login, whoami and the identity keys (JWKS).

The presenters of the contract's Session, Team, Token and User models live here, one
function each, so every answer that carries a session shows the same thing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.deps import (
    ContextDep,
    OptionalPrincipalDep,
    PrincipalDep,
    bearer_token,
    public,
    scoped,
)
from tower.server.services import device_login, identity, sessions
from tower.server.services.profile import SELF_HOSTED_REGION
from tower.server.services.sessions import SessionView, TeamToken
from tower.server.store import models

router = APIRouter(tags=["session"])


# ------------------------------------------------------------------ presenters


def token_json(jwt: str, refresh_token: str | None = None) -> dict[str, Any]:
    return {"jwt": jwt, "access_token": jwt, "refresh_token": refresh_token}


def user_json(user: models.User, profile: models.UserProfile | None = None) -> dict[str, Any]:
    """The contract's User; without `profile` (e.g. a team's member list) its fields are
    left empty rather than looked up for every member."""
    return {
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "created_at": serializers.ts(user.created_at),
        "company": profile.company if profile else "",
        "country": profile.country if profile else "",
        "profile_photo_url": "",
        "promo_code": profile.promo_code if profile else "",
        "is_alerts_enabled": profile.is_alerts_enabled if profile else False,
        "is_confirmed": True,
        "is_subscribed_to_changelog": profile.is_subscribed_to_changelog if profile else False,
        "is_invitation_claimed": True,
    }


def team_fields(account: models.Account, organization: str) -> dict[str, Any]:
    """The contract's Team model, as every answer that names a team shows it."""
    return {
        "name": account.name,
        "slug": account.name,
        "type": account.type,
        "execution_region": SELF_HOSTED_REGION,
        "organization": organization,
    }


def team_json(team: TeamToken) -> dict[str, Any]:
    """The contract's Team, with the session's token for it (the official CLI requires it)."""
    return {**team_fields(team.account, team.organization), "token": token_json(team.jwt)}


def session_json(view: SessionView) -> dict[str, Any]:
    return {
        "id": str(view.session_id) if view.session_id else None,
        "user": user_json(view.user, view.profile),
        "token": token_json(view.access_token, view.refresh_token),
        "teams": [team_json(team) for team in view.teams],
        "featurebase_identity": {"company_hash": "", "user_hash": ""},
    }


# ------------------------------------------------------------------ sign-up and sessions


# Passwords carry no length rules here: a validation error would echo the value back.
# The services check them and never repeat them.


class CreateAccountParams(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    password: str


class CreateSessionParams(BaseModel):
    username: str = Field(min_length=1, max_length=320, description="The user's email.")
    password: str
    code: str | None = None


class RefreshSessionParams(BaseModel):
    refresh_token: str | None = Field(None, max_length=256)


class DeleteSessionParams(BaseModel):
    session_id: str | None = Field(None, max_length=64)


@router.post("/v1/accounts", **public())
def create_account(
    ctx: ContextDep, principal: OptionalPrincipalDep, body: CreateAccountParams
) -> dict[str, Any]:
    """Create a user (email + password) with their personal account, and sign them in."""
    view = sessions.sign_up(ctx, principal, body.email, body.password)
    return {"session": session_json(view)}


@router.post("/v1/session", **public())
def create_session(ctx: ContextDep, body: CreateSessionParams) -> dict[str, Any]:
    """Log in with email and password."""
    return {"session": session_json(sessions.log_in(ctx, body.username, body.password))}


@router.get("/v1/session", **scoped(None))
def describe_session(
    ctx: ContextDep,
    principal: PrincipalDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    token = bearer_token(authorization) or x_api_key or ""
    return {"session": session_json(sessions.describe(ctx, principal, token))}


@router.post("/v1/session/refresh", **public())
def refresh_session(
    ctx: ContextDep,
    principal: OptionalPrincipalDep,
    body: Annotated[RefreshSessionParams | None, Body()] = None,
) -> dict[str, Any]:
    """New tokens for a live session, named by `refresh_token` or by the session's token."""
    view = sessions.refresh(
        ctx, refresh_token=body.refresh_token if body else None, principal=principal
    )
    return {"refreshed_at": serializers.ts(view.refreshed_at), "session": session_json(view)}


@router.delete("/v1/session", **scoped(None))
def delete_session(
    ctx: ContextDep,
    principal: PrincipalDep,
    body: Annotated[DeleteSessionParams | None, Body()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Sign out: the session and every token of it stop working."""
    token = bearer_token(authorization) or ""
    view = sessions.sign_out(ctx, principal, token, body.session_id if body else None)
    return {"session": session_json(view)}


# ------------------------------------------------------------------ identity


@router.get("/v1/whoami", **scoped(None))
def describe_whoami(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    """An RS256 identity token, verifiable with the keys at /.well-known/jwks.json."""
    issued = identity.whoami(ctx, principal)
    return {"token": issued.token, "expires_at": serializers.ts(issued.expires_at)}


@router.get("/.well-known/jwks.json", include_in_schema=False)
def jwks(ctx: ContextDep) -> dict[str, Any]:
    return identity.jwks(ctx)


# ------------------------------------------------------------------ device login


class ClaimDeviceLoginParams(BaseModel):
    user_code: str = Field(min_length=1, max_length=32)
    refresh_token: str = Field(min_length=1, max_length=256)


@router.get("/v1/login/device", **public())
def create_device_login_ticket(ctx: ContextDep) -> dict[str, Any]:
    ticket = device_login.create_ticket(ctx)
    return {
        "device_code": ticket.device_code,
        "user_code": ticket.user_code,
        "login_url": ticket.login_url,
        "verification_url": ticket.verification_url,
        "generated_at": serializers.ts(ticket.generated_at),
        "interval": ticket.interval,
        "expires_in": ticket.expires_in,
    }


@router.get("/v1/login/device/{device_code}", **public())
def describe_device_login_session(ctx: ContextDep, device_code: str) -> dict[str, Any]:
    """404 while nobody approved it, 410 once expired or collected, else the new session."""
    return {"session": session_json(device_login.collect(ctx, device_code))}


@router.post("/v1/login/device/claim", **public())
def claim_device_login_ticket(ctx: ContextDep, body: ClaimDeviceLoginParams) -> dict[str, Any]:
    """Approve a login request as the user whose session `refresh_token` belongs to."""
    device_login.claim(ctx, body.user_code, body.refresh_token)
    return {"claimed": True}
