"""Apps, deploys and versions through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tests.api.conftest import ApiServer
from tests.api.helpers import deploy, make_package


def test_app_lifecycle_and_contract_fields(api_server: ApiServer) -> None:
    with api_server.client() as api:
        created = api.post("/apps", json={"name": "hello", "short_description": "greets"})
        assert created.status_code == 201
        app = created.json()["app"]
        for key in (
            "created_at",
            "health_status",
            "is_example",
            "is_externally_accessible",
            "name",
            "next_run_at",
            "owner",
            "pending_timeout",
            "running_timeout",
            "schedule",
            "short_description",
            "version",
        ):
            assert key in app, key
        assert app["owner"] == "admin" and app["version"] is None
        listed = api.get("/apps", params={"page": 0, "page_size": 100, "num_runs": 0}).json()
        assert [a["app"]["name"] for a in listed["apps"]] == ["hello"]
        assert listed["pages"]["num_pages"] == 1 and listed["pages"]["total"] == 1
        assert api.post("/apps", json={"name": "hello"}).status_code == 409
        assert api.delete("/apps/hello").json()["app"]["name"] == "hello"
        missing = api.get("/apps/hello")
        assert missing.status_code == 404 and missing.json()["status"] == 404


def test_bad_input_is_4xx_with_a_named_problem(api_server: ApiServer) -> None:
    with api_server.client() as api:
        bad_name = api.post("/apps", json={"name": "no spaces please"})
        assert bad_name.status_code == 422
        assert "no spaces please" in bad_name.json()["detail"]
        not_json = api.post("/apps", content=b"{", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 422
        api.post("/apps", json={"name": "hello"})
        garbage = api.post(
            "/apps/hello/deploy",
            content=b"not a tarball",
            headers={"Content-Type": "application/tar"},
        )
        assert garbage.status_code == 422 and "package" in garbage.json()["detail"].lower()
        assert api.post("/apps/hello/deploy").status_code == 400


def test_deploy_verifies_checksum_and_numbers_versions(
    api_server: ApiServer, tmp_path: Path
) -> None:
    pkg = make_package(tmp_path / "app")
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        corrupted = deploy(api, "hello", pkg, **{"X-Tower-Checksum-SHA256": "0" * 64})
        assert corrupted.status_code == 400 and corrupted.json()["code"] == "integrity_check_failed"
        first = deploy(api, "hello", pkg)
        assert first.status_code == 201
        version = first.json()["version"]
        assert version["version"] == "v1"
        assert version["content_checksum"] == pkg.manifest.checksum
        assert [p["name"] for p in version["parameters"]] == ["friend", "token"]
        assert deploy(api, "hello", pkg).json()["version"]["version"] == "v2"
        assert api.get("/apps/hello").json()["app"]["version"] == "v2"
        listed = api.get("/apps/hello/versions").json()["versions"]
        assert [v["version"] for v in listed] == ["v2", "v1"]
        assert api.get("/apps/hello/versions/v1").json()["version"]["towerfile"].startswith("[app]")
        assert api.get("/apps/hello/versions/v9").status_code == 404


def test_idempotency_key_returns_the_existing_version(
    api_server: ApiServer, tmp_path: Path
) -> None:
    pkg = make_package(tmp_path / "app")
    key = "a" * 40
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        first = deploy(api, "hello", pkg, **{"X-Tower-Idempotency-Key": key}).json()["version"]
        again = deploy(api, "hello", pkg, **{"X-Tower-Idempotency-Key": key}).json()["version"]
        assert again == first
        assert again["idempotency_key"] == key
        assert len(api.get("/apps/hello/versions").json()["versions"]) == 1


def test_packages_are_stored_encrypted(api_server: ApiServer, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "app", body="print('a very recognisable line')\n")
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        deploy(api, "hello", pkg)
    blobs = [p for p in api_server.ctx.settings.blobs_dir.rglob("*") if p.is_file()]
    assert len(blobs) == 1
    stored = blobs[0].read_bytes()
    assert stored != pkg.data and pkg.data not in stored
    assert stored[:2] != b"\x1f\x8b"  # not a gzip stream at rest


def test_authentication_and_tenancy(api_server: ApiServer, tmp_path: Path) -> None:
    with api_server.client(api_key="") as anonymous:
        assert anonymous.get("/apps").status_code == 401
    with api_server.client(api_key="sk-not-a-real-key-at-all") as wrong:
        response = wrong.get("/apps")
        assert response.status_code == 401 and response.json()["status"] == 401
    other_key = api_server.new_user_key("bob@example.com")
    with api_server.client() as admin, api_server.client(api_key=other_key) as bob:
        admin.post("/apps", json={"name": "secret-app"})
        deploy(admin, "secret-app", make_package(tmp_path / "a", name="secret-app"))
        assert bob.get("/apps").json()["apps"] == []
        assert bob.get("/apps/secret-app").status_code == 404
        assert bob.post("/apps/secret-app/runs", json={"parameters": {}}).status_code == 404
        assert bob.delete("/apps/secret-app").status_code == 404
        # Bob may use the same name in his own account.
        assert bob.post("/apps", json={"name": "secret-app"}).status_code == 201


def test_openapi_and_docs_are_served(api_server: ApiServer) -> None:
    with api_server.client() as api:
        spec = api.get("/openapi.json").json()
        assert "/v1/apps/{name}/runs" in spec["paths"]
        assert api.get(f"{api_server.url}/docs").status_code == 200
