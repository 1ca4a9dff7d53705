"""The scheduler under 10,000 active schedules: tick → run-created lag, duplicates, idle CPU.

Starts a control plane alone (`tower server`, SQLite, no runner: the runs only need to
be created), deploys a trivial app and creates N schedules through the API. Cron has
minute resolution, so "spread over the minute" here means spread over the minute
boundaries of the hour: schedule i is `i % 60 * * * *`, so each minute boundary has
N/60 ticks due at once. It then watches a few boundaries and reports:

- lag from each tick (the boundary) to the creation of its run: p50/p95/p99/max;
- duplicates (two runs for one schedule and tick) and misses (a due tick without a run);
- the control plane's CPU while idle between ticks (from 10 s after a boundary to 5 s
  before the next), as a percentage of one core.

    .venv/bin/python bench/schedules.py [--schedules 10000] [--ticks 3]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from _common import deploy_app, percentiles, report
from tests.e2e.cluster import Cluster

TOWERFILE = '[app]\nname = "bench-sched"\nscript = "./main.py"\n'
APP = "bench-sched"
IDLE_AFTER_TICK_S = 10.0
IDLE_BEFORE_TICK_S = 5.0


def _create_schedules(cluster: Cluster, count: int) -> float:
    """Create `count` schedules over 4 connections; the seconds it took."""

    def create(indexes: range) -> None:
        with cluster.api() as api:
            for i in indexes:
                api.post(
                    "/schedules",
                    json={"app_name": APP, "cron": f"{i % 60} * * * *", "name": f"s{i}"},
                ).raise_for_status()

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, [range(k, count, 4) for k in range(4)]))
    return time.monotonic() - started


def _next_boundary(after: float) -> float:
    return (int(after) // 60 + 1) * 60


def _sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _scheduled_runs(db: Path) -> list[tuple[str, str, float]]:
    """(schedule id, tick, created_at epoch) of every scheduled run, read-only."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT initiator, created_at FROM runs").fetchall()
    result = []
    for initiator, created_at in rows:
        details = json.loads(initiator).get("details", {})
        created = datetime.fromisoformat(created_at).replace(tzinfo=UTC).timestamp()
        result.append((details["schedule_id"], details["tick"], created))
    return result


def _due_count(count: int, boundary: float) -> int:
    minute = datetime.fromtimestamp(boundary, UTC).minute
    return len(range(minute, count, 60))


def measure(count: int, ticks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tower-bench-sched-") as tmp:
        root = Path(tmp)
        cluster = Cluster(root)
        cluster.start_server()
        try:
            with cluster.api() as api:
                deploy_app(api, root, APP, {"Towerfile": TOWERFILE, "main.py": "print(1)\n"})
            create_s = _create_schedules(cluster, count)
            process = psutil.Process(cluster.server.pid)  # type: ignore[union-attr]
            boundaries, idle = [], []
            boundary = _next_boundary(time.time() + 1)
            for _ in range(ticks):
                _sleep_until(boundary + IDLE_AFTER_TICK_S)
                cpu0, wall0 = _cpu_seconds(process), time.monotonic()
                _sleep_until(boundary + 60 - IDLE_BEFORE_TICK_S)
                idle.append((_cpu_seconds(process) - cpu0) / (time.monotonic() - wall0))
                boundaries.append(boundary)
                boundary += 60
            _sleep_until(boundary + IDLE_AFTER_TICK_S)  # the last boundary's runs are in
            db = Path(cluster.env["TOWER_HOME"]) / "tower.db"
            runs = _scheduled_runs(db)
        finally:
            cluster.stop()
    return _result(count, ticks, create_s, boundaries, runs, idle)


def _result(
    count: int,
    ticks: int,
    create_s: float,
    boundaries: list[float],
    runs: list[tuple[str, str, float]],
    idle: list[float],
) -> dict[str, Any]:
    watched = {datetime.fromtimestamp(b, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"): b for b in boundaries}
    lags, per_tick = [], Counter()
    for _schedule, tick, created in runs:
        if tick in watched:
            lags.append(created - watched[tick])
            per_tick[tick] += 1
    duplicates = sum(n - 1 for n in Counter((s, t) for s, t, _ in runs).values() if n > 1)
    due = sum(_due_count(count, b) for b in boundaries)
    return {
        "schedules": count,
        "ticks_watched": ticks,
        "create_schedules_s": round(create_s, 1),
        "due_ticks": due,
        "runs_created": len(lags),
        "missed": due - len(lags),
        "duplicates": duplicates,
        "lag": percentiles(lags) if lags else {},
        "idle_cpu_percent_of_one_core": [round(100 * share, 2) for share in idle],
        "targets": {"p99_ms": 1000, "duplicates": 0, "idle_cpu_percent": 5},
    }


def _table(result: dict[str, Any]) -> str:
    lag = result["lag"]
    idle = result["idle_cpu_percent_of_one_core"]
    counts = f"{result['runs_created']} / {result['missed']} / {result['duplicates']}"
    lags = f"{lag.get('p50_ms')} / {lag.get('p99_ms')} / {lag.get('max_ms')} ms"
    rows = [
        ("active schedules", f"{result['schedules']}"),
        ("created through the API in", f"{result['create_schedules_s']} s"),
        ("ticks due in the watched minutes", f"{result['due_ticks']}"),
        ("runs created / missed / duplicates", counts),
        ("tick -> run created p50 / p99 / max", f"{lags} (target p99 <= 1000 ms)"),
        ("idle CPU between ticks", " / ".join(f"{v}%" for v in idle) + " (target <= 5%)"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=3, help="Minute boundaries to watch.")
    args = parser.parse_args()
    report(measure(args.schedules, args.ticks), _table)


if __name__ == "__main__":
    main()
