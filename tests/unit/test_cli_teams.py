"""`tower teams ...` against an in-memory fake of the Tower API, and the session file
helpers that keep the active team."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.cli_fakes import error, isolate_config, serve, tower

from tower.cli import session
from tower.core.errors import TowerError


def _team(slug: str, display: str, type_: str = "team", role: str = "admin") -> dict[str, Any]:
    return {"name": slug, "slug": slug, "display_name": display, "type": type_, "role": role}


@dataclass
class FakeTower:
    """The caller's teams and invitations, kept the way the server keeps them."""

    teams: list[dict[str, Any]] = field(
        default_factory=lambda: [
            _team("ada", "ada", "personal"),
            _team("data-team", "Data Team", role="developer"),
        ]
    )
    invitations: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path.removeprefix("/v1"), request.method
        content = request.read()
        body = json.loads(content) if content else None
        self.requests.append((method, path, body))
        if path == "/session":
            return httpx.Response(200, json={"session": self.session()})
        if path == "/teams" and method == "GET":
            return httpx.Response(200, json={"teams": self.teams, "pages": {}})
        if path == "/teams" and method == "POST":
            team = _team(body.get("slug") or body["name"].lower().replace(" ", "-"), body["name"])
            self.teams.append(team)
            return httpx.Response(200, json={"team": team})
        if match := re.fullmatch(r"/teams/([^/]+)/invites", path):
            emails = body["emails"].split(", ")
            found = [{"email": e, "role": body["role"], "team": {"name": match[1]}} for e in emails]
            return httpx.Response(200, json={"team_invitations": found})
        if match := re.fullmatch(r"/teams/([^/]+)/leave", path):
            self.teams = [t for t in self.teams if t["name"] != match[1]]
            return httpx.Response(200, json={"team": _team(match[1], match[1])})
        if path == "/team-invites" and method == "PUT":
            return error(404, f"You have no pending invitation to team {body['name']!r}.")
        return error(404, f"nothing at {method} {path}")

    def session(self) -> dict[str, Any]:
        teams = [{**t, "token": {"jwt": f"jwt-{t['name']}"}} for t in self.teams]
        return {"user": {"email": "ada@example.com"}, "token": {"jwt": "jwt-ada"}, "teams": teams}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTower:
    isolate_config(tmp_path, monkeypatch)
    return serve(FakeTower(), monkeypatch)


def _session_path(tmp_path: Path) -> Path:
    return tmp_path / "config" / "session.json"


def _log_in(tmp_path: Path, fake: FakeTower) -> None:
    session.save_session(_session_path(tmp_path), "http://tower.test", fake.session())


def test_list_marks_the_active_team(fake: FakeTower, tmp_path: Path) -> None:
    _log_in(tmp_path, fake)
    result = tower("teams", "list")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    assert ["*", "ada", "ada", "admin"] in rows
    assert ["data-team", "Data", "Team", "developer"] in rows
    assert ("GET", "/session", None) in fake.requests  # the file's teams were refreshed


def test_switch_sets_the_active_team_in_the_session_file(fake: FakeTower, tmp_path: Path) -> None:
    _log_in(tmp_path, fake)
    result = tower("teams", "switch", "data-team")
    assert result.exit_code == 0, result.output
    assert "Switched to team: Data Team" in result.output
    content = json.loads(_session_path(tmp_path).read_text())
    assert content["active_team"] == {
        "name": "data-team",
        "token": {"jwt": "jwt-data-team"},
        "team_type": "team",
    }
    # every later command sends the team's token
    assert session.session_token(content) == "jwt-data-team"
    # ...and a refresh keeps the team active and the user's own token
    tower("teams", "list")
    content = json.loads(_session_path(tmp_path).read_text())
    assert content["active_team"]["name"] == "data-team"
    assert content["token"] == {"jwt": "jwt-ada"}


def test_switch_to_an_unknown_team_changes_nothing(fake: FakeTower, tmp_path: Path) -> None:
    _log_in(tmp_path, fake)
    before = _session_path(tmp_path).read_text()
    result = tower("teams", "switch", "nope")
    assert result.exit_code == 1
    assert "not a member of a team 'nope'" in result.output
    assert "ada, data-team" in result.output
    assert json.loads(_session_path(tmp_path).read_text()) == json.loads(before)


def test_switch_needs_a_session(fake: FakeTower, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_API_KEY", "sk-test")
    result = tower("teams", "switch", "data-team")
    assert result.exit_code == 2 and "needs a session" in result.output


def test_create_adds_the_team_to_the_session_file(fake: FakeTower, tmp_path: Path) -> None:
    _log_in(tmp_path, fake)
    result = tower("teams", "create", "--name", "Ops", "--slug", "ops")
    assert result.exit_code == 0, result.output
    assert "Created team 'Ops' (ops)" in result.output
    assert ("POST", "/teams", {"name": "Ops", "slug": "ops"}) in fake.requests
    names = [t["name"] for t in json.loads(_session_path(tmp_path).read_text())["teams"]]
    assert names == ["ada", "data-team", "ops"]


def test_invite_sends_every_address_with_the_role(fake: FakeTower) -> None:
    result = tower("teams", "invite", "data-team", "a@x.io", "b@x.io", "--role", "admin")
    assert result.exit_code == 0, result.output
    body = {"emails": "a@x.io, b@x.io", "role": "admin"}
    assert ("POST", "/teams/data-team/invites", body) in fake.requests
    assert "Invited b@x.io to data-team as admin" in result.output
    assert tower("teams", "invite", "data-team", "a@x.io", "--role", "owner").exit_code == 2


def test_accepting_a_missing_invitation_prints_the_server_message(fake: FakeTower) -> None:
    result = tower("teams", "accept", "nope")
    assert result.exit_code == 1
    assert "no pending invitation to team 'nope'" in result.output


def test_leaving_the_active_team_falls_back_to_the_personal_account(
    fake: FakeTower, tmp_path: Path
) -> None:
    _log_in(tmp_path, fake)
    assert tower("teams", "switch", "data-team").exit_code == 0
    result = tower("teams", "leave", "data-team", "--yes")
    assert result.exit_code == 0, result.output
    content = json.loads(_session_path(tmp_path).read_text())
    assert content["active_team"]["name"] == "ada"
    assert [t["name"] for t in content["teams"]] == ["ada"]


def test_switch_active_team_helper() -> None:
    content = session.build_session_file("http://t", FakeTower().session())
    assert session.active_team_name(content) == "ada"
    switched = session.switch_active_team(content, "data-team")
    assert session.active_team_name(switched) == "data-team"
    assert session.active_team_name(content) == "ada"  # the input is left alone
    with pytest.raises(TowerError):
        session.switch_active_team(content, "other")
