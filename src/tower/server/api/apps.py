"""/v1/apps: list, create, describe, delete, deploy, versions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, Field, StrictBool, StrictInt

from tower.core import errors, package
from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, is_official_cli, scoped
from tower.server.api.params import RetryPolicyParams
from tower.server.api.presenters import present_app, present_apps, present_runs
from tower.server.services import apps as apps_service
from tower.server.services import deploys, run_queries
from tower.server.services import environments as environments_service
from tower.server.services import runs as runs_service
from tower.server.services.context import Principal, ServerContext
from tower.server.services.runs import RunView
from tower.server.store.models import AppVersion

router = APIRouter(prefix="/v1", tags=["apps"])
#: the longest pending or running timeout an app may set: a week (s)
MAX_TIMEOUT_S = 7 * 24 * 3600


class SandboxParams(BaseModel):
    """An app's sandbox settings (tower.core.sandbox_settings): each limit a whole
    number within its range, 0 for the runner's default; the services check ranges."""

    #: memory (MB) a run may use
    memory_mb: StrictInt | None = None
    #: CPU time (s) a run may use
    cpu_seconds: StrictInt | None = None
    #: the largest file (MB) a run may write
    file_size_mb: StrictInt | None = None
    #: how many processes a run may have at once
    processes: StrictInt | None = None
    #: runs get no network at all (needs bubblewrap on the runner)
    isolate_network: StrictBool | None = None

    def sandbox_changes(self) -> apps_service.SandboxChanges:
        return apps_service.SandboxChanges(
            memory_mb=self.memory_mb,
            cpu_seconds=self.cpu_seconds,
            file_size_mb=self.file_size_mb,
            processes=self.processes,
            isolate_network=self.isolate_network,
        )


class CreateAppParams(SandboxParams):
    name: str = Field(max_length=128)
    short_description: str | None = Field(default="", max_length=4096)
    #: whether guests may be let into it (`POST /v1/guests`)
    is_externally_accessible: bool = False


@router.get("/apps", **scoped("apps:read"))
def list_apps(
    ctx: ContextDep,
    principal: PrincipalDep,
    page: int = Query(0, ge=0),
    page_size: int = Query(100, ge=1, le=1000),
    environment: str = "default",
) -> dict[str, Any]:
    apps = apps_service.list_apps(ctx, principal)
    selected = serializers.paginate(apps, page, page_size)
    bodies = present_apps(ctx, principal, selected, environment=environment)
    items = [{"app": body, "runs": []} for body in bodies]
    return {"apps": items, "pages": serializers.pages(page, page_size, len(apps))}


@router.post("/apps", status_code=201, **scoped("apps:create"))
def create_app(ctx: ContextDep, principal: PrincipalDep, body: CreateAppParams) -> dict[str, Any]:
    app = apps_service.create_app(
        ctx,
        principal,
        name=body.name,
        short_description=body.short_description or "",
        is_externally_accessible=body.is_externally_accessible,
        sandbox=body.sandbox_changes(),
    )
    return {"app": present_app(ctx, principal, app)}


class UpdateAppParams(SandboxParams):
    """Every field optional: only what is sent changes."""

    short_description: str | None = Field(default=None, max_length=4096)
    status: Literal["active", "disabled"] | None = None
    #: seconds a run may wait for a runner before it ends `errored` (0 = forever)
    pending_timeout: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT_S)
    #: seconds a run may run before it is stopped and ends `errored` (0 = no limit)
    running_timeout: int | None = Field(default=None, ge=0, le=MAX_TIMEOUT_S)
    retry_policy: RetryPolicyParams | None = None
    is_externally_accessible: bool | None = None


@router.put("/apps/{name}", **scoped("apps:update"))
@router.patch("/apps/{name}", operation_id="patch_app", **scoped("apps:update"))
def update_app(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateAppParams
) -> dict[str, Any]:
    changes = apps_service.AppChanges(
        short_description=body.short_description,
        status=body.status,
        pending_timeout=body.pending_timeout,
        running_timeout=body.running_timeout,
        retry_policy=body.retry_policy.to_policy() if body.retry_policy else None,
        is_externally_accessible=body.is_externally_accessible,
        sandbox=body.sandbox_changes(),
    )
    app = apps_service.update_app(ctx, principal, name, changes)
    return {"app": present_app(ctx, principal, app)}


@router.get("/apps/{name}", **scoped("apps:read"))
def describe_app(
    request: Request,
    ctx: ContextDep,
    principal: PrincipalDep,
    name: str,
    runs: int = Query(runs_service.DEFAULT_RECENT_RUNS, ge=0, le=1000),
    environment: str | None = None,
) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        app = apps_service.get_app(session, principal, name)
    recent = _recent_runs(ctx, principal, name, runs, environment)
    return {
        "app": present_app(
            ctx,
            principal,
            app,
            environment=environment or "default",
            last_run=recent[0] if recent else None,
        ),
        "runs": present_runs(ctx, recent, official_cli=is_official_cli(request)),
    }


def _recent_runs(
    ctx: ServerContext, principal: Principal, name: str, limit: int, environment: str | None
) -> list[RunView]:
    if limit == 0:  # `?runs=0`: the app alone (not page 0, which means every run)
        return []
    flt = run_queries.RunFilter(environment=environment)
    views, _total = run_queries.list_app_runs(ctx, principal, name, flt, run_queries.Page(1, limit))
    return views


@router.delete("/apps/{name}", **scoped("apps:delete"))
def delete_app(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    with ctx.sessions.begin() as session:
        app = apps_service.get_app(session, principal, name)
    body = present_app(ctx, principal, app)
    apps_service.delete_app(ctx, principal, name)
    return {"app": body}


async def _read_capped(request: Request, limit: int) -> bytes:
    """Read the raw (still gzip-compressed) upload, refusing anything past `limit` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.InvalidInput(
                f"The package is larger than {limit // (1024 * 1024)} MiB. "
                "Narrow [app].source in the Towerfile."
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/apps/{name}/deploy", status_code=201, **scoped("apps:deploy"))
async def deploy_app(
    request: Request,
    ctx: ContextDep,
    principal: PrincipalDep,
    name: str,
    environment: str | None = None,
    all_environments: bool = False,
    x_tower_checksum_sha256: Annotated[str | None, Header()] = None,
    x_tower_idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict[str, Any]:
    from starlette.concurrency import run_in_threadpool

    data = await _read_capped(request, package.MAX_PACKAGE_BYTES)
    if not data:
        raise errors.BadRequest("The request body is empty: send the package (.tar.gz) bytes.")
    deploy_request = deploys.DeployRequest(
        app_name=name,
        data=data,
        checksum=x_tower_checksum_sha256,
        environment=environment,
        all_environments=all_environments,
        idempotency_key=x_tower_idempotency_key,
    )
    version = await run_in_threadpool(deploys.deploy, ctx, principal, deploy_request)
    pinned = await run_in_threadpool(
        environments_service.environments_by_version, ctx, principal, name
    )
    return {"version": _version_json(version, pinned)}


@router.get("/apps/{name}/versions", **scoped("apps:read"))
def list_versions(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    versions = deploys.list_versions(ctx, principal, name)
    pinned = environments_service.environments_by_version(ctx, principal, name)
    return {"versions": [_version_json(v, pinned) for v in versions]}


@router.get("/apps/{name}/versions/{version}", **scoped("apps:read"))
def describe_version(
    ctx: ContextDep, principal: PrincipalDep, name: str, version: str
) -> dict[str, Any]:
    row = deploys.get_version(ctx, principal, name, version)
    pinned = environments_service.environments_by_version(ctx, principal, name)
    return {"version": _version_json(row, pinned)}


def _version_json(version: AppVersion, pinned: dict[uuid.UUID, list[str]]) -> dict[str, Any]:
    # `environments` is not in the contract (clients ignore extra keys): where it runs.
    return {**serializers.version_json(version), "environments": pinned.get(version.id, [])}


class UpdateAppEnvironmentParams(BaseModel):
    #: `v3` or `3`
    version: str = Field(max_length=32)


@router.get("/apps/{name}/environments", **scoped("apps:read"))
def list_app_environments(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    """The environments that run a version of the app, and which version each runs."""
    pins = environments_service.app_pins(ctx, principal, name)
    return {
        "environments": [p.environment for p in pins],
        # Not in the contract (clients ignore extra keys): the version behind each name.
        "pins": [
            {
                "environment": p.environment,
                "version": p.version,
                "updated_at": serializers.ts(p.updated_at),
            }
            for p in pins
        ],
    }


@router.put("/apps/{name}/environments/{environment}", **scoped("apps:deploy"))
def update_app_environment(
    ctx: ContextDep,
    principal: PrincipalDep,
    name: str,
    environment: str,
    body: UpdateAppEnvironmentParams,
) -> dict[str, Any]:
    """Pin an existing version to an environment: promote, or roll back to an older one."""
    pin = environments_service.pin_version(ctx, principal, name, environment, body.version)
    return {
        "environment": pin.environment,
        "version": pin.version,
        # Not in the contract: what the environment ran before (null if nothing).
        "previous_version": pin.previous_version,
    }
