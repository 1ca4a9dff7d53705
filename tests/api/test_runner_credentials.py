"""Runner credentials over the API: the client certificate minted with the token, and
rotation (a new working token; the old one works through the overlap, then stops)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import update

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner
from tower.server.store import models


@pytest.fixture
def api(api_server: ApiServer) -> httpx.Client:
    with api_server.client() as client:
        yield client


def _mint(api: httpx.Client, **body: object) -> dict:
    answer = api.post("/runners/credentials", json={"name": "edge-1", **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["credentials"]


def _runner_http(server: ApiServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/v1/runner",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _beat(server: ApiServer, token: str, runner_id: str) -> httpx.Response:
    with _runner_http(server, token) as http:
        return http.post("/heartbeat", json={"runner_id": runner_id, "run_ids": []})


def _events(api: httpx.Client, action: str) -> list[dict]:
    answer = api.get("/audit-events", params={"page_size": 1000})
    assert answer.status_code == 200, answer.text
    return [e for e in answer.json()["audit_events"] if e["action"] == action]


def test_credentials_carry_a_client_certificate_its_key_and_the_ca_that_issued_it(
    api_server: ApiServer, api: httpx.Client
) -> None:
    body = _mint(api, ttl_days=30)
    ca = x509.load_pem_x509_certificate(body["root_ca"].encode())
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    key = serialization.load_pem_private_key(body["private_key"].encode(), None)

    cert.verify_directly_issued_by(ca)
    assert key.public_key() == cert.public_key()
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert abs(cert.not_valid_after_utc - expires) < timedelta(seconds=2)
    # One CA for every credential; a fresh key each time; the key is never listed again.
    again = _mint(api)
    assert again["root_ca"] == body["root_ca"] and again["private_key"] != body["private_key"]
    assert "PRIVATE KEY" not in api.get("/runners").text
    [event] = [
        e for e in _events(api, "runner_credential.create") if e["details"].get("expires_at")
    ]
    assert event["target"] == "edge-1"
    assert event["details"]["certificate_serial"] == format(cert.serial_number, "x")
    assert "rt-" not in str(event) and "PRIVATE" not in str(event)


def test_rotation_gives_a_new_token_and_the_old_one_stops_after_the_overlap(
    api_server: ApiServer, api: httpx.Client
) -> None:
    api_server.ctx.settings.runner_credential_overlap_seconds = 1.5
    old = _mint(api, ttl_days=3)
    runner = FakeRunner(api_server, token=old["token"])
    with _runner_http(api_server, old["token"]) as http:
        registered = http.post(
            "/register", json={"name": "r", "public_key": runner.keys.public_pem}
        ).json()
        created = datetime.now(UTC)
        rotate_after = datetime.fromisoformat(registered["credential_rotate_after"])
        # Two thirds of the three days.
        assert abs(rotate_after - (created + timedelta(days=2))) < timedelta(minutes=1)
        rotated = http.post("/credentials/rotate")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["credentials"]
    assert new["token"] != old["token"] and new["token"].startswith("rt-")
    assert new["certificate"] != old["certificate"] and new["root_ca"] == old["root_ca"]
    new_expiry = datetime.fromisoformat(new["expires_at"].replace("Z", "+00:00"))
    assert abs(new_expiry - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=1)

    # The runner keeps its id under the new token; the old one still works for the overlap.
    assert _beat(api_server, new["token"], runner.runner_id).status_code == 200
    assert _beat(api_server, old["token"], runner.runner_id).status_code == 200
    time.sleep(1.6)
    refused = _beat(api_server, old["token"], runner.runner_id)
    assert refused.status_code == 401
    assert "expired" in refused.json()["message"]
    assert "tower runners credentials" in refused.json()["message"]
    assert _beat(api_server, new["token"], runner.runner_id).status_code == 200

    [event] = _events(api, "runner_credential.rotate")
    assert event["target"] == "edge-1" and event["actor"]["credential_kind"] == "runner"


def test_an_expired_credential_is_refused_saying_to_mint_new_ones(
    api_server: ApiServer, api: httpx.Client
) -> None:
    body = _mint(api, ttl_days=1)
    with api_server.ctx.sessions.begin() as session:
        session.execute(
            update(models.RunnerCredential)
            .where(models.RunnerCredential.name == "edge-1")
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    with _runner_http(api_server, body["token"]) as http:
        answer = http.post("/register", json={"name": "r", "public_key": "x"})
        assert answer.status_code == 401
        assert "expired" in answer.json()["message"]
        assert "Mint new credentials" in answer.json()["message"]
        assert http.post("/credentials/rotate").status_code == 401


def test_a_credential_without_expiry_has_no_rotation_schedule(
    api_server: ApiServer, api: httpx.Client
) -> None:
    body = _mint(api)
    runner = FakeRunner(api_server, token=body["token"])
    with _runner_http(api_server, body["token"]) as http:
        registered = http.post(
            "/register", json={"name": "r", "public_key": runner.keys.public_pem}
        ).json()
    assert registered["credential_rotate_after"] is None
    assert registered["credential_expires_at"] is None
