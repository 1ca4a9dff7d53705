"""/v1/apps/{name}/runs: start runs, describe them, read and stream their logs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from tower.core.runs import is_terminal
from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, is_official_cli, scoped
from tower.server.api.params import RetryPolicyParams
from tower.server.dispatch.notifier import run_topic, wait_for
from tower.server.scheduler.firing import INITIATOR_TYPE as SCHEDULER_INITIATOR
from tower.server.services import runs as runs_service
from tower.server.services.context import ServerContext

router = APIRouter(prefix="/v1", tags=["runs"])

# The official CLI decides a run's outcome by polling, so the stream stays open a
# little after the run ends (contract §0.7) and then closes.
STREAM_LINGER_S = 1.5
STREAM_KEEPALIVE_S = 15.0


class RunInitiator(BaseModel):
    type: str | None = Field(default=None, max_length=64)
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _not_the_scheduler(cls, value: str | None) -> str | None:
        # Only the scheduler may say a run is scheduled: the app is told it is not a
        # manual run, and the run is attributed to a schedule.
        if value == SCHEDULER_INITIATOR:
            raise ValueError(
                f"`{SCHEDULER_INITIATOR}` is reserved for runs the scheduler starts; "
                "create a schedule (`POST /v1/schedules`) instead."
            )
        return value


class RunAppParams(BaseModel):
    environment: str = Field(default="default", max_length=128)
    parameters: dict[str, str] = Field(default_factory=dict)
    parent_run_id: uuid.UUID | None = None
    initiator: RunInitiator | None = None
    #: this run only; the app's policy is left as it is
    retry_policy: RetryPolicyParams | None = None


@router.post("/apps/{name}/runs", status_code=201, **scoped("apps:run"))
def run_app(
    request: Request, ctx: ContextDep, principal: PrincipalDep, name: str, body: RunAppParams
) -> Response:
    initiator = body.initiator.model_dump() if body.initiator else None
    submission = runs_service.Submission(
        principal,
        app_name=name,
        environment=body.environment or "default",
        parameters=body.parameters,
        initiator=initiator,
        retry_policy=body.retry_policy.to_policy() if body.retry_policy else None,
        parent_run_id=body.parent_run_id,
    )
    view = runs_service.create_run(ctx, submission)
    base = ctx.settings.resolved_public_url
    run = serializers.run_json(view, base, official_cli=is_official_cli(request))
    return serializers.json_response({"run": run}, status_code=201)


@router.get("/apps/{name}/runs/{number}", **scoped("runs:read"))
def describe_run(
    request: Request, ctx: ContextDep, principal: PrincipalDep, name: str, number: int
) -> dict[str, Any]:
    view = runs_service.describe_run(ctx, principal, name, number)
    prev, nxt = runs_service.neighbours(ctx, view.run)
    base = ctx.settings.resolved_public_url
    return {
        "run": serializers.run_json(
            view, base, with_attempts=True, official_cli=is_official_cli(request)
        ),
        "$links": {
            "self": serializers.run_link(base, name, number),
            "next": serializers.run_link(base, name, nxt) if nxt else None,
            "prev": serializers.run_link(base, name, prev) if prev else None,
            "next_number": nxt,
            "prev_number": prev,
        },
    }


@router.post("/apps/{name}/runs/{number}", **scoped("runs:cancel"))
def cancel_run(
    request: Request, ctx: ContextDep, principal: PrincipalDep, name: str, number: int
) -> dict[str, Any]:
    view, children = runs_service.cancel_run(ctx, principal, name, number)
    base = ctx.settings.resolved_public_url
    run = serializers.run_json(
        view, base, with_attempts=True, official_cli=is_official_cli(request)
    )
    return {"run": run, "cancelled_child_runs": children}


@router.get("/apps/{name}/runs/{number}/graph", **scoped("runs:read"))
def describe_run_graph(
    ctx: ContextDep, principal: PrincipalDep, name: str, number: int
) -> dict[str, Any]:
    """The run's family as edges (child, parent): from its root run down to every run
    started below it. A run that neither started nor was started by another has none."""
    edges = runs_service.run_graph(ctx, principal, name, number)
    return {
        "runs": [
            {"id": _graph_id(child), "parent_id": _graph_id(parent)} for child, parent in edges
        ]
    }


def _graph_id(node: tuple[str, int]) -> dict[str, Any]:
    app_name, number = node
    return {"app_name": app_name, "number": number}


@router.get("/apps/{name}/runs/{number}/logs", **scoped("runs:logs"))
def describe_run_logs(
    ctx: ContextDep, principal: PrincipalDep, name: str, number: int
) -> dict[str, Any]:
    _run, lines = runs_service.read_logs(ctx, principal, name, number)
    return {"log_lines": [serializers.log_line_json(line) for line in lines]}


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _log_events(ctx: ServerContext, run_id: Any) -> AsyncIterator[str]:
    """History first, then live lines as runners ship them; closes after the run ends."""
    last_line, ended_at = 0, None
    while True:
        with ctx.notifier.listen(run_topic(run_id)) as woken:
            status, lines = await run_in_threadpool(
                runs_service.run_status_and_lines, ctx, run_id, last_line
            )
            for line in lines:
                last_line = line.line_num
                yield _sse("log", serializers.log_line_json(line))
            if ctx.notifier.closing:
                return
            if is_terminal(status):
                ended_at = ended_at or time.monotonic()
                linger = STREAM_LINGER_S - (time.monotonic() - ended_at)
                if linger <= 0:
                    return
                await wait_for(woken, linger)
            elif not await wait_for(woken, STREAM_KEEPALIVE_S):
                yield ": keep-alive\n\n"


@router.get("/apps/{name}/runs/{number}/logs/stream", **scoped("runs:logs"))
def stream_run_logs(
    ctx: ContextDep, principal: PrincipalDep, name: str, number: int
) -> StreamingResponse:
    view = runs_service.describe_run(ctx, principal, name, number)
    return StreamingResponse(
        _log_events(ctx, view.run.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
