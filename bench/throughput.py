"""Trivial runs drained per second by one runner using both cores (`tower up`).

Submits N runs of a one-line app as fast as the API takes them, then waits until
every one has ended. Throughput = N / (first run created → last run ended), from
the server's own timestamps; the figure is the median of `--rounds` such rounds on
one `tower up`. Prints JSON, then a table. Besides CPU time per run and
process, it counts the user-space instructions all processes retired per run (with
`perf`, where it can count): that figure does not move with the machine's speed.

With `--backlog` the runner is stopped (SIGSTOP) while the runs are submitted and
let go once all are queued: throughput = N / (let go → last run ended), how fast a
backlog drains when the control plane serves only the runner.

The runner runs 12 at once (`--capacity`). A trivial run holds its slot for about
130 ms, nearly all of it spent waiting on round trips with the control plane, so the
drain is bounded by capacity / that time (8 slots: about 60 runs/s) well before both
cores are busy; a runner meant for short runs is given several slots per core.

    .venv/bin/python bench/throughput.py [--runs 300] [--capacity 12] [--rounds 3] [--backlog]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psutil
from _common import (
    deploy_app,
    live_tower,
    process_tree_cpu,
    report,
    timestamp,
    user_instructions,
    wait_for_run,
)

TOWERFILE = '[app]\nname = "tick"\nscript = "./main.py"\n'
TARGET_PER_S = 60.0
SUBMITTERS = 4
#: runs at once on the runner (see the module doc)
DEFAULT_CAPACITY = 12


def _submit(api: httpx.Client, count: int) -> list[int]:
    def one(_: int) -> int:
        answer = api.post("/apps/tick/runs", json={"parameters": {}})
        answer.raise_for_status()
        return answer.json()["run"]["number"]

    with ThreadPoolExecutor(SUBMITTERS) as pool:
        return list(pool.map(one, range(count)))


def _cpu_seconds(control_plane: psutil.Process, tree: Callable[[], float | None]) -> dict:
    """CPU time so far of the control plane, the runner, the apps (everything else the
    two started) and this bench's own submitting and waiting, in seconds; apps from
    the runner's reaped children when the whole tree's time is not known (that misses
    sandboxed apps' own time)."""
    runner = control_plane.children()[0]
    own, mine = control_plane.cpu_times(), runner.cpu_times()
    seconds = {"control_plane": own.user + own.system, "runner": mine.user + mine.system}
    total = tree()
    if total is None:
        seconds["apps"] = mine.children_user + mine.children_system
    else:
        seconds["apps"] = total - seconds["control_plane"] - seconds["runner"]
    bench = psutil.Process().cpu_times()
    seconds["bench_client"] = bench.user + bench.system
    return seconds


def measure(runs: int, capacity: int, backlog: bool = False, rounds: int = 3) -> dict[str, object]:
    """`rounds` rounds of `runs` runs on one `tower up` (warm caches, and a runs table
    that grows as a real one does); the figure is the median round: one round on a
    shared VM moves by 10 % and more from one minute to the next."""
    with live_tower(TOWER_RUNNER_CAPACITY=str(capacity)) as tower, tower.api() as api:
        deploy_app(api, tower.root, "tick", {"Towerfile": TOWERFILE, "main.py": "print('tick')\n"})
        warm = _submit(api, 1)
        wait_for_run(api, "tick", warm[0])  # builds the venv
        assert tower.process is not None
        control_plane = psutil.Process(tower.process.pid)
        measured = [_round(api, control_plane, runs, backlog) for _ in range(rounds)]
    middle = sorted(measured, key=lambda one: one["runs_per_s"])[len(measured) // 2]
    return {
        "runs": runs,
        "runner_capacity": capacity,
        "backlog": backlog,
        "cpus": os.cpu_count(),
        **middle,
        "rounds_runs_per_s": [one["runs_per_s"] for one in measured],
        "target_runs_per_s": TARGET_PER_S,
    }


def _round(
    api: httpx.Client, control_plane: psutil.Process, runs: int, backlog: bool
) -> dict[str, Any]:
    family = [control_plane, *control_plane.children(recursive=True)]
    with (
        process_tree_cpu([process.pid for process in family]) as tree,
        user_instructions() as instructions,
    ):
        before = _cpu_seconds(control_plane, tree)
        runner = control_plane.children()[0]
        if backlog:  # a claim it had out may still take a few: they wait with it
            runner.suspend()
        numbers = _submit(api, runs)
        let_go = time.time()
        if backlog:
            runner.resume()
        # Wait for the last run submitted (runs start in order, so it ends about
        # last) with one long poll: a request per run while they drain would load
        # the control plane with the bench's own waiting.
        wait_for_run(api, "tick", numbers[-1])
        after = _cpu_seconds(control_plane, tree)
        whole_tree = tree() is not None
    finals = [wait_for_run(api, "tick", number) for number in numbers]
    failed = [run for run in finals if run["status"] != "exited"]
    if failed:
        raise RuntimeError(f"{len(failed)} runs did not exit cleanly, e.g. {failed[0]}")
    created = [timestamp(run["created_at"]) for run in finals]
    ended = [timestamp(run["ended_at"]) for run in finals]
    first, last = (let_go if backlog else min(created)), max(ended)
    elapsed = last - first
    return {
        "elapsed_s": round(elapsed, 2),
        "runs_per_s": round(runs / elapsed, 1),
        **_phases(created, ended),
        "run_cycle_ms": _run_cycle(finals),
        # Where both cores went: CPU milliseconds per run, by process.
        "cpu_ms_per_run": {
            name: round((after[name] - before[name]) * 1000 / runs, 1) for name in before
        },
        # Whether `apps` counts sandboxed apps' own time (a cpuacct cgroup was usable).
        "apps_cpu_complete": whole_tree,
        # The work itself, whatever the machine's speed: millions of user-space
        # instructions per run, all processes (None without perf).
        "user_minstructions_per_run": _per_run(instructions["count"], runs),
    }


def _per_run(instructions: float | None, runs: int) -> float | None:
    return None if instructions is None else round(instructions / runs / 1e6, 1)


def _phases(created: list[float], ended: list[float]) -> dict[str, float]:
    """How the drain went while the runs were being submitted (the control plane
    serves both) and after the last one was: runs ended per second in each phase."""
    last_created = max(created)
    submitting = last_created - min(created)
    during = sum(1 for at in ended if at <= last_created)
    after = max(ended) - last_created
    return {
        "submitted_in_s": round(submitting, 2),
        "ended_per_s_while_submitting": round(during / submitting, 1) if submitting else 0.0,
        "ended_per_s_after": round((len(ended) - during) / after, 1) if after > 0 else 0.0,
    }


#: a run's life as the control plane stamps it: created, claimed (`starting_at`), its
#: final report taken (`ended_at`). (`started_at` is not used: for a short run it comes
#: from the final report's "started N s ago", so it moves with the report's delivery.)
_CYCLE = {
    "queued": ("created_at", "starting_at"),
    "claimed_to_reported": ("starting_at", "ended_at"),
}


def _run_cycle(finals: list[dict[str, Any]]) -> dict[str, float]:
    """Median milliseconds of each stretch of a run's life. A runner slot is busy from
    the claim to the final report (the same request claims the slot's next run), so
    `capacity / claimed_to_reported` bounds the drain."""
    return {
        name: round(
            statistics.median(timestamp(run[end]) - timestamp(run[begin]) for run in finals) * 1000,
            1,
        )
        for name, (begin, end) in _CYCLE.items()
    }


def _table(result: dict) -> str:
    how = ", queued before the runner was let go" if result["backlog"] else ""
    rounds = ", ".join(f"{figure:g}" for figure in result["rounds_runs_per_s"])
    return (
        f"{result['runs']} trivial runs{how}, runner capacity {result['runner_capacity']}, "
        f"{result['cpus']} CPUs\n"
        f"  runs/s by round: {rounds}\n"
        f"  median round: drained in {result['elapsed_s']} s = {result['runs_per_s']} runs/s "
        f"(target ≥ {result['target_runs_per_s']})\n"
        f"  submitted in {result['submitted_in_s']} s; runs ended per second "
        f"{result['ended_per_s_while_submitting']} meanwhile, {result['ended_per_s_after']} after\n"
        "  a run's life (medians, ms): "
        + ", ".join(f"{name} {ms:g}" for name, ms in result["run_cycle_ms"].items())
        + "\n"
        "  CPU ms per run: "
        + ", ".join(f"{name} {ms}" for name, ms in result["cpu_ms_per_run"].items())
        + _instructions_line(result["user_minstructions_per_run"])
    )


def _instructions_line(millions: float | None) -> str:
    if millions is None:
        return ""
    return f"\n  user-space instructions per run (all processes): {millions} M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--capacity", type=int, default=DEFAULT_CAPACITY)
    parser.add_argument("--rounds", type=int, default=3, help="the figure is the median round")
    parser.add_argument(
        "--backlog", action="store_true", help="queue every run before the runner may claim"
    )
    args = parser.parse_args()
    report(measure(args.runs, args.capacity, args.backlog, args.rounds), _table)


if __name__ == "__main__":
    main()
