"""/v1/environments: list, create, describe, rename and delete an account's environments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.services import environments as environments_service
from tower.server.store import models

router = APIRouter(prefix="/v1", tags=["environments"])


class CreateEnvironmentParams(BaseModel):
    name: str = Field(max_length=128)


class UpdateEnvironmentParams(BaseModel):
    new_name: str = Field(max_length=128)


def environment_json(env: models.Environment) -> dict[str, Any]:
    """The contract's Environment model."""
    return {"name": env.name, "is_deletable": environments_service.is_deletable(env)}


@router.get("/environments", **scoped("envs:read"))
def list_environments(
    ctx: ContextDep,
    principal: PrincipalDep,
    page: int = Query(0, ge=0),
    page_size: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    envs, total = environments_service.list_environments(
        ctx, principal, page=page, page_size=page_size
    )
    return {
        "environments": [environment_json(env) for env in envs],
        "pages": serializers.pages(page, page_size, total),
    }


@router.post("/environments", status_code=201, **scoped("envs:create"))
def create_environment(
    ctx: ContextDep, principal: PrincipalDep, body: CreateEnvironmentParams
) -> dict[str, Any]:
    env = environments_service.create_environment(ctx, principal, body.name)
    return {"environment": environment_json(env)}


@router.get("/environments/{name}", **scoped("envs:read"))
def describe_environment(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    summary = environments_service.describe_environment(ctx, principal, name)
    return {
        "environment": environment_json(summary.environment),
        "number_catalogs": summary.number_catalogs,
        "number_schedules": summary.number_schedules,
        "number_secrets": summary.number_secrets,
    }


@router.put("/environments/{name}", **scoped("envs:update"))
def rename_environment(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateEnvironmentParams
) -> dict[str, Any]:
    env = environments_service.rename_environment(ctx, principal, name, body.new_name)
    return {"environment": environment_json(env)}


@router.delete("/environments/{name}", **scoped("envs"))
def delete_environment(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    deleted = environments_service.delete_environment(ctx, principal, name)
    # `deleted` is not in the contract (clients ignore extra keys): what went with it.
    return {"environment": environment_json(deleted.environment), "deleted": deleted.counts}
