"""Our `tower teams` against a real server: list marks the active team, switch makes every
later command act in the team's account, and leaving falls back to the personal account."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.api.conftest import ApiServer
from tower.cli import session
from tower.cli.main import cli
from tower.client.api import TowerApi
from tower.server.services import sessions

EMAIL = "ada@example.com"


def _tower(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def logged_in(api_server: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Ada, logged in (a session file) to the test server; the session file's path."""
    for name in ("TOWER_API_KEY", "TOWER_JWT", "TOWER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOWER_CONFIG_DIR", str(tmp_path / "config"))
    api_server.new_user_key(EMAIL)
    jwt = sessions.open_cli_session(api_server.ctx, EMAIL)
    with TowerApi(api_server.url, jwt=jwt) as client:
        described = client.describe_session()["session"]
    path = tmp_path / "config" / "session.json"
    session.save_session(path, api_server.url, described)
    return path


def test_switch_makes_later_commands_act_in_the_team(
    api_server: ApiServer, logged_in: Path
) -> None:
    created = _tower("teams", "create", "--name", "Data Team")
    assert created.exit_code == 0, created.output
    listed = _tower("teams", "list")
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.output.splitlines()]
    assert ["*", "ada", "ada", "admin"] in rows
    assert ["data-team", "Data", "Team", "admin"] in rows

    switched = _tower("teams", "switch", "data-team")
    assert switched.exit_code == 0, switched.output
    assert "Switched to team: Data Team" in switched.output
    assert json.loads(logged_in.read_text())["active_team"]["name"] == "data-team"
    assert ["*", "data-team", "Data", "Team", "admin"] in [
        line.split() for line in _tower("teams", "list").output.splitlines()
    ]

    assert _tower("apps", "create", "--name", "shared").exit_code == 0
    in_team = api_server.client(api_key=_key_in(api_server, "data-team"))
    assert [a["app"]["name"] for a in in_team.get("/apps").json()["apps"]] == ["shared"]
    with api_server.client() as admin_personal:
        assert "shared" not in str(admin_personal.get("/apps").json())

    unknown = _tower("teams", "switch", "nope")
    assert unknown.exit_code == 1 and "not a member of a team 'nope'" in unknown.output

    _tower("teams", "switch", "ada")
    assert json.loads(logged_in.read_text())["active_team"]["name"] == "ada"


def test_switch_without_a_session_says_what_to_do(
    api_server: ApiServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOWER_CONFIG_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("TOWER_URL", api_server.url)
    monkeypatch.setenv("TOWER_API_KEY", api_server.api_key)
    refused = _tower("teams", "switch", "data-team")
    assert refused.exit_code == 2 and "needs a session" in refused.output
    listed = _tower("teams", "list")
    assert listed.exit_code == 0 and "admin" in listed.output


def _key_in(api_server: ApiServer, slug: str) -> str:
    """An API key of Ada's acting in team `slug`, minted with her session token."""
    jwt = sessions.open_cli_session(api_server.ctx, EMAIL)
    with api_server.client(api_key="", Authorization=f"Bearer {jwt}") as ada:
        answer = ada.post("/api-keys", json={"name": "check", "team": slug})
    assert answer.status_code == 201, answer.text
    return answer.json()["api_key"]["key"]
