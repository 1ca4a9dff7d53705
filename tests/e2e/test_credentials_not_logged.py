"""Passwords, API keys and session tokens never reach the server's logs.

A real `tower up` logging at debug level goes through sign-up, failed and successful
logins, a password change, API key creation and use, a rejected key and a device
login; afterwards its whole output (control plane and runner) is searched for every
secret that crossed the wire.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live import LiveTower, free_port, tower_env

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def debug_tower(tmp_path: Path) -> Iterator[LiveTower]:
    live = LiveTower(tmp_path, free_port(), tower_env(tmp_path, TOWER_LOG_LEVEL="debug"))
    live.start()
    try:
        yield live
    finally:
        live.stop()


def _exercise(tower: LiveTower) -> list[str]:
    """Drive every credential path; the secrets used on the way."""
    password, wrong, new_password = (secrets.token_urlsafe(16) for _ in range(3))
    admin_password = (tower.home / "admin-password").read_text().strip()
    seen = [password, wrong, new_password, admin_password, tower.api_key]
    with tower.api() as admin:
        signed_up = admin.post("/accounts", json={"email": "ada@example.com", "password": password})
        assert signed_up.status_code == 200, signed_up.text
        created = admin.post("/api-keys", json={"name": "ci"})
        assert created.status_code == 201, created.text
    key = created.json()["api_key"]["key"]
    seen.append(key)

    with httpx.Client(base_url=f"{tower.url}/v1", timeout=30) as anonymous:
        failed = anonymous.post("/session", json={"username": "ada@example.com", "password": wrong})
        assert failed.status_code == 401
        unknown = anonymous.post("/session", json={"username": "x@y.z", "password": wrong})
        assert unknown.status_code == 401
        login = anonymous.post(
            "/session", json={"username": "ada@example.com", "password": password}
        )
        assert login.status_code == 200
        token = login.json()["session"]["token"]
        seen += [token["jwt"], token["refresh_token"]]
        assert anonymous.get("/apps", headers={"X-API-Key": key}).status_code == 200
        bogus = "sk-" + secrets.token_urlsafe(24)
        seen.append(bogus)
        assert anonymous.get("/apps", headers={"X-API-Key": bogus}).status_code == 401
        assert anonymous.get("/apps", headers={"Authorization": "Bearer x.y.z"}).status_code == 401

        ticket = anonymous.get("/login/device").json()
        seen.append(ticket["device_code"])
        assert anonymous.get(f"/login/device/{ticket['device_code']}").status_code == 404
        claim = {"user_code": ticket["user_code"], "refresh_token": token["refresh_token"]}
        assert anonymous.post("/login/device/claim", json=claim).status_code == 200
        device = anonymous.get(f"/login/device/{ticket['device_code']}")
        assert device.status_code == 200
        seen += [device.json()["session"]["token"]["jwt"]]
        seen += [device.json()["session"]["token"]["refresh_token"]]

        bearer = {"Authorization": f"Bearer {token['jwt']}"}
        changed = anonymous.put("/user", json={"password": new_password}, headers=bearer)
        assert changed.status_code == 200
        too_short = anonymous.put("/user", json={"password": "short1"}, headers=bearer)
        assert too_short.status_code == 422 and "short1" not in too_short.text
        seen.append("short1")
        refreshed = anonymous.post(
            "/session/refresh", json={"refresh_token": token["refresh_token"]}
        )
        assert refreshed.status_code == 200
        seen.append(refreshed.json()["session"]["token"]["refresh_token"])
    return seen


def test_no_password_or_key_appears_in_the_server_logs(debug_tower: LiveTower) -> None:
    secrets_used = _exercise(debug_tower)
    debug_tower.stop()  # flush everything the processes had to say
    logs = debug_tower.output()
    assert "Tower is up" in logs  # the capture really holds the server's output
    leaked = [s for s in secrets_used if s and s in logs]
    assert not leaked, f"{len(leaked)} secret(s) found in the server output"
