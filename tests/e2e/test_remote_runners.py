"""Runners as separate processes: environment tags, a runner that mints its own
credentials from TOWER_API_KEY in a `.env` file, and self-hosted-only mode."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.cluster import ADMIN_KEY, Cluster
from tests.e2e.conftest import write_app
from tests.live import BIN
from tower.core.package import build_package
from tower.core.towerfile import load_towerfile

WHO_AM_I = "import tower\nprint('runner=' + tower.info.runner_name())\n"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    cluster.start_server()
    try:
        yield cluster
    finally:
        cluster.stop()


def _deploy(api: httpx.Client, app_dir: Path, *environments: str) -> None:
    pkg = build_package(load_towerfile(app_dir))
    api.post("/apps", json={"name": app_dir.name})
    for environment in environments:
        answer = api.post(
            f"/apps/{app_dir.name}/deploy",
            params={"environment": environment},
            content=pkg.data,
            headers={"Content-Type": "application/tar", "X-Tower-Checksum-SHA256": pkg.sha256},
        )
        answer.raise_for_status()


def _run(api: httpx.Client, environment: str) -> int:
    answer = api.post("/apps/whoami/runs", json={"environment": environment, "parameters": {}})
    answer.raise_for_status()
    return answer.json()["run"]["number"]


def _ran_on(api: httpx.Client, cluster: Cluster, number: int) -> str:
    run = cluster.wait_run(api, "whoami", number)
    assert run["status"] == "exited", run
    lines = api.get(f"/apps/whoami/runs/{number}/logs").json()["log_lines"]
    [name] = [line["content"].split("=", 1)[1] for line in lines if "runner=" in line["content"]]
    return name


def _start_api_key_runner(cluster: Cluster, workdir: Path, **extra: str) -> subprocess.Popen:
    """`tower runner start` with nothing but TOWER_URL and TOWER_API_KEY, read from the
    `.env` file of its working directory."""
    workdir.mkdir(exist_ok=True)
    lines = {"TOWER_URL": cluster.url, "TOWER_API_KEY": ADMIN_KEY, **extra}
    (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    env = {
        k: v
        for k, v in cluster.env.items()
        if k not in ("TOWER_URL", "TOWER_API_KEY", "TOWER_RUNNER_TOKEN", "TOWER_HOME")
    }
    env["TOWER_RUNNER_NAME"] = "on-prem"
    log = (cluster.root / "on-prem.log").open("ab")
    runner = subprocess.Popen(
        [str(BIN / "tower"), "runner", "start"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster.runners.append(runner)
    return runner


def _wait_online(api: httpx.Client, name: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for runner in api.get("/runners").json()["runners"]:
            if runner["name"] == name and runner["status"] == "online":
                return runner
        time.sleep(0.1)
    raise AssertionError(f"runner {name} never came online")


def test_production_runs_land_only_on_the_production_runner(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_runner()  # chaos-0: untagged, the installation's pool
    cluster.start_runner(TOWER_ENVIRONMENT="production")  # chaos-1
    with cluster.api() as api:
        _deploy(api, write_app(tmp_path / "apps", "whoami", "main.py", WHO_AM_I), "default")
        _deploy(api, tmp_path / "apps" / "whoami", "production")
        _wait_online(api, "chaos-0"), _wait_online(api, "chaos-1")
        production = [_run(api, "production") for _ in range(3)]
        default = [_run(api, "default") for _ in range(3)]
        assert {_ran_on(api, cluster, n) for n in production} == {"chaos-1"}
        assert {_ran_on(api, cluster, n) for n in default} == {"chaos-0"}


def test_a_runner_with_an_api_key_serves_its_account_and_self_hosted_only_waits_for_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_runner()  # the installation's pool, always online
    with cluster.api() as api:
        _deploy(api, write_app(tmp_path / "apps", "whoami", "main.py", WHO_AM_I), "default")
        _wait_online(api, "chaos-0")
        assert api.put("/runners/settings", json={"self_hosted_only": True}).status_code == 200
        waiting = _run(api, "default")
        time.sleep(2)  # the shared runner is online, yet must not take it
        assert api.get(f"/apps/whoami/runs/{waiting}").json()["run"]["status"] == "pending"

        workdir = tmp_path / "on-prem"
        runner = _start_api_key_runner(cluster, workdir, TOWER_HOME=str(tmp_path / "runner-home"))
        listed = _wait_online(api, "on-prem")
        assert listed["pool"] == "account"
        assert _ran_on(api, cluster, waiting) == "on-prem"

        saved = tmp_path / "runner-home" / "runner" / "credential.json"
        assert oct(saved.stat().st_mode & 0o777) == "0o600"
        token = json.loads(saved.read_text())["token"]
        assert token.startswith("rt-") and ADMIN_KEY not in saved.read_text()

        # A restart reuses the saved credential instead of minting another one.
        runner.terminate(), runner.wait(30)
        _start_api_key_runner(cluster, workdir, TOWER_HOME=str(tmp_path / "runner-home"))
        assert _ran_on(api, cluster, _run(api, "default")) == "on-prem"
        assert json.loads(saved.read_text())["token"] == token
        log = (cluster.root / "on-prem.log").read_text()
        assert log.count("minted runner credentials") == 1, log
