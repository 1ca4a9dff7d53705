"""/v1/api-keys: list, create (shown once), delete."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.services import api_keys as api_keys_service
from tower.server.services.api_keys import MAX_NAME_LENGTH, ApiKeyView

router = APIRouter(prefix="/v1", tags=["api-keys"])


class CreateApiKeyParams(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    expires_at: datetime | None = None
    #: space- (or comma-) separated; absent or null = every scope of the creator
    scopes: str | None = None
    team: str | None = None


class DeleteApiKeyParams(BaseModel):
    #: the masked identifier a list shows, or the full key
    identifier: str = Field(min_length=1, max_length=1024)


def api_key_json(view: ApiKeyView) -> dict[str, Any]:
    row = view.row
    return {
        "name": row.name,
        # The official models have no other field for the key, so the one answer that
        # may show it (creation) puts it here; every other answer carries the mask.
        "identifier": view.key or row.identifier,
        "created_at": serializers.ts(row.created_at),
        "last_used_at": serializers.ts(row.last_used_at),
        "expires_at": serializers.ts(row.expires_at),
        "scopes": row.scopes,
        "owner": {
            "name": view.owner_name,
            "type": "service_account" if row.service_account_id else "user",
        },
    }


@router.get("/api-keys", **scoped("api_keys:read"))
def list_api_keys(
    ctx: ContextDep,
    principal: PrincipalDep,
    page: int = Query(0, ge=0),
    page_size: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    views = api_keys_service.list_api_keys(ctx, principal)
    selected = serializers.paginate(views, page, page_size)
    return {
        "api_keys": [api_key_json(view) for view in selected],
        "pages": serializers.pages(page, page_size, len(views)),
    }


@router.post("/api-keys", status_code=201, **scoped("api_keys:create"))
def create_api_key(
    ctx: ContextDep, principal: PrincipalDep, body: CreateApiKeyParams
) -> dict[str, Any]:
    view = api_keys_service.create_api_key(
        ctx,
        principal,
        name=body.name,
        expires_at=body.expires_at,
        scope_text=body.scopes,
        team=body.team,
    )
    # `key` repeats the full key under a name that says what it is, for our own clients.
    return {"api_key": {**api_key_json(view), "key": view.key}}


@router.delete("/api-keys", **scoped("api_keys:delete"))
def delete_api_key(
    ctx: ContextDep, principal: PrincipalDep, body: DeleteApiKeyParams
) -> dict[str, Any]:
    view = api_keys_service.delete_api_key(ctx, principal, body.identifier)
    return {"api_key": api_key_json(view)}
