"""`tower login`'s device flow against a fake server: polling, expiry and refusals."""

from __future__ import annotations

import functools
from pathlib import Path

import httpx
import pytest
from tests.unit.cli_fakes import error, isolate_config, tower

from tower.cli import login
from tower.client.api import TowerApi

TICKET = {
    "device_code": "dev-123",
    "user_code": "ABCD-EFGH",
    "login_url": "http://tower.test/login/device?user_code=ABCD-EFGH",
    "verification_url": "http://tower.test/login/device",
    "generated_at": "2026-01-01T00:00:00Z",
    "interval": 1,
    "expires_in": 5,
}
SESSION = {
    "user": {"email": "ada@example.com", "first_name": "", "last_name": "", "created_at": ""},
    "token": {"jwt": "jwt-personal"},
    "teams": [{"name": "ada", "type": "personal", "token": {"jwt": "jwt-personal"}}],
}


class FakeDeviceServer:
    def __init__(self, answers: list[httpx.Response]) -> None:
        self.answers = answers
        self.polls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/login/device":
            return httpx.Response(200, json=TICKET)
        assert request.url.path == "/v1/login/device/dev-123"
        self.polls += 1
        return self.answers.pop(0) if self.answers else error(404, "pending")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def serve_device(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    isolate_config(tmp_path, monkeypatch)
    monkeypatch.setenv("TOWER_URL", "http://tower.test")

    def install(server: FakeDeviceServer) -> FakeDeviceServer:
        transport = httpx.MockTransport(server.handle)
        monkeypatch.setattr(login, "TowerApi", functools.partial(TowerApi, transport=transport))
        return server

    return install


def test_polls_until_approved(serve_device) -> None:  # type: ignore[no-untyped-def]
    server = serve_device(
        FakeDeviceServer([error(404, "pending"), httpx.Response(200, json={"session": SESSION})])
    )
    clock = FakeClock()
    session = login.device_login(
        "http://tower.test", open_browser=False, sleep=clock.sleep, clock=lambda: clock.now
    )
    assert session == SESSION and server.polls == 2


def test_gives_up_when_the_ticket_expires(serve_device) -> None:  # type: ignore[no-untyped-def]
    server = serve_device(FakeDeviceServer([]))
    clock = FakeClock()
    with pytest.raises(login.LoginFailed, match="expired"):
        login.device_login(
            "http://tower.test", open_browser=False, sleep=clock.sleep, clock=lambda: clock.now
        )
    assert server.polls == 5  # every second for the ticket's five seconds


def test_a_refused_ticket_stops_the_command_with_the_servers_reason(
    serve_device,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    serve_device(FakeDeviceServer([error(410, "This login request expired.")]))
    monkeypatch.setattr(login.time, "sleep", lambda _s: None)
    result = tower("login", "--no-browser")
    assert result.exit_code == 1
    assert "This login request expired." in result.output
    assert "http://tower.test/login/device?user_code=ABCD-EFGH" in result.output


def test_saves_the_session_file(serve_device, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    serve_device(FakeDeviceServer([httpx.Response(200, json={"session": SESSION})]))
    monkeypatch.setattr(login.time, "sleep", lambda _s: None)
    result = tower("login", "-n")
    assert result.exit_code == 0, result.output
    saved = (tmp_path / "config" / "session.json").read_text()
    assert '"jwt-personal"' in saved and '"tower_url": "http://tower.test"' in saved
