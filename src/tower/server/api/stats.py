"""GET /v1/stats/runs (runs per status over time) and GET /v1/stats/apps (app health)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tower.core.runs import RunStatus
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.api.serializers import ts
from tower.server.services import run_queries, stats

router = APIRouter(prefix="/v1", tags=["stats"])

# RunStatistics keys → the statuses they count.
_TOTAL_KEYS = {
    "cancelled_runs": RunStatus.CANCELLED,
    "crashed_runs": RunStatus.CRASHED,
    "errored_runs": RunStatus.ERRORED,
    "exited_runs": RunStatus.EXITED,
}


@router.get("/stats/runs", **scoped("runs:read"))
def run_statistics(
    ctx: ContextDep,
    principal: PrincipalDep,
    start_at: Annotated[str | None, Query(description="RFC 3339, inclusive (required).")] = None,
    end_at: Annotated[str | None, Query(description="RFC 3339, exclusive (required).")] = None,
    status: Annotated[list[str] | None, Query()] = None,
    timezone: Annotated[str, Query(description="IANA zone of the buckets.")] = "UTC",
    environment: str | None = None,
) -> dict[str, Any]:
    # start_at/end_at are checked by the service, so a missing one gets the same
    # worded 422 as a malformed one.
    window = stats.make_window(start_at, end_at, timezone)
    result = stats.run_statistics(
        ctx,
        principal,
        window,
        statuses=run_queries.parse_statuses(status),
        environment=environment,
    )
    return _run_statistics_json(result)


def _run_statistics_json(result: stats.RunStatistics) -> dict[str, Any]:
    totals = {key: result.totals[status] for key, status in _TOTAL_KEYS.items()}
    window = result.window
    return {
        "stats": {**totals, "running_runs": result.active, "total_runs": result.total},
        "series": [
            {"period": ts(start), **{s.value: counts[s] for s in RunStatus}}
            for start, counts in result.series
        ],
        "settings": {
            "start_at": ts(window.start_at),
            "end_at": ts(window.end_at),
            # A string is required; empty means every environment.
            "environment": result.environment or "",
            "interval": window.interval,
            "timezone": window.timezone,
        },
    }


@router.get("/stats/apps", **scoped("apps:read"))
def app_statistics(
    ctx: ContextDep, principal: PrincipalDep, environment: str | None = None
) -> dict[str, Any]:
    result = stats.app_statistics(ctx, principal, environment=environment)
    counts = result.counts
    return {
        "statistics": {
            "all_apps": result.all_apps,
            "disabled_apps": counts[stats.AppState.DISABLED],
            "healthy_apps": counts[stats.AppState.SUCCESSFUL],
            "running_apps": counts[stats.AppState.RUNNING],
            "failed_apps": counts[stats.AppState.FAILED],
            "apps_with_issues": len(result.issues),
        },
        "apps_with_issues": [
            {"name": i.name, "failed_runs": i.failed_runs, "last_runs": i.last_runs}
            for i in result.issues
        ],
    }
