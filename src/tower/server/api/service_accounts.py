"""/v1/service-accounts: non-human members of the account and their API keys (admins only)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.api_keys import DeleteApiKeyParams, api_key_json
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.services import service_accounts as service
from tower.server.services.api_keys import MAX_NAME_LENGTH
from tower.server.services.service_accounts import MANAGE_SCOPE, ServiceAccountView

router = APIRouter(prefix="/v1", tags=["service-accounts"])


class CreateServiceAccountParams(BaseModel):
    name: str = Field(min_length=1, max_length=service.MAX_NAME_LENGTH)
    role: str = Field(min_length=1, max_length=32)
    #: JSON text
    metadata: str | None = Field(default=None, max_length=20_000)


class UpdateServiceAccountParams(BaseModel):
    name: str | None = Field(default=None, max_length=service.MAX_NAME_LENGTH)
    role: str | None = Field(default=None, max_length=32)
    metadata: str | None = Field(default=None, max_length=20_000)


class CreateServiceAccountApiKeyParams(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    expires_at: datetime | None = None
    #: space-separated; absent = whatever the service account's role allows
    scopes: str | None = None


def service_account_json(view: ServiceAccountView) -> dict[str, Any]:
    row = view.row
    return {
        "id": str(row.id),
        "name": row.name,
        "role": row.role,
        "created_at": serializers.ts(row.created_at),
        "updated_at": serializers.ts(row.updated_at),
        "creator": {"name": view.creator_name, "type": "user"},
        "metadata": json.loads(row.metadata_json) if row.metadata_json else None,
    }


@router.get("/service-accounts", **scoped(MANAGE_SCOPE))
def list_service_accounts(
    ctx: ContextDep,
    principal: PrincipalDep,
    page: int = Query(0, ge=0),
    page_size: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    views = service.list_all(ctx, principal)
    selected = serializers.paginate(views, page, page_size)
    return {
        "service_accounts": [service_account_json(view) for view in selected],
        "pages": serializers.pages(page, page_size, len(views)),
    }


@router.post("/service-accounts", status_code=201, **scoped(MANAGE_SCOPE))
def create_service_account(
    ctx: ContextDep, principal: PrincipalDep, body: CreateServiceAccountParams
) -> dict[str, Any]:
    view = service.create(ctx, principal, name=body.name, role=body.role, metadata=body.metadata)
    return {"service_account": service_account_json(view)}


@router.get("/service-accounts/{id_or_name}", **scoped(MANAGE_SCOPE))
def describe_service_account(
    ctx: ContextDep, principal: PrincipalDep, id_or_name: str
) -> dict[str, Any]:
    return {"service_account": service_account_json(service.describe(ctx, principal, id_or_name))}


@router.patch("/service-accounts/{id_or_name}", **scoped(MANAGE_SCOPE))
def update_service_account(
    ctx: ContextDep, principal: PrincipalDep, id_or_name: str, body: UpdateServiceAccountParams
) -> dict[str, Any]:
    view = service.update(
        ctx, principal, id_or_name, name=body.name, role=body.role, metadata=body.metadata
    )
    return {"service_account": service_account_json(view)}


@router.delete("/service-accounts/{id_or_name}", status_code=204, **scoped(MANAGE_SCOPE))
def delete_service_account(ctx: ContextDep, principal: PrincipalDep, id_or_name: str) -> Response:
    service.delete(ctx, principal, id_or_name)
    return Response(status_code=204)


@router.get("/service-accounts/{id_or_name}/api-keys", **scoped(MANAGE_SCOPE))
def list_service_account_api_keys(
    ctx: ContextDep,
    principal: PrincipalDep,
    id_or_name: str,
    page: int = Query(0, ge=0),
    page_size: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    views = service.list_keys(ctx, principal, id_or_name)
    selected = serializers.paginate(views, page, page_size)
    return {
        "api_keys": [api_key_json(view) for view in selected],
        "pages": serializers.pages(page, page_size, len(views)),
    }


@router.post("/service-accounts/{id_or_name}/api-keys", status_code=201, **scoped(MANAGE_SCOPE))
def create_service_account_api_key(
    ctx: ContextDep,
    principal: PrincipalDep,
    id_or_name: str,
    body: CreateServiceAccountApiKeyParams,
) -> dict[str, Any]:
    view = service.create_key(
        ctx,
        principal,
        id_or_name,
        name=body.name,
        scope_text=body.scopes,
        expires_at=body.expires_at,
    )
    return {"api_key": {**api_key_json(view), "key": view.key}}


@router.delete("/service-accounts/{id_or_name}/api-keys", status_code=204, **scoped(MANAGE_SCOPE))
def delete_service_account_api_key(
    ctx: ContextDep, principal: PrincipalDep, id_or_name: str, body: DeleteApiKeyParams
) -> Response:
    service.delete_key(ctx, principal, id_or_name, body.identifier)
    return Response(status_code=204)
