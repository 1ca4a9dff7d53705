"""Session file round trip and the credential / URL precedence of the CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tower.cli import config, session
from tower.cli.config import DEFAULT_URL, NOT_LOGGED_IN, Config, load_config, make_api
from tower.core.errors import Unauthenticated

SESSION = {
    "user": {
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "created_at": "2025-01-01T00:00:00Z",
        "company": "",
        "is_confirmed": True,
    },
    "token": {"jwt": "jwt-team", "access_token": "a"},
    "teams": [
        {"name": "ada", "type": "personal", "token": {"jwt": "jwt-personal", "access_token": "a"}},
        {"name": "data", "type": "team", "token": {"jwt": "jwt-team", "access_token": "b"}},
    ],
    "featurebase_identity": {"company_hash": "", "user_hash": ""},
}


def test_save_session_writes_the_official_cli_format_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "tower" / "session.json"

    session.save_session(path, "http://127.0.0.1:8000", SESSION)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "tower_url": "http://127.0.0.1:8000",
        "user": {
            "email": "ada@example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "created_at": "2025-01-01T00:00:00Z",
        },
        "token": {"jwt": "jwt-team"},
        "active_team": {"name": "data", "token": {"jwt": "jwt-team"}, "team_type": "team"},
        "teams": [
            {"name": "ada", "token": {"jwt": "jwt-personal"}, "team_type": "personal"},
            {"name": "data", "token": {"jwt": "jwt-team"}, "team_type": "team"},
        ],
    }
    assert session.load_session(path) == json.loads(path.read_text())
    assert [p.name for p in path.parent.iterdir()] == ["session.json"]  # no temp files left


def test_active_team_falls_back_to_personal(tmp_path: Path) -> None:
    other = {**SESSION, "token": {"jwt": "jwt-of-nobody"}}
    content = session.save_session(tmp_path / "s.json", "http://x", other)
    assert content["active_team"]["name"] == "ada"
    assert session.session_token(content) == "jwt-personal"


def test_session_token_without_active_team_uses_session_jwt() -> None:
    assert session.session_token({"token": {"jwt": "s"}, "active_team": None}) == "s"
    assert session.session_token({}) is None


def test_load_session_missing_and_corrupt(tmp_path: Path) -> None:
    assert session.load_session(tmp_path / "none.json") is None
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(session.SessionFileError, match="not valid JSON"):
        session.load_session(bad)


def test_default_session_path_honours_tower_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWER_CONFIG_DIR", str(tmp_path))
    assert session.default_session_path() == tmp_path / "session.json"


@pytest.fixture
def session_file(tmp_path: Path) -> Path:
    path = tmp_path / "session.json"
    session.save_session(path, "http://from-session:9000", SESSION)
    return path


def test_api_key_wins_over_jwt_and_session(session_file: Path) -> None:
    env = {"TOWER_API_KEY": "sk-1", "TOWER_JWT": "jwt-env"}
    cfg = load_config(env, session_path=session_file)
    assert cfg == Config(url=DEFAULT_URL, api_key="sk-1", source="api_key")


def test_jwt_wins_over_session(session_file: Path) -> None:
    cfg = load_config({"TOWER_JWT": "jwt-env", "TOWER_URL": "http://t"}, session_file)
    assert cfg == Config(url="http://t", jwt="jwt-env", source="jwt")


def test_session_gives_url_and_active_team_token(session_file: Path) -> None:
    cfg = load_config({}, session_path=session_file)
    assert cfg == Config(url="http://from-session:9000", jwt="jwt-team", source="session")


def test_tower_url_wins_over_session_url(session_file: Path) -> None:
    cfg = load_config({"TOWER_URL": "http://env:1"}, session_path=session_file)
    assert cfg.url == "http://env:1"
    assert cfg.jwt == "jwt-team"


def test_session_found_through_tower_config_dir(session_file: Path) -> None:
    cfg = load_config({"TOWER_CONFIG_DIR": str(session_file.parent)})
    assert cfg.source == "session"


def test_nothing_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config({}, session_path=tmp_path / "none.json")
    assert cfg == Config(url=DEFAULT_URL)
    assert not cfg.has_credentials
    with pytest.raises(Unauthenticated) as info:
        make_api(cfg)
    assert info.value.message == NOT_LOGGED_IN


def test_make_api_uses_the_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    api = make_api(Config(url="http://h:1", api_key="sk-9", source="api_key"))
    try:
        assert api._http.http.headers["X-API-Key"] == "sk-9"
        assert str(api._http.http.base_url) == "http://h:1/v1/"
    finally:
        api.close()
    assert config.make_api is make_api
