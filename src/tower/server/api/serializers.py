"""Domain rows → the contract's JSON models (every required key present, even when null)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from fastapi.encoders import jsonable_encoder
from starlette.responses import Response

from tower.core.runs import RunStatus, status_group
from tower.server.services import apps as apps_service
from tower.server.services.inherited import page_of
from tower.server.services.runs import RunView
from tower.server.services.stats import AppHealth
from tower.server.store import models

HIDDEN_VALUE = "[hidden]"
RESULT_KEYS = (
    "cancelled",
    "crashed",
    "errored",
    "exited",
    "pending",
    "retrying",
    "running",
    "starting",
)


def json_response(content: dict[str, Any], status_code: int = 200) -> Response:
    """`content` rendered to JSON bytes at once, for the routes every run calls.

    A route returning a dict has FastAPI validate it against the return annotation
    (in a worker thread, for a sync route) and walk it with jsonable_encoder; for the
    JSON-native dicts built here that is work for nothing. The body is the same JSON
    (anything not JSON-native still goes through jsonable_encoder)."""
    body = json.dumps(
        content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_encode
    )
    return Response(body.encode("utf-8"), status_code, media_type="application/json")


def _encode(value: Any) -> Any:
    return jsonable_encoder(value)


def ts(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a `Z` (the official CLI panics on naive timestamps)."""
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_link(base_url: str, app_name: str, number: int) -> str:
    # The API resource until the web UI grows a run page.
    return f"{base_url}/v1/apps/{app_name}/runs/{number}"


def run_json(
    view: RunView, base_url: str, *, with_attempts: bool = False, official_cli: bool = False
) -> dict[str, Any]:
    run = view.run
    status = run.status
    # Compatibility shim: the official CLI's `tower run` gives up ("run completed") when a
    # poll sees `starting` before `running`. Provisioning is real and we report it to
    # everyone else; that one client sees it as `pending`, which it treats as waiting.
    if official_cli and status == RunStatus.STARTING.value:
        status = RunStatus.PENDING.value
    body: dict[str, Any] = {
        "$link": run_link(base_url, view.app_name, run.number),
        "app_name": view.app_name,
        "app_slug": view.app_name,
        "app_version": view.version,
        "cancelled_at": ts(run.cancelled_at),
        "created_at": ts(run.created_at),
        "ended_at": ts(run.ended_at),
        "environment": view.environment,
        "exit_code": run.exit_code,
        "initiator": {
            "type": run.initiator.get("type"),
            "details": run.initiator.get("details", {}),
        },
        "is_scheduled": run.initiator.get("type") == "tower_scheduler",
        "num_attempts": run.num_attempts,
        "number": run.number,
        "parameters": [_parameter_json(p) for p in run.parameters],
        "run_id": str(run.id),
        "scheduled_at": ts(run.scheduled_at),
        "started_at": ts(run.started_at),
        "starting_at": ts(run.starting_at),
        "status": status,
        "status_group": status_group(RunStatus(run.status)),
        "status_message": run.status_message,
        "retry_policy": retry_policy_json(run),
        "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
        "subdomain": None,
    }
    if with_attempts:
        body["attempts"] = [attempt_json(a) for a in view.attempts]
    return body


def retry_policy_json(owner: models.App | models.Run) -> dict[str, Any]:
    """The contract's RunRetryPolicy of an app (its default) or of a run (in force)."""
    return {
        "max_retries": owner.max_retries,
        "retry_delay_seconds": owner.retry_delay_seconds,
        "use_exponential_backoff": owner.use_exponential_backoff,
    }


def _parameter_json(param: dict[str, Any]) -> dict[str, Any]:
    hidden = bool(param.get("hidden"))
    return {
        "name": param["name"],
        "value": HIDDEN_VALUE if hidden else param["value"],
        "hidden": hidden,
        "is_override": param.get("is_override"),
    }


def attempt_json(attempt: models.RunAttempt) -> dict[str, Any]:
    return {
        "seq": attempt.seq,
        "status": attempt.status,
        "starting_at": ts(attempt.starting_at),
        "started_at": ts(attempt.started_at),
        "ended_at": ts(attempt.ended_at),
        "exit_code": attempt.exit_code,
    }


def app_json(
    app: models.App,
    *,
    owner: str,
    version: str | None,
    last_run: dict[str, Any] | None,
    results: dict[str, int],
    health: AppHealth,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "created_at": ts(app.created_at),
        "health_status": health.health_status,
        "is_example": False,
        "is_externally_accessible": app.is_externally_accessible,
        "name": app.name,
        "next_run_at": None,
        "owner": owner,
        "pending_timeout": app.pending_timeout,
        "running_timeout": app.running_timeout,
        "schedule": None,
        "short_description": app.short_description,
        "version": version,
        "retry_policy": retry_policy_json(app),
        "run_results": {key: results.get(key, 0) for key in RESULT_KEYS},
        "slug": app.name,
        "status": app.status,
        "tags": [],
        # Not in the contract (clients ignore extra keys): what health_status is made of.
        "health": {"state": health.state.value, "recent_failures": health.recent_failures},
        # Not in the contract either: what the app's runs ask of a runner's sandbox
        # (null limits: the runner's default).
        **apps_service.sandbox_settings(app).as_json(),
    }
    if last_run is not None:
        body["last_run"] = last_run
    return body


def version_json(version: models.AppVersion) -> dict[str, Any]:
    return {
        "created_at": ts(version.created_at),
        "parameters": [
            {
                "name": p["name"],
                "description": p.get("description", ""),
                "default": p.get("default", ""),
                "hidden": bool(p.get("hidden", False)),
            }
            for p in version.parameters
        ],
        "towerfile": version.towerfile,
        "version": version.version,
        "content_checksum": version.content_checksum,
        "idempotency_key": version.idempotency_key,
    }


def log_line_json(line: models.RunLogLine) -> dict[str, Any]:
    return {
        "attempt_seq": line.attempt_seq,
        "channel": line.channel,
        "content": line.content,
        "line_num": line.line_num,
        "reported_at": ts(line.reported_at),
        "run_id": str(line.run_id),
    }


def pages(page: int, page_size: int, total: int) -> dict[str, int]:
    if page <= 0:
        return {"page": 0, "page_size": total, "num_pages": 1, "total": total}
    return {
        "page": page,
        "page_size": page_size,
        "num_pages": max(1, math.ceil(total / page_size)),
        "total": total,
    }


def paginate(items: list[Any], page: int, page_size: int) -> list[Any]:
    """`page=0` means everything (the official CLI relies on that); the rule the
    services page exports by too."""
    return page_of(items, page, page_size)
