"""/v1/guests (manage guests of an app) and the guest's own login link and session."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Cookie, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.services import guests as service
from tower.server.services.guests import GuestSessionView, GuestView

router = APIRouter(tags=["guests"])

GUEST_COOKIE = "tower_guest"


class CreateGuestParams(BaseModel):
    app: str = Field(min_length=1, max_length=128)
    name: str = Field(default="", max_length=128)
    #: seconds the login URL, and a session opened with it, last (default 72 hours)
    expires_in: int | None = None
    redirect_url: str | None = Field(default=None, max_length=2048)


class RegenerateGuestLoginUrlParams(BaseModel):
    expires_in: int | None = None
    redirect_url: str | None = Field(default=None, max_length=2048)


def guest_json(view: GuestView) -> dict[str, Any]:
    row = view.row
    return {
        "id": str(row.id),
        "app": view.app_name,
        "name": row.name,
        "created_at": serializers.ts(row.created_at),
    }


def _login_json(view: GuestView) -> dict[str, Any]:
    return {
        "login_url": view.login_url,
        "login_url_expires_at": serializers.ts(view.row.login_expires_at),
    }


@router.get("/v1/guests", **scoped("apps:read"))
def list_guests(ctx: ContextDep, principal: PrincipalDep, app: str | None = None) -> dict[str, Any]:
    return {"guests": [guest_json(view) for view in service.list_guests(ctx, principal, app)]}


@router.post("/v1/guests", **scoped("apps:update"))
def create_guest(
    ctx: ContextDep, principal: PrincipalDep, body: CreateGuestParams
) -> dict[str, Any]:
    view = service.create(
        ctx,
        principal,
        app=body.app,
        name=body.name,
        expires_in=body.expires_in,
        redirect_url=body.redirect_url,
    )
    return {"guest": guest_json(view), **_login_json(view)}


@router.post("/v1/guests/{guest_id}/login-url", **scoped("apps:update"))
def regenerate_login_url(
    ctx: ContextDep, principal: PrincipalDep, guest_id: str, body: RegenerateGuestLoginUrlParams
) -> dict[str, Any]:
    view = service.regenerate_login_url(
        ctx, principal, guest_id, expires_in=body.expires_in, redirect_url=body.redirect_url
    )
    return _login_json(view)


@router.delete("/v1/guests/{guest_id}", status_code=204, **scoped("apps:update"))
def delete_guest(ctx: ContextDep, principal: PrincipalDep, guest_id: str) -> Response:
    service.delete_guest(ctx, principal, guest_id)
    return Response(status_code=204)


# -- the guest's side: no API credential, the login token and then a cookie ------------


def _session_json(view: GuestSessionView) -> dict[str, Any]:
    return {"guest": guest_json(view.guest), "expires_at": serializers.ts(view.expires_at)}


@router.get(service.LOGIN_PATH + "{token}", include_in_schema=False)
def guest_login(ctx: ContextDep, token: str) -> Response:
    """Open a guest session and go where the guest was sent (the session page by default)."""
    session_token, view = service.log_in(ctx, token)
    target = view.guest.row.redirect_url or service.SESSION_PATH
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        GUEST_COOKIE,
        session_token,
        max_age=view.guest.row.session_seconds,
        httponly=True,
        samesite="lax",
        secure=ctx.settings.resolved_public_url.startswith("https://"),
    )
    return response


@router.get(service.SESSION_PATH, include_in_schema=False)
def guest_session(
    ctx: ContextDep, tower_guest: str | None = Cookie(default=None)
) -> dict[str, Any]:
    """Who the guest is and which app they may use, while the session lives."""
    return _session_json(service.current_session(ctx, tower_guest))
