"""/v1/secrets: the server key, create, update, delete, list, export, environments.

Values arrive encrypted to the server's key and leave only encrypted to a key the
caller sends (export); no response here ever carries a plaintext value.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from tower.core import crypto, errors
from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep
from tower.server.services import secrets as secrets_service
from tower.server.services import vault
from tower.server.services.accounts import DEFAULT_ENVIRONMENT
from tower.server.services.secrets import ExportedSecret, SecretSelection, SecretView

router = APIRouter(prefix="/v1", tags=["secrets"])

#: base64 of the hybrid format: room for values of several hundred KiB (a JSON key file)
MAX_ENCRYPTED_VALUE_CHARS = 1024 * 1024
KEY_FORMATS = ("pkcs1", "spki")

# The official API spec's defaults (its generated SDK sends them); the CLI sends page=0.
PageQuery = Annotated[int, Query(ge=0, description="1-based page; 0 returns every secret.")]
PageSizeQuery = Annotated[int, Query(ge=1, le=1000)]
EncryptedValue = Annotated[
    str,
    Field(
        max_length=MAX_ENCRYPTED_VALUE_CHARS,
        description="The value encrypted to GET /v1/secrets/key (RSA-OAEP + AES-256-GCM, base64).",
    ),
]
#: clients compute a preview too; the server computes its own from the plaintext
ClientPreview = Annotated[str | None, Field(default=None, description="Ignored.")]


class CreateSecretParams(BaseModel):
    name: str
    environment: str = DEFAULT_ENVIRONMENT
    encrypted_value: EncryptedValue
    preview: ClientPreview = None


class UpdateSecretParams(BaseModel):
    environment: str = DEFAULT_ENVIRONMENT
    encrypted_value: EncryptedValue
    preview: ClientPreview = None


class ExportSecretsParams(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    public_key: str = Field(description="RSA public key PEM (SPKI or PKCS#1) to encrypt to.")
    environment: str = DEFAULT_ENVIRONMENT
    all_environments: bool = Field(default=False, alias="all")
    page: int = Field(default=1, ge=0)
    page_size: int = Field(default=20, ge=1, le=1000)


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


@router.get("/secrets/key")
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


@router.get("/secrets/environments")
def list_secret_environments(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"environments": secrets_service.secret_environments(ctx, principal)}


@router.get("/secrets")
def list_secrets(
    ctx: ContextDep,
    principal: PrincipalDep,
    page: PageQuery = 1,
    page_size: PageSizeQuery = 20,
    environment: str = DEFAULT_ENVIRONMENT,
    all_environments: Annotated[bool, Query(alias="all")] = False,
) -> dict[str, Any]:
    """What a run in `environment` gets (inherited `default` secrets included), or with
    `all=true` every secret of every environment; sorted by name, then environment."""
    selection = SecretSelection(environment=environment, all_environments=all_environments)
    views = secrets_service.list_secrets(ctx, principal, selection)
    return {
        "secrets": [secret_json(v) for v in serializers.paginate(views, page, page_size)],
        "pages": serializers.pages(page, page_size, len(views)),
    }


@router.post("/secrets", status_code=201)
def create_secret(
    ctx: ContextDep, principal: PrincipalDep, body: CreateSecretParams
) -> dict[str, Any]:
    view = secrets_service.create_secret(
        ctx, principal, body.name, body.environment, body.encrypted_value
    )
    return {"secret": secret_json(view)}


@router.post("/secrets/export")
def export_secrets(
    ctx: ContextDep, principal: PrincipalDep, body: ExportSecretsParams
) -> dict[str, Any]:
    """The selected secrets with each value encrypted to `public_key` (never plaintext)."""
    selection = SecretSelection(
        environment=body.environment, all_environments=body.all_environments
    )
    items, total = secrets_service.export_secrets(
        ctx, principal, selection, body.public_key, page=body.page, page_size=body.page_size
    )
    return {
        "secrets": [exported_secret_json(item) for item in items],
        "pages": serializers.pages(body.page, body.page_size, total),
    }


# `{name:path}`: the SDK sends `ENV/NAME` as one %2F-encoded segment, which arrives
# decoded; see split_qualified_name.
@router.put("/secrets/{name:path}")
def update_secret(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateSecretParams
) -> dict[str, Any]:
    secret_name, environment = secrets_service.split_qualified_name(name, body.environment)
    view = secrets_service.update_secret(
        ctx, principal, secret_name, environment, body.encrypted_value
    )
    return {"secret": secret_json(view)}


@router.delete("/secrets/{name:path}")
def delete_secret(
    ctx: ContextDep, principal: PrincipalDep, name: str, environment: str | None = None
) -> dict[str, Any]:
    secret_name, env = secrets_service.split_qualified_name(name, environment)
    return {"secret": secret_json(secrets_service.delete_secret(ctx, principal, secret_name, env))}
