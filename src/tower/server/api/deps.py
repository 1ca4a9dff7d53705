"""Request dependencies: the server context and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from tower.core import errors
from tower.server import tls
from tower.server.services import access, auth
from tower.server.services.context import Principal, RunnerPrincipal, ServerContext

OFFICIAL_CLI_USER_AGENT = "Tower CLI"


# Dependencies that only read memory are `async`: FastAPI runs a sync dependency in
# its thread pool, a hop that costs more than the function itself on every request.


async def get_context(request: Request) -> ServerContext:
    return request.app.state.context


ContextDep = Annotated[ServerContext, Depends(get_context)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, if that is what it holds."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


async def get_principal(
    ctx: ContextDep,
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal:
    bearer = bearer_token(authorization)
    # A key seen within the last second answers from memory; else the database, in
    # a worker thread (see services.credential_cache for how revocation is honoured).
    known = auth.recently_authenticated(ctx, api_key=x_api_key, bearer=bearer)
    if known is not None:
        return known
    return await run_in_threadpool(auth.authenticate, ctx, api_key=x_api_key, bearer=bearer)


async def get_runner_principal(
    request: Request, ctx: ContextDep, authorization: Annotated[str | None, Header()] = None
) -> RunnerPrincipal:
    bearer = bearer_token(authorization)
    certificate = tls.client_certificate(request.scope)
    known = auth.recently_authenticated_runner(ctx, bearer, certificate)
    if known is not None:
        return known
    return await run_in_threadpool(auth.authenticate_runner, ctx, bearer, certificate)


def is_official_cli(request: Request) -> bool:
    return request.headers.get("user-agent", "") == OFFICIAL_CLI_USER_AGENT


PrincipalDep = Annotated[Principal, Depends(get_principal)]

#: the OpenAPI extension naming each route's scope (read by the scope-matrix test)
SCOPE_EXTENSION = "x-tower-scope"


def _require(scope: str | None) -> Callable[[Principal], None]:
    async def check(principal: PrincipalDep) -> None:
        access.authorize(principal, scope)

    return check


#: the OpenAPI extension marking a path whose placeholders name something every account
#: shares (a feature flag), not an object of the caller's account (read by tenancy tests)
SHARED_EXTENSION = "x-tower-shared"


def scoped(scope: str | None, *, shared: bool = False) -> dict[str, Any]:
    """Route decorator arguments declaring the scope the route needs:
    `@router.get("/apps", **scoped("apps:read"))`. None = any authenticated caller.
    `shared`: the path names something that belongs to no account (see SHARED_EXTENSION)."""
    extra: dict[str, Any] = {SCOPE_EXTENSION: scope or ""}
    if shared:
        extra[SHARED_EXTENSION] = True
    return {"dependencies": [Depends(_require(scope))], "openapi_extra": extra}


#: the OpenAPI extension marking a route that needs no credential (login, sign-up, keys)
PUBLIC_EXTENSION = "x-tower-public"


def public() -> dict[str, Any]:
    """Route decorator arguments for a route anyone may call, e.g. logging in. Such a
    route ignores any credential sent along (the official CLI sends a stale token
    to the login endpoints) unless it reads one itself via `OptionalPrincipalDep`."""
    return {"openapi_extra": {PUBLIC_EXTENSION: True}}


def get_optional_principal(
    ctx: ContextDep,
    x_api_key: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Principal | None:
    """The caller when valid credentials came along; None when none did or they are stale."""
    try:
        return auth.authenticate(ctx, api_key=x_api_key, bearer=bearer_token(authorization))
    except errors.Unauthenticated:
        return None


OptionalPrincipalDep = Annotated[Principal | None, Depends(get_optional_principal)]

RunnerDep = Annotated[RunnerPrincipal, Depends(get_runner_principal)]


#: older name, kept for the routes that import it
_bearer = bearer_token
