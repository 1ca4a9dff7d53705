"""Tenant isolation over every route of the OpenAPI document (new routes are covered unasked).

Account A owns an app with a version and a run, an environment, a secret and a
catalog; its user admins a team with a pending invitation, and A has a service account
and a guest. Account B calls every public route with A's names in the path. A route that
names an object must answer 403 or 404; no answer may carry any of A's data; and
afterwards everything of A is still there, unchanged.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import ApiServer
from tests.api.helpers import deploy, make_package
from tower.core import crypto

UNSCOPED = re.compile(r"^/healthz$|^/v1/runner/")
APP, ENV, SECRET, CATALOG = "iso-app", "iso-env", "ISO_SECRET", "iso-cat"
TEAM, SERVICE_ACCOUNT = "iso-team", "iso-sa"
OWNER_ACCOUNT = "admin"  # the bootstrap admin's (admin@localhost) personal account
SCHEDULE = "iso-schedule"
NAME_BY_PREFIX = {
    "/v1/schedules/": SCHEDULE,
    "/v1/apps/": APP,
    "/v1/environments/": ENV,
    "/v1/secrets/": SECRET,
    "/v1/catalogs/": CATALOG,
    "/v1/teams/": TEAM,
    "/v1/service-accounts/": SERVICE_ACCOUNT,
    "/v1/accounts/": OWNER_ACCOUNT,
    "/v1/organizations/": OWNER_ACCOUNT,
}
#: a path whose placeholders name something no account owns (e.g. a feature flag)
SHARED_EXTENSION = "x-tower-shared"


def _encrypted(api: httpx.Client, value: str) -> str:
    pem = api.get("/secrets/key").json()["public_key"]
    return crypto.hybrid_encrypt(crypto.load_public_key(pem), value)


def _populate(api: httpx.Client, root: Path, marker: str) -> dict[str, str]:
    """A's objects; returns values only A may ever see."""
    app = {"name": APP, "is_externally_accessible": True}  # so it can take a guest
    assert api.post("/apps", json=app).status_code == 201
    assert deploy(api, APP, make_package(root, APP)).status_code == 201
    run = api.post(f"/apps/{APP}/runs", json={"environment": "default"}).json()["run"]
    assert api.post("/environments", json={"name": ENV}).status_code == 201
    secret = {"name": SECRET, "environment": ENV, "encrypted_value": _encrypted(api, marker)}
    assert api.post("/secrets", json={**secret, "preview": ""}).status_code == 201
    prop = {"name": "uri", "encrypted_value": _encrypted(api, f"sqlite:///{marker}.db")}
    warehouse = {"name": "warehouse", "encrypted_value": _encrypted(api, "file:///tmp/wh")}
    catalog = {"name": CATALOG, "environment": ENV, "type": "pyiceberg-sql"}
    answer = api.post("/catalogs", json={**catalog, "properties": [prop, warehouse]})
    assert answer.status_code == 200, answer.text
    schedule = {"app_name": APP, "cron": "0 9 * * 1", "name": SCHEDULE}
    answer = api.post(
        "/schedules", json={**schedule, "parameters": [{"name": "friend", "value": marker}]}
    )
    assert answer.status_code == 201, answer.text
    schedule_id = answer.json()["schedule"]["id"]
    assert api.post("/teams", json={"name": f"Team {marker}", "slug": TEAM}).status_code == 200
    invite = {"emails": f"{marker}@example.com"}
    assert api.post(f"/teams/{TEAM}/invites", json=invite).status_code == 200
    account = {"name": SERVICE_ACCOUNT, "role": "developer", "metadata": f'"{marker}"'}
    assert api.post("/service-accounts", json=account).status_code == 201
    guest = api.post("/guests", json={"app": APP, "name": marker}).json()
    NAME_BY_PREFIX["/v1/guests/"] = guest["guest"]["id"]
    return {
        "run_id": run["run_id"],
        "marker": marker,
        "guest_login": guest["login_url"],
        "schedule_id": schedule_id,
    }


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [
        (method.upper(), path, bool(operation.get(SHARED_EXTENSION)))
        for path, operations in spec["paths"].items()
        if not UNSCOPED.search(path)
        for method, operation in operations.items()
    ]


def _concrete(path: str) -> str:
    """A's names in the path's placeholders."""
    name = next((v for prefix, v in NAME_BY_PREFIX.items() if path.startswith(prefix)), APP)
    values = {
        "name": name,
        "id_or_name": name,
        "guest_id": name,
        "number": "1",
        "version": "v1",
        "environment": ENV,
    }
    return re.sub(r"\{(\w+)(:path)?\}", lambda m: values.get(m.group(1), "x"), path)


def test_another_account_can_neither_see_nor_touch_anything(
    api_server: ApiServer, tmp_path: Path
) -> None:
    marker = f"iso-{uuid.uuid4().hex}"
    with api_server.client() as owner:
        secret_values = _populate(owner, tmp_path, marker)
        spec = owner.get("/openapi.json").json()
    # The stranger acts as the admin of a team of their own (a member of another team).
    with api_server.client(api_key=api_server.new_user_key("stranger@example.com")) as person:
        assert person.post("/teams", json={"name": "Other team"}).status_code == 200
        in_team = person.post("/api-keys", json={"name": "team", "team": "other-team"})
        stranger_key = in_team.json()["api_key"]["key"]
    operations = _operations(spec)
    assert len(operations) > 30
    with api_server.client(api_key=stranger_key) as stranger:
        for method, path, shared in operations:
            url = _concrete(path).removeprefix("/v1")
            body = {} if method in ("POST", "PUT", "PATCH", "DELETE") else None
            params = {"environment": ENV}
            answer = stranger.request(method, url, json=body, params=params)
            if "{" in path and not shared:
                assert answer.status_code in (403, 404, 422), (method, path, answer.text)
            assert answer.status_code < 500, (method, path, answer.text)
            for value in secret_values.values():
                assert value not in answer.text, (method, path, answer.text)

    with api_server.client() as owner:
        run = owner.get(f"/apps/{APP}/runs/1").json()["run"]
        assert run["run_id"] == secret_values["run_id"] and run["status"] == "pending"
        names = [
            s["name"] for s in owner.get("/secrets", params={"environment": ENV}).json()["secrets"]
        ]
        assert SECRET in names
        assert owner.get(f"/catalogs/{CATALOG}", params={"environment": ENV}).status_code == 200
        assert owner.get(f"/environments/{ENV}").status_code == 200
        schedule = owner.get(f"/schedules/{SCHEDULE}").json()["schedule"]
        assert schedule["id"] == secret_values["schedule_id"] and schedule["status"] == "active"
        assert schedule["cron"] == "0 9 * * 1"
        assert owner.get(f"/apps/{APP}/versions/v1").status_code == 200
        team = owner.get(f"/teams/{TEAM}").json()
        assert [i["email"] for i in team["invitations"]] == [f"{marker}@example.com"]
        assert owner.get(f"/service-accounts/{SERVICE_ACCOUNT}").status_code == 200
        assert len(owner.get("/guests").json()["guests"]) == 1
        assert owner.get(f"/accounts/{OWNER_ACCOUNT}").json()["account"]["name"] == OWNER_ACCOUNT
