"""/v1/runner: the protocol runners speak (docs/runner-protocol.md)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Request, Response
from pydantic import AwareDatetime, BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tower.core.errors import TowerError
from tower.core.runs import RunStatus
from tower.server.api import runners as runners_api
from tower.server.api import serializers
from tower.server.api.deps import ContextDep, RunnerDep
from tower.server.api.errors import tower_error_body
from tower.server.dispatch.notifier import (
    QUEUE_TOPIC,
    claims_topic,
    runner_topic,
    wait_for,
    wait_for_any,
)
from tower.server.services import runner_credentials
from tower.server.services import runners as runners_service
from tower.server.services.context import RunnerPrincipal
from tower.server.store.types import utcnow

router = APIRouter(prefix="/v1/runner", tags=["runner"])

# Other control planes enqueue without waking us; re-check the queue this often.
CLAIM_RECHECK_S = 2.0
_R = TypeVar("_R")


class RegisterParams(BaseModel):
    name: str = Field(max_length=128)
    hostname: str = Field(default="", max_length=255)
    version: str = Field(default="", max_length=64)
    public_key: str = Field(max_length=8192)
    environment: str | None = Field(default=None, max_length=128)
    capacity: int = Field(default=1, ge=1, le=1024)


#: the most runs one claim may take
MAX_RUNS_PER_CLAIM = 64


class ClaimParams(BaseModel):
    runner_id: uuid.UUID
    wait_seconds: float = Field(default=30.0, ge=0, le=300)
    #: free slots: a backlog is handed out in one answer
    max_runs: int = Field(default=1, ge=1, le=MAX_RUNS_PER_CLAIM)


class LogLineParams(BaseModel):
    line_num: int = Field(ge=1)
    channel: Literal["setup", "program"]
    content: str
    reported_at: AwareDatetime


class StatusParams(BaseModel):
    attempt_seq: int = Field(ge=1)
    fencing_token: str = Field(max_length=64)
    status: Literal["running", "exited", "crashed", "errored"]
    exit_code: int | None = None
    message: str | None = Field(default=None, max_length=10_000)
    #: the attempt's last log lines, stored with the status
    lines: list[LogLineParams] = Field(default_factory=list)
    #: the app started this long before the report (a short run's `running`, folded in)
    started_seconds_ago: float | None = Field(default=None, ge=0, le=86_400)


class LogsParams(BaseModel):
    attempt_seq: int = Field(ge=1)
    fencing_token: str = Field(max_length=64)
    lines: list[LogLineParams]


#: the most status reports (and, apart, log batches) one `/reports` request may carry
MAX_REPORTS_PER_BATCH = 64


class BatchedStatusParams(StatusParams):
    run_id: uuid.UUID


class BatchedLogsParams(LogsParams):
    run_id: uuid.UUID


class ReportsParams(BaseModel):
    runner_id: uuid.UUID
    reports: list[BatchedStatusParams] = Field(
        default_factory=list, max_length=MAX_REPORTS_PER_BATCH
    )
    #: log batches of runs, each as `/runs/{run_id}/logs` takes it
    logs: list[BatchedLogsParams] = Field(default_factory=list, max_length=MAX_REPORTS_PER_BATCH)
    #: the runner's free slots (those the reported runs just freed included): claim up
    #: to this many pending runs in the same round trip, without waiting
    claim_max_runs: int = Field(default=0, ge=0, le=MAX_RUNS_PER_CLAIM)


class HeartbeatParams(BaseModel):
    runner_id: uuid.UUID
    run_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10_000)
    #: hold the answer up to this long unless a run must stop (0 = answer at once)
    wait_seconds: float = Field(default=0.0, ge=0, le=60)


@router.post("/register")
def register(ctx: ContextDep, who: RunnerDep, body: RegisterParams) -> dict[str, Any]:
    runner = runners_service.register(ctx, who, runners_service.Registration(**body.model_dump()))
    return {
        "runner_id": str(runner.id),
        "heartbeat_interval_seconds": runners_service.heartbeat_interval(ctx),
        # What assignments' package signatures verify with (a runner may pin it instead).
        "package_signing_key": runners_service.package_verify_key(ctx),
        # When to call /runner/credentials/rotate (None: the credential never expires).
        **runner_credentials.rotation_schedule(ctx, who),
    }


@router.post("/credentials/rotate")
def rotate_credentials(ctx: ContextDep, who: RunnerDep) -> dict[str, Any]:
    """A new token (and client certificate) replacing the caller's; the old one keeps
    working for the overlap, then stops."""
    issued = runner_credentials.rotate(ctx, who)
    successor = RunnerPrincipal(issued.id, who.account_id, who.credential_id)
    return {
        "credentials": {
            **runners_api.credentials_json(ctx, issued),
            **runner_credentials.rotation_schedule(ctx, successor),
        }
    }


@router.post("/claim", response_model=None)
async def claim(request: Request, ctx: ContextDep, who: RunnerDep, body: ClaimParams) -> Response:
    deadline = time.monotonic() + min(body.wait_seconds, ctx.settings.claim_wait_max_seconds)
    while True:
        # A runner that died mid long-poll must not be handed a run it will never start.
        if await request.is_disconnected():
            return Response(status_code=204)
        # Listen before looking, so a run enqueued in between still wakes us.
        with (
            ctx.notifier.listen(QUEUE_TOPIC) as woken,
            ctx.notifier.listen(claims_topic(body.runner_id)) as stopped,
        ):
            if stopped.is_set():
                return Response(status_code=204)  # the runner is shutting down
            assignments = await run_in_threadpool(
                runners_service.try_claim, ctx, who, body.runner_id, body.max_runs
            )
            if assignments:
                # `assignment` alone is what runners asking for one run read.
                answer = {"assignment": assignments[0], "assignments": assignments}
                return serializers.json_response(answer)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or ctx.notifier.closing:
                return Response(status_code=204)
            await wait_for_any((woken, stopped), min(remaining, CLAIM_RECHECK_S))
        await asyncio.sleep(0)


class StopClaimsParams(BaseModel):
    runner_id: uuid.UUID


@router.post("/claims/stop", status_code=204)
async def stop_claims(ctx: ContextDep, who: RunnerDep, body: StopClaimsParams) -> Response:
    """A runner shutting down takes no more runs: its claim long-poll (on this control
    plane) ends at once, with nothing claimed, instead of holding the shutdown up."""
    await run_in_threadpool(runners_service.check_runner, ctx, who, body.runner_id)
    ctx.notifier.retire(claims_topic(body.runner_id))
    return Response(status_code=204)


@router.get("/runs/{run_id}/package")
def package(ctx: ContextDep, who: RunnerDep, run_id: uuid.UUID) -> Response:
    data = runners_service.package_for(ctx, who, run_id)
    return Response(content=data, media_type="application/octet-stream")


def _status_report(body: StatusParams) -> runners_service.StatusReport:
    return runners_service.StatusReport(
        attempt_seq=body.attempt_seq,
        fencing_token=body.fencing_token,
        status=RunStatus(body.status),
        exit_code=body.exit_code,
        message=body.message,
        lines=tuple(line.model_dump() for line in body.lines),
        started_seconds_ago=body.started_seconds_ago,
    )


@router.post("/runs/{run_id}/status")
def report_status(
    ctx: ContextDep, who: RunnerDep, run_id: uuid.UUID, body: StatusParams
) -> Response:
    status = runners_service.report_status(ctx, who, run_id, _status_report(body))
    return serializers.json_response({"status": status.value})


@router.post("/reports")
def report_statuses(ctx: ContextDep, who: RunnerDep, body: ReportsParams) -> Response:
    """Log batches and status reports of several runs in one round trip, each applied
    on its own exactly as `/runs/{run_id}/logs` and `/status` apply them (a stale one
    fails alone), then, optionally, a claim for the slots they freed: a busy runner
    needs about one request, and one transaction, per batch of runs instead of several
    per run."""
    claim = body.claim_max_runs
    if ctx.notifier.retired(claims_topic(body.runner_id)):
        claim = 0
    outcome = runners_service.apply_batch(
        ctx,
        who,
        body.runner_id,
        [_log_batch(batch.run_id, batch) for batch in body.logs],
        [(report.run_id, _status_report(report)) for report in body.reports],
        claim,
    )
    answer: dict[str, Any] = {
        "results": [
            _item_result(report.run_id, result, lambda status: {"status": status.value})
            for report, result in zip(body.reports, outcome.reports, strict=True)
        ],
        "log_results": [
            _item_result(batch.run_id, result, lambda accepted: {"accepted": accepted})
            for batch, result in zip(body.logs, outcome.logs, strict=True)
        ],
        "assignments": outcome.assignments,
    }
    if outcome.claim_error is not None:  # the reports stand; the claim loop will see it too
        answer["claim_error"] = tower_error_body(outcome.claim_error)
    return serializers.json_response(answer)


def _log_batch(run_id: uuid.UUID, batch: LogsParams) -> runners_service.LogBatch:
    return runners_service.LogBatch(
        run_id=run_id,
        attempt_seq=batch.attempt_seq,
        fencing_token=batch.fencing_token,
        lines=[line.model_dump() for line in batch.lines],
    )


def _item_result(
    run_id: uuid.UUID, result: _R | TowerError, fields: Callable[[_R], dict[str, Any]]
) -> dict[str, Any]:
    """`{run_id, **fields}`, or `{run_id, error}` with the error body (and its HTTP
    status in `error.status`) the item's own request would have answered."""
    if isinstance(result, TowerError):
        return {"run_id": str(run_id), "error": tower_error_body(result)}
    return {"run_id": str(run_id), **fields(result)}


@router.post("/runs/{run_id}/logs")
def ship_logs(ctx: ContextDep, who: RunnerDep, run_id: uuid.UUID, body: LogsParams) -> Response:
    accepted = runners_service.ingest_logs(ctx, who, _log_batch(run_id, body))
    return serializers.json_response({"accepted": accepted})


@router.post("/heartbeat")
async def heartbeat(ctx: ContextDep, who: RunnerDep, body: HeartbeatParams) -> Response:
    """Renew leases at once; then, if no run must stop, wait for one to (a long poll),
    so a cancel reaches the runner in milliseconds rather than at its next beat."""
    deadline = time.monotonic() + body.wait_seconds
    began = utcnow()
    renew = True
    while True:
        with ctx.notifier.listen(runner_topic(body.runner_id)) as woken:
            cancel = await run_in_threadpool(
                runners_service.heartbeat,
                ctx,
                who,
                body.runner_id,
                body.run_ids,
                renew=renew,
                # A run claimed while the poll waits is not among `run_ids`.
                ended_since=None if renew else began,
            )
            renew = False
            remaining = deadline - time.monotonic()
            if cancel or not body.run_ids or remaining <= 0 or ctx.notifier.closing:
                return serializers.json_response({"cancel": [str(run_id) for run_id in cancel]})
            await wait_for(woken, min(remaining, CLAIM_RECHECK_S))
