"""Environments and version pins (deploy targets, promote, roll back) through HTTP, on
SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package
from tower.core.package import BuiltPackage
from tower.server.store import models


@pytest.fixture
def pkg(tmp_path: Path) -> BuiltPackage:
    return make_package(tmp_path / "pkg")


def _names(api: httpx.Client) -> list[str]:
    body = api.get("/environments", params={"page": 0, "page_size": 100}).json()
    return [env["name"] for env in body["environments"]]


def _pins(api: httpx.Client, app: str = "hello") -> dict[str, str]:
    body = api.get(f"/apps/{app}/environments").json()
    pins = {pin["environment"]: pin["version"] for pin in body["pins"]}
    assert body["environments"] == list(pins)  # the contract's list agrees with the pins
    return pins


def _deploy(api: httpx.Client, pkg: BuiltPackage, **query: str) -> str:
    response = api.post(
        "/apps/hello/deploy",
        params=query,
        content=pkg.data,
        headers={"Content-Type": "application/tar", "X-Tower-Checksum-SHA256": pkg.sha256},
    )
    assert response.status_code == 201, response.text
    return response.json()["version"]["version"]


def _run_version(api: httpx.Client, environment: str) -> tuple[int, str]:
    response = api.post("/apps/hello/runs", json={"environment": environment, "parameters": {}})
    assert response.status_code == 201, response.text
    run = response.json()["run"]
    return run["number"], run["app_version"]


def _version_of_run(api: httpx.Client, number: int) -> str:
    return api.get(f"/apps/hello/runs/{number}").json()["run"]["app_version"]


def _count(server: ApiServer, model: type[models.Base], *where: object) -> int:
    with server.ctx.sessions.begin() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


# -- CRUD ------------------------------------------------------------------------------


def test_environment_crud_and_contract_fields(api_server: ApiServer) -> None:
    with api_server.client() as api:
        listed = api.get("/environments", params={"page": 0, "page_size": 100}).json()
        assert listed["environments"] == [{"name": "default", "is_deletable": False}]
        assert listed["pages"] == {"page": 0, "page_size": 1, "num_pages": 1, "total": 1}

        created = api.post("/environments", json={"name": "production"})
        assert created.status_code == 201
        assert created.json() == {"environment": {"name": "production", "is_deletable": True}}
        again = api.post("/environments", json={"name": "production"})
        assert again.status_code == 409 and "production" in again.json()["detail"]
        assert api.post("/environments", json={"name": "default"}).status_code == 409

        described = api.get("/environments/production")
        assert described.status_code == 200
        assert described.json() == {
            "environment": {"name": "production", "is_deletable": True},
            "number_catalogs": 0,
            "number_schedules": 0,
            "number_secrets": 0,
        }
        default = api.get("/environments/default").json()
        assert default["environment"] == {"name": "default", "is_deletable": False}

        api.post("/environments", json={"name": "alpha"})
        # `default` first (the base layer), then by name.
        assert _names(api) == ["default", "alpha", "production"]

        deleted = api.delete("/environments/alpha")
        assert deleted.status_code == 200
        assert deleted.json()["environment"] == {"name": "alpha", "is_deletable": True}
        assert _names(api) == ["default", "production"]
        assert api.get("/environments/alpha").status_code == 404


def test_pagination(api_server: ApiServer) -> None:
    with api_server.client() as api:
        for name in ("e1", "e2", "e3"):
            assert api.post("/environments", json={"name": name}).status_code == 201
        first = api.get("/environments", params={"page": 1, "page_size": 2}).json()
        second = api.get("/environments", params={"page": 2, "page_size": 2}).json()
        assert [e["name"] for e in first["environments"]] == ["default", "e1"]
        assert [e["name"] for e in second["environments"]] == ["e2", "e3"]
        assert first["pages"] == {"page": 1, "page_size": 2, "num_pages": 2, "total": 4}
        assert api.get("/environments", params={"page_size": 0}).status_code == 422


def test_bad_and_unknown_names_are_clean_4xx(api_server: ApiServer) -> None:
    with api_server.client() as api:
        bad = api.post("/environments", json={"name": "no spaces"})
        assert bad.status_code == 422 and "no spaces" in bad.json()["detail"]
        assert api.post("/environments", json={}).status_code == 422
        for method in ("GET", "DELETE"):
            missing = api.request(method, "/environments/nope")
            assert missing.status_code == 404
            assert missing.json()["status"] == 404 and "nope" in missing.json()["detail"]
        renamed = api.put("/environments/nope", json={"new_name": "other"})
        assert renamed.status_code == 404


def test_default_cannot_be_deleted_or_renamed(api_server: ApiServer) -> None:
    with api_server.client() as api:
        deleted = api.delete("/environments/default")
        assert deleted.status_code == 409
        assert "cannot be deleted" in deleted.json()["detail"]
        renamed = api.put("/environments/default", json={"new_name": "main"})
        assert renamed.status_code == 409
        assert "cannot be renamed" in renamed.json()["detail"]
        assert _names(api) == ["default"]


def test_rename_keeps_everything_in_the_environment(
    api_server: ApiServer, pkg: BuiltPackage
) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        _deploy(api, pkg, environment="staging")
        number, _ = _run_version(api, "staging")
        api.post("/environments", json={"name": "taken"})
        clash = api.put("/environments/staging", json={"new_name": "taken"})
        assert clash.status_code == 409 and "taken" in clash.json()["detail"]
        bad = api.put("/environments/staging", json={"new_name": "bad name"})
        assert bad.status_code == 422

        renamed = api.put("/environments/staging", json={"new_name": "qa"})
        assert renamed.status_code == 200
        assert renamed.json() == {"environment": {"name": "qa", "is_deletable": True}}
        assert _names(api) == ["default", "qa", "taken"]
        assert _pins(api) == {"qa": "v1"}
        assert api.get(f"/apps/hello/runs/{number}").json()["run"]["environment"] == "qa"
        assert _run_version(api, "qa")[1] == "v1"
        assert api.get("/environments/staging").status_code == 404


# -- delete ----------------------------------------------------------------------------


def test_delete_is_refused_while_runs_are_active(api_server: ApiServer, pkg: BuiltPackage) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        _deploy(api, pkg, environment="staging")
        first, _ = _run_version(api, "staging")
        second, _ = _run_version(api, "staging")
        refused = api.delete("/environments/staging")
        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert "2 runs are still active" in detail and "Cancel them first" in detail
        assert _names(api) == ["default", "staging"]

        assert api.post(f"/apps/hello/runs/{first}").status_code == 200  # cancel
        one_left = api.delete("/environments/staging").json()["detail"]
        assert "1 run is still active" in one_left
        assert api.post(f"/apps/hello/runs/{second}").status_code == 200
        assert api.delete("/environments/staging").status_code == 200
        assert _names(api) == ["default"]


def _add_secret_and_catalog(server: ApiServer, env_name: str) -> None:
    """A secret and a catalog with one property in `env_name` (rows, as their API would)."""
    with server.ctx.sessions.begin() as session:
        env = session.scalar(select(models.Environment).where(models.Environment.name == env_name))
        assert env is not None
        sealed = {"wrapped_key": secrets.token_bytes(60), "ciphertext": b"x", "preview": "XXXXXX"}
        session.add(
            models.Secret(account_id=env.account_id, environment_id=env.id, name="db", **sealed)
        )
        catalog = models.Catalog(
            id=uuid.uuid4(),
            account_id=env.account_id,
            environment_id=env.id,
            name="warehouse",
            type="apache-polaris",
        )
        session.add(catalog)
        session.flush()
        session.add(
            models.CatalogProperty(
                catalog_id=catalog.id, name="uri", account_id=env.account_id, **sealed
            )
        )


def _finish_one_run_with_logs(server: ApiServer) -> None:
    """Claim the one pending run, log two lines and end it, as a runner would."""
    runner = FakeRunner(server)
    assignment = runner.claim()
    assert assignment is not None
    assert runner.logs(assignment, (1, "setup", "hi"), (2, "program", "bye")).status_code == 200
    assert runner.status(assignment, "running").status_code == 200
    assert runner.status(assignment, "exited", exit_code=0).status_code == 200


def test_delete_takes_secrets_catalogs_pins_and_runs_with_it(
    api_server: ApiServer, pkg: BuiltPackage
) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        _deploy(api, pkg, all_environments="true")
        api.post("/environments", json={"name": "staging"})
        _deploy(api, pkg, all_environments="true")  # v2 in default and staging
        staging_run, _ = _run_version(api, "staging")
        _finish_one_run_with_logs(api_server)
        default_run, _ = _run_version(api, "default")
        # Added after the run: a runner would be handed them, and these are not real
        # ciphertexts.
        for env in ("default", "staging"):
            _add_secret_and_catalog(api_server, env)
        schedule = {"app_name": "hello", "cron": "0 9 * * 1", "environment": "staging"}
        assert api.post("/schedules", json=schedule).status_code == 201
        described = api.get("/environments/staging").json()
        assert (described["number_secrets"], described["number_catalogs"]) == (1, 1)
        assert described["number_schedules"] == 1
        staging_id, default_id = _env_id(api_server, "staging"), _env_id(api_server, "default")
        staging_before = _rows_in(api_server, staging_id)
        assert all(staging_before.values()), staging_before  # one of each kind at least
        assert staging_before["log_lines"] == 2
        default_before = _rows_in(api_server, default_id)

        deleted = api.delete("/environments/staging")
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["deleted"] == {
            "runs": 1,
            "secrets": 1,
            "catalogs": 1,
            "app_pins": 1,
            "schedules": 1,
        }
        assert api.get("/schedules").json()["schedules"] == []

        # Nothing of staging is left, default is untouched.
        assert _count(api_server, models.Environment, models.Environment.id == staging_id) == 0
        assert set(_rows_in(api_server, staging_id).values()) == {0}
        assert _rows_in(api_server, default_id) == default_before
        assert api.get(f"/apps/hello/runs/{staging_run}").status_code == 404
        assert _pins(api) == {"default": "v2"}
        assert api.get(f"/apps/hello/runs/{default_run}").json()["run"]["status"] == "pending"
        assert [v["version"] for v in api.get("/apps/hello/versions").json()["versions"]] == [
            "v2",
            "v1",
        ]


def _env_id(server: ApiServer, name: str) -> uuid.UUID:
    with server.ctx.sessions.begin() as session:
        env_id = session.scalar(
            select(models.Environment.id).where(models.Environment.name == name)
        )
        assert env_id is not None
        return env_id


def _rows_in(server: ApiServer, env_id: uuid.UUID) -> dict[str, int]:
    """How many rows of each kind hang off one environment, directly or through a parent."""
    run_ids = select(models.Run.id).where(models.Run.environment_id == env_id)
    catalog_ids = select(models.Catalog.id).where(models.Catalog.environment_id == env_id)
    pins = models.AppEnvironmentVersion
    return {
        "secrets": _count(server, models.Secret, models.Secret.environment_id == env_id),
        "catalogs": _count(server, models.Catalog, models.Catalog.environment_id == env_id),
        "catalog_properties": _count(
            server, models.CatalogProperty, models.CatalogProperty.catalog_id.in_(catalog_ids)
        ),
        "pins": _count(server, pins, pins.environment_id == env_id),
        "runs": _count(server, models.Run, models.Run.environment_id == env_id),
        "log_lines": _count(server, models.RunLogLine, models.RunLogLine.run_id.in_(run_ids)),
        "transitions": _count(
            server, models.RunTransition, models.RunTransition.run_id.in_(run_ids)
        ),
        "attempts": _count(server, models.RunAttempt, models.RunAttempt.run_id.in_(run_ids)),
    }


# -- tenancy ---------------------------------------------------------------------------


def test_another_account_cannot_see_or_touch_your_environments(
    api_server: ApiServer, pkg: BuiltPackage
) -> None:
    bob_key = api_server.new_user_key("bob@example.com")
    with api_server.client() as admin, api_server.client(api_key=bob_key) as bob:
        admin.post("/environments", json={"name": "production"})
        admin.post("/apps", json={"name": "hello"})
        _deploy(admin, pkg, environment="production")

        assert _names(bob) == ["default"]
        assert bob.get("/environments/production").status_code == 404
        assert bob.delete("/environments/production").status_code == 404
        assert bob.put("/environments/production", json={"new_name": "x"}).status_code == 404
        assert bob.get("/apps/hello/environments").status_code == 404
        promote = bob.put("/apps/hello/environments/production", json={"version": "v1"})
        assert promote.status_code == 404
        # The same name is free in Bob's own account, and his `default` is his own.
        assert bob.post("/environments", json={"name": "production"}).status_code == 201
        assert bob.delete("/environments/production").status_code == 200

        assert _names(admin) == ["default", "production"]
        assert _pins(admin) == {"production": "v1"}


# -- deploy targets --------------------------------------------------------------------


def test_deploy_pins_per_environment(api_server: ApiServer, pkg: BuiltPackage) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        api.post("/environments", json={"name": "production"})
        assert _deploy(api, pkg) == "v1"  # bare deploy: default only
        assert _pins(api) == {"default": "v1"}

        assert _deploy(api, pkg, environment="production") == "v2"
        assert _pins(api) == {"default": "v1", "production": "v2"}

        assert _deploy(api, pkg, environment="default") == "v3"
        assert _pins(api) == {"default": "v3", "production": "v2"}

        # An environment that does not exist yet is created by the deploy.
        assert _deploy(api, pkg, environment="test") == "v4"
        assert _names(api) == ["default", "production", "test"]
        assert _pins(api) == {"default": "v3", "production": "v2", "test": "v4"}

        assert _deploy(api, pkg, all_environments="true") == "v5"
        assert _pins(api) == {"default": "v5", "production": "v5", "test": "v5"}

        body = api.get("/apps/hello/environments").json()
        assert all(pin["updated_at"].endswith("Z") for pin in body["pins"])
        versions = api.get("/apps/hello/versions").json()["versions"]
        assert [(v["version"], v["environments"]) for v in versions] == [
            ("v5", ["default", "production", "test"]),
            ("v4", []),
            ("v3", []),
            ("v2", []),
            ("v1", []),
        ]
        assert api.get("/apps/hello/versions/v5").json()["version"]["environments"] == [
            "default",
            "production",
            "test",
        ]

        both = api.post(
            "/apps/hello/deploy",
            params={"environment": "production", "all_environments": "true"},
            content=pkg.data,
        )
        assert both.status_code == 422
        bad_env = api.post("/apps/hello/deploy", params={"environment": "no way"}, content=pkg.data)
        assert bad_env.status_code == 422 and "no way" in bad_env.json()["detail"]


def test_repeated_idempotency_key_still_lands_where_it_was_aimed(
    api_server: ApiServer, pkg: BuiltPackage
) -> None:
    """`tower deploy -e production` of a commit already deployed to default moves
    production to that version instead of silently leaving it where it was."""
    key = {"X-Tower-Idempotency-Key": "c" * 40}
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        first = deploy(api, "hello", pkg, **key).json()["version"]
        again = api.post(
            "/apps/hello/deploy",
            params={"environment": "production"},
            content=pkg.data,
            headers={"X-Tower-Checksum-SHA256": pkg.sha256, **key},
        )
        assert again.status_code == 201
        assert again.json()["version"]["version"] == first["version"] == "v1"
        assert _pins(api) == {"default": "v1", "production": "v1"}
        assert len(api.get("/apps/hello/versions").json()["versions"]) == 1


# -- promote and roll back -------------------------------------------------------------


def test_promote_and_rollback_change_only_the_next_run(
    api_server: ApiServer, pkg: BuiltPackage
) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        _deploy(api, pkg)  # v1
        _deploy(api, pkg)  # v2
        not_pinned = api.post("/apps/hello/runs", json={"environment": "production"})
        assert not_pinned.status_code == 404

        promoted = api.put("/apps/hello/environments/production", json={"version": "v1"})
        assert promoted.status_code == 200
        assert promoted.json() == {
            "environment": "production",
            "version": "v1",
            "previous_version": None,
        }
        assert _pins(api) == {"default": "v2", "production": "v1"}
        run_a, version_a = _run_version(api, "production")
        assert version_a == "v1"

        promoted = api.put("/apps/hello/environments/production", json={"version": "v2"})
        assert promoted.json()["previous_version"] == "v1"
        run_b, version_b = _run_version(api, "production")
        assert version_b == "v2"
        assert _version_of_run(api, run_a) == "v1"  # an existing run keeps its version

        # Roll back: "1" means v1 too. No new version is made.
        rolled_back = api.put("/apps/hello/environments/production", json={"version": "1"})
        assert rolled_back.json() == {
            "environment": "production",
            "version": "v1",
            "previous_version": "v2",
        }
        assert _run_version(api, "production")[1] == "v1"
        assert (_version_of_run(api, run_a), _version_of_run(api, run_b)) == ("v1", "v2")
        assert len(api.get("/apps/hello/versions").json()["versions"]) == 2
        assert _pins(api) == {"default": "v2", "production": "v1"}  # default untouched


def test_a_deploy_landing_after_a_run_was_created_does_not_change_it(
    api_server: ApiServer, pkg: BuiltPackage
) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        _deploy(api, pkg)
        early, early_version = _run_version(api, "default")
        assert _deploy(api, pkg) == "v2"
        assert _version_of_run(api, early) == early_version == "v1"
        assert _run_version(api, "default")[1] == "v2"


def test_bad_pins_are_clean_4xx(api_server: ApiServer, pkg: BuiltPackage) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        none_yet = api.put("/apps/hello/environments/default", json={"version": "v1"})
        assert none_yet.status_code == 404 and "tower deploy" in none_yet.json()["detail"]
        _deploy(api, pkg)
        _deploy(api, pkg)
        unknown = api.put("/apps/hello/environments/default", json={"version": "v9"})
        assert unknown.status_code == 404
        assert unknown.json()["status"] == 404
        assert "has no version v9; it has v1, v2" in unknown.json()["detail"]
        garbage = api.put("/apps/hello/environments/default", json={"version": "latest"})
        assert garbage.status_code == 422 and "latest" in garbage.json()["detail"]
        assert api.put("/apps/hello/environments/default", json={}).status_code == 422
        bad_env = api.put("/apps/hello/environments/bad%20env", json={"version": "v1"})
        assert bad_env.status_code == 422
        no_app = api.put("/apps/nope/environments/default", json={"version": "v1"})
        assert no_app.status_code == 404 and "nope" in no_app.json()["detail"]
        assert api.get("/apps/nope/environments").status_code == 404
        # Promoting to an environment that does not exist yet creates it.
        created = api.put("/apps/hello/environments/qa", json={"version": "v1"})
        assert created.status_code == 200
        assert "qa" in _names(api)
        assert _pins(api) == {"default": "v2", "qa": "v1"}
