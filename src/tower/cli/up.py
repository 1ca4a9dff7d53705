"""`tower up` (control plane + one local runner) and `tower server` (control plane only).

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
from pathlib import Path
from typing import Any

import click
import httpx

from tower.files import write_private

HEALTH_TIMEOUT_S = 60.0
RUNNER_STOP_GRACE_S = 15.0


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
    runner: list[subprocess.Popen[bytes]] = []

    def after_start() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.should_exit:
            return
        runner_url = settings.resolved_runner_url
        runner.append(_start_runner(runner_url, credential, settings.home_dir))
        if not _wait_healthy(url):
            click.echo("The local runner did not come online; see its output above.", err=True)
            return
        _print_bootstrap(boot, url)
        click.echo(f"  CLI session: {_log_in_cli(ctx, url, boot.admin_email)}")
        click.echo("Tower is up. Press Ctrl-C to stop.")

    threading.Thread(target=after_start, name="tower-up", daemon=True).start()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it: exit 0
            server.run()
    finally:
        for process in runner:
            _stop_runner(process)
