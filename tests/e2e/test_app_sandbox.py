"""An app's sandbox settings, end to end: set with `tower apps update` against a real
control plane, sent in the claim, applied by a real runner with real bubblewrap.

Needs root and a working `bwrap` (CI installs it); elsewhere it skips saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.cluster import ADMIN_KEY, Cluster
from tests.e2e.conftest import write_app
from tests.live import BIN

MAX_MEMORY_MB = 512
HOG = """\
chunks = []
for _ in range(64):
    chunks.append(bytearray(16 * 1024 * 1024))  # 1 GiB in all, touched
print("allocated", len(chunks) * 16, "MB")
"""
PROBE = """\
import os, socket
from urllib.parse import urlsplit

url = urlsplit(os.environ["TOWER_URL"])
try:
    socket.create_connection((url.hostname, url.port), timeout=5).close()
    print("connected to the control plane")
except OSError as exc:
    print("no connection:", exc)
"""
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
RUN_UIDS = f"{2_200_000 + 16 * _WORKER}-{2_200_015 + 16 * _WORKER}"


def _bwrap_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the runner's sandbox gives runs their own uid only as root"
    if shutil.which("bwrap") is None:
        return "needs bubblewrap (`bash scripts/system-deps.sh` installs it)"
    return None


pytestmark = [
    pytest.mark.skipif(_bwrap_problem() is not None, reason=_bwrap_problem() or ""),
    pytest.mark.xdist_group("netns"),  # shares RUN_UIDS with test_netns_runner
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("sandbox-cluster")
    cluster = Cluster(root, extra_env={"TOWER_CLAIM_WAIT_MAX_SECONDS": "1"})
    cluster.start_server()
    try:
        cluster.start_runner(
            TOWER_RUNNER_SANDBOX="bwrap",
            TOWER_RUNNER_RUN_UIDS=RUN_UIDS,
            TOWER_RUNNER_MAX_MEMORY_MB=str(MAX_MEMORY_MB),
        )
        with cluster.api() as api:
            apps = root / "apps"
            cluster.deploy(api, write_app(apps, "hog", "main.py", HOG))
            cluster.deploy(api, write_app(apps, "probe", "main.py", PROBE))
        yield cluster
    finally:
        cluster.stop()


def _tower_cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**cluster.env, "TOWER_URL": cluster.url, "TOWER_API_KEY": ADMIN_KEY}
    return subprocess.run(
        [str(BIN / "tower"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def _run(cluster: Cluster, api: httpx.Client, app: str) -> tuple[dict, list[str]]:
    answer = api.post(f"/apps/{app}/runs", json={"parameters": {}})
    answer.raise_for_status()
    number = answer.json()["run"]["number"]
    run = cluster.wait_run(api, app, number, timeout=60)
    lines = api.get(f"/apps/{app}/runs/{number}/logs").json()["log_lines"]
    return run, [line["content"] for line in lines]


def test_an_app_over_its_memory_limit_ends_crashed_saying_the_limit(cluster: Cluster) -> None:
    updated = _tower_cli(cluster, "apps", "update", "hog", "--memory-mb", "64")
    assert updated.returncode == 0, updated.stderr
    assert "memory 64 MB" in updated.stdout
    with cluster.api() as api:
        run, lines = _run(cluster, api, "hog")
    assert run["status"] == "crashed", (run, lines, cluster.logs())
    assert "The run crashed: the app exceeded the memory limit of 64 MiB." in lines, lines
    assert not any(line.startswith("allocated") for line in lines)


def test_an_isolated_app_cannot_reach_the_control_plane_a_default_one_can(
    cluster: Cluster,
) -> None:
    with cluster.api() as api:
        run, lines = _run(cluster, api, "probe")
        assert run["status"] == "exited", (run, lines)
        assert "connected to the control plane" in lines

        updated = _tower_cli(cluster, "apps", "update", "probe", "--isolate-network")
        assert updated.returncode == 0, updated.stderr
        assert "no network" in updated.stdout
        run, lines = _run(cluster, api, "probe")
        assert run["status"] == "exited", (run, lines)
        assert any(line.startswith("no connection:") for line in lines), lines
        assert "connected to the control plane" not in lines

        api.put("/apps/probe", json={"isolate_network": False}).raise_for_status()
        _run_again, lines = _run(cluster, api, "probe")
        assert "connected to the control plane" in lines


def test_a_limit_beyond_the_runner_maximum_is_clamped_and_the_log_says_so(
    cluster: Cluster,
) -> None:
    with cluster.api() as api:
        api.put("/apps/probe", json={"memory_mb": 100_000}).raise_for_status()
        try:
            run, lines = _run(cluster, api, "probe")
        finally:
            api.put("/apps/probe", json={"memory_mb": 0}).raise_for_status()
    assert run["status"] == "exited", (run, lines)
    [note] = [line for line in lines if "more than this runner allows" in line]
    assert "memory_mb=100000" in note and f"memory_mb={MAX_MEMORY_MB}" in note
