"""Credentials through the public API: API keys, session JWTs and runner tokens.

Authentication reads outside any write transaction; these tests pin down that it
still refuses what must be refused and still records when a key was last used.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, update

from tests.api.conftest import ApiServer
from tower.server.services import sessions
from tower.server.store import models
from tower.server.store.types import utcnow


def _key_row(api_server: ApiServer) -> models.ApiKey:
    with api_server.ctx.sessions.begin() as session:
        return session.scalars(select(models.ApiKey)).first()


def test_a_request_records_when_the_key_was_last_used(api_server: ApiServer) -> None:
    with api_server.ctx.sessions.begin() as session:
        session.execute(update(models.ApiKey).values(last_used_at=None))
    with api_server.client() as client:
        assert client.get("/apps").status_code == 200
    used = _key_row(api_server).last_used_at
    assert used is not None and utcnow() - used < timedelta(minutes=1)


def test_an_expired_api_key_is_refused(api_server: ApiServer) -> None:
    with api_server.ctx.sessions.begin() as session:
        session.execute(update(models.ApiKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    with api_server.client() as client:
        answer = client.get("/apps")
    assert answer.status_code == 401
    assert "expired" in answer.json()["detail"]


def test_an_unknown_api_key_is_refused(api_server: ApiServer) -> None:
    with api_server.client(api_key="sk-" + "x" * 40) as client:
        assert client.get("/apps").status_code == 401


def test_a_signed_out_session_is_refused(api_server: ApiServer) -> None:
    jwt = sessions.open_cli_session(api_server.ctx, api_server.ctx.settings.admin_email)
    bearer = {"Authorization": f"Bearer {jwt}"}
    with httpx.Client(base_url=f"{api_server.url}/v1", headers=bearer) as client:
        assert client.get("/apps").status_code == 200
        with api_server.ctx.sessions.begin() as session:
            session.execute(update(models.Session).values(revoked_at=utcnow()))
        answer = client.get("/apps")
    assert answer.status_code == 401
    assert "signed out" in answer.json()["detail"]


def test_a_revoked_runner_token_is_refused(api_server: ApiServer) -> None:
    token = api_server.runner_token()
    runner = {"Authorization": f"Bearer {token}"}
    body = {"runner_id": "00000000-0000-0000-0000-000000000000", "run_ids": [], "wait_seconds": 0}
    with httpx.Client(base_url=f"{api_server.url}/v1", headers=runner) as client:
        assert client.post("/runner/heartbeat", json=body).status_code != 401
        with api_server.ctx.sessions.begin() as session:
            session.execute(update(models.RunnerCredential).values(revoked_at=utcnow()))
        assert client.post("/runner/heartbeat", json=body).status_code == 401
