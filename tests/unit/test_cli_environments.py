"""`tower environments ...`, `tower apps versions|promote` and where `tower deploy` says a
version landed, against an in-memory fake of the Tower API.

The fake speaks HTTP through httpx.MockTransport, so the real TowerApi and error
mapping are exercised; only the server is replaced.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from tests.unit.cli_fakes import error, isolate_config, serve, tower

from tower.cli import common


@dataclass
class FakeTower:
    """Environments, and one app's versions and pins, kept the way the server keeps them."""

    environments: dict[str, dict[str, int]] = field(
        default_factory=lambda: {"default": {"secrets": 2, "catalogs": 1}}
    )
    versions: list[dict[str, Any]] = field(default_factory=list)
    pins: dict[str, str] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def calls(self) -> list[str]:
        return [f"{r.method} {r.url.path.removeprefix('/v1')}" for r in self.requests]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path.removeprefix("/v1"), request.method
        # The deploy body is the package archive, everything else JSON.
        content = request.read()
        body = json.loads(content) if content and not path.endswith("/deploy") else {}
        if path == "/environments":
            return self.environments_root(method, body)
        if match := re.fullmatch(r"/environments/([^/]+)", path):
            return self.environment(method, match.group(1), body)
        if path == "/apps/hello/versions":
            return httpx.Response(200, json={"versions": self.versions})
        if match := re.fullmatch(r"/apps/hello/environments/([^/]+)", path):
            return self.pin(match.group(1), body["version"])
        if path == "/apps/hello/deploy":
            version = {"version": "v7", "created_at": "2025-01-01T00:00:00Z"}
            return httpx.Response(201, json={"version": version | {"environments": ["a", "b"]}})
        if path == "/apps/hello":
            return httpx.Response(200, json={"app": {"name": "hello"}, "runs": []})
        return error(404, f"App '{path.split('/')[2]}' was not found.")

    def environments_root(self, method: str, body: dict[str, Any]) -> httpx.Response:
        if method == "POST":
            if body["name"] in self.environments:
                return error(409, f"Environment '{body['name']}' already exists.")
            self.environments[body["name"]] = {}
            return httpx.Response(201, json={"environment": self.env_json(body["name"])})
        items = [self.env_json(name) for name in self.environments]
        pages = {"page": 0, "page_size": len(items), "num_pages": 1, "total": len(items)}
        return httpx.Response(200, json={"environments": items, "pages": pages})

    def environment(self, method: str, name: str, body: dict[str, Any]) -> httpx.Response:
        if name not in self.environments:
            return error(404, f"Environment '{name}' does not exist in account 'admin'.")
        if method == "DELETE":
            self.environments.pop(name)
            return httpx.Response(200, json={"environment": self.env_json(name)})
        if method == "PUT":
            self.environments[body["new_name"]] = self.environments.pop(name)
            return httpx.Response(200, json={"environment": self.env_json(body["new_name"])})
        counts = self.environments[name]
        return httpx.Response(
            200,
            json={
                "environment": self.env_json(name),
                "number_catalogs": counts.get("catalogs", 0),
                "number_schedules": counts.get("schedules", 0),
                "number_secrets": counts.get("secrets", 0),
            },
        )

    def pin(self, environment: str, version: str) -> httpx.Response:
        label = version if version.startswith("v") else f"v{version}"
        if label not in {v["version"] for v in self.versions}:
            return error(404, f"App 'hello' has no version {version}; it has v1, v2.")
        previous = self.pins.get(environment)
        self.pins[environment] = label
        body = {"environment": environment, "version": label, "previous_version": previous}
        return httpx.Response(200, json=body)

    @staticmethod
    def env_json(name: str) -> dict[str, Any]:
        return {"name": name, "is_deletable": name != "default"}


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTower:
    isolate_config(tmp_path, monkeypatch)
    return serve(FakeTower(), monkeypatch)


def assert_clean_failure(result: Result) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def table_rows(text: str) -> list[list[str]]:
    """The data rows of a table: every line after the header's dashed rule, split."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) <= {"─", " "})
    return [line.split() for line in lines[rule + 1 :] if line.strip()]


# -- environments ----------------------------------------------------------------------


def test_list(fake: FakeTower) -> None:
    fake.environments["production"] = {}
    result = tower("environments", "list")
    assert result.exit_code == 0, result.output
    assert re.search(r"Environment\s+Deletable", result.stdout)
    assert table_rows(result.stdout) == [["default", "no"], ["production", "yes"]]
    assert dict(fake.requests[0].url.params) == {"page": "0", "page_size": "100"}


def test_create(fake: FakeTower) -> None:
    result = tower("environments", "create", "-n", "staging")
    assert result.exit_code == 0, result.output
    assert 'Success! Environment "staging" was created' in result.stdout
    assert "tower deploy --environment=staging" in result.stdout
    assert json.loads(fake.requests[0].content) == {"name": "staging"}
    assert "staging" in fake.environments


def test_create_existing_is_a_clean_error(fake: FakeTower) -> None:
    result = tower("environments", "create", "--name", "default")
    assert_clean_failure(result)
    assert "Environment 'default' already exists." in result.stderr


def test_show(fake: FakeTower) -> None:
    result = tower("environments", "show", "-n", "default")
    assert result.exit_code == 0, result.output
    lines = [line.split(":") for line in result.stdout.splitlines()]
    assert [(k, v.strip()) for k, v in lines] == [
        ("Environment", "default"),
        ("Secrets", "2"),
        ("Catalogs", "1"),
        ("Schedules", "0"),
    ]


def test_rename(fake: FakeTower) -> None:
    fake.environments["staging"] = {}
    result = tower("environments", "rename", "-n", "staging", "--new-name", "qa")
    assert result.exit_code == 0, result.output
    assert 'Environment "staging" is now called "qa"' in result.stdout
    assert json.loads(fake.requests[0].content) == {"new_name": "qa"}
    assert list(fake.environments) == ["default", "qa"]


def test_delete_with_yes_shows_what_goes_and_deletes(fake: FakeTower) -> None:
    fake.environments["staging"] = {"secrets": 3, "schedules": 1}
    result = tower("environments", "delete", "-n", "staging", "--yes")
    assert result.exit_code == 0, result.output
    assert re.search(r"Secrets:\s+3", result.stdout)
    assert re.search(r"Schedules:\s+1", result.stdout)
    assert 'Success! Environment "staging" was deleted' in result.stdout
    assert fake.calls() == ["GET /environments/staging", "DELETE /environments/staging"]
    assert "staging" not in fake.environments


def test_delete_asks_at_a_terminal(fake: FakeTower, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "stdin_is_tty", lambda: True)
    fake.environments["staging"] = {"secrets": 1}
    declined = tower("environments", "delete", "-n", "staging", input="n\n")
    assert declined.exit_code == 1
    assert "Delete environment 'staging' with everything in it?" in declined.output
    assert "staging" in fake.environments
    assert fake.calls() == ["GET /environments/staging"]

    accepted = tower("environments", "delete", "-n", "staging", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "staging" not in fake.environments


def test_delete_without_a_terminal_needs_yes(fake: FakeTower) -> None:
    fake.environments["staging"] = {}
    result = tower("environments", "delete", "-n", "staging")
    assert result.exit_code == 2
    assert "pass --yes" in result.output
    assert "staging" in fake.environments
    assert "DELETE /environments/staging" not in fake.calls()


def test_delete_default_is_refused_without_a_request(fake: FakeTower) -> None:
    result = tower("environments", "delete", "-n", "default", "--yes")
    assert_clean_failure(result)
    assert "'default' cannot be deleted" in result.output
    assert fake.requests == []


def test_delete_refuses_what_the_server_calls_undeletable(fake: FakeTower) -> None:
    fake.environments["locked"] = {}
    fake.env_json = lambda name: {"name": name, "is_deletable": False}  # type: ignore[method-assign]
    result = tower("environments", "delete", "-n", "locked", "--yes")
    assert_clean_failure(result)
    assert "'locked' cannot be deleted" in result.output
    assert fake.calls() == ["GET /environments/locked"]


def test_delete_unknown_environment_is_a_clean_error(fake: FakeTower) -> None:
    result = tower("environments", "delete", "-n", "nope", "--yes")
    assert_clean_failure(result)
    assert "Environment 'nope' does not exist" in result.stderr


# -- versions and promote --------------------------------------------------------------


def test_apps_versions_table(fake: FakeTower) -> None:
    fake.versions = [
        {"version": "v2", "created_at": "2025-02-01T10:00:00Z", "environments": ["default"]},
        {
            "version": "v1",
            "created_at": "2025-01-01T09:30:00Z",
            "environments": ["production", "staging"],
        },
        # a server that leaves `environments` out gets a dash
        {"version": "v0", "created_at": "2024-12-31T00:00:00Z"},
    ]
    result = tower("apps", "versions", "hello")
    assert result.exit_code == 0, result.output
    assert re.search(r"Version\s+Created\s+Environments", result.stdout)
    assert table_rows(result.stdout) == [
        ["v2", "2025-02-01", "10:00:00", "default"],
        ["v1", "2025-01-01", "09:30:00", "production,", "staging"],
        ["v0", "2024-12-31", "00:00:00", "-"],
    ]


def test_apps_versions_empty(fake: FakeTower) -> None:
    result = tower("apps", "versions", "hello")
    assert result.exit_code == 0, result.output
    assert "no versions yet" in result.stdout


def test_apps_promote_and_rollback(fake: FakeTower) -> None:
    fake.versions = [{"version": "v2"}, {"version": "v1"}]
    promoted = tower("apps", "promote", "hello", "--version", "v2", "-e", "production")
    assert promoted.exit_code == 0, promoted.output
    assert "Environment 'production' now runs version `v2` of app `hello`" in promoted.stdout
    assert "(was" not in promoted.stdout
    assert fake.requests[0].method == "PUT"
    assert fake.requests[0].url.path == "/v1/apps/hello/environments/production"
    assert json.loads(fake.requests[0].content) == {"version": "v2"}

    rolled_back = tower("apps", "promote", "hello", "--version", "1", "--environment", "production")
    assert rolled_back.exit_code == 0, rolled_back.output
    assert "now runs version `v1` of app `hello` (was v2)" in rolled_back.stdout
    assert fake.pins == {"production": "v1"}


def test_apps_promote_unknown_version_is_a_clean_error(fake: FakeTower) -> None:
    fake.versions = [{"version": "v1"}, {"version": "v2"}]
    result = tower("apps", "promote", "hello", "--version", "v9", "-e", "production")
    assert_clean_failure(result)
    assert "App 'hello' has no version v9; it has v1, v2." in result.stderr
    assert fake.pins == {}


def test_apps_promote_requires_version_and_environment(fake: FakeTower) -> None:
    result = tower("apps", "promote", "hello", "--version", "v1")
    assert result.exit_code == 2
    assert "--environment" in result.output
    assert fake.requests == []


# -- deploy ----------------------------------------------------------------------------


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hello"
    directory.mkdir()
    (directory / "Towerfile").write_text('[app]\nname = "hello"\nscript = "./main.py"\n')
    (directory / "main.py").write_text("print('hello')\n")
    return directory


def test_deploy_all_names_the_environments_it_landed_in(fake: FakeTower, app_dir: Path) -> None:
    result = tower("deploy", "-d", str(app_dir), "--all", "--no-idempotency-key")
    assert result.exit_code == 0, result.output
    assert "Version `v7` of app `hello` has been deployed to all environments (a, b)!" in (
        result.stdout
    )


def test_deploy_to_one_environment_says_which(fake: FakeTower, app_dir: Path) -> None:
    result = tower("deploy", "-d", str(app_dir), "-e", "test", "--no-idempotency-key")
    assert result.exit_code == 0, result.output
    assert "has been deployed to environment 'test'!" in result.stdout
    upload = next(r for r in fake.requests if r.url.path.endswith("/deploy"))
    assert dict(upload.url.params) == {"environment": "test"}
