"""Catalogs through HTTP on SQLite and PostgreSQL: CRUD, inheritance, export, the
built-in default catalog, tenancy, and no plaintext anywhere it should not be."""

from __future__ import annotations

import base64
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.api.conftest import ApiServer
from tower.core import crypto
from tower.server.services import catalogs as catalogs_service
from tower.server.store import models

#: distinctive plaintexts: none of them may ever show up in a response or the db file
SECRET_CREDENTIAL = "client-id-7f3a:client-secret-Q9v2XkP4"
LAKE_URI = "https://lakekeeper.internal.example/catalog"
R2_TOKEN = "r2-token-Zm9vYmFyYmF6cXV4MTIzNDU2"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TABLE_BUCKET = "arn:aws:s3tables:eu-central-1:123456789012:bucket/lake"


def server_key(api: httpx.Client) -> Any:
    response = api.get("/secrets/key")
    assert response.status_code == 200, response.text
    return crypto.load_public_key(response.json()["public_key"])


def prop(api: httpx.Client, name: str, value: str, **extra: str) -> dict[str, str]:
    """A property as a client sends it: encrypted to the server, with its own preview."""
    encrypted = crypto.hybrid_encrypt(server_key(api), value)
    return {"name": name, "encrypted_value": encrypted, "preview": "client-side", **extra}


def lakekeeper_props(api: httpx.Client, uri: str = LAKE_URI) -> list[dict[str, str]]:
    return [
        prop(api, "uri", uri),
        prop(api, "credential", SECRET_CREDENTIAL),
        prop(api, "scope", "PRINCIPAL_ROLE:ALL"),
        prop(api, "warehouse", "analytics"),
    ]


def create(
    api: httpx.Client, name: str, environment: str = "default", **body: Any
) -> httpx.Response:
    payload = {"name": name, "environment": environment, "type": "lakekeeper"} | body
    if "properties" not in payload:
        payload["properties"] = lakekeeper_props(api)
    return api.post("/catalogs", json=payload)


def names(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return [(c["name"], c["environment"]) for c in response.json()["catalogs"]]


def listing(api: httpx.Client, **params: Any) -> httpx.Response:
    return api.get("/catalogs", params={"page": 0, "page_size": 100, "all": False} | params)


# -- create, describe, contract fields ---------------------------------------------------


def test_create_and_describe_with_contract_fields(api_server: ApiServer) -> None:
    with api_server.client() as api:
        created = create(api, "lake")
        assert created.status_code == 200, created.text
        catalog = created.json()["catalog"]
        # The official SDK reads `CreatedAt`; its serializer and other clients `created_at`.
        for key in ("CreatedAt", "created_at", "environment", "name", "slug", "type"):
            assert catalog[key], key
        assert catalog["CreatedAt"].endswith("Z") and catalog["slug"] == "lake"
        assert catalog["type"] == "lakekeeper" and catalog["environment"] == "default"
        by_name = {p["name"]: p for p in catalog["properties"]}
        assert sorted(by_name) == ["credential", "scope", "uri", "warehouse"]
        # Previews are the server's, from the plaintext, never the client's claim.
        assert by_name["credential"]["preview"] == "XXXXXX" + SECRET_CREDENTIAL[-4:]
        assert by_name["scope"]["preview"] == "XXXXXX:ALL"
        assert by_name["uri"]["environment_variable"] == "PYICEBERG_CATALOG__LAKE__URI"

        described = api.get("/catalogs/lake", params={"environment": "default"})
        assert described.status_code == 200
        assert described.json()["catalog"] == catalog

        again = create(api, "lake")
        assert again.status_code == 409 and "already exists" in again.json()["detail"]


def test_create_in_a_new_environment_creates_it(api_server: ApiServer) -> None:
    with api_server.client() as api:
        assert create(api, "lake", "staging").status_code == 200
        with api_server.ctx.sessions.begin() as session:
            envs = session.scalars(select(models.Environment.name)).all()
        assert "staging" in envs


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"type": "glue"}, 422, "lakekeeper (uri, credential, scope, warehouse)"),
        ({"type": "tower-catalog"}, 422, "no hosted Iceberg catalog"),
        ({"name": "my_lake"}, 422, "e.g. 'my-lake'"),
        ({"environment": "not valid!"}, 422, "Environment name"),
    ],
)
def test_bad_catalogs_are_refused(
    api_server: ApiServer, change: dict[str, str], status: int, message: str
) -> None:
    with api_server.client() as api:
        body = dict(change)  # the parameter is shared by both database runs
        response = create(api, body.pop("name", "lake"), **body)
        assert response.status_code == status, response.text
        assert message in response.json()["detail"]
        assert names(listing(api, all=True)) == []


def test_missing_required_property_names_what_is_needed(api_server: ApiServer) -> None:
    with api_server.client() as api:
        response = create(
            api, "r2", type="cloudflare-r2-catalog", properties=[prop(api, "uri", LAKE_URI)]
        )
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert "uri, warehouse, token" in detail and "missing: warehouse, token" in detail


def test_tampered_value_is_400_and_nothing_is_stored(api_server: ApiServer) -> None:
    with api_server.client() as api:
        props = lakekeeper_props(api)
        raw = bytearray(base64.b64decode(props[1]["encrypted_value"]))
        raw[-1] ^= 0x01  # flip one bit of the GCM tag
        props[1]["encrypted_value"] = base64.b64encode(bytes(raw)).decode()
        response = create(api, "lake", "prod", properties=props)
        assert response.status_code == 400, response.text
        assert "property 'credential'" in response.json()["detail"]
        assert names(listing(api, all=True)) == []
        with api_server.ctx.sessions.begin() as session:
            assert session.scalars(select(models.CatalogProperty)).all() == []
            # The environment was not created either: the check ran before any write.
            envs = session.scalars(select(models.Environment.name)).all()
        assert "prod" not in envs


def test_property_names_pyiceberg_cannot_read_are_refused(api_server: ApiServer) -> None:
    with api_server.client() as api:
        props = [*lakekeeper_props(api), prop(api, "my_option", "x")]
        response = create(api, "lake", properties=props)
        assert response.status_code == 422 and "my_option" in response.json()["detail"]
        # With its own variable any plain name is fine.
        props[-1] = prop(api, "my_option", "x", environment_variable="MY_OPTION")
        created = create(api, "lake", properties=props)
        assert created.status_code == 200, created.text
        mine = [p for p in created.json()["catalog"]["properties"] if p["name"] == "my_option"]
        assert mine[0]["environment_variable"] == "MY_OPTION"
        reserved = prop(api, "x", "y", environment_variable="TOWER_URL")
        bad = create(api, "other", properties=[*lakekeeper_props(api), reserved])
        assert bad.status_code == 422 and "reserved" in bad.json()["detail"]


# -- inheritance -------------------------------------------------------------------------


def test_default_catalogs_are_inherited_unless_overridden(api_server: ApiServer) -> None:
    with api_server.client() as api:
        assert create(api, "lake").status_code == 200
        assert create(api, "archive").status_code == 200
        prod_uri = "https://prod-lake.internal.example/catalog"
        assert create(api, "lake", "prod", properties=lakekeeper_props(api, prod_uri)).is_success

        assert names(listing(api, environment="prod")) == [
            ("archive", "default"),
            ("lake", "prod"),
        ]
        assert names(listing(api, environment="default")) == [
            ("archive", "default"),
            ("lake", "default"),
        ]
        assert names(listing(api, environment="prod", all=True)) == [
            ("archive", "default"),
            ("lake", "default"),
            ("lake", "prod"),
        ]
        # An environment with nothing of its own sees `default`'s.
        assert names(listing(api, environment="staging")) == [
            ("archive", "default"),
            ("lake", "default"),
        ]
        assert names(listing(api, environment="prod", type="s3-tables")) == []
        assert len(names(listing(api, environment="prod", type="lakekeeper"))) == 2

        prod = api.get("/catalogs/lake", params={"environment": "prod"}).json()["catalog"]
        assert prod["environment"] == "prod"
        inherited = api.get("/catalogs/archive", params={"environment": "prod"}).json()
        assert inherited["catalog"]["environment"] == "default"


def test_pagination(api_server: ApiServer) -> None:
    with api_server.client() as api:
        for name in ("a", "b", "c"):
            assert create(api, name).status_code == 200
        page = api.get("/catalogs", params={"page": 2, "page_size": 2}).json()
        assert [c["name"] for c in page["catalogs"]] == ["c"]
        assert page["pages"] == {"page": 2, "page_size": 2, "num_pages": 2, "total": 3}
        everything = api.get("/catalogs", params={"page": 0, "page_size": 2}).json()
        assert len(everything["catalogs"]) == 3 and everything["pages"]["num_pages"] == 1


# -- update and delete -------------------------------------------------------------------


def test_update_sets_given_properties_and_keeps_the_rest(api_server: ApiServer) -> None:
    with api_server.client() as api:
        before = create(api, "lake").json()["catalog"]
        new_credential = "client-id-new:client-secret-ZZZZ"
        updated = api.put(
            "/catalogs/lake",
            json={
                "environment": "default",
                "properties": [
                    prop(api, "credential", new_credential),
                    prop(api, "header.x-iceberg-access-delegation", "vended-credentials"),
                ],
            },
        )
        assert updated.status_code == 200, updated.text
        after = {p["name"]: p for p in updated.json()["catalog"]["properties"]}
        assert after["credential"]["preview"] == "XXXXXXZZZZ"
        assert "header.x-iceberg-access-delegation" in after
        assert after["uri"] == next(p for p in before["properties"] if p["name"] == "uri")
        exported = export(api, environment="default")[0]
        assert exported["credential"] == new_credential and exported["uri"] == LAKE_URI


def test_update_or_delete_of_an_inherited_catalog_is_404_with_a_hint(
    api_server: ApiServer,
) -> None:
    with api_server.client() as api:
        create(api, "lake")
        body = {"environment": "prod", "properties": [prop(api, "scope", "x")]}
        updated = api.put("/catalogs/lake", json=body)
        assert updated.status_code == 404 and "inherited" in updated.json()["detail"]
        deleted = api.delete("/catalogs/lake", params={"environment": "prod"})
        assert deleted.status_code == 404 and "inherited" in deleted.json()["detail"]
        missing = api.put("/catalogs/nope", json={"environment": "default", "properties": []})
        assert missing.status_code == 404 and missing.json()["status"] == 404


def test_delete_is_204_and_uncovers_the_inherited_catalog(api_server: ApiServer) -> None:
    with api_server.client() as api:
        create(api, "lake")
        create(api, "lake", "prod")
        deleted = api.delete("/catalogs/lake", params={"environment": "prod"})
        assert deleted.status_code == 204 and deleted.content == b""
        after = api.get("/catalogs/lake", params={"environment": "prod"}).json()["catalog"]
        assert after["environment"] == "default"
        assert api.delete("/catalogs/lake").status_code == 204
        assert api.get("/catalogs/lake").status_code == 404
        assert api.delete("/catalogs/lake").status_code == 404
        with api_server.ctx.sessions.begin() as session:
            assert session.scalars(select(models.CatalogProperty)).all() == []


# -- export ------------------------------------------------------------------------------


def export(api: httpx.Client, **body: Any) -> list[dict[str, str]]:
    """Export with a fresh key pair; each catalog's properties decrypted by name."""
    private = crypto.generate_rsa_private_key()
    payload = {"public_key": crypto.public_key_pem_spki(private), "page": 1, "page_size": 100}
    response = api.post("/catalogs/export", json=payload | body)
    assert response.status_code == 200, response.text
    return [
        {p["name"]: crypto.hybrid_decrypt(private, p["encrypted_value"]) for p in c["properties"]}
        for c in response.json()["catalogs"]
    ]


def test_export_decrypts_with_the_callers_key_only(api_server: ApiServer) -> None:
    with api_server.client() as api:
        create(api, "lake")
        s3 = [
            prop(api, "access-key-id", ACCESS_KEY),
            prop(api, "secret-access-key", SECRET_KEY),
            prop(api, "warehouse", TABLE_BUCKET),
            prop(api, "region", "eu-central-1"),
        ]
        assert create(api, "tables", "prod", type="s3-tables", properties=s3).is_success

        private = crypto.generate_rsa_private_key()
        body = {"public_key": crypto.public_key_pem_spki(private), "environment": "prod"}
        response = api.post("/catalogs/export", json=body | {"all": False, "page": 1})
        assert response.status_code == 200
        catalogs = response.json()["catalogs"]
        assert [(c["name"], c["environment"]) for c in catalogs] == [
            ("lake", "default"),
            ("tables", "prod"),
        ]
        for catalog in catalogs:
            assert catalog["CreatedAt"] and catalog["slug"] == catalog["name"]
        opened = {
            c["name"]: {
                p["name"]: crypto.hybrid_decrypt(private, p["encrypted_value"])
                for p in c["properties"]
            }
            for c in catalogs
        }
        assert opened["lake"]["credential"] == SECRET_CREDENTIAL
        # The derived pyiceberg settings travel too, so a local run equals a remote one.
        tables = opened["tables"]
        assert tables["access-key-id"] == ACCESS_KEY
        assert tables["uri"] == "https://s3tables.eu-central-1.amazonaws.com/iceberg"
        assert tables["rest.sigv4-enabled"] == "true"
        assert tables["client.secret-access-key"] == SECRET_KEY
        variables = {p["name"]: p["environment_variable"] for p in catalogs[1]["properties"]}
        assert variables["rest.sigv4-enabled"] == "PYICEBERG_CATALOG__TABLES__REST__SIGV4_ENABLED"

        other = crypto.generate_rsa_private_key()
        with pytest.raises(Exception, match="could not be decrypted"):
            crypto.hybrid_decrypt(other, catalogs[0]["properties"][0]["encrypted_value"])

        bad_key = api.post("/catalogs/export", json={"public_key": "nope"})
        assert bad_key.status_code == 422 and "public key" in bad_key.json()["detail"]


# -- the built-in default catalog ----------------------------------------------------------


def test_default_catalog_is_provisioned_once(api_server: ApiServer) -> None:
    with api_server.client() as api:
        results: list[httpx.Response] = []

        def fetch() -> None:
            with api_server.client() as own:
                results.append(own.get("/storage/catalogs/default"))

        threads = [threading.Thread(target=fetch) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [r.status_code for r in results] == [200] * 6, [r.text for r in results]
        bodies = [r.json()["catalog"] for r in results]
        assert all(body == bodies[0] for body in bodies)
        catalog = bodies[0]
        assert (catalog["name"], catalog["type"], catalog["environment"]) == (
            "default",
            "pyiceberg-sql",
            "default",
        )
        assert sorted(p["name"] for p in catalog["properties"]) == ["uri", "warehouse"]
        assert names(listing(api, all=True)) == [("default", "default")]
        # Inherited by every environment.
        assert names(listing(api, environment="prod")) == [("default", "default")]

        opened = export(api)[0]
        home = api_server.ctx.settings.home_dir.resolve()
        account = _account_id(api_server)
        root = home / "catalogs" / str(account)
        assert opened["uri"] == f"sqlite:///{root / 'catalog.db'}"
        assert opened["warehouse"] == f"file://{root / 'warehouse'}"
        assert (root / "warehouse").is_dir()
        assert opened["type"] == "sql"  # derived


def test_an_own_default_catalog_is_kept(api_server: ApiServer) -> None:
    with api_server.client() as api:
        assert create(api, "default").status_code == 200
        body = api.get("/storage/catalogs/default").json()["catalog"]
        assert body["type"] == "lakekeeper"
        assert names(listing(api, all=True)) == [("default", "default")]


# -- credentials -------------------------------------------------------------------------


def test_vending_credentials_is_a_clear_4xx(api_server: ApiServer) -> None:
    with api_server.client() as api:
        create(api, "lake")
        vend = api.post("/catalogs/lake/credentials", json={"mode": "read"})
        assert vend.status_code == 422
        assert "'lakekeeper' catalog" in vend.json()["detail"]
        assert "tower-catalog" in vend.json()["detail"]
        missing = api.post("/catalogs/nope/credentials", json={"mode": "read"})
        assert missing.status_code == 404


# -- tenancy -----------------------------------------------------------------------------


def test_another_account_sees_nothing(api_server: ApiServer) -> None:
    with api_server.client() as api:
        create(api, "lake")
    other_key = api_server.new_user_key("eve@example.com")
    with api_server.client(other_key) as eve:
        assert eve.get("/catalogs/lake").status_code == 404
        assert names(listing(eve, all=True)) == []
        assert eve.delete("/catalogs/lake").status_code == 404
        body = {"environment": "default", "properties": [prop(eve, "scope", "x")]}
        assert eve.put("/catalogs/lake", json=body).status_code == 404
        assert export(eve, all=True) == []
        # Her own catalog of the same name is hers alone.
        assert create(eve, "lake").status_code == 200
        mine = eve.get("/storage/catalogs/default").json()["catalog"]
        assert mine["name"] == "default"
    with api_server.client() as api:
        assert names(listing(api, all=True)) == [("lake", "default")]


# -- what runs get -------------------------------------------------------------------------


def test_runtime_variables_follow_inheritance_and_mask_credentials(
    api_server: ApiServer,
) -> None:
    with api_server.client() as api:
        create(api, "lake")
        create(api, "archive")
        prod_uri = "https://prod-lake.internal.example/catalog"
        create(api, "lake", "prod", properties=lakekeeper_props(api, prod_uri))
        r2 = [
            prop(api, "uri", "https://r2.example/catalog"),
            prop(api, "warehouse", "acct_bucket"),
            prop(api, "token", R2_TOKEN, environment_variable="R2_TOKEN"),
        ]
        assert create(api, "r2", "prod", type="cloudflare-r2-catalog", properties=r2).is_success

    ctx = api_server.ctx
    account = _account_id(api_server)
    with ctx.sessions.begin() as session:
        prod = session.scalar(select(models.Environment).where(models.Environment.name == "prod"))
        variables, masked = catalogs_service.runtime_variables(ctx, session, account, prod.id)
        assert catalogs_service.count_catalogs(session, prod.id) == 2
    assert variables["PYICEBERG_CATALOG__LAKE__URI"] == prod_uri
    assert variables["PYICEBERG_CATALOG__ARCHIVE__URI"] == LAKE_URI
    assert variables["PYICEBERG_CATALOG__LAKE__TYPE"] == "rest"
    assert variables["R2_TOKEN"] == R2_TOKEN
    assert "PYICEBERG_CATALOG__R2__TOKEN" not in variables
    # The built-in catalog was provisioned on the way and is inherited here.
    assert variables["PYICEBERG_CATALOG__DEFAULT__TYPE"] == "sql"
    assert variables["PYICEBERG_CATALOG__DEFAULT__URI"].startswith("sqlite:///")
    assert sorted(masked) == sorted([SECRET_CREDENTIAL, R2_TOKEN])


# -- no plaintext at rest or in answers ----------------------------------------------------


def test_no_plaintext_in_responses_or_the_database_file(
    api_server: ApiServer, dialect: str
) -> None:
    plaintexts = [SECRET_CREDENTIAL, LAKE_URI, R2_TOKEN]
    seen: list[str] = []
    with api_server.client() as api:
        responses = [
            create(api, "lake"),
            create(
                api,
                "r2",
                type="cloudflare-r2-catalog",
                properties=[
                    prop(api, "uri", LAKE_URI),
                    prop(api, "warehouse", "wh"),
                    prop(api, "token", R2_TOKEN),
                ],
            ),
            listing(api, all=True),
            api.get("/catalogs/lake"),
            api.put(
                "/catalogs/lake",
                json={"environment": "default", "properties": [prop(api, "uri", LAKE_URI)]},
            ),
            api.get("/storage/catalogs/default"),
        ]
        private = crypto.generate_rsa_private_key()
        responses.append(
            api.post("/catalogs/export", json={"public_key": crypto.public_key_pem_spki(private)})
        )
        for response in responses:
            assert response.is_success, response.text
            seen.append(response.text)
    for text in seen:
        for secret in plaintexts:
            assert secret not in text
    if dialect != "sqlite":
        return
    db_file = Path(api_server.ctx.settings.database_url.removeprefix("sqlite:///"))
    stored = b"".join(
        path.read_bytes() for path in db_file.parent.glob(db_file.name + "*") if path.is_file()
    )
    assert len(stored) > 0
    for secret in plaintexts:
        assert secret.encode() not in stored


def _account_id(api_server: ApiServer) -> uuid.UUID:
    """The bootstrap admin's account (the one `api_server.client()` acts in)."""
    with api_server.ctx.sessions.begin() as session:
        return session.scalars(
            select(models.Account.id).where(models.Account.name == "admin")
        ).one()
