"""What the bench scripts share: a live `tower up`, app deploys, percentiles, output."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.live import LiveTower, free_port, tower_env

from tower.core.package import build_package
from tower.core.towerfile import load_towerfile

TERMINAL = {"exited", "crashed", "errored", "cancelled"}
#: rounds of the reference workload; its figure is the fastest
REFERENCE_ROUNDS = 5
#: how long `perf stat` gets to start counting before the measured block begins (s)
PERF_START_S = 0.3


def timestamp(value: str) -> float:
    """An API timestamp (RFC 3339, `Z`) as epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations in seconds, as milliseconds."""
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(rank(0.95) * 1000, 1),
        "p99_ms": round(rank(0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


BENCH = "BENCH_TOWER_"


@contextmanager
def live_tower(**env: str) -> Iterator[LiveTower]:
    """`tower up` in a throwaway home (warm uv download cache shared with the tests).

    `BENCH_TOWER_X=v` in the environment sets `TOWER_X=v` for the measured Tower, e.g.
    `BENCH_TOWER_RUNNER_SANDBOX=off` to see what the sandbox costs.
    """
    chosen = {k.removeprefix("BENCH_"): v for k, v in os.environ.items() if k.startswith(BENCH)}
    with tempfile.TemporaryDirectory(prefix="tower-bench-") as tmp:
        root = Path(tmp)
        tower = LiveTower(root, free_port(), tower_env(root, **chosen, **env))
        tower.start()
        try:
            yield tower
        finally:
            tower.stop()


def deploy_app(api: httpx.Client, root: Path, name: str, files: dict[str, str]) -> None:
    """Create app `name` from `files` (Towerfile included) and deploy it."""
    app_dir = root / name
    app_dir.mkdir()
    for filename, content in files.items():
        (app_dir / filename).write_text(content)
    pkg = build_package(load_towerfile(app_dir))
    api.post("/apps", json={"name": name}).raise_for_status()
    api.post(
        f"/apps/{name}/deploy",
        content=pkg.data,
        headers={"Content-Type": "application/tar", "X-Tower-Checksum-SHA256": pkg.sha256},
    ).raise_for_status()


def wait_for_run(api: httpx.Client, app: str, number: int, timeout: float = 30.0) -> dict:
    """The run once it has ended, through the server's long poll."""
    while True:
        answer = api.post(
            "/runs/await",
            json={"runs": [{"app_name": app, "number": number}], "timeout_seconds": timeout},
            timeout=timeout + 10,
        )
        answer.raise_for_status()
        run = answer.json()["runs"][0]
        if run["status"] in TERMINAL:
            return run


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


@contextmanager
def process_tree_cpu(pids: list[int]) -> Iterator[Callable[[], float | None]]:
    """CPU seconds used so far by `pids` and every process they start from now on,
    sandboxed grandchildren included (whose time `getrusage` misses: they are reaped
    inside their PID namespace), from a cgroup v1 cpuacct group; None where this
    machine has no writable cpuacct hierarchy."""
    # A name of its own each time: a group an earlier round could not remove (a
    # process forked into it as it was emptied) must not make this one fail.
    group = CPUACCT / f"tower-bench-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        for pid in pids:
            (group / "cgroup.procs").write_text(str(pid))
    except OSError:
        yield lambda: None
        return
    try:
        yield lambda: int((group / "cpuacct.usage").read_text()) / 1e9
    finally:
        _remove_group(group)


def _remove_group(group: Path, attempts: int = 20) -> None:
    """Give the group's processes back to the root group, then remove it; again while
    processes forked meanwhile keep it busy."""
    for _ in range(attempts):
        for pid in (group / "cgroup.procs").read_text().split():
            with suppress(OSError):  # it exited meanwhile
                (CPUACCT / "cgroup.procs").write_text(pid)
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.05)


@contextmanager
def user_instructions() -> Iterator[dict[str, float | None]]:
    """User-space instructions retired on every CPU while the block runs, in
    `["count"]` once it ends (None without a usable `perf`). Unlike CPU time this does
    not move with the machine's speed (a shared VM's varies by 2x and more from one
    minute to the next), so two builds compare on one figure."""
    counted: dict[str, float | None] = {"count": None}
    with tempfile.NamedTemporaryFile("r", suffix=".csv") as output:
        argv = ["perf", "stat", "-a", "-x", ",", "-e", "instructions:u", "-o", output.name]
        try:
            perf = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:  # no perf on this machine
            yield counted
            return
        time.sleep(PERF_START_S)
        try:
            yield counted
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait()
            counted["count"] = _perf_count(output.read(), "instructions:u")


def _perf_count(csv: str, event: str) -> float | None:
    """The count of `event` in `perf stat -x ,` output (None when perf could not count)."""
    for line in csv.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] == event:
            with suppress(ValueError):
                return float(fields[0])
    return None


def reference_workload_ms() -> float:
    """Milliseconds one core takes for a fixed piece of plain Python (dicts, strings,
    calls: what the control plane and the runner mostly do), the fastest of
    `REFERENCE_ROUNDS`. A shared VM's speed moves by 1.5x and more within minutes:
    read a bench's figures next to this one (lower is faster)."""

    def piece(n: int) -> int:
        table = {f"key-{i}": i for i in range(n)}
        return sum(len(str(value)) for key, value in table.items() if key.endswith("7"))

    fastest = float("inf")
    for _ in range(REFERENCE_ROUNDS):
        began = time.process_time()
        for _ in range(20):
            piece(20_000)
        fastest = min(fastest, time.process_time() - began)
    return round(fastest * 1000, 1)


def report(result: dict[str, Any], table: Callable[[dict[str, Any]], str]) -> None:
    """JSON first (for machines), then a readable table; both end with the machine's
    speed before and after the bench (`reference_workload_ms`)."""
    speed = {"before": _SPEED_BEFORE, "after": reference_workload_ms()}
    machine = {"cpus": os.cpu_count(), "reference_workload_ms": speed}
    print(json.dumps({**result, "machine": machine}, indent=2))
    print()
    print(table(result))
    print(
        f"machine: {machine['cpus']} CPUs, reference workload {speed['before']} ms before, "
        f"{speed['after']} ms after (lower is faster; compare runs by it)"
    )


# Measured as a bench script starts (it imports this module first), before it loads
# the machine: `report` prints it with the figure measured at the end.
_SPEED_BEFORE = reference_workload_ms()
