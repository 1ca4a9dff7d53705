"""The scope matrix, generated from the OpenAPI document so new routes are covered unasked.

Every route of the public API declares its scope (`x-tower-scope`; "" = any
authenticated caller). For each route: a key holding only an unrelated scope gets
403 naming the missing scope; a key holding exactly the declared scope, or its
parent (`apps` for `apps:run`), is let through (whatever the route then answers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.api.conftest import ApiServer
from tower.core import scopes
from tower.server.services import accounts
from tower.server.store import models

SCOPE_EXTENSION = "x-tower-scope"
#: routes anyone may call (logging in, signing up): they need no scope and carry none
PUBLIC_EXTENSION = "x-tower-public"
#: routes outside the scope model: health, and the runner protocol (runner tokens)
UNSCOPED = re.compile(r"^/healthz$|^/v1/runner/")
PATH_VALUES = {"name": "nope", "number": "1", "version": "v1", "environment": "default"}


def _operations(api_server: ApiServer) -> list[tuple[str, str, str]]:
    spec = httpx.get(f"{api_server.url}/v1/openapi.json").json()
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if UNSCOPED.search(path) or operation.get(PUBLIC_EXTENSION):
                assert SCOPE_EXTENSION not in operation, f"{method} {path} should not be scoped"
                continue
            assert SCOPE_EXTENSION in operation, f"{method.upper()} {path} declares no scope"
            found.append((method.upper(), path, operation[SCOPE_EXTENSION]))
    return found


def _key_with(api_server: ApiServer, held: str) -> str:
    with api_server.ctx.sessions.begin() as session:
        admin = session.query(models.User).filter_by(email=api_server.ctx.settings.admin_email)
        key = accounts.create_api_key(session, user=admin.one(), name=f"only {held}")
        session.flush()
        session.execute(
            update(models.ApiKey).where(models.ApiKey.name == f"only {held}").values(scopes=held)
        )
    return key


def _call(client: httpx.Client, key: str, method: str, path: str) -> httpx.Response:
    url = re.sub(r"\{(\w+)(:path)?\}", lambda m: PATH_VALUES.get(m.group(1), "x"), path)
    body: Any = {} if method in ("POST", "PUT", "PATCH", "DELETE") else None
    return client.request(method, url, json=body, headers={"X-API-Key": key})


@pytest.fixture
def client(api_server: ApiServer) -> Iterator[httpx.Client]:
    # One client for every call: building one (its TLS context) costs more than a request.
    with httpx.Client(base_url=api_server.url, timeout=30) as shared:
        yield shared


def _unrelated_to(scope: str) -> str:
    """A valid scope that grants nothing `scope` needs."""
    return next(s for s in ("webhooks:read", "teams:read") if not scopes.grants(s, scope))


def test_every_route_refuses_a_key_without_its_scope_and_admits_one_with_it(
    api_server: ApiServer, client: httpx.Client
) -> None:
    operations = _operations(api_server)
    assert len(operations) > 30  # the document really was read
    keys: dict[str, str] = {}

    def key(held: str) -> str:
        if held not in keys:
            keys[held] = _key_with(api_server, held)
        return keys[held]

    for method, path, scope in operations:
        if not scope:
            continue  # any authenticated caller: covered by the check below
        refused = _call(client, key(_unrelated_to(scope)), method, path)
        assert refused.status_code == 403, (method, path, refused.text)
        assert f"`{scope}`" in refused.json()["detail"], (method, path, refused.text)
        for held in {scope, scope.split(":")[0]}:
            admitted = _call(client, key(held), method, path)
            assert admitted.status_code != 403, (method, path, held, admitted.text)
            assert admitted.status_code < 500, (method, path, held, admitted.text)


def test_routes_open_to_any_caller_still_need_a_credential(
    api_server: ApiServer, client: httpx.Client
) -> None:
    open_routes = [(m, p) for m, p, scope in _operations(api_server) if not scope]
    assert open_routes
    for method, path in open_routes:
        assert _call(client, "", method, path).status_code == 401, (method, path)


@pytest.mark.parametrize(
    ("held", "required", "allowed"),
    [
        ("apps", "apps:run", True),
        ("apps:run", "apps", False),
        ("apps:read", "apps:run", False),
        ("runners", "runners:credentials:create", True),
        ("app", "apps:read", False),
    ],
)
def test_the_scope_hierarchy(held: str, required: str, allowed: bool) -> None:
    assert scopes.allows({held}, required) is allowed
    assert scopes.allows(None, required)
