"""Users and sessions over HTTP: sign-up, log in, describe, refresh, sign out, whoami/JWKS."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update

from tests.api.conftest import ApiServer
from tower.server.app import build_context
from tower.server.services import identity
from tower.server.store import models
from tower.server.store.types import utcnow

PASSWORD = "correct horse battery"
USER_KEYS = {
    "email",
    "first_name",
    "last_name",
    "created_at",
    "company",
    "country",
    "profile_photo_url",
    "promo_code",
    "is_alerts_enabled",
    "is_confirmed",
    "is_subscribed_to_changelog",
}
TEAM_KEYS = {"name", "type", "execution_region", "organization", "token"}


def sign_up(api_server: ApiServer, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """A new user, created by the admin (sign-up is closed by default); their session."""
    with api_server.client() as admin:
        answer = admin.post("/accounts", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return answer.json()["session"]


def log_in(api_server: ApiServer, email: str, password: str = PASSWORD) -> httpx.Response:
    with api_server.client(api_key="") as anonymous:
        return anonymous.post("/session", json={"username": email, "password": password})


def bearer(api_server: ApiServer, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{api_server.url}/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_sign_up_is_closed_to_strangers_and_open_to_admins(api_server: ApiServer) -> None:
    body = {"email": "ada@example.com", "password": PASSWORD}
    with api_server.client(api_key="") as anonymous:
        refused = anonymous.post("/accounts", json=body)
    assert refused.status_code == 403
    assert "TOWER_ALLOW_SIGNUP" in refused.json()["detail"]

    session = sign_up(api_server, "Ada@Example.com")
    assert set(session["user"]) >= USER_KEYS
    assert session["user"]["email"] == "ada@example.com"
    [team] = session["teams"]
    assert set(team) >= TEAM_KEYS and team["type"] == "personal"
    assert team["token"]["jwt"] == session["token"]["jwt"]  # the active team (contract §1.5)
    assert session["token"]["refresh_token"]

    with api_server.client() as admin:
        again = admin.post("/accounts", json=body)
        short = admin.post("/accounts", json={"email": "bo@example.com", "password": "short"})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    assert short.status_code == 422 and "short" not in short.text  # never echo a password


def test_open_sign_up_and_same_local_part_get_distinct_accounts(api_server: ApiServer) -> None:
    api_server.ctx.settings.allow_signup = True
    with api_server.client(api_key="") as anonymous:
        first = anonymous.post("/accounts", json={"email": "ada@one.com", "password": PASSWORD})
        second = anonymous.post("/accounts", json={"email": "ada@two.com", "password": PASSWORD})
    assert first.status_code == 200 and second.status_code == 200
    names = {first.json()["session"]["teams"][0]["name"]}
    names.add(second.json()["session"]["teams"][0]["name"])
    assert names == {"ada", "ada-2"}


def test_log_in_with_email_and_password(api_server: ApiServer) -> None:
    sign_up(api_server, "ada@example.com")
    answer = log_in(api_server, "ADA@example.com")
    assert answer.status_code == 200, answer.text
    session = answer.json()["session"]
    with bearer(api_server, session["token"]["jwt"]) as client:
        described = client.get("/session").json()["session"]
        assert client.get("/apps").status_code == 200
    assert described["user"]["email"] == "ada@example.com"
    assert described["token"]["refresh_token"] is None  # shown only when minted

    for email, password in (("ada@example.com", "wrong password"), ("nobody@x.com", PASSWORD)):
        refused = log_in(api_server, email, password)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "Wrong email or password."


def test_log_in_ignores_a_stale_bearer_token(api_server: ApiServer) -> None:
    sign_up(api_server, "ada@example.com")
    with bearer(api_server, "stale.token.here") as client:
        answer = client.post("/session", json={"username": "ada@example.com", "password": PASSWORD})
    assert answer.status_code == 200


def test_refresh_rotates_the_refresh_token(api_server: ApiServer) -> None:
    first = sign_up(api_server, "ada@example.com")
    old_refresh = first["token"]["refresh_token"]
    with api_server.client(api_key="") as anonymous:
        answer = anonymous.post("/session/refresh", json={"refresh_token": old_refresh})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["refreshed_at"].endswith("Z")
        new_refresh = body["session"]["token"]["refresh_token"]
        assert new_refresh and new_refresh != old_refresh
        reused = anonymous.post("/session/refresh", json={"refresh_token": old_refresh})
    assert reused.status_code == 401
    assert "already used" in reused.json()["detail"]
    # The official CLI refreshes with its bearer token and an empty body.
    with bearer(api_server, body["session"]["token"]["jwt"]) as client:
        by_bearer = client.post("/session/refresh", json={})
    assert by_bearer.status_code == 200
    with api_server.client() as api_key_caller:
        no_session = api_key_caller.post("/session/refresh", json={})
    assert no_session.status_code == 401 and "API keys" in no_session.json()["detail"]


def test_sign_out_revokes_the_session_and_all_its_tokens(api_server: ApiServer) -> None:
    session = sign_up(api_server, "ada@example.com")
    token, refresh = session["token"]["jwt"], session["token"]["refresh_token"]
    other = log_in(api_server, "ada@example.com").json()["session"]["token"]["jwt"]
    with bearer(api_server, token) as client:
        assert client.request("DELETE", "/session", json={}).status_code == 200
        refused = client.get("/apps")
    assert refused.status_code == 401 and "signed out" in refused.json()["detail"]
    with api_server.client(api_key="") as anonymous:
        again = anonymous.post("/session/refresh", json={"refresh_token": refresh})
    assert again.status_code == 401
    with bearer(api_server, other) as client:  # another session of the same user lives on
        assert client.get("/apps").status_code == 200
    with api_server.client() as api_key_caller:
        not_a_session = api_key_caller.request("DELETE", "/session", json={})
    assert not_a_session.status_code == 400 and "/v1/api-keys" in not_a_session.json()["detail"]


def test_an_expired_session_is_refused(api_server: ApiServer) -> None:
    session = sign_up(api_server, "ada@example.com")
    with api_server.ctx.sessions.begin() as db:
        db.execute(update(models.Session).values(expires_at=utcnow() - timedelta(seconds=1)))
    with bearer(api_server, session["token"]["jwt"]) as client:
        refused = client.get("/apps")
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    with api_server.client(api_key="") as anonymous:
        answer = anonymous.post(
            "/session/refresh", json={"refresh_token": session["token"]["refresh_token"]}
        )
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]


def test_refresh_tokens_are_stored_hashed(api_server: ApiServer) -> None:
    refresh = sign_up(api_server, "ada@example.com")["token"]["refresh_token"]
    with api_server.ctx.sessions.begin() as db:
        stored = db.scalars(select(models.Session.refresh_token_hash)).all()
    assert refresh not in stored and all(h is None or len(h) == 64 for h in stored)


def test_whoami_is_an_rs256_token_verifiable_with_the_served_jwks(
    api_server: ApiServer,
) -> None:
    session = sign_up(api_server, "ada@example.com")
    with bearer(api_server, session["token"]["jwt"]) as client:
        answer = client.get("/whoami")
    assert answer.status_code == 200, answer.text
    token = answer.json()["token"]
    assert answer.json()["expires_at"].endswith("Z")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"

    keys = jwt.PyJWKClient(f"{api_server.url}/.well-known/jwks.json")
    signing_key = keys.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, signing_key.key, algorithms=["RS256"], audience=api_server.url)
    assert claims["email"] == "ada@example.com"
    assert claims["https://tower.dev/aid"]

    # A key long enough for HS256 (PyJWT warns below 32 bytes): the forgery is refused
    # for its algorithm and signature, not for a weak key.
    forged = jwt.encode(claims, "not-the-key-but-32-bytes-or-more!", algorithm="HS256")
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(forged, signing_key.key, algorithms=["RS256"], audience=api_server.url)


def test_every_replica_serves_the_same_identity_key(api_server: ApiServer) -> None:
    served = httpx.get(f"{api_server.url}/.well-known/jwks.json").json()
    replica = build_context(api_server.ctx.settings)  # same database and master key
    assert identity.jwks(replica) == served
    assert served["keys"][0]["kty"] == "RSA" and served["keys"][0]["alg"] == "RS256"
