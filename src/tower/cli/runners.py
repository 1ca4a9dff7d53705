"""`tower runners ...`: see your runners, give a new one credentials, and choose whether
your runs may use the installation's shared runners.

(`tower runner start` is the runner itself; these commands talk about runners.)
"""

from __future__ import annotations

from typing import Any

import click

from tower.cli import output
from tower.cli.common import api, json_option, new_table, print_rows


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
def credentials_command(name: str | None, ttl_days: int | None) -> None:
    """Create credentials for a self-hosted runner of your account.

    Prints the lines of the runner's `.env` file; the token is shown only once.
    """
    with output.spinner("Creating runner credentials..."):
        credentials = api().create_runner_credentials(name, ttl_days)
    output.success(f'Runner credentials "{credentials.get("name")}" were created')
    output.info("Put these lines in the runner's .env file (or its environment):")
    click.echo(f"TOWER_URL={credentials.get('runner_service_url', '')}")
    click.echo(f"TOWER_RUNNER_TOKEN={credentials.get('token', '')}")
    if credentials.get("package_signing_key"):
        click.echo(f"TOWER_RUNNER_PACKAGE_KEY={credentials['package_signing_key']}")
    if credentials.get("expires_at"):
        output.info(f"The token expires at {credentials['expires_at']}.")
    output.info("Then start it with `tower runner start`.")


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
