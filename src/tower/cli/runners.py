"""`tower runners ...`: see your runners, give a new one credentials, and choose whether
your runs may use the installation's shared runners.

(`tower runner start` is the runner itself; these commands talk about runners.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tower.cli import output
from tower.cli.common import api, json_option, new_table, print_rows
from tower.files import write_private


@click.group("runners")
def runners_group() -> None:
    """List runners and create runner credentials."""


def _runners_table(rows: list[dict[str, Any]]) -> Any:
    table = new_table("Name", "Host", "Environment", "Status", "Running", "Capacity", "Pool")
    for runner in rows:
        table.add_row(
            str(runner.get("name") or ""),
            str(runner.get("host") or ""),
            str(runner.get("environment") or "any"),
            output.status_text(runner.get("status")),
            str(runner.get("num_runs", 0)),
            str(runner.get("max_concurrent_apps", "")),
            str(runner.get("pool") or ""),
        )
    return table


@runners_group.command("list")
@json_option("Print the runners as JSON.")
def list_command(as_json: bool) -> None:
    """List the runners serving your account."""
    with output.spinner("Listing runners..."):
        rows = api().list_runners()
    print_rows(rows, _runners_table, as_json=as_json, empty="No runners have connected yet.")


@runners_group.command("credentials")
@click.option("-n", "--name", help="A name for the runner (shown by `tower runners list`).")
@click.option("--ttl-days", type=click.IntRange(1, 3650), help="Expire the token after N days.")
@click.option(
    "--cert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to write the client certificate, its key and the CA (HTTPS control planes).",
)
def credentials_command(name: str | None, ttl_days: int | None, cert_dir: Path) -> None:
    """Create credentials for a self-hosted runner of your account.

    Prints the lines of the runner's `.env` file; the token and the client
    certificate's private key are shown only once. For a control plane on HTTPS the
    certificate, key and CA are written to files in --cert-dir (the key 0600).
    """
    with output.spinner("Creating runner credentials..."):
        credentials = api().create_runner_credentials(name, ttl_days)
    output.success(f'Runner credentials "{credentials.get("name")}" were created')
    url = str(credentials.get("runner_service_url", ""))
    files = _write_certificate_files(credentials, cert_dir) if url.startswith("https:") else {}
    output.info("Put these lines in the runner's .env file (or its environment):")
    click.echo(f"TOWER_URL={url}")
    click.echo(f"TOWER_RUNNER_TOKEN={credentials.get('token', '')}")
    if credentials.get("package_signing_key"):
        click.echo(f"TOWER_RUNNER_PACKAGE_KEY={credentials['package_signing_key']}")
    for variable, path in files.items():
        click.echo(f"{variable}={path}")
    if credentials.get("expires_at"):
        output.info(
            f"The token expires at {credentials['expires_at']}; a running runner rotates it "
            "before then."
        )
    output.info("Then start it with `tower runner start`.")


def _write_certificate_files(credentials: dict[str, Any], directory: Path) -> dict[str, Path]:
    """The client certificate and key (for mutual TLS) and the CA that issued them, as
    files; the settings naming them."""
    if not (credentials.get("certificate") and credentials.get("private_key")):
        return {}
    stem = _file_stem(str(credentials.get("name") or "runner"))
    directory.mkdir(parents=True, exist_ok=True)
    cert = _write_public(directory / f"{stem}.crt", credentials["certificate"])
    key = write_private(directory / f"{stem}.key", credentials["private_key"])
    if credentials.get("root_ca"):
        ca = _write_public(directory / f"{stem}-runner-ca.pem", credentials["root_ca"])
        output.info(f"The runner CA (it issued the client certificate) is in {ca}.")
    return {"TOWER_RUNNER_CERT_FILE": cert.resolve(), "TOWER_RUNNER_KEY_FILE": key.resolve()}


def _file_stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".") or "runner"


def _write_public(path: Path, text: str) -> Path:
    """A certificate: nothing secret, readable by everyone (0644)."""
    path.write_text(text)
    path.chmod(0o644)
    return path


@runners_group.command("self-hosted-only")
@click.argument("mode", type=click.Choice(["on", "off", "show"]), default="show")
def self_hosted_only_command(mode: str) -> None:
    """Show, or turn on/off, self-hosted-only mode: your runs go only to your own
    runners and wait in `pending` while none is online."""
    client = api()
    if mode == "show":
        enabled = bool(client.runner_settings().get("self_hosted_only"))
    else:
        enabled = bool(
            client.update_runner_settings(self_hosted_only=mode == "on")["self_hosted_only"]
        )
    state = "on" if enabled else "off"
    output.info(f"Self-hosted-only mode is {state}.")
