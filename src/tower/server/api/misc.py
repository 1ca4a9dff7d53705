"""Health, the landing page and the session."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import func, select, text

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, _bearer, scoped
from tower.server.services import accounts
from tower.server.store import models
from tower.server.store.types import utcnow
from tower.server.ui import landing

router = APIRouter()


def _runners_online(ctx: ContextDep) -> int:
    cutoff = utcnow() - timedelta(seconds=ctx.settings.lease_ttl_seconds)
    with ctx.sessions.begin() as session:
        session.execute(text("SELECT 1"))
        return (
            session.scalar(
                select(func.count())
                .select_from(models.Runner)
                .where(models.Runner.last_heartbeat_at >= cutoff)
            )
            or 0
        )


@router.get("/healthz", tags=["health"])
def healthz(ctx: ContextDep) -> JSONResponse:
    online = _runners_online(ctx)
    ready = online > 0 or not ctx.settings.health_requires_runner
    body = {"status": "ok" if ready else "starting", "database": "ok", "runners_online": online}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def landing_page(ctx: ContextDep) -> HTMLResponse:
    return HTMLResponse(landing.render(ctx.settings.resolved_public_url, _runners_online(ctx)))


def _team_json(account: models.Account, jwt: str) -> dict[str, Any]:
    return {
        "name": account.name,
        "slug": account.name,
        "type": account.type,
        "execution_region": "self-hosted",
        "organization": account.name,
        "token": {"jwt": jwt, "access_token": jwt, "refresh_token": None},
    }


def _user_json(user: models.User) -> dict[str, Any]:
    return {
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "created_at": serializers.ts(user.created_at),
        "company": "",
        "country": "",
        "profile_photo_url": "",
        "promo_code": "",
        "is_alerts_enabled": False,
        "is_confirmed": True,
        "is_subscribed_to_changelog": False,
        "is_invitation_claimed": True,
    }


@router.get("/v1/session", tags=["session"], **scoped(None))
def describe_session(request: Request, ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    token = _bearer(request.headers.get("authorization")) or ""
    data = accounts.describe_session(ctx, principal, token)
    return {
        "session": {
            "user": _user_json(data["user"]),
            "token": {"jwt": token, "access_token": token, "refresh_token": None},
            "teams": [_team_json(t["account"], t["jwt"]) for t in data["teams"]],
            "featurebase_identity": {"company_hash": "", "user_hash": ""},
        }
    }
