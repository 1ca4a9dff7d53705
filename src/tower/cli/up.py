"""`tower up` (control plane + one local runner, started again when it dies) and
`tower server` (control plane only).

Imported lazily by the CLI: this is the only CLI module that loads the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx

from tower.files import write_private

HEALTH_TIMEOUT_S = 60.0
RUNNER_STOP_GRACE_S = 15.0
#: wait before the first restart of a runner that died; doubled for each quick death after
RESTART_FIRST_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 30.0
#: a runner that stayed up this long was healthy: its next death starts the backoff over
RESTART_RESET_AFTER_S = 60.0
#: how long a runner's exit waits for `tower up` to be seen stopping too (see `_watch`)
STOP_SETTLE_S = 0.5
STOPPING_POLL_S = 0.05


def _settings(host: str | None, port: int | None, **overrides: object):  # type: ignore[no-untyped-def]
    from tower.server.settings import ServerSettings

    values = {k: v for k, v in {"host": host, "port": port, **overrides}.items() if v is not None}
    return ServerSettings(**values)


def _print_bootstrap(boot: object, url: str) -> None:
    click.echo(f"Tower control plane: {url}")
    click.echo(f"  admin user: {boot.admin_email} (password in {boot.password_file})")
    if boot.api_key_file.exists():
        click.echo(f"  admin API key: {boot.api_key_file}")
    else:
        click.echo("  admin API key: the TOWER_ADMIN_API_KEY given on the first start")


def _settings_epilog() -> str:
    """Every TOWER_* setting of the control plane, for `--help`."""
    from tower.server.settings import ServerSettings

    lines = ["\b", "Settings (environment variables):"]
    for name, field in ServerSettings.model_fields.items():
        lines.append(f"  TOWER_{name.upper():<26} {field.description}")
    return "\n".join(lines)


@click.command("server", epilog=_settings_epilog())
@click.option("--host", default=None, help="Address to listen on [TOWER_HOST, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [TOWER_PORT, 8000].")
def server_command(host: str | None, port: int | None) -> None:
    """Start the control plane only (runners connect with `tower runner start`)."""
    from tower.server.app import build_context, serve
    from tower.server.services import accounts

    settings = _settings(host, port)
    ctx = build_context(settings)
    _print_bootstrap(accounts.bootstrap(ctx), settings.resolved_public_url)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it: exit 0
        serve(settings, ctx).run()


def _start_runner(url: str, credential: Any, home: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TOWER_URL": url,
        "TOWER_RUNNER_TOKEN": credential.token,
        "TOWER_HOME": str(home),
    }
    if url.startswith("https:"):
        # Under mutual TLS the runner listener wants the certificate minted with the token.
        env.update(_embedded_certificate_files(credential, home / "runner"))
    env.setdefault("TOWER_RUNNER_NAME", "embedded")
    # The shell's TOWER_ENVIRONMENT picks the CLI's environment; it must not turn the
    # embedded runner into one that serves only that environment.
    env.pop("TOWER_ENVIRONMENT", None)
    return subprocess.Popen([sys.executable, "-m", "tower.cli.main", "runner", "start"], env=env)


def _embedded_certificate_files(credential: Any, directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for variable, name, text in (
        ("TOWER_RUNNER_CERT_FILE", "embedded.crt", credential.certificate.certificate_pem),
        ("TOWER_RUNNER_KEY_FILE", "embedded.key", credential.certificate.private_key_pem),
    ):
        files[variable] = str(write_private(directory / name, text))
    return files


def _stop_runner(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(RUNNER_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def restart_delay(previous_s: float | None, uptime_s: float) -> float:
    """Seconds to wait before starting again a runner that exited after `uptime_s`.

    Doubles from `RESTART_FIRST_DELAY_S` up to `RESTART_MAX_DELAY_S` while the runner keeps
    dying soon after it starts (a crash at start-up must not spin), and starts over once
    a runner has stayed up `RESTART_RESET_AFTER_S` (one crash a day waits 1 s, not 30 s).
    """
    if previous_s is None or uptime_s >= RESTART_RESET_AFTER_S:
        return RESTART_FIRST_DELAY_S
    return min(previous_s * 2, RESTART_MAX_DELAY_S)


def describe_exit(returncode: int) -> str:
    """How a runner process ended, in words: `killed by SIGKILL`, `exit code 1`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if returncode == 0:
        # The runner exits 0 only when told to stop, and only `tower up` tells it so.
        return "exit code 0, though nothing asked it to stop"
    return f"exit code {returncode}"


class RunnerSupervisor:
    """Keeps one local runner process alive for as long as `tower up` runs.

    Without it a runner that crashed (or was OOM-killed) left the control plane serving
    with no one to run anything: every run stayed `pending` and nothing was said.
    """

    def __init__(
        self,
        start_runner: Callable[[], subprocess.Popen[bytes]],
        server_stopping: Callable[[], bool],
    ) -> None:
        self._start_runner = start_runner
        self._server_stopping = server_stopping
        self._stopped = threading.Event()
        # Held while the current process is replaced, so `stop` never misses a new one.
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The current runner process (None before the first start)."""
        return self._process

    def start(self) -> None:
        """Start the runner and watch it from a daemon thread."""
        if self._start_next():
            threading.Thread(target=self._watch, name="tower-up-runner", daemon=True).start()

    def stop(self) -> None:
        """Stop watching, then stop the current runner (SIGTERM, grace, SIGKILL)."""
        self._stopped.set()
        with self._lock:
            process = self._process
        if process is not None:
            _stop_runner(process)

    def _stopping(self) -> bool:
        return self._stopped.is_set() or self._server_stopping()

    def _start_next(self) -> bool:
        with self._lock:
            if self._stopping():
                return False
            self._process = self._start_runner()
            return True

    def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as `tower up` is stopping."""
        deadline = time.monotonic() + seconds
        while not self._stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stopped.wait(min(left, STOPPING_POLL_S))
        return True

    def _watch(self) -> None:
        delay: float | None = None
        while True:
            process = self._process
            assert process is not None  # `start` set it before this thread began
            started = time.monotonic()
            returncode = process.wait()
            uptime_s = time.monotonic() - started
            # A Ctrl-C in the terminal reaches the runner too (same process group), and an
            # idle runner may exit before `tower up` has handled its own copy: give that a
            # moment rather than calling an ordinary stop a crash.
            if self._sleep_unless_stopping(STOP_SETTLE_S):
                return
            delay = restart_delay(delay, uptime_s)
            click.echo(
                f"The local runner exited ({describe_exit(returncode)}); "
                f"restarting it in {delay:g} s.",
                err=True,
            )
            if self._sleep_unless_stopping(delay) or not self._start_next():
                return


def _wait_healthy(url: str) -> bool:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            # TOWER_CA_BUNDLE: a certificate of the operator's own CA (else the system's).
            verify = os.environ.get("TOWER_CA_BUNDLE") or True
            if httpx.get(f"{url}/healthz", timeout=2, verify=verify).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def _log_in_cli(ctx: object, url: str, email: str) -> str:
    from tower.cli import session as cli_session
    from tower.server.services import sessions

    jwt = sessions.open_cli_session(ctx, email)
    response = httpx.get(
        f"{url}/v1/session",
        headers={"Authorization": f"Bearer {jwt}"},
        timeout=10,
        verify=os.environ.get("TOWER_CA_BUNDLE") or True,
    )
    response.raise_for_status()
    path = cli_session.session_path()
    cli_session.save_session(path, url, response.json()["session"])
    return str(path)


@click.command("up", epilog=_settings_epilog())
@click.option("--host", default=None, help="Address to listen on [TOWER_HOST, 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port to listen on [TOWER_PORT, 8000].")
def up_command(host: str | None, port: int | None) -> None:
    """Start Tower on this machine: the control plane plus one local runner."""
    from tower.server.app import build_context, serve
    from tower.server.services import accounts, auth

    settings = _settings(host, port, health_requires_runner=True)
    ctx = build_context(settings)
    boot = accounts.bootstrap(ctx)
    url = settings.resolved_public_url
    credential = auth.rotate_embedded_runner_credential(ctx)
    server = serve(settings, ctx)
    supervisor = RunnerSupervisor(
        lambda: _start_runner(settings.resolved_runner_url, credential, settings.home_dir),
        lambda: server.should_exit,
    )

    def after_start() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.should_exit:
            return
        supervisor.start()
        if not _wait_healthy(url):
            click.echo("The local runner did not come online; see its output above.", err=True)
            return
        _print_bootstrap(boot, url)
        click.echo(f"  CLI session: {_log_in_cli(ctx, url, boot.admin_email)}")
        click.echo("Tower is up. Press Ctrl-C to stop.")

    # uvicorn handles SIGTERM while it serves, then raises it again once it has shut down;
    # by default that would kill `tower up` before the `finally` below stops the runner
    # (orphaning it). Ending like Ctrl-C instead stops the runner and exits 0.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    threading.Thread(target=after_start, name="tower-up", daemon=True).start()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it: exit 0
            server.run()
    finally:
        supervisor.stop()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
