"""/v1/catalogs and /v1/storage/catalogs/default: Iceberg catalogs per environment.

Property values arrive encrypted to the server's key (GET /v1/secrets/key) and leave
only encrypted to a key the caller sends (export); no response carries a plaintext.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.api.scoped_params import (
    ClientPreview,
    EncryptedValue,
    ExportParams,
    ScopeQueryDep,
)
from tower.server.services import catalogs as catalogs_service
from tower.server.services.accounts import DEFAULT_ENVIRONMENT
from tower.server.services.catalogs import (
    CatalogSelection,
    CatalogView,
    ExportedCatalog,
    PropertyInput,
)

router = APIRouter(prefix="/v1", tags=["catalogs"])

MAX_PROPERTIES = 100


class CatalogPropertyParams(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    encrypted_value: EncryptedValue
    preview: ClientPreview = None
    environment_variable: str | None = Field(
        default=None,
        max_length=256,
        description="Inject the value as this variable instead of "
        "PYICEBERG_CATALOG__<NAME>__<PROPERTY>.",
    )


class CreateCatalogParams(BaseModel):
    name: str = Field(description="The slug apps load the catalog by.")
    environment: str = DEFAULT_ENVIRONMENT
    type: str
    properties: list[CatalogPropertyParams] = Field(default_factory=list, max_length=MAX_PROPERTIES)


class UpdateCatalogParams(BaseModel):
    environment: str = DEFAULT_ENVIRONMENT
    properties: list[CatalogPropertyParams] = Field(max_length=MAX_PROPERTIES)


class VendCredentialsParams(BaseModel):
    mode: Literal["read", "read-write"] | None = None


def _inputs(params: list[CatalogPropertyParams]) -> list[PropertyInput]:
    return [
        PropertyInput(
            name=p.name,
            encrypted_value=p.encrypted_value,
            environment_variable=p.environment_variable,
        )
        for p in params
    ]


def catalog_json(view: CatalogView) -> dict[str, Any]:
    """The contract's Catalog: the SDK reads `CreatedAt`, other clients `created_at`."""
    created = serializers.ts(view.created_at)
    return {
        "CreatedAt": created,
        "created_at": created,
        "updated_at": serializers.ts(view.updated_at),
        "environment": view.environment,
        "name": view.name,
        "slug": view.name,
        "type": view.type,
        "properties": [
            {
                "name": p.name,
                "preview": p.preview,
                "environment_variable": p.environment_variable,
            }
            for p in view.properties
        ],
    }


def exported_catalog_json(item: ExportedCatalog) -> dict[str, Any]:
    created = serializers.ts(item.created_at)
    return {
        "CreatedAt": created,
        "created_at": created,
        "environment": item.environment,
        "name": item.name,
        "slug": item.name,
        "type": item.type,
        "properties": [
            {
                "name": p.name,
                "preview": p.preview,
                "environment_variable": p.environment_variable,
                "encrypted_value": p.encrypted_value,
                "derived": p.derived,
            }
            for p in item.properties
        ],
    }


@router.get("/catalogs", **scoped("catalogs:read"))
def list_catalogs(
    ctx: ContextDep,
    principal: PrincipalDep,
    query: ScopeQueryDep,
    type_: Annotated[str | None, Query(alias="type")] = None,
) -> dict[str, Any]:
    """What a run in `environment` sees (inherited `default` catalogs included), or with
    `all=true` every catalog of every environment; sorted by name, then environment."""
    selection = CatalogSelection(query.environment, query.all_environments, type=type_ or None)
    views = catalogs_service.list_catalogs(ctx, principal, selection)
    return query.answer("catalogs", views, catalog_json)


@router.post("/catalogs", **scoped("catalogs:create"))
def create_catalog(
    ctx: ContextDep, principal: PrincipalDep, body: CreateCatalogParams
) -> dict[str, Any]:
    view = catalogs_service.create_catalog(
        ctx,
        principal,
        name=body.name,
        environment=body.environment,
        type_=body.type,
        properties=_inputs(body.properties),
    )
    return {"catalog": catalog_json(view)}


@router.post("/catalogs/export", **scoped("catalogs:export"))
def export_catalogs(ctx: ContextDep, principal: PrincipalDep, body: ExportParams) -> dict[str, Any]:
    """The selected catalogs with each property encrypted to `public_key`, derived
    pyiceberg properties included (marked `derived`)."""
    selection = CatalogSelection(body.environment, body.all_environments)
    items, total = catalogs_service.export_catalogs(
        ctx, principal, selection, body.public_key, page=body.page, page_size=body.page_size
    )
    return body.answer("catalogs", items, total, exported_catalog_json)


@router.get("/catalogs/{name}", **scoped("catalogs:read"))
def describe_catalog(
    ctx: ContextDep, principal: PrincipalDep, name: str, environment: str = DEFAULT_ENVIRONMENT
) -> dict[str, Any]:
    view = catalogs_service.describe_catalog(ctx, principal, name, environment)
    return {"catalog": catalog_json(view)}


@router.put("/catalogs/{name}", **scoped("catalogs:update"))
def update_catalog(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateCatalogParams
) -> dict[str, Any]:
    view = catalogs_service.update_catalog(
        ctx, principal, name, body.environment, _inputs(body.properties)
    )
    return {"catalog": catalog_json(view)}


@router.delete("/catalogs/{name}", status_code=204, **scoped("catalogs:delete"))
def delete_catalog(
    ctx: ContextDep, principal: PrincipalDep, name: str, environment: str = DEFAULT_ENVIRONMENT
) -> Response:
    catalogs_service.delete_catalog(ctx, principal, name, environment)
    return Response(status_code=204)


@router.post("/catalogs/{name}/credentials", response_model=None, **scoped("catalogs:read"))
def vend_catalog_credentials(
    ctx: ContextDep,
    principal: PrincipalDep,
    name: str,
    environment: str = DEFAULT_ENVIRONMENT,
    body: VendCredentialsParams | None = None,
) -> NoReturn:
    """Always a clear 404/422: this server hosts no `tower-catalog` catalogs."""
    catalogs_service.vend_credentials(ctx, principal, name, environment)


@router.get("/storage/catalogs/default", **scoped("catalogs:read"))
def describe_default_catalog(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    """The account's built-in `default` catalog, provisioned on the first call."""
    return {"catalog": catalog_json(catalogs_service.default_catalog(ctx, principal))}
