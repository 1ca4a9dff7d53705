"""The audit log over HTTP: every change is recorded with who did it and with what
credential, listed newest first with filters and pages, and never shows a secret."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package
from tower.core import crypto
from tower.server.services.api_keys import masked_identifier


def _encrypted(api: httpx.Client, value: str) -> str:
    pem = api.get("/secrets/key").json()["public_key"]
    return crypto.hybrid_encrypt(crypto.load_public_key(pem), value)


def _events(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    answer = api.get("/audit-events", params={"page_size": 1000, **params})
    assert answer.status_code == 200, answer.text
    return answer.json()["audit_events"]


def _ok(answer: httpx.Response) -> httpx.Response:
    assert answer.status_code < 300, answer.text
    return answer


def _do_everything(api: httpx.Client, root: Path, secret_value: str) -> str:
    """One change of each kind; returns the API key minted along the way."""
    _ok(api.post("/apps", json={"name": "audited"}))
    _ok(deploy(api, "audited", make_package(root / "v1", "audited")))
    _ok(deploy(api, "audited", make_package(root / "v2", "audited", body="print(2)\n")))
    _ok(api.post("/environments", json={"name": "staging"}))
    _ok(api.put("/environments/staging", json={"new_name": "prod"}))
    _ok(api.put("/apps/audited/environments/prod", json={"version": "v1"}))
    _ok(api.post("/apps/audited/runs", json={"environment": "default"}))
    _ok(api.post("/apps/audited/runs/1"))
    secret = {"name": "DB_PASSWORD", "environment": "prod"}
    _ok(api.post("/secrets", json={**secret, "encrypted_value": _encrypted(api, secret_value)}))
    update = {"environment": "prod", "encrypted_value": _encrypted(api, secret_value + "-2")}
    _ok(api.put("/secrets/DB_PASSWORD", json=update))
    _ok(api.request("DELETE", "/secrets/DB_PASSWORD", params={"environment": "prod"}))
    minted = _ok(api.post("/api-keys", json={"name": "ci", "scopes": "apps:read"}))
    key = minted.json()["api_key"]["identifier"]
    _ok(api.request("DELETE", "/api-keys", json={"identifier": key}))
    return key


EXPECTED_ACTIONS = [
    "api_key.delete",
    "api_key.create",
    "secret.delete",
    "secret.update",
    "secret.create",
    "run.cancel",
    "run.create",
    "app.promote",
    "environment.update",
    "environment.create",
    "app.deploy",
    "app.deploy",
    "app.create",
]


def test_every_change_is_recorded_newest_first_with_its_actor_and_no_secret(
    api_server: ApiServer, tmp_path: Path
) -> None:
    secret_value = f"hunter2-{uuid.uuid4().hex}"
    with api_server.client() as api:
        minted_key = _do_everything(api, tmp_path, secret_value)
        answer = api.get("/audit-events", params={"page_size": 1000})
    assert answer.status_code == 200
    events = answer.json()["audit_events"]
    assert [e["action"] for e in events] == EXPECTED_ACTIONS
    # Never a secret: not the value, not the admin's key, not the minted key.
    for secret in (secret_value, api_server.api_key, minted_key):
        assert secret not in answer.text
    by_action = {e["action"]: e for e in reversed(events)}
    actor = events[0]["actor"]
    assert actor["credential_kind"] == "api_key"
    assert actor["credential"] == masked_identifier(api_server.api_key)
    assert actor["email"] == api_server.ctx.settings.admin_email
    assert uuid.UUID(actor["user_id"])
    assert by_action["app.deploy"]["target"] == "apps/audited"
    assert by_action["app.deploy"]["details"]["version"] == "v2"
    # Nothing ran in prod before, so there is no previous version to name.
    assert by_action["app.promote"]["details"] == {"environment": "prod", "version": "v1"}
    assert by_action["run.create"]["target"] == "apps/audited/runs/1"
    assert by_action["run.cancel"]["details"]["children_cancelled"] == 0
    assert by_action["environment.update"]["details"] == {"renamed_from": "staging"}
    assert by_action["secret.update"]["target"] == "secrets/DB_PASSWORD"
    assert by_action["secret.update"]["details"] == {"environment": "prod"}
    assert by_action["api_key.create"]["details"]["scopes"] == "apps:read"
    assert by_action["api_key.create"]["target"] == by_action["api_key.delete"]["target"]
    assert events[0]["created_at"].endswith("Z")


def test_filters_by_action_and_time_and_pages(api_server: ApiServer, tmp_path: Path) -> None:
    with api_server.client() as api:
        _do_everything(api, tmp_path, "value")
        secret_actions = ["secret.delete", "secret.update", "secret.create"]
        assert [e["action"] for e in _events(api, action="secret")] == secret_actions
        assert [e["action"] for e in _events(api, action="secret.*")] == secret_actions
        assert [e["action"] for e in _events(api, action="app.deploy")] == ["app.deploy"] * 2
        assert _events(api, action="sec") == []

        everything = _events(api)
        newest, oldest = everything[0]["created_at"], everything[-1]["created_at"]
        assert len(_events(api, since=newest)) >= 1
        assert _events(api, until=oldest) == []
        assert len(_events(api, since=oldest, until="2999-01-01T00:00:00Z")) == len(everything)

        first = api.get("/audit-events", params={"page": 1, "page_size": 5}).json()
        third = api.get("/audit-events", params={"page": 3, "page_size": 5}).json()
        assert first["pages"] == {"page": 1, "page_size": 5, "num_pages": 3, "total": 13}
        assert [e["id"] for e in first["audit_events"]] == [e["id"] for e in everything[:5]]
        assert [e["id"] for e in third["audit_events"]] == [e["id"] for e in everything[10:]]
        every = api.get("/audit-events", params={"page": 0}).json()
        assert len(every["audit_events"]) == 13


def test_a_failed_change_records_nothing(api_server: ApiServer) -> None:
    with api_server.client() as api:
        _ok(api.post("/apps", json={"name": "once"}))
        assert api.post("/apps", json={"name": "once"}).status_code == 409
        assert api.post("/environments", json={"name": "bad name!"}).status_code == 422
        assert [e["action"] for e in _events(api)] == ["app.create"]


def test_an_environment_a_deploy_creates_is_recorded_as_created(
    api_server: ApiServer, tmp_path: Path
) -> None:
    with api_server.client() as api:
        _ok(api.post("/apps", json={"name": "envy"}))
        pkg = make_package(tmp_path, "envy")
        headers = {"Content-Type": "application/tar", "X-Tower-Checksum-SHA256": pkg.sha256}
        deployed = api.post(
            "/apps/envy/deploy", params={"environment": "qa"}, content=pkg.data, headers=headers
        )
        _ok(deployed)
        events = _events(api)
    assert [e["action"] for e in events] == ["app.deploy", "environment.create", "app.create"]
    assert events[1]["target"] == "environments/qa"
    assert events[1]["details"] == {"implicit": True}
    assert events[0]["details"]["environments"] == ["qa"]


def test_bad_filters_are_422_naming_the_parameter(api_server: ApiServer) -> None:
    with api_server.client() as api:
        answer = api.get("/audit-events", params={"since": "yesterday"})
        assert answer.status_code == 422
        assert "since" in answer.json()["message"]
        answer = api.get(
            "/audit-events",
            params={"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
        )
        assert answer.status_code == 422
        assert "until" in answer.json()["message"]


def test_each_account_sees_only_its_own_events(api_server: ApiServer) -> None:
    stranger_key = api_server.new_user_key("stranger@example.com")
    with api_server.client() as owner, api_server.client(api_key=stranger_key) as stranger:
        _ok(owner.post("/apps", json={"name": "mine"}))
        _ok(stranger.post("/apps", json={"name": "theirs"}))
        assert [e["target"] for e in _events(owner)] == ["apps/mine"]
        assert [e["target"] for e in _events(stranger)] == ["apps/theirs"]
        assert _events(stranger)[0]["actor"]["email"] == "stranger@example.com"


def test_runs_started_by_a_run_name_the_run_as_the_credential(
    api_server: ApiServer, tmp_path: Path
) -> None:
    with api_server.client() as api:
        _ok(api.post("/apps", json={"name": "fan"}))
        _ok(deploy(api, "fan", make_package(tmp_path, "fan")))
        _ok(api.post("/apps/fan/runs", json={}))
    assignment = FakeRunner(api_server).claim()
    assert assignment is not None
    as_run = {"Authorization": f"Bearer {assignment['run_token']}"}
    with api_server.client(api_key="", **as_run) as run_api:
        _ok(run_api.post("/apps/fan/runs", json={}))
    with api_server.client() as api:
        child = _events(api, action="run.create")[0]
    assert child["actor"]["credential_kind"] == "run"
    assert child["actor"]["credential"] == f"run {assignment['run_id']}"
    assert child["details"]["parent_run_id"] == assignment["run_id"]


def test_membership_changes_are_in_the_team_log(api_server: ApiServer) -> None:
    ada = api_server.client(api_key=api_server.new_user_key("ada@example.com"))
    bob = api_server.client(api_key=api_server.new_user_key("bob@example.com"))
    _ok(ada.post("/teams", json={"name": "Data Team", "slug": "data-team"}))
    _ok(ada.post("/teams/data-team/invites", json={"emails": "bob@example.com"}))
    _ok(bob.put("/team-invites", json={"name": "data-team", "accepted": True}))
    member = {"email": "bob@example.com", "role": "admin"}
    _ok(ada.put("/teams/data-team/members", json=member))
    _ok(bob.post("/teams/data-team/leave"))

    in_team = api_server.client(
        api_key=_ok(ada.post("/api-keys", json={"name": "team", "team": "data-team"})).json()[
            "api_key"
        ]["key"]
    )
    events = _events(in_team, action="member")
    assert [(e["action"], e["details"].get("email")) for e in events] == [
        ("member.leave", None),
        ("member.role", "bob@example.com"),
        ("member.join", "bob@example.com"),
        ("member.invite", "bob@example.com"),
    ]
    assert events[0]["actor"]["user_id"] != events[1]["actor"]["user_id"]  # bob, then ada
    assert [e["action"] for e in _events(in_team, action="team")] == ["team.create"]
    # none of it is in Ada's personal log
    assert _events(ada, action="member") == []
