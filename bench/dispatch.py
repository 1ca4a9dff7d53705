"""Dispatch latency and idle memory of the embedded default (`tower up`).

Deploys a trivial app, warms the venv cache with one run, submits N runs one
after another and prints p50/p95/p99/max of submit → running and submit → exited,
where the time goes (queue, provisioning, execution), and the idle RSS of the
control plane and of the runner. Prints JSON, then a readable table.

    .venv/bin/python bench/dispatch.py [--runs 100]
"""

from __future__ import annotations

import argparse
import time

import httpx
import psutil
from _common import (
    TERMINAL,
    deploy_app,
    live_tower,
    percentiles,
    report,
    timestamp,
)
from tests.live import LiveTower

POLL_S = 0.005
TOWERFILE = '[app]\nname = "bench"\nscript = "./main.py"\n'


def _one_run(api: httpx.Client) -> dict[str, float]:
    submitted = time.time()
    number = api.post("/apps/bench/runs", json={"parameters": {}}).json()["run"]["number"]
    while True:
        run = api.get(f"/apps/bench/runs/{number}").json()["run"]
        if run["status"] in TERMINAL:
            break
        time.sleep(POLL_S)
    if run["status"] != "exited":
        raise RuntimeError(f"run {number} ended {run['status']}: {run.get('status_message')}")
    created, starting = timestamp(run["created_at"]), timestamp(run["starting_at"])
    started, ended = timestamp(run["started_at"]), timestamp(run["ended_at"])
    return {
        "submit_to_running": started - submitted,
        "submit_to_exited": ended - submitted,
        "queue": starting - created,
        "provisioning": started - starting,
        "execution": ended - started,
    }


def _idle_rss(tower: LiveTower) -> dict[str, float]:
    time.sleep(3)  # let both processes settle after the last run
    parent = psutil.Process(tower.process.pid)
    children = parent.children(recursive=True)
    mib = 1024 * 1024
    control = parent.memory_info().rss / mib
    runner = sum(c.memory_info().rss for c in children) / mib
    return {
        "control_plane_mib": round(control, 1),
        "runner_mib": round(runner, 1),
        "total_mib": round(control + runner, 1),
    }


def measure(runs: int) -> dict[str, object]:
    with live_tower() as tower:
        with tower.api() as api:
            deploy_app(
                api, tower.root, "bench", {"Towerfile": TOWERFILE, "main.py": "print('ok')\n"}
            )
            _one_run(api)  # builds the venv: the cache is warm from here on
            samples = [_one_run(api) for _ in range(runs)]
        rss = _idle_rss(tower)
    keys = ("submit_to_running", "submit_to_exited", "queue", "provisioning", "execution")
    return {
        "runs": runs,
        "latency": {k: percentiles([s[k] for s in samples]) for k in keys},
        "idle_rss": rss,
        "targets": {
            "submit_to_running_p50_ms": 60,
            "submit_to_running_p99_ms": 250,
            "idle_rss_total_mib": 200,
        },
    }


def _table(result: dict) -> str:
    lines = [f"{'measure':<22}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'max ms':>10}"]
    for name, p in result["latency"].items():
        lines.append(
            f"{name:<22}{p['p50_ms']:>10}{p['p95_ms']:>10}{p['p99_ms']:>10}{p['max_ms']:>10}"
        )
    rss = result["idle_rss"]
    lines.append("")
    lines.append(
        f"idle RSS: control plane {rss['control_plane_mib']} MiB, "
        f"runner {rss['runner_mib']} MiB, total {rss['total_mib']} MiB"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    report(measure(parser.parse_args().runs), _table)


if __name__ == "__main__":
    main()
