"""`tower catalogs ...` against an in-memory fake of the Tower API (httpx.MockTransport):
the real TowerApi, error mapping and client-side encryption are exercised."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.cli_fakes import error, isolate_config, serve, tower

from tower.cli import common
from tower.core import crypto


def catalog_obj(name: str, environment: str = "default", **extra: Any) -> dict[str, Any]:
    return {
        "CreatedAt": "2025-01-02T03:04:05Z",
        "created_at": "2025-01-02T03:04:05Z",
        "environment": environment,
        "name": name,
        "slug": name,
        "type": "lakekeeper",
        "properties": [
            {
                "name": "uri",
                "preview": "XXXXXXalog",
                "environment_variable": f"PYICEBERG_CATALOG__{name.upper()}__URI",
            },
            {
                "name": "credential",
                "preview": "XXXXXXsecr",
                "environment_variable": f"PYICEBERG_CATALOG__{name.upper()}__CREDENTIAL",
            },
        ],
    } | extra


@dataclass
class FakeTower:
    """Just enough of the catalogs API, with a real server key for GET /secrets/key."""

    private_key: Any = field(default_factory=crypto.generate_rsa_private_key)
    catalogs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: dict[str, Any] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path.removeprefix("/v1"), request.method
        if request.content:
            self.bodies[f"{method} {path}"] = json.loads(request.content)
        if (method, path) == ("GET", "/secrets/key"):
            return httpx.Response(
                200, json={"public_key": crypto.public_key_pem_pkcs1(self.private_key)}
            )
        if (method, path) == ("GET", "/catalogs"):
            return httpx.Response(
                200,
                json={
                    "catalogs": self.catalogs,
                    "pages": {"page": 0, "page_size": 0, "num_pages": 1, "total": 0},
                },
            )
        if (method, path) == ("POST", "/catalogs"):
            body = json.loads(request.content)
            if any(c["name"] == body["name"] for c in self.catalogs):
                return error(409, f"Catalog '{body['name']}' already exists.")
            created = catalog_obj(body["name"], body["environment"], type=body["type"])
            self.catalogs.append(created)
            return httpx.Response(200, json={"catalog": created})
        match = re.fullmatch(r"/catalogs/([^/]+)", path)
        if match:
            found = [c for c in self.catalogs if c["name"] == match.group(1)]
            if not found:
                return error(404, f"Catalog '{match.group(1)}' was not found.")
            if method == "DELETE":
                self.catalogs.remove(found[0])
                return httpx.Response(204)
            return httpx.Response(200, json={"catalog": found[0]})
        return error(404, f"No route {method} {path}")

    def last(self, method: str, path: str) -> httpx.Request:
        return [r for r in self.requests if (r.method, r.url.path) == (method, f"/v1{path}")][-1]


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTower:
    isolate_config(tmp_path, monkeypatch)
    return serve(FakeTower(), monkeypatch)


# -- create --------------------------------------------------------------------------------


def test_create_encrypts_every_value_to_the_server_key(fake: FakeTower) -> None:
    credential = "client-id:client-secret-42"
    result = tower(
        "catalogs",
        "create",
        "lake",
        "--type",
        "lakekeeper",
        "-p",
        "uri=https://lake.example/catalog",
        "-p",
        f"credential={credential}",
        "--property",
        "scope=PRINCIPAL_ROLE:ALL",
        "-p",
        "warehouse=analytics",
        "--variable",
        "credential=LAKE_CREDENTIAL",
        "-e",
        "prod",
    )
    assert result.exit_code == 0, result.output
    assert 'Success! Catalog "lake" was created in environment "prod"' in result.stdout
    assert "✔ Creating catalog... Done!" in result.stderr
    body = fake.bodies["POST /catalogs"]
    assert (body["name"], body["type"], body["environment"]) == ("lake", "lakekeeper", "prod")
    # Nothing in the clear on the wire ...
    assert credential not in fake.last("POST", "/catalogs").content.decode()
    # ... yet the server's key opens every value.
    opened = {
        p["name"]: crypto.hybrid_decrypt(fake.private_key, p["encrypted_value"])
        for p in body["properties"]
    }
    assert opened == {
        "uri": "https://lake.example/catalog",
        "credential": credential,
        "scope": "PRINCIPAL_ROLE:ALL",
        "warehouse": "analytics",
    }
    by_name = {p["name"]: p for p in body["properties"]}
    assert by_name["credential"]["preview"] == "XXXXXXt-42"
    assert by_name["credential"]["environment_variable"] == "LAKE_CREDENTIAL"
    assert "environment_variable" not in by_name["uri"]


def test_create_defaults_to_the_default_environment(fake: FakeTower) -> None:
    result = tower("catalogs", "create", "dev", "-t", "pyiceberg-sql", "-p", "uri=sqlite://")
    assert result.exit_code == 0, result.output
    assert fake.bodies["POST /catalogs"]["environment"] == "default"


def test_create_refuses_an_unknown_type_before_any_request(fake: FakeTower) -> None:
    result = tower("catalogs", "create", "lake", "--type", "tower-catalog", "-p", "uri=x")
    assert result.exit_code == 2
    assert "lakekeeper" in result.output and "s3-tables" in result.output
    assert fake.requests == []


def test_create_refuses_a_property_without_a_value(fake: FakeTower) -> None:
    result = tower("catalogs", "create", "lake", "-t", "lakekeeper", "-p", "uri")
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output
    assert fake.requests == []


def test_create_refuses_a_variable_for_a_missing_property(fake: FakeTower) -> None:
    result = tower(
        "catalogs", "create", "lake", "-t", "lakekeeper", "-p", "uri=x", "--variable", "token=T"
    )
    assert result.exit_code == 2 and "token" in result.output
    assert fake.requests == []


def test_create_conflict_is_reported(fake: FakeTower) -> None:
    fake.catalogs.append(catalog_obj("lake"))
    result = tower("catalogs", "create", "lake", "-t", "lakekeeper", "-p", "uri=x")
    assert result.exit_code == 1
    assert "Catalog 'lake' already exists." in result.stderr
    assert "Traceback" not in result.output


# -- list and show -------------------------------------------------------------------------


def test_list_shows_a_table(fake: FakeTower) -> None:
    fake.catalogs = [catalog_obj("archive"), catalog_obj("lake", "prod")]
    result = tower("catalogs", "list", "-e", "prod")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Catalog", "Type", "Environment", "Properties"]
    assert lines[-2].split() == ["archive", "lakekeeper", "default", "uri,", "credential"]
    assert lines[-1].split() == ["lake", "lakekeeper", "prod", "uri,", "credential"]
    params = fake.last("GET", "/catalogs").url.params
    assert params["environment"] == "prod" and params["all"] == "false"
    assert params["page"] == "0" and "type" not in params


def test_list_all_and_type_filter(fake: FakeTower) -> None:
    result = tower("catalogs", "list", "-a", "--type", "s3-tables")
    assert result.exit_code == 0, result.output
    assert "No catalogs found in any environment" in result.stdout
    params = fake.last("GET", "/catalogs").url.params
    assert params["all"] == "true" and params["type"] == "s3-tables"


def test_list_json(fake: FakeTower) -> None:
    fake.catalogs = [catalog_obj("lake")]
    result = tower("catalogs", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == fake.catalogs


def test_show_prints_details_and_masked_properties(fake: FakeTower) -> None:
    fake.catalogs = [catalog_obj("lake")]
    result = tower("catalogs", "show", "lake", "--environment", "prod")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Name:" in out and "lake" in out
    assert "Type:" in out and "lakekeeper" in out
    assert "2025-01-02 03:04:05" in out
    assert "XXXXXXsecr" in out and "PYICEBERG_CATALOG__LAKE__CREDENTIAL" in out
    assert fake.last("GET", "/catalogs/lake").url.params["environment"] == "prod"


def test_show_missing_catalog_is_a_clear_error(fake: FakeTower) -> None:
    result = tower("catalogs", "show", "nope")
    assert result.exit_code == 1
    assert "Catalog 'nope' was not found." in result.stderr


# -- delete --------------------------------------------------------------------------------


def test_delete_accepts_the_204(fake: FakeTower) -> None:
    fake.catalogs = [catalog_obj("lake", "prod")]
    result = tower("catalogs", "delete", "lake", "-e", "prod")
    assert result.exit_code == 0, result.output
    assert 'Success! Catalog "lake" was deleted from environment "prod"' in result.stdout
    assert fake.catalogs == []
    assert fake.last("DELETE", "/catalogs/lake").url.params["environment"] == "prod"


def test_delete_missing_catalog_fails(fake: FakeTower) -> None:
    result = tower("catalogs", "delete", "nope", "--yes")
    assert result.exit_code == 1
    assert "Catalog 'nope' was not found." in result.stderr


def test_delete_asks_at_a_terminal(fake: FakeTower, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "stdin_is_tty", lambda: True)
    fake.catalogs = [catalog_obj("lake", "prod")]
    declined = tower("catalogs", "delete", "lake", "-e", "prod", input="n\n")
    assert declined.exit_code == 1
    assert "Delete catalog 'lake' from environment 'prod'?" in declined.output
    assert fake.requests == []
    accepted = tower("catalogs", "delete", "lake", "-e", "prod", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert fake.catalogs == []
