"""No zombie runs: kill -9 the runner or the control plane mid-run, retries, cancel, fan-out.

Everything here is real: `tower server` and `tower runner start` as separate
processes on one SQLite file, apps in uv-built venvs, signals to real process groups.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, pid_alive
from tests.e2e.conftest import write_app

pytestmark = pytest.mark.e2e

LEASE_TTL_S = 3.0
CANCEL_GRACE_S = 2.0
MARKER_PARAMETER = '[[parameters]]\nname = "marker"\ndefault = ""\n'

# Prints numbered lines; records its pid and, at the very end, that it finished.
COUNTER_APP = """\
import os, time, tower
marker = tower.parameter("marker")
total = int(tower.parameter("lines", "30"))
with open(marker + ".pid", "a") as f:
    f.write(f"{os.getpid()}\\n")
for i in range(1, total + 1):
    print(f"line {i}", flush=True)
    time.sleep(0.1)
with open(marker + ".done", "a") as f:
    f.write("done\\n")
"""
COUNTER_PARAMETERS = MARKER_PARAMETER + '[[parameters]]\nname = "lines"\ndefault = "30"\n'

STUBBORN_APP = """\
import os, signal, time, tower
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(tower.parameter("marker") + ".pid", "w") as f:
    f.write(str(os.getpid()))
print("ignoring SIGTERM", flush=True)
time.sleep(120)
"""

FAILING_APP = """\
import tower
print("attempt says hello; exit 1", flush=True)
raise SystemExit(1)
"""

CHILD_APP = """\
import time, tower
time.sleep(float(tower.parameter("sleep", "0")))
if tower.parameter("fail", "no") == "yes":
    raise SystemExit(3)
print("child done", flush=True)
"""
CHILD_PARAMETERS = (
    '[[parameters]]\nname = "fail"\ndefault = "no"\n[[parameters]]\nname = "sleep"\ndefault = "0"\n'
)

FAN_OUT_APP = """\
import tower
sleep = tower.parameter("sleep", "0")
runs = [
    tower.run_app("child", parameters={"fail": "yes" if i % 2 else "no", "sleep": sleep})
    for i in range(5)
]
print(f"started {len(runs)} children", flush=True)
successful, failed = tower.wait_for_runs(runs)
print(f"succeeded: {len(successful)} failed: {len(failed)}", flush=True)
"""
FAN_OUT_PARAMETERS = '[[parameters]]\nname = "sleep"\ndefault = "0"\n'
#: the official SDK from PyPI, inside the app's own venv (the app declares it)
OFFICIAL_SDK_REQUIREMENT = "tower==0.3.67\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("chaos")
    live = Cluster(root, lease_ttl_s=LEASE_TTL_S, cancel_grace_s=CANCEL_GRACE_S)
    live.start_server()
    live.start_runner(TOWER_RUNNER_CAPACITY="8")
    apps = root / "apps"
    with live.api() as api:
        for name, body, extra in (
            ("counter", COUNTER_APP, COUNTER_PARAMETERS),
            ("stubborn", STUBBORN_APP, MARKER_PARAMETER),
            ("failing", FAILING_APP, ""),
            ("child", CHILD_APP, CHILD_PARAMETERS),
            ("fanout", FAN_OUT_APP, FAN_OUT_PARAMETERS),
        ):
            live.deploy(api, write_app(apps, name, "main.py", body, extra))
        official = write_app(
            apps,
            "official-fanout",
            "main.py",
            FAN_OUT_APP,
            FAN_OUT_PARAMETERS,
            requirements__txt=OFFICIAL_SDK_REQUIREMENT,
        )
        live.deploy(api, official)
    try:
        yield live
    finally:
        live.stop()


def _run(cluster: Cluster, app: str, **body: object) -> int:
    with cluster.api() as api:
        answer = api.post(f"/apps/{app}/runs", json={"parameters": {}, **body})
        assert answer.status_code == 201, answer.text
        return answer.json()["run"]["number"]


def _lines(cluster: Cluster, app: str, number: int) -> list[dict]:
    with cluster.api() as api:
        return api.get(f"/apps/{app}/runs/{number}/logs").json()["log_lines"]


def _program(lines: list[dict]) -> list[tuple[int, str]]:
    return [
        (line["attempt_seq"], line["content"]) for line in lines if line["channel"] == "program"
    ]


def _wait_for_lines(cluster: Cluster, app: str, number: int, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(_program(_lines(cluster, app, number))) < count:
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.05)


def at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _read_pid(path: Path) -> int:
    deadline = time.monotonic() + 30
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return int(path.read_text().split()[-1])


def test_runner_killed_mid_run_is_retried_without_duplicate_success(
    cluster: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "counter"
    number = _run(
        cluster,
        "counter",
        parameters={"marker": str(marker)},
        retry_policy={"max_retries": 1, "retry_delay_seconds": 0},
    )
    _wait_for_lines(cluster, "counter", number, 5)
    first_pid = _read_pid(marker.with_suffix(".pid"))
    victim = cluster.runners[-1]
    killed_at = time.monotonic()
    cluster.kill_runner(victim)
    cluster.start_runner(TOWER_RUNNER_CAPACITY="8")
    # The app does not outlive its runner.
    while pid_alive(first_pid):
        assert time.monotonic() - killed_at < 3, "the app survived its runner"
        time.sleep(0.05)
    with cluster.api() as api:
        lost = cluster.wait_run(api, "counter", number, until={"pending", "starting", "retrying"})
        assert time.monotonic() - killed_at <= LEASE_TTL_S + 2, lost
        final = cluster.wait_run(api, "counter", number)
    assert final["status"] == "exited", cluster.logs()
    assert [a["status"] for a in final["attempts"]] == ["errored", "exited"]
    assert final["num_attempts"] == 2
    assert marker.with_suffix(".done").read_text() == "done\n"  # exactly one success
    second = [text for seq, text in _program(_lines(cluster, "counter", number)) if seq == 2]
    assert second == [f"line {i}" for i in range(1, 31)]


def test_control_plane_killed_mid_run_loses_no_log_line(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "steady"
    number = _run(cluster, "counter", parameters={"marker": str(marker), "lines": "60"})
    _wait_for_lines(cluster, "counter", number, 5)
    cluster.kill_server()
    time.sleep(2)  # the app keeps printing; the runner keeps the lines
    cluster.start_server()
    with cluster.api() as api:
        final = cluster.wait_run(api, "counter", number, timeout=90)
    assert final["status"] == "exited", cluster.logs()
    assert final["num_attempts"] == 1
    lines = [line for line in _lines(cluster, "counter", number) if line["channel"] == "program"]
    assert [line["content"] for line in lines] == [f"line {i}" for i in range(1, 61)]
    numbers = [line["line_num"] for line in lines]
    assert numbers == sorted(set(numbers))


def test_always_failing_run_gets_three_attempts_with_backoff(cluster: Cluster) -> None:
    number = _run(
        cluster,
        "failing",
        retry_policy={"max_retries": 2, "retry_delay_seconds": 1, "use_exponential_backoff": True},
    )
    with cluster.api() as api:
        final = cluster.wait_run(api, "failing", number, timeout=60)
    assert final["status"] == "crashed" and final["exit_code"] == 1
    attempts = final["attempts"]
    assert [(a["seq"], a["status"], a["exit_code"]) for a in attempts] == [
        (1, "crashed", 1),
        (2, "crashed", 1),
        (3, "crashed", 1),
    ]
    assert sorted({seq for seq, _ in _program(_lines(cluster, "failing", number))}) == [1, 2, 3]
    gaps = [at(attempts[i + 1]["starting_at"]) - at(attempts[i]["ended_at"]) for i in (0, 1)]
    assert gaps[0] >= 0.95 and gaps[1] >= 1.95, gaps


def test_cancel_kills_an_app_that_ignores_sigterm_within_grace(
    cluster: Cluster, tmp_path: Path
) -> None:
    marker = tmp_path / "stubborn"
    number = _run(cluster, "stubborn", parameters={"marker": str(marker)})
    pid = _read_pid(marker.with_suffix(".pid"))
    with cluster.api() as api:
        cluster.wait_run(api, "stubborn", number, until={"running"})
        cancelled_at = time.monotonic()
        answer = api.post(f"/apps/stubborn/runs/{number}").json()
    assert answer["run"]["status"] == "cancelled"
    while pid_alive(pid):
        assert time.monotonic() - cancelled_at <= CANCEL_GRACE_S + 1, "app outlived grace + 1 s"
        time.sleep(0.02)


def test_fan_out_with_run_app_and_wait_for_runs(cluster: Cluster) -> None:
    number = _run(cluster, "fanout")
    with cluster.api() as api:
        final = cluster.wait_run(api, "fanout", number, timeout=120)
        graph = api.get(f"/apps/fanout/runs/{number}/graph").json()["runs"]
    assert final["status"] == "exited", _lines(cluster, "fanout", number)
    printed = [text for _, text in _program(_lines(cluster, "fanout", number))]
    assert printed == ["started 5 children", "succeeded: 3 failed: 2"]
    assert len(graph) == 5
    assert {edge["parent_id"]["number"] for edge in graph} == {number}


def test_cancelling_the_fan_out_parent_cancels_its_children(cluster: Cluster) -> None:
    number = _run(cluster, "fanout", parameters={"sleep": "60"})
    _wait_for_lines(cluster, "fanout", number, 1)
    with cluster.api() as api:
        answer = api.post(f"/apps/fanout/runs/{number}").json()
        assert answer["run"]["status"] == "cancelled"
        assert answer["cancelled_child_runs"] == 5
        graph = api.get(f"/apps/fanout/runs/{number}/graph").json()["runs"]
        children = [edge["id"]["number"] for edge in graph]
        statuses = {api.get(f"/apps/child/runs/{n}").json()["run"]["status"] for n in children}
    assert statuses == {"cancelled"}


@pytest.mark.compat
def test_official_sdk_run_app_and_wait_for_runs_work_against_us(cluster: Cluster) -> None:
    """The same fan-out app, but importing the PyPI `tower` SDK (it polls describe-run)."""
    number = _run(cluster, "official-fanout")
    with cluster.api() as api:
        final = cluster.wait_run(api, "official-fanout", number, timeout=240)
    lines = _lines(cluster, "official-fanout", number)
    assert final["status"] == "exited", lines
    printed = [text for _, text in _program(lines)]
    assert printed[-2:] == ["started 5 children", "succeeded: 3 failed: 2"]
