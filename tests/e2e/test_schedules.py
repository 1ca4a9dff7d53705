"""Schedules on the real clock: two control planes on one PostgreSQL, a runner, two ticks.

One scenario, because every tick costs a minute boundary of waiting:

- tick 1: a `* * * * *` schedule fires within a second of the minute boundary
  (measured from the run's creation time) with its parameters, and the app sees
  TOWER__RUNTIME__SCHEDULE_ID/SCHEDULE_NAME/IS_MANUAL_RUN through `tower.info`;
- between the ticks: a new version is deployed and one control plane is killed -9 and
  restarted (the other may have to take the scheduler over);
- tick 2: the schedule runs the new version; a `skip` schedule whose first run is
  still running starts nothing and counts the skip; no tick fired twice.
"""

from __future__ import annotations

import base64
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.conftest import MakeDatabaseUrl
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import write_app
from tower.server.app import build_context
from tower.server.services import auth
from tower.server.settings import ServerSettings

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.xdist_group("minute-boundary"),
    pytest.mark.timeout(420),
]

APP = "sched-e2e"
SOURCE = """\
import os, time, tower
print("SCHEDULE_ID=" + str(tower.info.schedule_id()))
print("SCHEDULE_NAME=" + str(tower.info.schedule_name()))
print("IS_MANUAL_RUN=" + str(tower.info.is_manual_run()))
print("FRIEND=" + os.environ.get("friend", ""))
print("VERSION={version}")
time.sleep(float(os.environ.get("nap", "0")))
"""
PARAMETERS = """
[[parameters]]
name = "friend"
default = "nobody"

[[parameters]]
name = "nap"
default = "0"
"""


class SharedDatabaseCluster(Cluster):
    """A control plane of several on one database, blob store and master key."""

    def __init__(self, root: Path, database_url: str, master_key: str, blobs: Path) -> None:
        super().__init__(root=root)
        self.shared = {
            "TOWER_DATABASE_URL": database_url,
            "TOWER_MASTER_KEY": master_key,
            "TOWER_STORAGE_URL": f"file://{blobs}",
        }

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.shared}

    def runner_token(self) -> str:
        if self._runner_token is None:
            settings = ServerSettings(
                home=Path(self.env["TOWER_HOME"]),
                database_url=self.shared["TOWER_DATABASE_URL"],
                master_key=self.shared["TOWER_MASTER_KEY"],
                storage_url=self.shared["TOWER_STORAGE_URL"],
            )
            self._runner_token = auth.mint_runner_credential(
                build_context(settings), name="sched", account_id=None
            )
        return self._runner_token


def _deploy(api: httpx.Client, cluster: Cluster, root: Path, version: int) -> None:
    app = write_app(
        root / f"v{version}", APP, "main.py", SOURCE.format(version=version), PARAMETERS
    )
    cluster.deploy(api, app)


def _next_minute(after: float) -> float:
    return (int(after) // 60 + 1) * 60


def _wait_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 1.0))


def _runs_of(api: httpx.Client) -> list[dict]:
    return api.get(f"/apps/{APP}/runs", params={"page": 1, "page_size": 100}).json()["runs"]


def _by_schedule(runs: list[dict], schedule_id: str) -> list[dict]:
    found = [r for r in runs if r["initiator"]["details"].get("schedule_id") == schedule_id]
    return sorted(found, key=lambda r: r["number"])


def _wait_for_runs(api: httpx.Client, schedule_id: str, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = _by_schedule(_runs_of(api), schedule_id)
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        time.sleep(0.1)


def _created(run: dict) -> float:
    return datetime.fromisoformat(run["created_at"]).astimezone(UTC).timestamp()


def test_ticks_fire_once_on_time_across_two_control_planes_and_a_restart(
    make_database_url: MakeDatabaseUrl, tmp_path: Path
) -> None:
    url = make_database_url("postgresql")
    master_key = base64.b64encode(os.urandom(32)).decode()
    blobs = tmp_path / "blobs"
    planes = [SharedDatabaseCluster(tmp_path / name, url, master_key, blobs) for name in ("a", "b")]
    a, b = planes
    try:
        for plane in planes:  # one after the other: each migrates the database at start
            plane.start_server()
        b.start_runner(TOWER_RUNNER_CAPACITY="2")
        with a.api() as api:
            _deploy(api, a, tmp_path, 1)
            every_minute = api.post(
                "/schedules",
                json={
                    "app_name": APP,
                    "cron": "every minute",
                    "name": "every-minute",
                    "parameters": [{"name": "friend", "value": "Brad"}],
                },
            ).json()["schedule"]
            skipper = api.post(
                "/schedules",
                json={
                    "app_name": APP,
                    "cron": "* * * * *",
                    "name": "skipper",
                    "overlap_policy": "skip",
                    "parameters": [{"name": "nap", "value": "150"}],
                },
            ).json()["schedule"]
        tick1 = _next_minute(time.time() + 2)  # at least 2 s to spare before it
        tick2 = tick1 + 60

        _wait_until(tick1)
        with b.api() as api:
            [first] = _wait_for_runs(api, every_minute["id"], 1, timeout=20)
            assert len(_wait_for_runs(api, skipper["id"], 1, timeout=20)) == 1
            lag = _created(first) - tick1
            print(f"tick 1 -> run created after {lag:.3f} s")
            assert 0 <= lag < 1.0, f"the run was created {lag:.3f} s after the minute boundary"
            assert first["app_version"] == "v1" and first["is_scheduled"] is True
            assert {p["name"]: p["value"] for p in first["parameters"]}["friend"] == "Brad"

            # Between the ticks: a new version, and control plane A dies and comes back.
            _deploy(api, b, tmp_path, 2)
            a.kill_server()
            a.start_server()

            done = b.wait_run(api, APP, first["number"], timeout=tick2 - time.time() - 5)
            assert done["status"] == "exited", b.logs()
            lines = api.get(f"/apps/{APP}/runs/{first['number']}/logs").json()["log_lines"]
            output = "\n".join(line["content"] for line in lines)
        assert f"SCHEDULE_ID={every_minute['id']}" in output
        assert "SCHEDULE_NAME=every-minute" in output
        assert "IS_MANUAL_RUN=False" in output and "FRIEND=Brad" in output

        _wait_until(tick2)
        with a.api() as api:
            runs = _wait_for_runs(api, every_minute["id"], 2, timeout=20)
            time.sleep(3)  # room for a duplicate to show up, if either plane made one
            all_runs = _runs_of(api)
            skipped = api.get(f"/schedules/{skipper['id']}").json()["schedule"]
        assert [r["app_version"] for r in runs] == ["v1", "v2"]
        assert _created(runs[1]) - tick2 < 1.0
        assert len(_by_schedule(all_runs, skipper["id"])) == 1
        assert skipped["skipped_ticks"] == 1 and "overlap" in skipped["last_skip_reason"]
        ticks = Counter(
            (r["initiator"]["details"]["schedule_id"], r["initiator"]["details"]["tick"])
            for r in all_runs
        )
        assert set(ticks.values()) == {1}, ticks
        assert len(ticks) == 3
    finally:
        for plane in planes:
            plane.stop()
