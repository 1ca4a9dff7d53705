"""Teams over HTTP: create and slugs, invitations, roles (developer vs admin), leaving,
team context (team JWTs and team API keys), and team runs using the team's secrets."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package
from tower.core import crypto
from tower.server.services import sessions

ADMIN_EMAIL = "ada@example.com"
DEV_EMAIL = "bob@example.com"


def _person(api_server: ApiServer, email: str) -> httpx.Client:
    """A new user's client, acting in their personal account."""
    return api_server.client(api_key=api_server.new_user_key(email))


def _team_key(api: httpx.Client, slug: str) -> str:
    """An API key of the caller that acts in team `slug`."""
    answer = api.post("/api-keys", json={"name": f"in {slug}", "team": slug})
    assert answer.status_code == 201, answer.text
    return answer.json()["api_key"]["key"]


def _team_with_developer(
    api_server: ApiServer, slug: str = "data-team"
) -> tuple[httpx.Client, httpx.Client]:
    """Ada creates team `slug` and Bob joins it as a developer; their personal clients."""
    ada, bob = _person(api_server, ADMIN_EMAIL), _person(api_server, DEV_EMAIL)
    assert ada.post("/teams", json={"name": "Data Team", "slug": slug}).status_code == 200
    invited = ada.post(f"/teams/{slug}/invites", json={"emails": DEV_EMAIL, "role": "developer"})
    assert invited.status_code == 200, invited.text
    assert bob.put("/team-invites", json={"name": slug, "accepted": True}).status_code == 200
    return ada, bob


def _encrypted(api: httpx.Client, value: str) -> str:
    pem = api.get("/secrets/key").json()["public_key"]
    return crypto.hybrid_encrypt(crypto.load_public_key(pem), value)


def test_create_a_team_with_a_slug_and_list_the_teams_i_belong_to(api_server: ApiServer) -> None:
    with _person(api_server, ADMIN_EMAIL) as ada:
        created = ada.post("/teams", json={"name": "Data Team"})
        assert created.status_code == 200, created.text
        team = created.json()["team"]
        assert (team["name"], team["slug"], team["display_name"]) == (
            "data-team",
            "data-team",
            "Data Team",
        )
        assert (team["type"], team["role"]) == ("team", "admin")

        bad = ada.post("/teams", json={"name": "Other", "slug": "Bad_Slug"})
        assert bad.status_code == 422
        assert "lowercase letters, digits and hyphens" in bad.json()["detail"]
        assert ada.post("/teams", json={"name": "!!!"}).status_code == 422
        taken = ada.post("/teams", json={"name": "Again", "slug": "data-team"})
        assert taken.status_code == 409 and "taken" in taken.json()["detail"]

        listed = ada.get("/teams").json()
        assert [(t["name"], t["type"]) for t in listed["teams"]] == [
            ("ada", "personal"),
            ("data-team", "team"),
        ]
        assert listed["pages"]["total"] == 2
        # the team is an account of its own, with its default environment
        with api_server.client(api_key=_team_key(ada, "data-team")) as in_team:
            assert [e["name"] for e in in_team.get("/environments").json()["environments"]] == [
                "default"
            ]

        renamed = ada.put("/teams/data-team", json={"name": "Data Platform"})
        assert renamed.json()["team"]["display_name"] == "Data Platform"
        assert ada.get("/teams/data-team").json()["team"]["display_name"] == "Data Platform"
        moved = ada.put("/teams/data-team", json={"slug": "platform"})
        assert moved.status_code == 200 and moved.json()["team"]["name"] == "platform"
        assert ada.get("/teams/data-team").status_code == 404

        deleted = ada.request("DELETE", "/teams", json={"name": "platform"})
        assert deleted.status_code == 200
        assert [t["name"] for t in ada.get("/teams").json()["teams"]] == ["ada"]
        personal = ada.request("DELETE", "/teams", json={"name": "ada"})
        assert personal.status_code == 409 and "personal account" in personal.json()["detail"]


def test_invitations_accept_decline_resend_and_delete(api_server: ApiServer) -> None:
    ada, bob = _person(api_server, ADMIN_EMAIL), _person(api_server, DEV_EMAIL)
    carol = _person(api_server, "carol@example.com")
    assert ada.post("/teams", json={"name": "Data Team"}).status_code == 200

    invited = ada.post(
        "/teams/data-team/invites",
        json={"emails": "Bob@Example.com, carol@example.com\ndan@example.com", "role": "admin"},
    )
    assert invited.status_code == 200, invited.text
    assert [i["email"] for i in invited.json()["team_invitations"]] == [
        DEV_EMAIL,
        "carol@example.com",
        "dan@example.com",
    ]
    assert ada.post("/teams/data-team/invites", json={"emails": "not-an-email"}).status_code == 422
    already = ada.post("/teams/data-team/invites", json={"emails": ADMIN_EMAIL})
    assert already.status_code == 409 and "Already a member" in already.json()["detail"]

    mine = bob.get("/team-invites").json()["team_invitations"]
    assert [(i["team"]["name"], i["role"]) for i in mine] == [("data-team", "admin")]
    before = mine[0]["invitation_sent_at"]
    resent = ada.post("/teams/data-team/invites/resend", json={"email": DEV_EMAIL})
    assert (
        resent.status_code == 200
        and resent.json()["team_invitation"]["invitation_sent_at"] > before
    )
    # only the invitee can answer, and only their own invitation
    assert carol.put("/team-invites", json={"name": "nope", "accepted": True}).status_code == 404

    assert bob.put("/team-invites", json={"name": "data-team", "accepted": True}).status_code == 200
    assert (
        carol.put("/team-invites", json={"name": "data-team", "accepted": False}).status_code == 200
    )
    assert bob.get("/team-invites").json()["team_invitations"] == []

    described = ada.get("/teams/data-team").json()
    assert sorted((m["email"], m["role"]) for m in described["members"]) == [
        (ADMIN_EMAIL, "admin"),
        (DEV_EMAIL, "admin"),
    ]
    assert [i["email"] for i in described["invitations"]] == ["dan@example.com"]
    assert "data-team" not in [t["name"] for t in carol.get("/teams").json()["teams"]]

    removed = ada.request("DELETE", "/teams/data-team/invites", json={"email": "dan@example.com"})
    assert removed.status_code == 200 and removed.json()["invitation"]["email"] == "dan@example.com"
    assert ada.get("/teams/data-team/invites").json()["team_invitations"] == []
    gone = ada.request("DELETE", "/teams/data-team/invites", json={"email": "dan@example.com"})
    assert gone.status_code == 404


def test_a_developer_works_on_apps_but_only_an_admin_manages_the_team(
    api_server: ApiServer, tmp_path: Path
) -> None:
    ada, bob = _team_with_developer(api_server)
    bob_in_team = api_server.client(api_key=_team_key(bob, "data-team"))
    ada_in_team = api_server.client(api_key=_team_key(ada, "data-team"))

    # developers deploy, run and manage secrets
    assert bob_in_team.post("/apps", json={"name": "etl"}).status_code == 201
    assert deploy(bob_in_team, "etl", make_package(tmp_path, "etl")).status_code == 201
    assert bob_in_team.post("/apps/etl/runs", json={"environment": "default"}).status_code == 201
    secret = {"name": "TOKEN", "environment": "default", "preview": ""}
    secret["encrypted_value"] = _encrypted(bob_in_team, "v")
    assert bob_in_team.post("/secrets", json=secret).status_code == 201
    # ... see the team and its members ...
    assert bob.get("/teams/data-team/members").status_code == 200

    # ... but only admins manage members, invitations, settings, service accounts
    for method, path, body in [
        ("POST", "/teams/data-team/invites", {"emails": "eve@example.com"}),
        ("PUT", "/teams/data-team", {"name": "Mine now"}),
        ("PUT", "/teams/data-team/members", {"email": ADMIN_EMAIL, "role": "developer"}),
        ("DELETE", "/teams/data-team/members", {"email": ADMIN_EMAIL}),
        ("DELETE", "/teams", {"name": "data-team"}),
    ]:
        refused = bob.request(method, path, json=body)
        assert refused.status_code == 403, (method, path, refused.text)
        assert "`developer`" in refused.json()["detail"], refused.text
    refused = bob_in_team.post("/service-accounts", json={"name": "ci", "role": "developer"})
    assert refused.status_code == 403 and "`teams:update`" in refused.json()["detail"]
    assert bob_in_team.get("/service-accounts").status_code == 403

    assert (
        ada_in_team.post("/service-accounts", json={"name": "ci", "role": "developer"}).status_code
        == 201
    )
    assert (
        ada.post("/teams/data-team/invites", json={"emails": "eve@example.com"}).status_code == 200
    )

    # a developer sees only their own keys; an admin sees everyone's
    bob_keys = {k["name"] for k in bob_in_team.get("/api-keys").json()["api_keys"]}
    ada_keys = {k["name"] for k in ada_in_team.get("/api-keys").json()["api_keys"]}
    assert bob_keys == {"in data-team"} and len(ada_keys) == 1
    everyone = ada_in_team.get("/api-keys").json()["api_keys"]
    assert sorted(k["owner"]["name"] for k in everyone) == [ADMIN_EMAIL, DEV_EMAIL]
    adas = next(k["identifier"] for k in everyone if k["owner"]["name"] == ADMIN_EMAIL)
    assert bob_in_team.request("DELETE", "/api-keys", json={"identifier": adas}).status_code == 404

    # promoted, Bob may manage the team
    promoted = ada.put("/teams/data-team/members", json={"email": DEV_EMAIL, "role": "admin"})
    assert promoted.status_code == 200 and promoted.json()["team_member"]["role"] == "admin"
    assert bob.put("/teams/data-team", json={"name": "Bob's"}).status_code == 200
    assert (
        ada.put("/teams/data-team/members", json={"email": DEV_EMAIL, "role": "owner"}).status_code
        == 422
    )


def test_leaving_and_removing_members_keeps_an_admin(api_server: ApiServer) -> None:
    ada, bob = _team_with_developer(api_server, "data-team")
    assert ada.post("/teams", json={"name": "Solo"}).status_code == 200
    alone = ada.post("/teams/solo/leave")
    assert alone.status_code == 409 and "last member" in alone.json()["detail"]

    bob_key = _team_key(bob, "data-team")
    last_admin = ada.post("/teams/data-team/leave")
    assert last_admin.status_code == 409 and "last admin" in last_admin.json()["detail"]
    demote = ada.put("/teams/data-team/members", json={"email": ADMIN_EMAIL, "role": "developer"})
    assert demote.status_code == 409

    left = bob.post("/teams/data-team/leave")
    assert left.status_code == 200 and left.json()["team"]["name"] == "data-team"
    assert bob.get("/teams/data-team").status_code == 404
    # the key Bob made for the team stopped working when he left
    with api_server.client(api_key=bob_key) as stale:
        refused = stale.get("/apps")
        assert refused.status_code == 401 and "no longer a member" in refused.json()["detail"]

    assert ada.post("/teams/data-team/invites", json={"emails": DEV_EMAIL}).status_code == 200
    assert bob.put("/team-invites", json={"name": "data-team", "accepted": True}).status_code == 200
    removed = ada.request("DELETE", "/teams/data-team/members", json={"email": DEV_EMAIL})
    assert removed.status_code == 200 and removed.json()["team_member"]["email"] == DEV_EMAIL
    assert bob.get("/teams/data-team").status_code == 404
    assert (
        ada.request("DELETE", "/teams/data-team/members", json={"email": DEV_EMAIL}).status_code
        == 404
    )


def test_team_context_through_session_jwts(api_server: ApiServer) -> None:
    ada, bob = _team_with_developer(api_server)
    jwt = sessions.open_cli_session(api_server.ctx, DEV_EMAIL)
    with api_server.client(api_key="", Authorization=f"Bearer {jwt}") as session:
        teams = session.get("/session").json()["session"]["teams"]
    team_jwt = next(t["token"]["jwt"] for t in teams if t["name"] == "data-team")

    with api_server.client(api_key="", Authorization=f"Bearer {team_jwt}") as in_team:
        assert in_team.post("/apps", json={"name": "shared"}).status_code == 201
    with api_server.client(api_key=_team_key(ada, "data-team")) as ada_in_team:
        assert [a["app"]["name"] for a in ada_in_team.get("/apps").json()["apps"]] == ["shared"]
    assert bob.get("/apps").json()["apps"] == []  # not in Bob's personal account

    # the server checks membership on every request: removed, the team JWT stops working
    assert (
        ada.request("DELETE", "/teams/data-team/members", json={"email": DEV_EMAIL}).status_code
        == 200
    )
    with api_server.client(api_key="", Authorization=f"Bearer {team_jwt}") as in_team:
        assert in_team.get("/apps").status_code == 401


def test_runs_of_team_apps_use_the_team_secrets(api_server: ApiServer, tmp_path: Path) -> None:
    _, bob = _team_with_developer(api_server)
    in_team = api_server.client(api_key=_team_key(bob, "data-team"))
    for client, value in ((bob, "bob-personal"), (in_team, "team-value")):
        body = {"name": "WAREHOUSE", "environment": "default", "preview": ""}
        body["encrypted_value"] = _encrypted(client, value)
        assert client.post("/secrets", json=body).status_code == 201
    assert in_team.post("/apps", json={"name": "etl"}).status_code == 201
    assert deploy(in_team, "etl", make_package(tmp_path, "etl")).status_code == 201
    assert in_team.post("/apps/etl/runs", json={"environment": "default"}).status_code == 201

    runner = FakeRunner(api_server)
    assignment = runner.claim(wait=5)
    assert assignment is not None and assignment["account_name"] == "data-team"
    runtime = json.loads(crypto.hybrid_decrypt(runner.keys.private, assignment["sealed_runtime"]))
    assert "team-value" in json.dumps(runtime["secrets"])
    assert "bob-personal" not in json.dumps(runtime)
