"""Control-plane CPU per request of the calls every run makes.

Starts `tower server` alone (no runner), deploys a one-line app and plays one run's
requests N times by hand: submit, claim, final status report (with the run's log
line, `running` folded in as the runner does for short runs), heartbeat, await and
GET run. Reports the server process's CPU milliseconds per request of each kind (from
its rusage, so other processes' load does not count; wall time does not enter).
Prints JSON, then a table.

    .venv/bin/python bench/request_cost.py [--cycles 300]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
from _common import deploy_app, report
from tests.api.helpers import FakeRunner
from tests.live import BIN, free_port, tower_env

TOWERFILE = '[app]\nname = "tick"\nscript = "./main.py"\n'
WARM_CYCLES = 30
LOG_LINE = {
    "line_num": 1,
    "channel": "program",
    "content": "tick",
    "reported_at": "2026-01-01T00:00:00Z",
}
REQUESTS = ("submit", "claim", "status", "heartbeat", "await", "get_run")


@contextmanager
def _control_plane(root: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], dict[str, str]]]:
    port, env = free_port(), tower_env(root)
    url = f"http://127.0.0.1:{port}"
    with (root / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [str(BIN / "tower"), "server", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, server)
        yield url, server, env
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:  # never leave a server behind
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            raise RuntimeError("tower server did not stop within 30 s of SIGINT") from None


def _wait_healthy(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("tower server did not become healthy")


class _ServerRef:
    """What FakeRunner needs of a server: its URL and a runner token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self._token = token

    def runner_token(self) -> str:
        return self._token


def _cycle(api: httpx.Client, runner: FakeRunner, timed: Callable[[str, Any], Any]) -> None:
    """One run's requests, each through `timed(kind, call)`."""
    answer = timed("submit", lambda: api.post("/apps/tick/runs", json={"parameters": {}}))
    number = answer.json()["run"]["number"]
    assignment = timed("claim", lambda: runner.claim(0))
    final = {"exit_code": 0, "started_seconds_ago": 0.01, "lines": [LOG_LINE]}
    reported = timed("status", lambda: runner.status(assignment, "exited", **final))
    reported.raise_for_status()
    beat = {"runner_id": runner.runner_id, "run_ids": [assignment["run_id"]]}
    timed("heartbeat", lambda: runner.http.post("/heartbeat", json=beat))
    wanted = {"runs": [{"app_name": "tick", "number": number}], "timeout_seconds": 1}
    timed("await", lambda: api.post("/runs/await", json=wanted))
    timed("get_run", lambda: api.get(f"/apps/tick/runs/{number}"))


def measure(cycles: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tower-bench-") as tmp:
        root = Path(tmp)
        with _control_plane(root) as (url, server, env):
            key = (Path(env["TOWER_HOME"]) / "admin-api-key").read_text().strip()
            api = httpx.Client(base_url=f"{url}/v1", headers={"X-API-Key": key}, timeout=30)
            deploy_app(api, root, "tick", {"Towerfile": TOWERFILE, "main.py": "print('tick')\n"})
            minted = api.post("/runners/credentials", json={"name": "bench"})
            runner = FakeRunner(_ServerRef(url, minted.json()["credentials"]["token"]))
            process = psutil.Process(server.pid)

            def cpu() -> float:
                times = process.cpu_times()
                return times.user + times.system

            seconds = dict.fromkeys(REQUESTS, 0.0)

            def timed(kind: str, call: Callable[[], Any]) -> Any:
                before = cpu()
                answer = call()
                seconds[kind] += cpu() - before
                return answer

            for _ in range(WARM_CYCLES):
                _cycle(api, runner, lambda _kind, call: call())
            start = cpu()
            for _ in range(cycles):
                _cycle(api, runner, timed)
            total = cpu() - start
    return {
        "cycles": cycles,
        "cpu_ms_per_request": {kind: round(s * 1000 / cycles, 2) for kind, s in seconds.items()},
        "cpu_ms_per_cycle": round(total * 1000 / cycles, 2),
    }


def _table(result: dict[str, Any]) -> str:
    lines = [f"control-plane CPU per request ({result['cycles']} cycles):"]
    lines += [f"  {kind:10s} {ms:6.2f} ms" for kind, ms in result["cpu_ms_per_request"].items()]
    lines.append(f"  {'cycle':10s} {result['cpu_ms_per_cycle']:6.2f} ms (all of the above)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=300)
    args = parser.parse_args()
    report(measure(args.cycles), _table)


if __name__ == "__main__":
    main()
