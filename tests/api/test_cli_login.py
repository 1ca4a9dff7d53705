"""Our `tower login` against a real server: the browser flow approved over HTTP, and API keys."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select

from tests.api.conftest import ApiServer
from tests.api.test_sessions import sign_up
from tower.cli.main import cli
from tower.server.store import models


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_server: ApiServer) -> Path:
    for name in ("TOWER_API_KEY", "TOWER_JWT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOWER_URL", api_server.url)
    monkeypatch.setenv("TOWER_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def _approve_when_asked(api_server: ApiServer, refresh_token: str) -> threading.Thread:
    """What the person at the browser does: approve the code the CLI asked for."""

    def approve() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with api_server.ctx.sessions() as db:
                code = db.scalar(select(models.DeviceLogin.user_code))
            if code:
                httpx.post(
                    f"{api_server.url}/v1/login/device/claim",
                    json={"user_code": code, "refresh_token": refresh_token},
                    timeout=30,
                ).raise_for_status()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=approve, daemon=True)
    thread.start()
    return thread


def _tower(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_tower_login_waits_for_approval_and_saves_the_session(
    api_server: ApiServer, config_dir: Path
) -> None:
    browser = sign_up(api_server, "ada@example.com")
    approver = _approve_when_asked(api_server, browser["token"]["refresh_token"])
    result = _tower("login", "--no-browser")
    approver.join(5)
    assert result.exit_code == 0, result.output
    assert f"{api_server.url}/login/device?user_code=" in result.output
    assert "Logged in to" in result.output and "ada@example.com" in result.output

    saved = json.loads((config_dir / "session.json").read_text())
    assert saved["tower_url"] == api_server.url
    assert saved["user"]["email"] == "ada@example.com"
    assert saved["active_team"]["team_type"] == "personal"
    assert (config_dir / "session.json").stat().st_mode & 0o777 == 0o600
    listed = _tower("apps", "list")  # the saved session works for later commands
    assert listed.exit_code == 0, listed.output


def test_tower_login_with_an_api_key(api_server: ApiServer, config_dir: Path) -> None:
    result = _tower("login", "--api-key", api_server.api_key)
    assert result.exit_code == 0, result.output
    saved = json.loads((config_dir / "session.json").read_text())
    assert saved["active_team"]["name"] == "admin"
    assert _tower("apps", "list").exit_code == 0

    refused = _tower("login", "--api-key", "sk-" + "x" * 40)
    assert refused.exit_code == 1 and "rejected this API key" in refused.output
    assert "sk-xxxx" not in refused.output  # a rejected key is not echoed either
    assert _tower("login", "--api-key", "not-a-key").exit_code == 1
