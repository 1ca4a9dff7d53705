"""The official `tower` CLI from PyPI: a cached venv and a runner for the binary.

The venv lives at `<repo>/.cache/official-tower-<version>` (gitignored) and is built
once per machine; an exclusive file lock keeps pytest-xdist workers from building
it at the same time. Each `official_cli` call runs the binary with a scrubbed
environment: its own HOME (so no session file), TOWER_URL and TOWER_API_KEY for our
server, the PyPI update check sent to a port that refuses at once, no stdin and a
timeout.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live import REPO

# The newest release that installs on Python 3.11 (0.3.69+ are built for 3.12+ only).
OFFICIAL_VERSION = "0.3.67"
VENV_DIR = REPO / ".cache" / f"official-tower-{OFFICIAL_VERSION}"
INSTALL_TIMEOUT_S = 240.0
CLI_TIMEOUT_S = 120.0
# Discard port: nothing listens there, so the CLI's PyPI version check fails at once.
UNREACHABLE_PYPI = "http://127.0.0.1:9"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """The CLI colours its tables even with NO_COLOR; tests compare plain text."""
    return _ANSI.sub("", text)


def _installed_version(venv: Path) -> str | None:
    """`tower version` prints `v0.3.67` (this release has no `--version` flag)."""
    binary = venv / "bin" / "tower"
    if not binary.exists():
        return None
    try:
        proc = subprocess.run(
            [str(binary), "version"],
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(venv),
                "TOWER_PYPI_URL": UNREACHABLE_PYPI,
            },
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"v?(\d+\.\d+\.\d+)", proc.stdout)
    return match.group(1) if proc.returncode == 0 and match else None


def _run_install_step(args: list[str]) -> None:
    proc = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    if proc.returncode != 0:
        pytest.fail(
            f"installing the official tower CLI failed: {' '.join(args)}\n"
            f"{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )


def ensure_official_venv(venv: Path = VENV_DIR, version: str = OFFICIAL_VERSION) -> Path:
    """The venv's `tower` binary, installing `tower==version` under a lock if needed."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f"{venv.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be installing: wait for it
        if _installed_version(venv) != version:
            shutil.rmtree(venv, ignore_errors=True)
            _run_install_step([sys.executable, "-m", "venv", str(venv)])
            python = str(venv / "bin" / "python")
            uv = Path(sys.executable).parent / "uv"
            if uv.exists():
                install = [str(uv), "pip", "install", "--compile-bytecode", "--python", python]
                _run_install_step([*install, f"tower=={version}"])
            else:
                _run_install_step([python, "-m", "pip", "install", "-q", f"tower=={version}"])
            installed = _installed_version(venv)
            if installed != version:
                pytest.fail(
                    f"{venv}/bin/tower reports version {installed!r}, expected {version}",
                    pytrace=False,
                )
    return venv / "bin" / "tower"


@dataclass
class OfficialCli:
    """The official `tower` binary, configured for one of our servers."""

    binary: Path
    home: Path
    url: str
    api_key: str

    def env(self) -> dict[str, str]:
        # Built from scratch: nothing from the developer's or test process's environment
        # (PYTHONPATH, XDG_*, TOWER_*) may change what the official CLI does.
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "NO_COLOR": "1",
            "COLUMNS": "160",
            "TOWER_URL": self.url,
            "TOWER_API_KEY": self.api_key,
            "TOWER_PYPI_URL": UNREACHABLE_PYPI,
            "TMPDIR": str(self.temp_dir),
        }

    @functools.cached_property
    def temp_dir(self) -> Path:
        """Its deploys leave a `*-tower-package` directory behind in the temporary
        directory: inside the test's own home, pytest's clean-up takes them."""
        temp = self.home / "tmp"
        temp.mkdir(exist_ok=True)
        return temp

    def confirming(self, *args: str, prompt: str, answer: str = "y\r") -> CliResult:
        """Run a command that asks for confirmation on a terminal, and confirm it."""
        started = time.monotonic()
        code, output = run_on_terminal(
            [str(self.binary), *args], self.env(), self.home, answer, prompt, CLI_TIMEOUT_S
        )
        return CliResult(list(args), code, output, "", time.monotonic() - started)

    def __call__(
        self, *args: str, cwd: Path | None = None, timeout: float = CLI_TIMEOUT_S
    ) -> CliResult:
        started = time.monotonic()
        proc = subprocess.run(
            [str(self.binary), *args],
            cwd=cwd or self.home,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        return CliResult(
            args=list(args),
            returncode=proc.returncode,
            stdout=strip_ansi(proc.stdout),
            stderr=strip_ansi(proc.stderr),
            seconds=time.monotonic() - started,
        )


def _read_available(fd: int, wait_s: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], wait_s)
    if not ready:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:  # the child closed the terminal (EIO)
        return b""


def run_on_terminal(
    argv: list[str], env: dict[str, str], cwd: Path, answer: str, prompt: str, timeout: float
) -> tuple[int, str]:
    """Run `argv` on a pseudo-terminal and type `answer` once `prompt` appears.

    For the official CLI's confirmations, which insist on a TTY.
    """
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower, close_fds=True
    )
    os.close(follower)
    seen, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            seen += _read_available(leader, 0.1)
            if not answered and prompt.encode() in seen:
                os.write(leader, answer.encode())
                answered = True
            if proc.poll() is not None:
                seen += _read_available(leader, 0.2)
                return proc.returncode, strip_ansi(seen.decode(errors="replace"))
        proc.kill()
        proc.wait()
        raise AssertionError(f"{argv} timed out on the terminal; output so far:\n{seen!r}")
    finally:
        os.close(leader)


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}"

    def describe(self) -> str:
        """Everything needed to diagnose a failure, for assertion messages."""
        return (
            f"`tower {' '.join(self.args)}` exited {self.returncode} "
            f"after {self.seconds:.1f}s\n--- stdout ---\n{self.stdout}\n"
            f"--- stderr ---\n{self.stderr}"
        )
