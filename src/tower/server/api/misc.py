"""Health and the landing page."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import func, select, text

from tower.server.api.deps import ContextDep
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
