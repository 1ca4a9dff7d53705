"""Request dependencies: the server context and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from tower.server.services import auth
from tower.server.services.context import Principal, RunnerPrincipal, ServerContext

OFFICIAL_CLI_USER_AGENT = "Tower CLI"


def get_context(request: Request) -> ServerContext:
    return request.app.state.context


ContextDep = Annotated[ServerContext, Depends(get_context)]


def _bearer(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def get_principal(
    ctx: ContextDep,
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    return auth.authenticate(ctx, api_key=x_api_key, bearer=_bearer(authorization))


def get_runner_principal(
    ctx: ContextDep, authorization: Annotated[str | None, Header()] = None
) -> RunnerPrincipal:
    return auth.authenticate_runner(ctx, _bearer(authorization))


def is_official_cli(request: Request) -> bool:
    return request.headers.get("user-agent", "") == OFFICIAL_CLI_USER_AGENT


PrincipalDep = Annotated[Principal, Depends(get_principal)]
RunnerDep = Annotated[RunnerPrincipal, Depends(get_runner_principal)]
