"""Which runner takes which run: environment tags, account runners, self-hosted-only mode,
and the runner list — through the HTTP API and the runner protocol."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, make_package
from tests.unit.cli_fakes import isolate_config, tower
from tower.cli import config
from tower.client.api import TowerApi
from tower.server.store import models
from tower.server.store.types import utcnow


def _deploy_everywhere(api: httpx.Client, root: Path) -> None:
    pkg = make_package(root, "hello")
    for environment in ("default", "production"):
        response = api.post(
            "/apps/hello/deploy",
            params={"environment": environment},
            content=pkg.data,
            headers={"Content-Type": "application/tar", "X-Tower-Checksum-SHA256": pkg.sha256},
        )
        assert response.status_code == 201, response.text


def _run(api: httpx.Client, environment: str = "default") -> str:
    response = api.post("/apps/hello/runs", json={"environment": environment, "parameters": {}})
    assert response.status_code == 201, response.text
    return response.json()["run"]["run_id"]


def _account_runner(server: ApiServer, api: httpx.Client, **kwargs: str) -> FakeRunner:
    minted = api.post("/runners/credentials", json={"name": "on-prem"})
    assert minted.status_code == 201, minted.text
    return FakeRunner(server, token=minted.json()["credentials"]["token"], **kwargs)


@pytest.fixture
def api(api_server: ApiServer, tmp_path: Path) -> httpx.Client:
    with api_server.client() as client:
        client.post("/apps", json={"name": "hello"})
        _deploy_everywhere(client, tmp_path / "pkg")
        yield client


def test_a_tagged_runner_takes_only_its_environment_and_reserves_it(
    api_server: ApiServer, api: httpx.Client
) -> None:
    production = _run(api, "production")
    default = _run(api, "default")
    tagged = FakeRunner(api_server, environment="production")
    untagged = FakeRunner(api_server)

    # The older production run is skipped: production is reserved for its tagged runner.
    assert untagged.claim()["run_id"] == default
    assert untagged.claim() is None
    assert tagged.claim()["run_id"] == production
    _run(api, "default")
    assert tagged.claim() is None  # never another environment's run


def test_an_environment_is_released_once_its_tagged_runner_is_long_gone(
    api_server: ApiServer, api: httpx.Client
) -> None:
    FakeRunner(api_server, environment="production")
    production = _run(api, "production")
    untagged = FakeRunner(api_server)
    assert untagged.claim() is None

    window = api_server.ctx.settings.runner_reservation_seconds
    with api_server.ctx.sessions.begin() as session:
        for runner in session.query(models.Runner).filter_by(environment="production"):
            runner.last_heartbeat_at = utcnow() - timedelta(seconds=window + 1)
    assert untagged.claim()["run_id"] == production


def test_an_account_runner_takes_only_its_account_runs(
    api_server: ApiServer, api: httpx.Client, tmp_path: Path
) -> None:
    stranger_key = api_server.new_user_key("stranger@example.com")
    with api_server.client(stranger_key) as stranger:
        stranger.post("/apps", json={"name": "hello"})
        _deploy_everywhere(stranger, tmp_path / "stranger")
        theirs = _run(stranger)
    mine = _run(api)

    own = _account_runner(api_server, api)
    assert own.claim()["run_id"] == mine
    assert own.claim() is None  # the stranger's run is not ours to take
    assert FakeRunner(api_server).claim()["run_id"] == theirs  # the shared pool takes it


def test_self_hosted_only_runs_wait_for_the_account_own_runner(
    api_server: ApiServer, api: httpx.Client
) -> None:
    assert api.get("/runners/settings").json() == {"self_hosted_only": False}
    assert api.put("/runners/settings", json={"self_hosted_only": True}).json() == {
        "self_hosted_only": True
    }
    queued = _run(api)
    shared = FakeRunner(api_server)
    assert shared.claim() is None  # no fallback to the installation's pool
    run = api.get(f"/apps/hello/runs/{1}").json()["run"]
    assert run["status"] == "pending"

    assert _account_runner(api_server, api).claim(wait=2)["run_id"] == queued

    api.put("/runners/settings", json={"self_hosted_only": False})
    shared_run = _run(api)
    assert shared.claim()["run_id"] == shared_run


def test_runners_list_shows_status_capacity_and_running_count(
    api_server: ApiServer, api: httpx.Client
) -> None:
    own = _account_runner(api_server, api, environment="production")
    FakeRunner(api_server)  # the installation's pool
    _run(api, "production")
    assert own.claim() is not None

    listed = api.get("/runners").json()
    by_pool = {runner["pool"]: runner for runner in listed["runners"]}
    assert set(by_pool) == {"account", "shared"}  # the admin sees the shared pool too
    mine = by_pool["account"]
    assert mine["status"] == "online" and mine["environment"] == "production"
    assert mine["num_runs"] == 1 and mine["max_concurrent_apps"] == 1
    assert mine["name"] == "fake" and mine["last_health_check_at"].endswith("Z")

    with api_server.ctx.sessions.begin() as session:
        row = session.get(models.Runner, uuid.UUID(mine["id"]))
        row.last_heartbeat_at = utcnow() - timedelta(minutes=5)
    statuses = {r["id"]: r["status"] for r in api.get("/runners").json()["runners"]}
    assert statuses[mine["id"]] == "offline"

    member_key = api_server.new_user_key("member@example.com")
    with api_server.client(member_key) as member:
        assert member.get("/runners").json()["runners"] == []  # neither ours nor the pool


def test_runner_credentials_are_shown_once_and_work(
    api_server: ApiServer, api: httpx.Client
) -> None:
    minted = api.post("/runners/credentials", json={"name": "x" * 129})
    assert minted.status_code == 422
    body = api.post("/runners/credentials", json={"ttl_days": 30}).json()["credentials"]
    assert body["token"].startswith("rt-") and body["expires_at"].endswith("Z")
    assert body["runner_service_url"]
    assert "rt-" not in api.get("/runners").text


def test_tower_runners_commands_against_the_server(
    api_server: ApiServer, api: httpx.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_config(tmp_path, monkeypatch)
    monkeypatch.setattr(
        config, "make_api", lambda cfg=None: TowerApi(api_server.url, api_key=api_server.api_key)
    )
    minted = tower("runners", "credentials", "--name", "edge-1")
    assert minted.exit_code == 0, minted.output
    token = re.search(r"^TOWER_RUNNER_TOKEN=(rt-\S+)$", minted.output, re.M).group(1)
    assert f"TOWER_URL={api_server.ctx.settings.resolved_public_url}" in minted.output
    assert re.search(r"^TOWER_RUNNER_PACKAGE_KEY=\S{44}$", minted.output, re.M)
    FakeRunner(api_server, token=token, environment="production")

    listed = tower("runners", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [mine] = [r for r in json.loads(listed.stdout) if r["pool"] == "account"]
    assert mine["environment"] == "production" and mine["status"] == "online"
    table = tower("runners", "list")
    assert "production" in table.output and "online" in table.output

    assert "is on" in tower("runners", "self-hosted-only", "on").output
    assert api.get("/runners/settings").json() == {"self_hosted_only": True}
    assert "is on" in tower("runners", "self-hosted-only").output
    assert "is off" in tower("runners", "self-hosted-only", "off").output
