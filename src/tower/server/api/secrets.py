"""/v1/secrets: the server key, create, update, delete, list, export, environments.

Values arrive encrypted to the server's key and leave only encrypted to a key the
caller sends (export); no response here ever carries a plaintext value.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from tower.core import crypto, errors
from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.api.scoped_params import (
    ClientPreview,
    EncryptedValue,
    ExportParams,
    ScopeQueryDep,
)
from tower.server.services import secrets as secrets_service
from tower.server.services import vault
from tower.server.services.accounts import DEFAULT_ENVIRONMENT
from tower.server.services.secrets import ExportedSecret, SecretSelection, SecretView

router = APIRouter(prefix="/v1", tags=["secrets"])

KEY_FORMATS = ("pkcs1", "spki")


class CreateSecretParams(BaseModel):
    name: str
    environment: str = DEFAULT_ENVIRONMENT
    encrypted_value: EncryptedValue
    preview: ClientPreview = None


class UpdateSecretParams(BaseModel):
    environment: str = DEFAULT_ENVIRONMENT
    encrypted_value: EncryptedValue
    preview: ClientPreview = None


def secret_json(view: SecretView) -> dict[str, Any]:
    return {
        "name": view.name,
        "environment": view.environment,
        "preview": view.preview,
        "created_at": serializers.ts(view.created_at),
    }


def exported_secret_json(item: ExportedSecret) -> dict[str, Any]:
    return {
        "name": item.name,
        "environment": item.environment,
        "created_at": serializers.ts(item.created_at),
        "encrypted_value": item.encrypted_value,
    }


@router.get("/secrets/key", **scoped(None))
def describe_secrets_key(
    ctx: ContextDep,
    principal: PrincipalDep,
    key_format: Annotated[str, Query(alias="format")] = "pkcs1",
) -> dict[str, Any]:
    """The server's public key to encrypt secret values to; PKCS#1 PEM unless asked."""
    if key_format not in KEY_FORMATS:
        raise errors.InvalidInput(
            f"Key format {key_format!r} is not supported: use 'pkcs1' (the default, "
            "'-----BEGIN RSA PUBLIC KEY-----') or 'spki' ('-----BEGIN PUBLIC KEY-----').",
            location="query.format",
            value=key_format,
        )
    if key_format == "spki":
        return {"public_key": crypto.public_key_pem_spki(vault.server_private_key(ctx))}
    return {"public_key": vault.server_public_key_pem(ctx)}


@router.get("/secrets/environments", **scoped("secrets:read"))
def list_secret_environments(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"environments": secrets_service.secret_environments(ctx, principal)}


@router.get("/secrets", **scoped("secrets:read"))
def list_secrets(ctx: ContextDep, principal: PrincipalDep, query: ScopeQueryDep) -> dict[str, Any]:
    """What a run in `environment` gets (inherited `default` secrets included), or with
    `all=true` every secret of every environment; sorted by name, then environment."""
    selection = SecretSelection(query.environment, query.all_environments)
    views = secrets_service.list_secrets(ctx, principal, selection)
    return query.answer("secrets", views, secret_json)


@router.post("/secrets", status_code=201, **scoped("secrets:create"))
def create_secret(
    ctx: ContextDep, principal: PrincipalDep, body: CreateSecretParams
) -> dict[str, Any]:
    view = secrets_service.create_secret(
        ctx, principal, body.name, body.environment, body.encrypted_value
    )
    return {"secret": secret_json(view)}


@router.post("/secrets/export", **scoped("secrets"))
def export_secrets(ctx: ContextDep, principal: PrincipalDep, body: ExportParams) -> dict[str, Any]:
    """The selected secrets with each value encrypted to `public_key` (never plaintext)."""
    selection = SecretSelection(body.environment, body.all_environments)
    items, total = secrets_service.export_secrets(
        ctx, principal, selection, body.public_key, page=body.page, page_size=body.page_size
    )
    return body.answer("secrets", items, total, exported_secret_json)


# `{name:path}`: the SDK sends `ENV/NAME` as one %2F-encoded segment, which arrives
# decoded; see split_qualified_name.
@router.put("/secrets/{name:path}", **scoped("secrets:update"))
def update_secret(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateSecretParams
) -> dict[str, Any]:
    secret_name, environment = secrets_service.split_qualified_name(name, body.environment)
    view = secrets_service.update_secret(
        ctx, principal, secret_name, environment, body.encrypted_value
    )
    return {"secret": secret_json(view)}


@router.delete("/secrets/{name:path}", **scoped("secrets:delete"))
def delete_secret(
    ctx: ContextDep, principal: PrincipalDep, name: str, environment: str | None = None
) -> dict[str, Any]:
    secret_name, env = secrets_service.split_qualified_name(name, environment)
    return {"secret": secret_json(secrets_service.delete_secret(ctx, principal, secret_name, env))}
