"""Service accounts (admins only; their keys act with their role; deleting one revokes
its keys and cancels its runs in flight) and guests (login URL → session cookie;
regenerating or deleting ends the sessions)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.conftest import ApiServer
from tests.api.helpers import deploy, make_package


def _team(api_server: ApiServer) -> httpx.Client:
    """An admin's client acting in a new team `ops`."""
    ada = api_server.client(api_key=api_server.new_user_key("ada@example.com"))
    assert ada.post("/teams", json={"name": "Ops"}).status_code == 200
    key = ada.post("/api-keys", json={"name": "ops", "team": "ops"}).json()["api_key"]["key"]
    return api_server.client(api_key=key)


def test_service_account_lifecycle_and_its_keys(api_server: ApiServer, tmp_path: Path) -> None:
    admin = _team(api_server)
    created = admin.post(
        "/service-accounts", json={"name": "ci", "role": "developer", "metadata": '{"repo": "x"}'}
    )
    assert created.status_code == 201, created.text
    sa = created.json()["service_account"]
    assert (sa["name"], sa["role"], sa["metadata"]) == ("ci", "developer", {"repo": "x"})
    assert sa["creator"] == {"name": "ada@example.com", "type": "user"}
    assert (
        admin.post("/service-accounts", json={"name": "ci", "role": "developer"}).status_code == 409
    )
    bad_role = admin.post("/service-accounts", json={"name": "x", "role": "owner"})
    assert bad_role.status_code == 422 and "admin, developer" in bad_role.json()["detail"]
    assert admin.get(f"/service-accounts/{sa['id']}").json()["service_account"]["name"] == "ci"
    assert [s["name"] for s in admin.get("/service-accounts").json()["service_accounts"]] == ["ci"]

    beyond = admin.post(
        "/service-accounts/ci/api-keys", json={"name": "k", "scopes": "teams:update"}
    )
    assert beyond.status_code == 422 and "developer" in beyond.json()["detail"]
    minted = admin.post("/service-accounts/ci/api-keys", json={"name": "deploy"})
    assert minted.status_code == 201, minted.text
    key = minted.json()["api_key"]
    assert key["key"].startswith("sk-") and key["owner"] == {
        "name": "ci",
        "type": "service_account",
    }
    listed = admin.get("/service-accounts/ci/api-keys").json()["api_keys"]
    assert [k["identifier"] for k in listed] == [key["identifier"][:7] + "…" + key["key"][-4:]]

    # the key acts in the team with the developer role
    with api_server.client(api_key=key["key"]) as ci:
        assert ci.post("/apps", json={"name": "etl"}).status_code == 201
        assert deploy(ci, "etl", make_package(tmp_path, "etl")).status_code == 201
        run = ci.post("/apps/etl/runs", json={"environment": "default"})
        assert run.status_code == 201
        nightly = ci.post("/schedules", json={"app_name": "etl", "cron": "0 2 * * *"})
        assert nightly.status_code == 201, nightly.text
        assert ci.get("/service-accounts").status_code == 403
        assert [t["name"] for t in ci.get("/teams").json()["teams"]] == ["ops"]
        own = ci.post("/api-keys", json={"name": "its own"})
        assert own.status_code == 201
        assert own.json()["api_key"]["owner"]["type"] == "service_account"

    renamed = admin.patch("/service-accounts/ci", json={"name": "ci-bot", "role": "admin"})
    assert renamed.status_code == 200 and renamed.json()["service_account"]["role"] == "admin"
    with api_server.client(api_key=key["key"]) as ci:
        assert ci.get("/service-accounts").status_code == 200  # now an admin

    extra = admin.post("/service-accounts/ci-bot/api-keys", json={"name": "spare"}).json()
    deleted_key = admin.request(
        "DELETE", "/service-accounts/ci-bot/api-keys", json={"identifier": extra["api_key"]["key"]}
    )
    assert deleted_key.status_code == 204
    assert len(admin.get("/service-accounts/ci-bot/api-keys").json()["api_keys"]) == 2

    mine = admin.post("/schedules", json={"app_name": "etl", "cron": "0 3 * * *"}).json()
    # deleting it revokes every key, cancels the run it started, disables its schedules
    assert admin.delete("/service-accounts/ci-bot").status_code == 204
    statuses = {s["id"]: s["status"] for s in admin.get("/schedules").json()["schedules"]}
    assert statuses == {
        nightly.json()["schedule"]["id"]: "disabled",
        mine["schedule"]["id"]: "active",  # a person's schedule is left alone
    }
    with api_server.client(api_key=key["key"]) as ci:
        assert ci.get("/apps").status_code == 401
    assert admin.get("/apps/etl/runs/1").json()["run"]["status"] == "cancelled"
    assert admin.get("/service-accounts/ci-bot").status_code == 404
    assert admin.get("/service-accounts").json()["service_accounts"] == []


def test_guest_login_url_session_regenerate_and_delete(
    api_server: ApiServer, tmp_path: Path
) -> None:
    admin = _team(api_server)
    assert admin.post("/apps", json={"name": "dashboard"}).status_code == 201
    assert admin.post("/guests", json={"app": "nope"}).status_code == 404
    internal = admin.post("/guests", json={"app": "dashboard", "name": "Client"})
    assert internal.status_code == 409 and "is_externally_accessible" in internal.json()["detail"]
    opened = admin.put("/apps/dashboard", json={"is_externally_accessible": True})
    assert opened.json()["app"]["is_externally_accessible"] is True
    bad = admin.post("/guests", json={"app": "dashboard", "redirect_url": "javascript:alert(1)"})
    assert bad.status_code == 422

    created = admin.post("/guests", json={"app": "dashboard", "name": "Client"})
    assert created.status_code == 200, created.text
    body = created.json()
    guest, login_url = body["guest"], body["login_url"]
    assert (guest["app"], guest["name"]) == ("dashboard", "Client")
    assert login_url.startswith(api_server.url + "/guest/login/")
    assert [
        g["id"] for g in admin.get("/guests", params={"app": "dashboard"}).json()["guests"]
    ] == [guest["id"]]
    assert admin.get("/guests", params={"app": "other"}).json()["guests"] == []

    def open_session(url: str) -> httpx.Client:
        browser = httpx.Client(base_url=api_server.url)
        answer = browser.get(url)
        assert answer.status_code == 303, answer.text
        assert "tower_guest" in browser.cookies
        return browser

    first = open_session(login_url)
    who = first.get("/guest/session")
    assert who.status_code == 200 and who.json()["guest"]["app"] == "dashboard"

    renewed = admin.post(f"/guests/{guest['id']}/login-url", json={"expires_in": 3600})
    assert renewed.status_code == 200
    assert httpx.get(login_url).status_code == 401  # the old link is dead
    assert first.get("/guest/session").status_code == 401  # and so are its sessions
    second = open_session(renewed.json()["login_url"])
    assert second.get("/guest/session").status_code == 200

    assert admin.delete(f"/guests/{guest['id']}").status_code == 204
    assert second.get("/guest/session").status_code == 401
    assert admin.get("/guests").json()["guests"] == []
    assert admin.delete(f"/guests/{guest['id']}").status_code == 404
