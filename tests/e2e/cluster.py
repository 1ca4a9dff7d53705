"""A control plane and runners as separate real processes, so tests can kill -9 either.

`tower up` keeps both under one parent; chaos tests need to kill and restart each
side on its own, the way they fail in production.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.live import BIN, free_port, tower_env
from tower.core.package import build_package
from tower.core.towerfile import load_towerfile
from tower.server.app import build_context
from tower.server.services import auth
from tower.server.settings import ServerSettings

ADMIN_KEY = "sk-chaos-admin-key-0123456789abcdef0123456789abcdef"
START_TIMEOUT_S = 60.0
TERMINAL = {"exited", "crashed", "errored", "cancelled"}


@dataclass
class Cluster:
    root: Path
    lease_ttl_s: float = 3.0
    cancel_grace_s: float = 10.0
    port: int = field(default_factory=free_port)
    #: the address the control plane listens on (a veth address for a runner in a netns)
    host: str = "127.0.0.1"
    #: more settings for both sides (e.g. TOWER_CLAIM_WAIT_MAX_SECONDS)
    extra_env: dict[str, str] = field(default_factory=dict)
    server: subprocess.Popen[bytes] | None = None
    runners: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _runner_token: str | None = None
    #: extra TOWER_* settings of the control plane (e.g. its TLS certificate)
    server_env: dict[str, str] = field(default_factory=dict)
    #: what the test's own clients verify the control plane's HTTPS certificate with
    verify: ssl.SSLContext | bool = True

    @property
    def url(self) -> str:
        scheme = "https" if "TOWER_TLS_CERT_FILE" in self.server_env else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return tower_env(
            self.root,
            TOWER_PORT=str(self.port),
            TOWER_ADMIN_API_KEY=ADMIN_KEY,
            TOWER_LEASE_TTL_SECONDS=str(self.lease_ttl_s),
            TOWER_LOG_LEVEL="warning",
            **self.extra_env,
        )

    def _spawn(
        self,
        args: list[str],
        log_name: str,
        env: dict[str, str],
        prefix: Sequence[str] = (),
    ) -> subprocess.Popen:
        log = (self.root / log_name).open("ab")
        return subprocess.Popen(
            [*prefix, str(BIN / "tower"), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_server(self) -> None:
        args = ["server", "--host", self.host, "--port", str(self.port)]
        self.server = self._spawn(args, "server.log", {**self.env, **self.server_env})
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"tower server exited:\n{self.log('server.log')}")
            try:
                healthz = httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify)
                if healthz.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"tower server did not start:\n{self.log('server.log')}")

    def runner_token(self) -> str:
        if self._runner_token is None:
            settings = ServerSettings(home=Path(self.env["TOWER_HOME"]))
            ctx = build_context(settings)
            self._runner_token = auth.mint_runner_credential(ctx, name="chaos", account_id=None)
        return self._runner_token

    def start_runner(self, prefix: Sequence[str] = (), **extra: str) -> subprocess.Popen[bytes]:
        """`tower runner start` (after `prefix`, e.g. `ip netns exec NAME`)."""
        env = {
            **self.env,
            "TOWER_URL": self.url,
            "TOWER_RUNNER_TOKEN": self.runner_token(),
            "TOWER_RUNNER_NAME": f"chaos-{len(self.runners)}",
            "TOWER_RUNNER_CANCEL_GRACE_SECONDS": str(self.cancel_grace_s),
            # These apps leave pid files and markers for the test to watch from
            # outside, which bubblewrap forbids; tests/runner/test_sandbox.py covers it.
            "TOWER_RUNNER_SANDBOX": "off",
            **extra,
        }
        log_name = f"runner-{len(self.runners)}.log"
        runner = self._spawn(["runner", "start"], log_name, env, prefix)
        self.runners.append(runner)
        return runner

    def kill_server(self) -> None:
        assert self.server is not None
        _kill_group(self.server, signal.SIGKILL)

    def kill_runner(self, runner: subprocess.Popen[bytes]) -> None:
        # Only the runner process itself: its apps must die with it (PDEATHSIG),
        # not because the test killed their process group.
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)

    def stop(self) -> None:
        for runner in self.runners:
            _kill_group(runner, signal.SIGTERM)
        if self.server is not None:
            _kill_group(self.server, signal.SIGTERM)

    def log(self, name: str) -> str:
        path = self.root / name
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self._logs())

    def _logs(self) -> list[Path]:
        return sorted(self.root.glob("*.log"))

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/v1",
            headers={"X-API-Key": ADMIN_KEY},
            timeout=30,
            verify=self.verify,
        )

    def deploy(self, api: httpx.Client, app_dir: Path) -> None:
        """Create (if needed) and deploy the app in `app_dir`, named after the directory."""
        pkg = build_package(load_towerfile(app_dir))
        name = app_dir.name
        api.post("/apps", json={"name": name})
        answer = api.post(
            f"/apps/{name}/deploy",
            content=pkg.data,
            headers={"Content-Type": "application/tar", "X-Tower-Checksum-SHA256": pkg.sha256},
        )
        answer.raise_for_status()

    def wait_run(
        self,
        api: httpx.Client,
        app: str,
        number: int,
        timeout: float = 60,
        until: set | None = None,
    ) -> dict:
        """Poll until the run reaches one of `until` (default: terminal); the last view."""
        wanted = until or TERMINAL
        deadline = time.monotonic() + timeout
        while True:
            try:
                run = api.get(f"/apps/{app}/runs/{number}").json()["run"]
            except httpx.TransportError:
                run = {"status": "unreachable"}
            if run["status"] in wanted or time.monotonic() > deadline:
                return run
            time.sleep(0.05)


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
