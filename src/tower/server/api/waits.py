"""POST /v1/runs/await: wait, in one request, until one of several runs ends.

Body::

    {"runs": [{"app_name": "child", "number": 3}, ...],   # 1 to 100 runs
     "timeout_seconds": 30}                               # 0 to 60, default 30

Answer ``200 {"runs": [Run, ...]}``: every listed run as it is now (the contract's
Run model, as in a run list), in the order asked. It comes as soon as at least one
listed run is in a terminal status (exited, crashed, errored, cancelled), at once if
one already is, otherwise when `timeout_seconds` have passed; the caller checks the
statuses and asks again for those still active. `timeout_seconds: 0` answers at once.

An unknown app or run, or another account's, is a 404 naming it; credentials as for
every run endpoint. The SDK's `tower.wait_for_run(s)` waits this way; clients that
see a 404 for the endpoint itself (an older server) poll `GET /apps/{name}/runs/{n}`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, is_official_cli, scoped
from tower.server.services import waits as waits_service

router = APIRouter(prefix="/v1", tags=["runs"])


class AwaitedRun(BaseModel):
    app_name: str = Field(min_length=1, max_length=128)
    number: int = Field(ge=1, le=2**31 - 1)


class AwaitRunsParams(BaseModel):
    runs: list[AwaitedRun] = Field(min_length=1, max_length=waits_service.MAX_RUNS)
    timeout_seconds: float = Field(
        default=waits_service.DEFAULT_TIMEOUT_S, ge=0, le=waits_service.MAX_TIMEOUT_S
    )


@router.post("/runs/await", **scoped("runs:read"))
async def await_runs(
    request: Request, ctx: ContextDep, principal: PrincipalDep, body: AwaitRunsParams
) -> Response:
    refs = [waits_service.RunRef(run.app_name, run.number) for run in body.runs]
    views = await waits_service.await_runs(ctx, principal, refs, body.timeout_seconds)
    base = ctx.settings.resolved_public_url
    official = is_official_cli(request)
    runs = [serializers.run_json(view, base, official_cli=official) for view in views]
    return serializers.json_response({"runs": runs})
