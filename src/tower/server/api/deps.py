"""Request dependencies: the server context and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from tower.server.services import access, auth
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

#: the OpenAPI extension naming each route's scope (read by the scope-matrix test)
SCOPE_EXTENSION = "x-tower-scope"


def _require(scope: str | None) -> Callable[[Principal], None]:
    def check(principal: PrincipalDep) -> None:
        access.authorize(principal, scope)

    return check


def scoped(scope: str | None) -> dict[str, Any]:
    """Route decorator arguments declaring the scope the route needs:
    `@router.get("/apps", **scoped("apps:read"))`. None = any authenticated caller."""
    return {
        "dependencies": [Depends(_require(scope))],
        "openapi_extra": {SCOPE_EXTENSION: scope or ""},
    }


RunnerDep = Annotated[RunnerPrincipal, Depends(get_runner_principal)]
