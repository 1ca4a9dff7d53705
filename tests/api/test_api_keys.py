"""/v1/api-keys: minting (shown once), listing, deleting, expiry, scopes and tenancy."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from tests.api.conftest import ApiServer
from tests.api.helpers import deploy, make_package
from tower.core import crypto
from tower.server.store import models
from tower.server.store.types import utcnow


def _mint(api_server: ApiServer, api_key: str | None = None, **body: Any) -> httpx.Response:
    with api_server.client(api_key) as client:
        return client.post("/api-keys", json={"name": "minted", **body})


def _mint_key(api_server: ApiServer, api_key: str | None = None, **body: Any) -> str:
    answer = _mint(api_server, api_key, **body)
    assert answer.status_code == 201, answer.text
    return answer.json()["api_key"]["key"]


def _delete(api_server: ApiServer, identifier: str, api_key: str | None = None) -> httpx.Response:
    with api_server.client(api_key) as client:
        return client.request("DELETE", "/api-keys", json={"identifier": identifier})


def _list(api_server: ApiServer, api_key: str | None = None, **params: Any) -> httpx.Response:
    with api_server.client(api_key) as client:
        return client.get("/api-keys", params=params)


def _status_with(api_server: ApiServer, key: str) -> int:
    with api_server.client(key) as client:
        return client.get("/api-keys").status_code


# --- minting and using -------------------------------------------------------------------


def test_a_minted_key_is_shown_once_and_works_in_either_header(api_server: ApiServer) -> None:
    answer = _mint(api_server, name="ci", scopes="apps:read api_keys:read")
    assert answer.status_code == 201
    body = answer.json()["api_key"]
    key = body["key"]
    assert key.startswith("sk-") and body["identifier"] == key
    assert body["name"] == "ci"
    assert body["scopes"] == "api_keys:read apps:read"
    assert body["expires_at"] is None and body["last_used_at"] is None
    assert body["owner"] == {"name": api_server.ctx.settings.admin_email, "type": "user"}
    assert body["created_at"].endswith("Z")

    with api_server.client(key) as client:
        assert client.get("/apps").status_code == 200
    bearer = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"{api_server.url}/v1", headers=bearer) as client:
        assert client.get("/apps").status_code == 200


def test_a_list_never_shows_a_key_or_its_hash(api_server: ApiServer) -> None:
    key = _mint_key(api_server, name="secret-one")
    answer = _list(api_server)
    assert answer.status_code == 200
    listed = answer.json()
    assert key not in answer.text and crypto.hash_token(key) not in answer.text
    names = [item["name"] for item in listed["api_keys"]]
    assert names == ["admin", "secret-one"]
    mine = listed["api_keys"][1]
    assert mine["identifier"] == key[:7] + "…" + key[-4:]
    assert mine["scopes"] is None  # no scope list = every scope of the account
    assert "key" not in mine
    assert listed["pages"]["total"] == 2


def test_the_list_is_paged(api_server: ApiServer) -> None:
    for number in range(3):
        _mint_key(api_server, name=f"k{number}")
    answer = _list(api_server, page=2, page_size=2).json()
    assert [item["name"] for item in answer["api_keys"]] == ["k1", "k2"]
    assert answer["pages"] == {"page": 2, "page_size": 2, "num_pages": 2, "total": 4}


def test_a_key_records_its_last_use(api_server: ApiServer) -> None:
    key = _mint_key(api_server, name="used")
    assert _status_with(api_server, key) == 200
    used = [k for k in _list(api_server).json()["api_keys"] if k["name"] == "used"]
    assert used[0]["last_used_at"] is not None


# --- deleting ----------------------------------------------------------------------------


def test_deleting_by_the_listed_identifier_revokes_the_key(api_server: ApiServer) -> None:
    key = _mint_key(api_server, name="doomed")
    assert _status_with(api_server, key) == 200
    masked = key[:7] + "…" + key[-4:]
    answer = _delete(api_server, masked)
    assert answer.status_code == 200
    assert answer.json()["api_key"]["identifier"] == masked
    assert answer.json()["api_key"]["name"] == "doomed"
    assert _status_with(api_server, key) == 401
    assert "doomed" not in [k["name"] for k in _list(api_server).json()["api_keys"]]


def test_deleting_by_the_full_key_revokes_it_and_a_key_may_delete_itself(
    api_server: ApiServer,
) -> None:
    key = _mint_key(api_server, name="self-destruct")
    answer = _delete(api_server, key, api_key=key)
    assert answer.status_code == 200
    assert key not in answer.text  # the answer shows the mask, not the key
    assert _status_with(api_server, key) == 401


def test_deleting_an_unknown_key_is_404(api_server: ApiServer) -> None:
    answer = _delete(api_server, "sk-nope…zzzz")
    assert answer.status_code == 404
    assert "GET /v1/api-keys" in answer.json()["detail"]


# --- expiry ------------------------------------------------------------------------------


def test_a_key_stops_working_when_it_expires(api_server: ApiServer) -> None:
    expires = utcnow() + timedelta(hours=1)
    answer = _mint(api_server, name="short-lived", expires_at=expires.isoformat())
    assert answer.status_code == 201
    key = answer.json()["api_key"]["key"]
    assert answer.json()["api_key"]["expires_at"] is not None
    assert _status_with(api_server, key) == 200
    with api_server.ctx.sessions.begin() as session:
        session.execute(
            update(models.ApiKey)
            .where(models.ApiKey.key_hash == crypto.hash_token(key))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with api_server.client(key) as client:
        refused = client.get("/api-keys")
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]


def test_an_expiry_in_the_past_is_refused(api_server: ApiServer) -> None:
    answer = _mint(api_server, expires_at=(utcnow() - timedelta(minutes=1)).isoformat())
    assert answer.status_code == 422
    assert "future" in answer.json()["detail"]


# --- input -------------------------------------------------------------------------------


def test_an_unknown_scope_is_refused_naming_the_valid_ones(api_server: ApiServer) -> None:
    answer = _mint(api_server, scopes="apps:read apps:fly")
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "apps:fly" in detail and "apps:run" in detail


def test_a_name_must_have_1_to_128_characters(api_server: ApiServer) -> None:
    assert _mint(api_server, name="").status_code == 422
    assert _mint(api_server, name="   ").status_code == 422
    assert _mint(api_server, name="x" * 129).status_code == 422
    assert _mint(api_server, name="x" * 128).status_code == 201


def test_a_key_belongs_to_the_callers_own_account_only(api_server: ApiServer) -> None:
    with api_server.ctx.sessions.begin() as session:
        account_name = session.scalars(select(models.Account.name)).first()
    assert _mint(api_server, team=account_name).status_code == 201
    other = _mint(api_server, team="someone-elses-team")
    assert other.status_code == 404
    assert "team" in other.json()["detail"]


# --- scopes ------------------------------------------------------------------------------


def test_a_read_only_key_can_list_but_not_create_or_delete(api_server: ApiServer) -> None:
    reader = _mint_key(api_server, name="reader", scopes="api_keys:read")
    assert _list(api_server, reader).status_code == 200
    refused = _mint(api_server, reader, name="more")
    assert refused.status_code == 403
    assert "api_keys:create" in refused.json()["detail"]
    assert _delete(api_server, reader, api_key=reader).status_code == 403
    assert _status_with(api_server, reader) == 200


def test_the_parent_scope_grants_every_action_below_it(api_server: ApiServer) -> None:
    manager = _mint_key(api_server, name="manager", scopes="api_keys")
    assert _list(api_server, manager).status_code == 200
    child = _mint_key(api_server, manager, name="child", scopes="api_keys:read")
    assert _delete(api_server, child, api_key=manager).status_code == 200


def test_a_scoped_key_cannot_mint_a_broader_or_unrestricted_key(api_server: ApiServer) -> None:
    minter = _mint_key(api_server, name="minter", scopes="api_keys:create apps:read")
    broader = _mint(api_server, minter, scopes="apps apps:read")
    assert broader.status_code == 403
    detail = broader.json()["detail"]
    assert "apps" in detail and "cannot grant" in detail
    unrestricted = _mint(api_server, minter)
    assert unrestricted.status_code == 403
    assert "scope list" in unrestricted.json()["detail"]
    narrower = _mint(api_server, minter, scopes="apps:read")
    assert narrower.status_code == 201
    assert narrower.json()["api_key"]["scopes"] == "apps:read"


def test_an_apps_read_key_reads_apps_but_cannot_create_them(api_server: ApiServer) -> None:
    reader = _mint_key(api_server, name="apps-reader", scopes="apps:read")
    with api_server.client(reader) as client:
        assert client.get("/apps").status_code == 200
        refused = client.post("/apps", json={"name": "nope"})
        assert refused.status_code == 403
        assert "apps:create" in refused.json()["detail"]
        assert client.get("/api-keys").status_code == 403


def test_the_apps_scope_grants_deploying_and_running(api_server: ApiServer, tmp_path: Path) -> None:
    apps_key = _mint_key(api_server, name="apps-all", scopes="apps")
    with api_server.client(apps_key) as client:
        assert client.post("/apps", json={"name": "hello"}).status_code == 201
        assert deploy(client, "hello", make_package(tmp_path / "pkg")).status_code == 201
        started = client.post("/apps/hello/runs", json={"parameters": {}})
        assert started.status_code == 201, started.text
        # Runs are their own resource: `apps` does not grant reading them back.
        assert client.get("/runs").status_code == 403


# --- tenancy -----------------------------------------------------------------------------


def test_another_account_can_neither_see_nor_delete_my_keys(api_server: ApiServer) -> None:
    mine = _mint_key(api_server, name="mine")
    theirs = api_server.new_user_key("eve@example.com")
    listed = _list(api_server, theirs).json()["api_keys"]
    assert [item["name"] for item in listed] == ["test"]
    assert listed[0]["owner"]["name"] == "eve@example.com"
    assert _delete(api_server, mine, api_key=theirs).status_code == 404
    assert _delete(api_server, mine[:7] + "…" + mine[-4:], api_key=theirs).status_code == 404
    assert _status_with(api_server, mine) == 200
