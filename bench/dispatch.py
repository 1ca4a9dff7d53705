"""Dispatch latency and idle memory of the embedded default (`tower up`).

Deploys a trivial app, warms the venv cache with one run, submits N runs one
after another and prints p50/p95/max of submit → running and submit → exited,
where the time goes (queue, provisioning, execution), and the idle RSS of the
control plane and of the runner. Prints JSON, then a readable table.

    .venv/bin/python bench/dispatch.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.live import LiveTower, free_port, tower_env

from tower.core.package import build_package
from tower.core.towerfile import load_towerfile

TERMINAL = {"exited", "crashed", "errored", "cancelled"}
POLL_S = 0.005


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def _deploy_trivial_app(api: httpx.Client, root: Path) -> None:
    app_dir = root / "bench-app"
    app_dir.mkdir()
    (app_dir / "Towerfile").write_text('[app]\nname = "bench"\nscript = "./main.py"\n')
    (app_dir / "main.py").write_text("print('ok')\n")
    pkg = build_package(load_towerfile(app_dir))
    api.post("/apps", json={"name": "bench"}).raise_for_status()
    api.post(
        "/apps/bench/deploy",
        content=pkg.data,
        headers={"Content-Type": "application/tar", "X-Tower-Checksum-SHA256": pkg.sha256},
    ).raise_for_status()


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
    created, starting = _ts(run["created_at"]), _ts(run["starting_at"])
    started, ended = _ts(run["started_at"]), _ts(run["ended_at"])
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
    with tempfile.TemporaryDirectory(prefix="tower-bench-") as tmp:
        root = Path(tmp)
        tower = LiveTower(root, free_port(), tower_env(root))
        tower.start()
        try:
            with tower.api() as api:
                _deploy_trivial_app(api, root)
                _one_run(api)  # builds the venv: the cache is warm from here on
                samples = [_one_run(api) for _ in range(runs)]
            rss = _idle_rss(tower)
        finally:
            tower.stop()
    keys = ("submit_to_running", "submit_to_exited", "queue", "provisioning", "execution")
    return {
        "runs": runs,
        "latency": {k: _percentiles([s[k] for s in samples]) for k in keys},
        "idle_rss": rss,
        "targets": {"submit_to_running_p50_ms": 100, "idle_rss_total_mib": 200},
    }


def _table(result: dict) -> str:
    lines = [f"{'measure':<22}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}"]
    for name, p in result["latency"].items():
        lines.append(f"{name:<22}{p['p50_ms']:>10}{p['p95_ms']:>10}{p['max_ms']:>10}")
    rss = result["idle_rss"]
    lines.append("")
    lines.append(
        f"idle RSS: control plane {rss['control_plane_mib']} MiB, "
        f"runner {rss['runner_mib']} MiB, total {rss['total_mib']} MiB"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    result = measure(parser.parse_args().runs)
    print(json.dumps(result, indent=2))
    print()
    print(_table(result))


if __name__ == "__main__":
    main()
