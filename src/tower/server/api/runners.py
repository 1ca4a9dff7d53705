"""/v1/runners: the account's runners, their credentials and the self-hosted-only mode.

(The protocol runners themselves speak is /v1/runner, in `api.runner`.)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.dispatch.notifier import QUEUE_TOPIC
from tower.server.services import runner_fleet
from tower.server.services import runners as runners_service
from tower.server.services.context import ServerContext
from tower.server.services.runner_credentials import IssuedCredential
from tower.server.services.runner_fleet import MAX_CREDENTIAL_NAME, RunnerView

router = APIRouter(prefix="/v1", tags=["runners"])


class CredentialParams(BaseModel):
    #: shown in `tower runners list` once a runner registers with it
    name: str | None = Field(default=None, max_length=MAX_CREDENTIAL_NAME)
    #: the token's lifetime; absent = until revoked
    ttl_days: int | None = Field(default=None, ge=1, le=3650)


class RunnerSettingsParams(BaseModel):
    self_hosted_only: bool


def runner_json(view: RunnerView) -> dict[str, Any]:
    row = view.row
    return {
        "id": str(row.id),
        "name": row.name,
        "host": row.hostname,
        "version": row.version,
        "environment": row.environment,
        "status": "online" if view.online else "offline",
        "pool": "shared" if view.shared else "account",
        "max_concurrent_apps": row.capacity,
        "num_runs": view.running,
        "created_at": serializers.ts(row.created_at),
        "last_health_check_at": serializers.ts(row.last_heartbeat_at),
    }


@router.get("/runners", **scoped("runners:read"))
def list_runners(
    ctx: ContextDep,
    principal: PrincipalDep,
    page: int = Query(0, ge=0),
    page_size: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    views = runner_fleet.list_runners(ctx, principal)
    return {
        "runners": [runner_json(view) for view in serializers.paginate(views, page, page_size)],
        "pages": serializers.pages(page, page_size, len(views)),
    }


@router.post("/runners/credentials", status_code=201, **scoped("runners:credentials:create"))
def generate_credentials(
    ctx: ContextDep, principal: PrincipalDep, body: CredentialParams | None = None
) -> dict[str, Any]:
    params = body or CredentialParams()
    ttl = timedelta(days=params.ttl_days) if params.ttl_days else None
    minted = runner_fleet.mint_credential(ctx, principal, name=params.name, ttl=ttl)
    return {"credentials": credentials_json(ctx, minted)}


def credentials_json(ctx: ServerContext, issued: IssuedCredential) -> dict[str, Any]:
    """A runner credential as minted or rotated: token, client certificate and key are
    shown only in this answer (only the token's hash and the certificate's serial are
    stored)."""
    return {
        "name": issued.name,
        "token": issued.token,
        # Under mutual TLS, the runner listener; else the API itself.
        "runner_service_url": ctx.settings.resolved_runner_url,
        "expires_at": serializers.ts(issued.expires_at),
        # Pin it with TOWER_RUNNER_PACKAGE_KEY: packages signed by anything else fail.
        "package_signing_key": runners_service.package_verify_key(ctx),
        "certificate": issued.certificate.certificate_pem,
        "private_key": issued.certificate.private_key_pem,
        "root_ca": issued.root_ca,
    }


@router.get("/runners/settings", **scoped("runners:read"))
def runner_settings(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"self_hosted_only": runner_fleet.self_hosted_only(ctx, principal)}


@router.put("/runners/settings", **scoped("runners"))
def update_runner_settings(
    ctx: ContextDep, principal: PrincipalDep, body: RunnerSettingsParams
) -> dict[str, Any]:
    enabled = runner_fleet.set_self_hosted_only(ctx, principal, body.self_hosted_only)
    # Runners waiting in a long poll re-check the queue under the new rule.
    ctx.notifier.notify(QUEUE_TOPIC)
    return {"self_hosted_only": enabled}
