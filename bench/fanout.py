"""Chained app-calls-app runs, end to end, on the embedded default (`tower up`).

Run 1 of app `chain` starts run 2 with `tower.run_app` and waits for it with
`tower.wait_for_run`, run 2 starts run 3, … down to run N (default 40), which just
exits. Measures submit of run 1 → run 1 `exited` with warm caches (one warm-up
chain first), and where the time goes per link. Prints JSON, then a table.

Peers for scale: Windmill runs 40 tiny chained tasks in 4.4 s, Prefect in 4.9 s.

    .venv/bin/python bench/fanout.py [--depth 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import httpx
from _common import deploy_app, live_tower, percentiles, report, timestamp, wait_for_run

CHAIN_TOWERFILE = """\
[app]
name = "chain"
script = "./main.py"

[[parameters]]
name = "depth"
default = "0"
"""
CHAIN_APP = """\
import tower

depth = int(tower.parameter("depth", "0"))
if depth > 0:
    child = tower.run_app("chain", parameters={"depth": str(depth - 1)})
    final = tower.wait_for_run(child)
    if final.status != "exited":
        raise SystemExit(f"child run ended {final.status}")
"""
TARGET_S = 4.0


def _chain(api: httpx.Client, depth: int) -> dict[str, float]:
    submitted = time.time()
    answer = api.post("/apps/chain/runs", json={"parameters": {"depth": str(depth - 1)}})
    answer.raise_for_status()
    root = wait_for_run(api, "chain", answer.json()["run"]["number"], timeout=55)
    total = time.time() - submitted
    if root["status"] != "exited":
        raise RuntimeError(f"the chain ended {root['status']}: {root.get('status_message')}")
    return {"total_s": total, "root_started_after_s": timestamp(root["started_at"]) - submitted}


def _links(api: httpx.Client, first: int, count: int) -> list[float]:
    """Per link: parent `running` → child `running` (dispatch + interpreter + SDK call)."""
    runs = api.get("/apps/chain/runs", params={"page": 0}).json()["runs"]
    by_number = {run["number"]: run for run in runs}
    starts = [timestamp(by_number[n]["started_at"]) for n in range(first, first + count)]
    return [later - earlier for earlier, later in itertools.pairwise(starts)]


def measure(depth: int, repeat: int) -> dict[str, object]:
    # Every link waits on the next, so the whole chain holds `depth` runner slots at once.
    with live_tower(TOWER_RUNNER_CAPACITY=str(depth + 8)) as tower, tower.api() as api:
        deploy_app(api, tower.root, "chain", {"Towerfile": CHAIN_TOWERFILE, "main.py": CHAIN_APP})
        _chain(api, 2)  # builds the venv: warm from here on
        totals, links = [], []
        for _ in range(repeat):
            first = api.get("/apps/chain").json()["runs"][0]["number"] + 1
            totals.append(_chain(api, depth)["total_s"])
            links.extend(_links(api, first, depth))
    return {
        "depth": depth,
        "repeat": repeat,
        "end_to_end_s": {
            "median": round(statistics.median(totals), 2),
            "best": round(min(totals), 2),
            "worst": round(max(totals), 2),
        },
        "link_start_to_next_start": percentiles(links),
        "target_s": TARGET_S,
    }


def _table(result: dict) -> str:
    e2e, link = result["end_to_end_s"], result["link_start_to_next_start"]
    return "\n".join(
        [
            f"{result['depth']} chained runs, end to end (target ≤ {result['target_s']} s)",
            f"  median {e2e['median']} s   best {e2e['best']} s   worst {e2e['worst']} s",
            "one link: parent running → child running",
            f"  p50 {link['p50_ms']} ms   p95 {link['p95_ms']} ms   max {link['max_ms']} ms",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    report(measure(args.depth, args.repeat), _table)


if __name__ == "__main__":
    main()
