"""Secrets through HTTP on SQLite and PostgreSQL: the wire format both ways, previews,
inheritance from `default`, bad ciphertext and keys, tenancy, and no plaintext at rest."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from sqlalchemy import select
from sqlalchemy.engine import make_url

from tests.api.conftest import ApiServer
from tower.core import crypto
from tower.server.services import secrets as secrets_service
from tower.server.store import models

SECRET_KEYS = {"name", "environment", "preview", "created_at"}


@pytest.fixture(scope="module")
def caller_key() -> RSAPrivateKey:
    """The caller's own key pair for exports (as the CLI makes one per `list --show`)."""
    return crypto.generate_rsa_private_key()


def server_key(api: httpx.Client) -> Any:
    response = api.get("/secrets/key")
    assert response.status_code == 200, response.text
    return crypto.load_public_key(response.json()["public_key"])


def create(
    api: httpx.Client, name: str, value: str, environment: str = "default", **extra: Any
) -> httpx.Response:
    body = {
        "name": name,
        "environment": environment,
        "encrypted_value": crypto.hybrid_encrypt(server_key(api), value),
        "preview": crypto.preview(value),
    }
    return api.post("/secrets", json=body | extra)


def listed(api: httpx.Client, environment: str = "default", all_: bool = False) -> list[tuple]:
    params = {"page": 0, "page_size": 100, "environment": environment, "all": str(all_).lower()}
    response = api.get("/secrets", params=params)
    assert response.status_code == 200, response.text
    return [(s["name"], s["environment"], s["preview"]) for s in response.json()["secrets"]]


def exported(
    api: httpx.Client, key: RSAPrivateKey, environment: str = "default", all_: bool = False
) -> dict[tuple[str, str], str]:
    """(name, environment) → value, decrypted with the caller's private key."""
    body = {
        "environment": environment,
        "all": all_,
        "page": 1,
        "page_size": 100,
        "public_key": crypto.public_key_pem_spki(key),
    }
    response = api.post("/secrets/export", json=body)
    assert response.status_code == 200, response.text
    return {
        (s["name"], s["environment"]): crypto.hybrid_decrypt(key, s["encrypted_value"])
        for s in response.json()["secrets"]
    }


# ------------------------------------------------------------------------ the key


def test_server_key_is_pkcs1_by_default_and_spki_on_request(api_server: ApiServer) -> None:
    with api_server.client() as api:
        pkcs1 = api.get("/secrets/key").json()["public_key"]
        spki = api.get("/secrets/key", params={"format": "spki"}).json()["public_key"]
        assert pkcs1.startswith("-----BEGIN RSA PUBLIC KEY-----")  # what the official CLI parses
        assert spki.startswith("-----BEGIN PUBLIC KEY-----")
        same = crypto.load_public_key(pkcs1).public_numbers()
        assert crypto.load_public_key(spki).public_numbers() == same
        assert api.get("/secrets/key", params={"format": "pkcs1"}).json()["public_key"] == pkcs1
        bad = api.get("/secrets/key", params={"format": "der"})
        assert bad.status_code == 422 and "spki" in bad.json()["detail"]
    with api_server.client(api_key="") as anonymous:
        assert anonymous.get("/secrets/key").status_code == 401


# ------------------------------------------------------------------------ round trip


def test_create_then_export_decrypts_to_the_same_value(
    api_server: ApiServer, caller_key: RSAPrivateKey
) -> None:
    value = "postgres://user:pä55wörd@db:5432/x  with spaces\nand a newline"
    with api_server.client() as api:
        made = create(api, "DATABASE_URL", value, preview="client-made, ignored")
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        assert set(secret) == SECRET_KEYS
        assert secret["name"] == "DATABASE_URL" and secret["environment"] == "default"
        assert secret["preview"] == "XXXXXXline"  # the server's own, from the plaintext
        assert secret["created_at"].endswith("Z")
        assert exported(api, caller_key) == {("DATABASE_URL", "default"): value}
        # Export carries no plaintext, only the value encrypted to the caller's key.
        raw = api.post(
            "/secrets/export", json={"public_key": crypto.public_key_pem_spki(caller_key)}
        )
        assert set(raw.json()["secrets"][0]) == {
            "name",
            "environment",
            "created_at",
            "encrypted_value",
        }
        assert value not in raw.text


def test_export_accepts_a_pkcs1_key_and_pages(
    api_server: ApiServer, caller_key: RSAPrivateKey
) -> None:
    with api_server.client() as api:
        for name in ("A", "B", "C"):
            assert create(api, name, f"value-of-{name}").status_code == 201
        body = {
            "public_key": crypto.public_key_pem_pkcs1(caller_key),
            "page": 2,
            "page_size": 2,
        }
        page = api.post("/secrets/export", json=body).json()
        assert [s["name"] for s in page["secrets"]] == ["C"]
        assert page["pages"] == {"page": 2, "page_size": 2, "num_pages": 2, "total": 3}
        assert crypto.hybrid_decrypt(caller_key, page["secrets"][0]["encrypted_value"]) == (
            "value-of-C"
        )


@pytest.mark.parametrize(
    ("value", "preview"),
    [
        ("", "XXXXXXXXXX"),
        ("short", "XXXXXXXXXX"),
        ("exactly10!", "XXXXXXXXXX"),
        ("eleven-char", "XXXXXXchar"),
        ("https://abc123.snowflake.com", "XXXXXX.com"),
    ],
)
def test_preview_masks_short_values_and_shows_the_last_four_of_long_ones(
    api_server: ApiServer, caller_key: RSAPrivateKey, value: str, preview: str
) -> None:
    with api_server.client() as api:
        made = create(api, "S", value)
        assert made.status_code == 201, made.text
        assert made.json()["secret"]["preview"] == preview
        assert listed(api) == [("S", "default", preview)]
        assert exported(api, caller_key) == {("S", "default"): value}


def test_duplicate_name_in_one_environment_is_409_in_another_is_fine(
    api_server: ApiServer, caller_key: RSAPrivateKey
) -> None:
    with api_server.client() as api:
        assert create(api, "TOKEN", "first-value").status_code == 201
        again = create(api, "TOKEN", "second-value")
        assert again.status_code == 409 and again.json()["status"] == 409
        assert "TOKEN" in again.json()["detail"] and "exists" in again.json()["detail"]
        assert create(api, "TOKEN", "production-value", "production").status_code == 201
        # The 409 stored nothing: default still holds the first value.
        assert exported(api, caller_key)[("TOKEN", "default")] == "first-value"


def test_update_replaces_the_value_and_preview(
    api_server: ApiServer, caller_key: RSAPrivateKey
) -> None:
    with api_server.client() as api:
        created = create(api, "TOKEN", "old-value-1111", "production").json()["secret"]
        body = {
            "environment": "production",
            "encrypted_value": crypto.hybrid_encrypt(server_key(api), "new-value-2222"),
            "preview": "ignored",
        }
        updated = api.put("/secrets/TOKEN", json=body)
        assert updated.status_code == 200, updated.text
        secret = updated.json()["secret"]
        assert secret["preview"] == "XXXXXX2222" and secret["environment"] == "production"
        assert secret["created_at"] == created["created_at"]
        assert exported(api, caller_key, "production")[("TOKEN", "production")] == (
            "new-value-2222"
        )
        # Only production's exists: default has no TOKEN to update.
        missing = api.put("/secrets/TOKEN", json=body | {"environment": "default"})
        assert missing.status_code == 404 and "TOKEN" in missing.json()["detail"]


def test_delete_by_environment_query_and_by_env_slash_name(api_server: ApiServer) -> None:
    with api_server.client() as api:
        create(api, "TOKEN", "default-value")
        create(api, "TOKEN", "production-value", "production")
        create(api, "OTHER", "x", "production")

        deleted = api.delete("/secrets/TOKEN", params={"environment": "production"})
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["secret"]["environment"] == "production"
        assert set(deleted.json()["secret"]) == SECRET_KEYS
        # production now inherits default's TOKEN again.
        assert ("TOKEN", "default", "XXXXXXalue") in listed(api, "production")

        # What the SDK sends for `production/OTHER`: one %2F-encoded path segment.
        qualified = api.delete("/secrets/production%2FOTHER")
        assert qualified.status_code == 200, qualified.text
        assert qualified.json()["secret"]["name"] == "OTHER"
        assert listed(api, "production") == [("TOKEN", "default", "XXXXXXalue")]

        assert api.delete("/secrets/TOKEN").status_code == 200  # environment defaults
        gone = api.delete("/secrets/TOKEN")
        assert gone.status_code == 404 and gone.json()["status"] == 404
        assert listed(api, all_=True) == []


# ------------------------------------------------------------------------ inheritance


def test_inheritance_and_override_matrix(api_server: ApiServer, caller_key: RSAPrivateKey) -> None:
    with api_server.client() as api:
        # The documented example: production is never created before its secret.
        create(api, "s3_bucket", "my-data-bucket")
        create(api, "snowflake_url", "https://abc123.snowflake.com")
        create(api, "snowflake_url", "https://abc123-prod.snowflake.com", "production")
        create(api, "staging_only", "staging-value", "staging")

        assert listed(api) == [
            ("s3_bucket", "default", "XXXXXXcket"),
            ("snowflake_url", "default", "XXXXXX.com"),
        ]
        assert listed(api, "production") == [
            ("s3_bucket", "default", "XXXXXXcket"),
            ("snowflake_url", "production", "XXXXXX.com"),
        ]
        assert listed(api, all_=True) == [
            ("s3_bucket", "default", "XXXXXXcket"),
            ("snowflake_url", "default", "XXXXXX.com"),
            ("snowflake_url", "production", "XXXXXX.com"),
            ("staging_only", "staging", "XXXXXXalue"),
        ]
        # `environment` is sent even with all=true; it does not narrow the list.
        assert len(listed(api, "production", all_=True)) == 4
        # An environment with no secrets of its own gets default's.
        assert [n for n, _, _ in listed(api, "nowhere")] == ["s3_bucket", "snowflake_url"]

        assert exported(api, caller_key, "production") == {
            ("s3_bucket", "default"): "my-data-bucket",
            ("snowflake_url", "production"): "https://abc123-prod.snowflake.com",
        }
        assert len(exported(api, caller_key, all_=True)) == 4
        environments = api.get("/secrets/environments").json()
        assert environments == {"environments": ["default", "production", "staging"]}


def test_effective_secrets_for_a_run_and_counts(api_server: ApiServer) -> None:
    with api_server.client() as api:
        create(api, "SHARED", "from-default")
        create(api, "OVERRIDDEN", "default-value")
        create(api, "OVERRIDDEN", "production-value", "production")
        create(api, "PROD_ONLY", "p", "production")
        create(api, "STAGING_ONLY", "s", "staging")
    ctx = api_server.ctx
    with ctx.sessions.begin() as session:
        envs = {e.name: e for e in session.scalars(select(models.Environment))}
        production, default = envs["production"], envs["default"]
        account_id = production.account_id
        run_in_production = secrets_service.effective_secrets(
            ctx, session, account_id, production.id
        )
        assert run_in_production == {
            "SHARED": "from-default",
            "OVERRIDDEN": "production-value",
            "PROD_ONLY": "p",
        }
        run_in_default = secrets_service.effective_secrets(ctx, session, account_id, default.id)
        assert run_in_default == {"SHARED": "from-default", "OVERRIDDEN": "default-value"}
        # Another account's id finds nothing, even with this account's environment id.
        assert secrets_service.effective_secrets(ctx, session, uuid.uuid4(), production.id) == {}
        assert secrets_service.count_secrets(session, production.id) == 2
        assert secrets_service.count_secrets(session, default.id) == 2
        assert secrets_service.count_secrets(session, envs["staging"].id) == 1


# ------------------------------------------------------------------------ bad input


def test_tampered_or_wrong_key_ciphertext_is_400_and_stores_nothing(
    api_server: ApiServer,
) -> None:
    with api_server.client() as api:
        good = crypto.hybrid_encrypt(server_key(api), "some-value")
        raw = bytearray(base64.b64decode(good))
        raw[-1] ^= 0x01  # flip one bit of the GCM tag
        tampered = base64.b64encode(bytes(raw)).decode()
        other_key = crypto.generate_rsa_private_key().public_key()
        for encrypted in (tampered, crypto.hybrid_encrypt(other_key, "some-value")):
            body = {
                "name": "S",
                "environment": "brand-new",
                "encrypted_value": encrypted,
                "preview": "XXXXXXXXXX",
            }
            response = api.post("/secrets", json=body)
            assert response.status_code == 400, response.text
            detail = response.json()["detail"]
            assert "could not be decrypted" in detail and "/v1/secrets/key" in detail
        not_base64 = api.post(
            "/secrets", json={"name": "S", "encrypted_value": "%%%", "preview": ""}
        )
        assert not_base64.status_code == 422 and "base64" in not_base64.json()["detail"]
        assert listed(api, all_=True) == []
        # Not even the environment was created for the failed secret.
        assert api.get("/secrets/environments").json()["environments"] == []
        with api_server.ctx.sessions.begin() as session:
            names = set(session.scalars(select(models.Environment.name)))
        assert "brand-new" not in names


@pytest.mark.parametrize(
    "public_key",
    [
        "",
        "not a pem at all",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "1024-bit",
    ],
)
def test_bad_export_key_is_422(api_server: ApiServer, public_key: str) -> None:
    if public_key == "1024-bit":
        from cryptography.hazmat.primitives.asymmetric import rsa

        weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        public_key = crypto.public_key_pem_spki(weak)
    with api_server.client() as api:
        create(api, "S", "value-that-must-not-leak")
        response = api.post("/secrets/export", json={"public_key": public_key})
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["status"] == 422 and "key" in body["detail"].lower()
        assert "value-that-must-not-leak" not in response.text


@pytest.mark.parametrize("name", ["", "has space", "tab\there", "a/b", "x=y", "n" * 257])
def test_invalid_secret_names_are_422(api_server: ApiServer, name: str) -> None:
    with api_server.client() as api:
        response = create(api, name, "v")
        assert response.status_code == 422, response.text
        assert "Secret name" in response.json()["detail"]
        assert listed(api, all_=True) == []


def test_env_var_and_dlt_style_names_are_accepted(api_server: ApiServer) -> None:
    with api_server.client() as api:
        for name in ("dlt.destination.password", "AWS_SECRET_ACCESS_KEY", "my-key.v2", "n" * 256):
            assert create(api, name, "v").status_code == 201, name
        assert len(listed(api)) == 4
        bad_env = create(api, "OK", "v", "no spaces")
        assert bad_env.status_code == 422 and "Environment name" in bad_env.json()["detail"]


def test_list_pages(api_server: ApiServer) -> None:
    with api_server.client() as api:
        for name in ("e", "d", "c", "b", "a"):
            create(api, name, "v")
        page = api.get("/secrets", params={"page": 2, "page_size": 2}).json()
        assert [s["name"] for s in page["secrets"]] == ["c", "d"]
        assert page["pages"] == {"page": 2, "page_size": 2, "num_pages": 3, "total": 5}
        everything = api.get("/secrets", params={"page": 0, "page_size": 100}).json()
        assert len(everything["secrets"]) == 5 and everything["pages"]["num_pages"] == 1


# ------------------------------------------------------------------------ tenancy


def test_another_account_sees_and_touches_none_of_yours(
    api_server: ApiServer, caller_key: RSAPrivateKey
) -> None:
    bob_key = api_server.new_user_key("bob@example.com")
    with api_server.client() as admin, api_server.client(api_key=bob_key) as bob:
        create(admin, "TOKEN", "admin-default-value")
        create(admin, "TOKEN", "admin-production-value", "production")

        assert listed(bob, all_=True) == []
        assert listed(bob, "production") == []
        assert exported(bob, caller_key, all_=True) == {}
        assert bob.get("/secrets/environments").json()["environments"] == []
        assert bob.delete("/secrets/TOKEN").status_code == 404
        assert bob.delete("/secrets/TOKEN", params={"environment": "production"}).status_code == (
            404
        )
        update = {
            "environment": "default",
            "encrypted_value": crypto.hybrid_encrypt(server_key(bob), "bob-value"),
            "preview": "",
        }
        assert bob.put("/secrets/TOKEN", json=update).status_code == 404

        # Bob may use the same names in his own account; neither sees the other's.
        assert create(bob, "TOKEN", "bob-value").status_code == 201
        assert exported(bob, caller_key) == {("TOKEN", "default"): "bob-value"}
        assert exported(admin, caller_key, all_=True) == {
            ("TOKEN", "default"): "admin-default-value",
            ("TOKEN", "production"): "admin-production-value",
        }


# ------------------------------------------------------------------------ at rest


def test_plaintext_never_in_the_database_file_nor_in_responses(
    api_server: ApiServer, caller_key: RSAPrivateKey
) -> None:
    marker = f"PLAINTEXT-MARKER-{uuid.uuid4().hex}"
    responses: list[httpx.Response] = []
    with api_server.client() as api:
        responses.append(create(api, "MARKED", marker))
        responses.append(create(api, "MARKED", marker, "production"))
        responses.append(create(api, "MARKED", marker))  # the 409 names no value either
        body = {
            "environment": "production",
            "encrypted_value": crypto.hybrid_encrypt(server_key(api), marker + "-v2"),
            "preview": marker,  # a client preview is never stored or echoed
        }
        responses.append(api.put("/secrets/MARKED", json=body))
        responses.append(api.get("/secrets", params={"all": "true"}))
        responses.append(api.get("/secrets", params={"environment": "production"}))
        responses.append(api.get("/secrets/environments"))
        export_body = {"public_key": crypto.public_key_pem_spki(caller_key), "all": True}
        responses.append(api.post("/secrets/export", json=export_body))
        responses.append(api.delete("/secrets/MARKED"))
    assert [r.status_code for r in responses] == [201, 201, 409, 200, 200, 200, 200, 200, 200]
    for response in responses:
        assert marker not in response.text, response.request.url
    # The export carried it, but only encrypted to the caller's key.
    values = {
        crypto.hybrid_decrypt(caller_key, s["encrypted_value"])
        for s in responses[7].json()["secrets"]
    }
    assert values == {marker, marker + "-v2"}

    url = make_url(api_server.ctx.settings.resolved_database_url)
    if url.get_backend_name() != "sqlite":
        pytest.skip("the at-rest byte check reads the SQLite file")
    db_file = Path(url.database or "")
    files = [p for p in db_file.parent.glob(db_file.name + "*") if p.is_file()]
    assert db_file in files  # the database itself, plus any -wal / -shm beside it
    blob = b"".join(p.read_bytes() for p in files)
    assert b"MARKED" in blob  # the check can see what is stored: names are plain
    assert marker.encode() not in blob
    assert marker.encode("utf-16-le") not in blob
