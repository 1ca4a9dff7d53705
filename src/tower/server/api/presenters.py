"""Gathers what one response needs from the services and shapes it with the serializers."""

from __future__ import annotations

from typing import Any

from tower.server.api import serializers
from tower.server.services import runs as runs_service
from tower.server.services.context import Principal, ServerContext
from tower.server.store import models


def present_app(
    ctx: ServerContext,
    principal: Principal,
    app: models.App,
    *,
    environment: str = "default",
    last_run: runs_service.RunView | None = None,
) -> dict[str, Any]:
    base = ctx.settings.resolved_public_url
    return serializers.app_json(
        app,
        owner=principal.account_name,
        version=runs_service.pinned_version_name(ctx, app, environment),
        last_run=serializers.run_json(last_run, base) if last_run else None,
        results=runs_service.results_by_status(ctx, app.id),
    )


def present_runs(
    ctx: ServerContext, views: list[runs_service.RunView], *, official_cli: bool
) -> list[dict[str, Any]]:
    base = ctx.settings.resolved_public_url
    return [serializers.run_json(v, base, official_cli=official_cli) for v in views]
