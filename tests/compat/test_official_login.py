"""The official `tower login` (PyPI 0.3.67) against our `tower up`, approved over our HTTP API.

The official CLI asks for a device-login ticket, prints the login URL (`--no-browser`)
and polls; this test plays the person at the browser: it logs in with the admin's
email and password and approves the code from the URL. The session file the official
CLI writes must then work for its other commands, including `teams list`, which
refreshes the session first (contract §1.6).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.compat.official import OfficialCli, strip_ansi
from tests.live import LiveTower

pytestmark = [pytest.mark.compat, pytest.mark.xdist_group("compat"), pytest.mark.timeout(600)]

LOGIN_TIMEOUT_S = 90.0
USER_CODE = re.compile(r"user_code=([A-Z0-9]{4}-[A-Z0-9]{4})")


class Output:
    """A process's output, read as it comes (the CLI prints the URL, then waits)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for chunk in iter(lambda: process.stdout.read1(4096), b""):  # type: ignore[union-attr]
            self.text += chunk.decode(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = pattern.search(strip_ansi(self.text))
            if match:
                return match
            time.sleep(0.1)
        raise AssertionError(f"the CLI never printed {pattern.pattern!r}; output:\n{self.text}")


def _approve(tower: LiveTower, user_code: str) -> None:
    password = (tower.home / "admin-password").read_text().strip()
    with httpx.Client(base_url=f"{tower.url}/v1", timeout=30) as browser:
        login = browser.post("/session", json={"username": "admin@localhost", "password": password})
        login.raise_for_status()
        refresh_token = login.json()["session"]["token"]["refresh_token"]
        claimed = browser.post(
            "/login/device/claim", json={"user_code": user_code, "refresh_token": refresh_token}
        )
        claimed.raise_for_status()
        assert claimed.json() == {"claimed": True}


def test_official_tower_login_with_device_flow(
    official_cli: OfficialCli, compat_tower: LiveTower, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**official_cli.env(), "HOME": str(home)}
    del env["TOWER_API_KEY"]  # with a key set, `tower login` first asks whether to go on
    process = subprocess.Popen(
        [str(official_cli.binary), "login", "--no-browser"],
        cwd=home,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output = Output(process)
        user_code = output.wait_for(USER_CODE, LOGIN_TIMEOUT_S).group(1)
        _approve(compat_tower, user_code)
        code = process.wait(LOGIN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, output.text

    session = json.loads((home / ".config" / "tower" / "session.json").read_text())
    assert session["tower_url"].startswith(f"http://127.0.0.1:{compat_tower.port}")
    assert session["user"]["email"] == "admin@localhost"
    assert session["active_team"]["name"] == "admin"
    assert all(team["token"]["jwt"] for team in session["teams"])

    logged_in = OfficialCli(official_cli.binary, home, compat_tower.url, api_key="")
    apps = _without_api_key(logged_in, "apps", "list")
    assert apps.returncode == 0, apps.stdout + apps.stderr
    teams = _without_api_key(logged_in, "teams", "list")
    assert teams.returncode == 0, teams.stdout + teams.stderr
    assert re.search(r"\*\s*admin|admin\s*\*", strip_ansi(teams.stdout)), teams.stdout


def _without_api_key(cli: OfficialCli, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in cli.env().items() if k != "TOWER_API_KEY"}
    return subprocess.run(
        [str(cli.binary), *args],
        cwd=cli.home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
