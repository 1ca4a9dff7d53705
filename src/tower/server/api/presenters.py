"""Gathers what one response needs from the services and shapes it with the serializers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tower.server.api import serializers
from tower.server.services import run_queries, stats
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
    last_runs = {app.id: last_run} if last_run else {}
    return present_apps(ctx, principal, [app], environment=environment, last_runs=last_runs)[0]


def present_apps(
    ctx: ServerContext,
    principal: Principal,
    apps: Sequence[models.App],
    *,
    environment: str = "default",
    last_runs: Mapping[Any, runs_service.RunView] | None = None,
) -> list[dict[str, Any]]:
    """App JSON for many apps in a fixed number of queries (not a few per app).

    `version` is the one pinned to `environment`; health and run counts span every
    environment. `last_runs` None looks up each app's newest run.
    """
    base = ctx.settings.resolved_public_url
    ids = [app.id for app in apps]
    with run_queries.read_session(ctx) as session:
        versions = run_queries.pinned_versions(session, ids, environment)
        results = run_queries.status_counts(session, ids)
        health = stats.app_health(session, principal.account_id, ids)
        if last_runs is None:
            last_runs = run_queries.latest_runs(session, ids)
    bodies = []
    for app in apps:
        last = last_runs.get(app.id)
        bodies.append(
            serializers.app_json(
                app,
                owner=principal.account_name,
                version=versions.get(app.id),
                last_run=serializers.run_json(last, base) if last else None,
                results=results[app.id],
                health=health.get(app.id, stats.AppHealth(stats.AppState.SUCCESSFUL)),
            )
        )
    return bodies


def present_runs(
    ctx: ServerContext, views: list[runs_service.RunView], *, official_cli: bool
) -> list[dict[str, Any]]:
    base = ctx.settings.resolved_public_url
    return [serializers.run_json(v, base, official_cli=official_cli) for v in views]
