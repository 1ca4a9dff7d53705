"""A runner on a second "host": its own network namespace, joined to the control plane's
by a veth pair. The control plane listens only on its end of the link, so everything
the runner does — register, claim, fetch the package, report, ship logs — crosses it.

The namespace has no route to the internet, so the runner host's venv cache is
provisioned beforehand from this side (as a host behind a mirror would be): the SDK
wheel and the apps' venv are built once here; the runner in the namespace reuses them.

Skips (saying why) where the machine does not allow `ip netns`.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.conftest import write_app
from tests.e2e.netns import namespace_exists, veth_namespace
from tower.runner.settings import RunnerSettings, installer_environment
from tower.runner.venvs import VenvCache

pytestmark = pytest.mark.xdist_group("netns")

#: the address the app's traffic to the control plane leaves from: the runner's host
WHERE_AM_I = """\
import os, socket
from urllib.parse import urlsplit

control_plane = urlsplit(os.environ["TOWER_URL"]).hostname
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect((control_plane, 9))
print("control plane at", control_plane)
print("running at", probe.getsockname()[0])
"""
COUNT = "for i in range(3):\n    print('line', i)\n"
#: a stopping runner waits out its claim long-poll: keep it short so teardown is quick
SHORT_CLAIMS = {"TOWER_CLAIM_WAIT_MAX_SECONDS": "1"}
#: run uids of their own, so this test's runs never meet the sandbox tests' uids
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
RUN_UIDS = f"{2_200_000 + 16 * _WORKER}-{2_200_015 + 16 * _WORKER}"


def _provision_venvs(env: dict[str, str], app_dir: Path) -> None:
    """Build, from this side of the link, the venv the runner will need for `app_dir`."""
    settings = RunnerSettings.from_env(env, dotenv_path=app_dir / "no.env")
    cache = VenvCache(
        settings.venvs_dir,
        uv_cache_dir=settings.uv_cache_dir,
        sdk_dir=settings.sdk_dir,
        python=settings.python,
        base_env=installer_environment(),
    )
    with cache.use(app_dir, lambda _channel, _line: None):
        pass


def _run_to_end(cluster: Cluster, api: httpx.Client, app: str) -> list[str]:
    answer = api.post(f"/apps/{app}/runs", json={"parameters": {}})
    answer.raise_for_status()
    number = answer.json()["run"]["number"]
    run = cluster.wait_run(api, app, number, timeout=60)
    assert run["status"] == "exited", (run, cluster.logs())
    lines = api.get(f"/apps/{app}/runs/{number}/logs").json()["log_lines"]
    return [line["content"] for line in lines if line.get("channel") == "program"]


def test_a_runner_in_its_own_network_namespace_runs_apps_over_the_veth_link(
    tmp_path: Path,
) -> None:
    with veth_namespace() as namespace:
        cluster = Cluster(tmp_path, host=namespace.host_address, extra_env=SHORT_CLAIMS)
        try:
            cluster.start_server()
            apps = tmp_path / "apps"
            whereami = write_app(apps, "whereami", "main.py", WHERE_AM_I)
            count = write_app(apps, "count", "main.py", COUNT)
            _provision_venvs(cluster.env, whereami)  # both apps need the same venv
            cluster.start_runner(
                namespace.exec_prefix,
                TOWER_RUNNER_SANDBOX="auto",
                TOWER_RUNNER_RUN_UIDS=RUN_UIDS,
            )
            with cluster.api() as api:
                cluster.deploy(api, whereami)
                cluster.deploy(api, count)

                where = _run_to_end(cluster, api, "whereami")
                assert f"control plane at {namespace.host_address}" in where
                # The app ran behind the link: its traffic leaves from the namespace's end.
                assert f"running at {namespace.inner_address}" in where
                assert _run_to_end(cluster, api, "count") == ["line 0", "line 1", "line 2"]

                [runner] = api.get("/runners").json()["runners"]
                assert runner["name"] == "chaos-0" and runner["status"] == "online"
        finally:
            cluster.stop()
    assert not namespace_exists(namespace.name)
