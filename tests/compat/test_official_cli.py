"""The official `tower` CLI (PyPI 0.3.67) against our `tower up`, as a user would drive it.

    tower apps create → apps list → deploy → run (followed) → apps show → apps logs NAME#N,
    plus a crashing app (`tower run` exits 1), `deploy --create` and `run --detached`.

Where our server and the official CLI disagree, the server changes, never this test.

Each step runs once per module, through `Flow`; a test that needs an earlier step
runs it first, so any subset of these tests passes on its own (`-k`, or xdist
without `--dist loadgroup`, where each worker has its own `tower up`).
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.compat.official import CliResult, OfficialCli
from tests.live import REPO, LiveTower

pytestmark = [
    pytest.mark.compat,
    pytest.mark.xdist_group("compat"),
    # The first test's setup may build the official CLI's venv and starts `tower up`.
    pytest.mark.timeout(600),
]

HELLO = "compat-hello"
HELLO_DESCRIPTION = "Compat test: greets a friend"
CRASH = "compat-crash"
APPS = Path(__file__).parent / "apps"
RUN_WAIT_S = 90.0


class Flow:
    """One user's session with the official CLI; each step runs at most once."""

    def __init__(self, cli: OfficialCli, tower: LiveTower, workdir: Path) -> None:
        self.cli = cli
        self.tower = tower
        self.workdir = workdir
        self._results: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------

    def _once(self, step: str, action: Callable[[], Any]) -> Any:
        if step not in self._results:
            self._results[step] = action()
        return self._results[step]

    def explain(self, result: CliResult) -> str:
        return f"{result.describe()}\n--- tower up log (tail) ---\n{self.tower.output()[-4000:]}"

    def require(self, result: CliResult, what: str) -> CliResult:
        """An earlier step this test builds on must have worked."""
        if result.returncode != 0:
            pytest.fail(f"prerequisite `{what}` failed:\n{self.explain(result)}", pytrace=False)
        return result

    def api_get(self, path: str) -> Any:
        with self.tower.api() as client:
            return client.get(path)

    def wait_terminal(self, app: str, number: int) -> dict[str, Any]:
        """Our API's view of a run once it has ended (for runs the CLI does not follow)."""
        deadline = time.monotonic() + RUN_WAIT_S
        while True:
            response = self.api_get(f"/apps/{app}/runs/{number}")
            assert response.status_code == 200, response.text
            run = response.json()["run"]
            if run["status"] in ("exited", "crashed", "errored", "cancelled"):
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"run {app}#{number} still {run['status']} after {RUN_WAIT_S}s")
            time.sleep(0.25)

    # -- the hello app -------------------------------------------------------------------

    @property
    def hello_dir(self) -> Path:
        """examples/hello-world, renamed to compat-hello (friend/foe parameters)."""

        def make() -> Path:
            target = self.workdir / "hello"
            shutil.copytree(REPO / "examples" / "hello-world", target)
            towerfile = target / "Towerfile"
            text = towerfile.read_text()
            renamed = text.replace('name = "hello-world"', f'name = "{HELLO}"', 1)
            assert renamed != text, "examples/hello-world/Towerfile no longer names hello-world"
            towerfile.write_text(renamed)
            return target

        return self._once("hello_dir", make)

    def create_hello(self) -> CliResult:
        return self._once(
            "create_hello",
            lambda: self.cli(
                "apps", "create", f"--name={HELLO}", f"--description={HELLO_DESCRIPTION}"
            ),
        )

    def deploy_hello(self) -> CliResult:
        def deploy() -> CliResult:
            self.require(self.create_hello(), f"tower apps create --name={HELLO}")
            return self.cli("deploy", cwd=self.hello_dir)

        return self._once("deploy_hello", deploy)

    def run_hello(self) -> CliResult:
        def run() -> CliResult:
            self.require(self.deploy_hello(), "tower deploy")
            return self.cli("run", "--parameter=friend=Ada", cwd=self.hello_dir)

        return self._once("run_hello", run)

    def hello_run_number(self) -> int:
        result = self.require(self.run_hello(), "tower run --parameter=friend=Ada")
        match = re.search(r"Run #(\d+)", result.output)
        assert match, f"no run number in the output of `tower run`:\n{self.explain(result)}"
        return int(match.group(1))

    # -- the crashing app ----------------------------------------------------------------

    def deploy_crash(self) -> tuple[int, CliResult]:
        """`tower deploy --create` of an app the server does not know yet."""

        def deploy() -> tuple[int, CliResult]:
            target = self.workdir / "crash"
            shutil.copytree(APPS / "crash", target)
            before = self.api_get(f"/apps/{CRASH}").status_code
            return before, self.cli("deploy", "--create", cwd=target)

        return self._once("deploy_crash", deploy)

    def run_crash(self) -> CliResult:
        def run() -> CliResult:
            self.require(self.deploy_crash()[1], "tower deploy --create")
            return self.cli("run", cwd=self.workdir / "crash")

        return self._once("run_crash", run)


@pytest.fixture(scope="module")
def flow(
    official_cli: OfficialCli, compat_tower: LiveTower, tmp_path_factory: pytest.TempPathFactory
) -> Flow:
    return Flow(official_cli, compat_tower, tmp_path_factory.mktemp("compat-apps"))


def test_apps_create(flow: Flow) -> None:
    result = flow.create_hello()
    assert result.returncode == 0, flow.explain(result)
    assert f"App '{HELLO}' created" in result.output, flow.explain(result)


def test_apps_list_shows_the_new_app(flow: Flow) -> None:
    flow.require(flow.create_hello(), f"tower apps create --name={HELLO}")
    result = flow.cli("apps", "list")
    assert result.returncode == 0, flow.explain(result)
    assert re.search(rf"^\s*\*\s+{HELLO}\s*$", result.stdout, re.M), flow.explain(result)
    assert HELLO_DESCRIPTION in result.stdout, flow.explain(result)


def test_deploy_uploads_version_1(flow: Flow) -> None:
    result = flow.deploy_hello()
    assert result.returncode == 0, flow.explain(result)
    assert "Version `v1` has been deployed to environment 'default'" in result.output, flow.explain(
        result
    )


def test_run_follows_the_logs_to_the_end(flow: Flow) -> None:
    result = flow.run_hello()
    assert result.returncode == 0, flow.explain(result)
    assert "Run started, streaming logs" in result.output, flow.explain(result)
    # friend comes from --parameter; foe from the Towerfile default, which the server
    # applies (the official CLI never merges defaults for remote runs).
    greetings = re.findall(r"\| Hello, Ada! Boo to Carl$", result.stdout, re.M)
    assert len(greetings) == 5, f"expected each of the 5 lines once:\n{flow.explain(result)}"
    assert re.search(rf"Run #\d+ for app '{HELLO}' completed successfully", result.output), (
        flow.explain(result)
    )


def test_apps_show_lists_the_exited_run(flow: Flow) -> None:
    number = flow.hello_run_number()
    result = flow.cli("apps", "show", HELLO)
    assert result.returncode == 0, flow.explain(result)
    assert f"Name: {HELLO}" in result.stdout, flow.explain(result)
    assert HELLO_DESCRIPTION in result.stdout, flow.explain(result)
    assert re.search(rf"^\s*{number}\s+Exited\s", result.stdout, re.M), flow.explain(result)


def test_apps_logs_prints_the_run_lines(flow: Flow) -> None:
    number = flow.hello_run_number()
    result = flow.cli("apps", "logs", f"{HELLO}#{number}")
    assert result.returncode == 0, flow.explain(result)
    lines = re.findall(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| Hello, Ada! Boo to Carl$", result.stdout, re.M
    )
    assert len(lines) == 5, flow.explain(result)


def test_deploy_create_creates_a_missing_app(flow: Flow) -> None:
    before, result = flow.deploy_crash()
    assert before == 404, f"{CRASH} existed before `tower deploy --create`"
    assert result.returncode == 0, flow.explain(result)
    assert f"Created app '{CRASH}'" in result.output, flow.explain(result)
    assert "Version `v1` has been deployed" in result.output, flow.explain(result)
    listed = flow.cli("apps", "list")
    assert listed.returncode == 0, flow.explain(listed)
    assert re.search(rf"^\s*\*\s+{CRASH}\s*$", listed.stdout, re.M), flow.explain(listed)


def test_run_of_a_crashing_app_exits_1(flow: Flow) -> None:
    result = flow.run_crash()
    assert result.returncode == 1, flow.explain(result)
    assert "compat-crash: about to fail" in result.stdout, flow.explain(result)
    assert re.search(rf"Run #1 for app '{CRASH}' (crashed|had an error)", result.output), (
        flow.explain(result)
    )
    shown = flow.cli("apps", "show", CRASH)
    assert shown.returncode == 0, flow.explain(shown)
    assert re.search(r"^\s*1\s+(Crashed|Errored)\s", shown.stdout, re.M), flow.explain(shown)


def test_run_detached_prints_the_run_number(flow: Flow) -> None:
    flow.require(flow.deploy_hello(), "tower deploy")
    result = flow.cli("run", "--detached", "--parameter=friend=Bob", cwd=flow.hello_dir)
    assert result.returncode == 0, flow.explain(result)
    match = re.search(rf"Run #(\d+) for app `{HELLO}` has been scheduled", result.output)
    assert match, flow.explain(result)
    assert f"/apps/{HELLO}/runs/{match.group(1)}" in result.output, flow.explain(result)
    # The run it named is real, carries the parameter and finishes on its own.
    run = flow.wait_terminal(HELLO, int(match.group(1)))
    assert run["status"] == "exited", run
    assert ("friend", "Bob") in [(p["name"], p["value"]) for p in run["parameters"]], run
    logs = flow.cli("apps", "logs", f"{HELLO}#{match.group(1)}")
    assert logs.returncode == 0, flow.explain(logs)
    assert "Hello, Bob! Boo to Carl" in logs.stdout, flow.explain(logs)
