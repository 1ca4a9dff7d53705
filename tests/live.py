"""Real Tower processes for end-to-end tests: `tower up` on a free port in a temp home."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveTower:
    """A running `tower up` and the environment a CLI user of it would have."""

    root: Path
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.root / "tower-up.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return Path(self.env["TOWER_HOME"])

    @property
    def api_key(self) -> str:
        return (self.home / "admin-api-key").read_text().strip()

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "tower"), "up", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tower up exited early:\n{self.output()}")
            if self._healthy() and (self.session_file.exists() or self._session_optional):
                return
            time.sleep(0.1)
        raise RuntimeError(f"tower up did not become healthy:\n{self.output()}")

    _session_optional = False

    @property
    def session_file(self) -> Path:
        return Path(self.env["TOWER_CONFIG_DIR"]) / "session.json"

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tower(
        self,
        *args: str,
        cwd: Path | None = None,
        timeout: float = 180,
        extra_env: dict | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run our `tower` CLI as a user would."""
        return subprocess.run(
            [str(BIN / "tower"), *args],
            cwd=cwd or self.root,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/v1", headers={"X-API-Key": self.api_key}, timeout=30
        )


def tower_env(root: Path, **extra: str) -> dict[str, str]:
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("TOWER_")}
    env = {
        **keep,
        "HOME": str(home),
        "TOWER_HOME": str(home / ".tower"),
        "TOWER_CONFIG_DIR": str(home / ".config" / "tower"),
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
        "COLUMNS": "120",
        # End-to-end tests and bench/ drive one server with one admin key far faster than
        # the default 20 requests/s; tests/api/test_rate_limit.py covers the limit itself.
        "TOWER_RATE_LIMIT_PER_SECOND": "0",
    }
    # Share uv's download cache across test homes so PyPI is hit once per machine.
    env.setdefault("TOWER_RUNNER_UV_CACHE_DIR", str(REPO / ".cache" / "uv"))
    env.update(extra)
    return env
