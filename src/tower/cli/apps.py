"""`tower apps ...`: list, create, show, logs, cancel and delete apps and their runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from rich import box
from rich.table import Table
from rich.text import Text

from tower.cli import output
from tower.cli.common import api, parse_run_ref, stdin_is_tty
from tower.cli.follow import RunFollower

STATUS_STYLES = {
    "exited": "green",
    "crashed": "red",
    "errored": "red",
    "cancelled": "dim",
    "running": "cyan",
    "retrying": "yellow",
}


@click.group("apps")
def apps_group() -> None:
    """Manage your apps and their runs."""


@apps_group.command("list")
def list_command() -> None:
    """List all of your apps."""
    summaries = api().list_apps()
    if not summaries:
        output.info("No apps yet. Create one with `tower apps create --name NAME`.")
        return
    for summary in summaries:
        app = summary.get("app", summary)
        output.stdout.print(f"* {app.get('name', '')}", style="bold", markup=False)
        description = app.get("short_description") or "No description"
        output.stdout.print(f"  {description}", markup=False)


@apps_group.command("create")
@click.option("--name", required=True, help="The new app's name.")
@click.option("--description", default="", help="A short description of the app.")
def create_command(name: str, description: str) -> None:
    """Create a new app."""
    client = api()
    with output.spinner("Creating app..."):
        client.create_app(name, short_description=description)
    output.success(f'App "{name}" was created')


@apps_group.command("show")
@click.argument("name")
@click.option("-e", "--environment", default=None, help="Only show runs in this environment.")
def show_command(name: str, environment: str | None) -> None:
    """Show an app and its recent runs."""
    body = api().describe_app(name, environment=environment)
    app = body.get("app", {})
    output.stdout.print(f"Name: {app.get('name', name)}", markup=False)
    output.stdout.print("Description:")
    output.stdout.print(app.get("short_description") or "No description", markup=False)
    runs = body.get("runs") or []
    output.stdout.print("Recent runs:")
    if not runs:
        output.stdout.print("No runs yet.")
        return
    output.stdout.print(runs_table(runs, now=datetime.now(UTC)))


def runs_table(runs: list[dict[str, Any]], *, now: datetime) -> Table:
    """The `#  Status  Start Time  Elapsed Time` table, newest run first."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("Status")
    table.add_column("Start Time")
    table.add_column("Elapsed Time")
    for run in sorted(runs, key=lambda r: r.get("number") or 0, reverse=True):
        status = str(run.get("status", ""))
        table.add_row(
            str(run.get("number", "")),
            Text(status, style=STATUS_STYLES.get(status, "")),
            output.format_timestamp(run.get("started_at")),
            output.run_elapsed(run, now),
        )
    return table


@apps_group.command("logs")
@click.argument("app")
@click.argument("number", required=False)
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the run is over.")
def logs_command(app: str, number: str | None, follow: bool) -> None:
    """Show the logs of a run: `APP#N`, `APP N`, or just `APP` for its latest run."""
    name, run_number = parse_run_ref(app, number)
    client = api()
    if run_number is None:
        run_number = latest_run_number(client.describe_app(name).get("runs") or [])
        if run_number is None:
            output.info("No runs found")
            return
    if follow:
        RunFollower(client, name, run_number, on_line=output.print_log_line).follow()
        return
    with output.spinner("Fetching logs..."):
        lines = client.run_logs(name, run_number)
    for line in lines:
        output.print_log_line(line)


def latest_run_number(runs: list[dict[str, Any]]) -> int | None:
    numbers = [r["number"] for r in runs if isinstance(r.get("number"), int)]
    return max(numbers) if numbers else None


@apps_group.command("cancel")
@click.argument("app")
@click.argument("number", required=False)
def cancel_command(app: str, number: str | None) -> None:
    """Cancel a run that has not finished: `APP#N` or `APP N`."""
    name, run_number = parse_run_ref(app, number)
    if run_number is None:
        raise click.UsageError("Name the run to cancel, e.g. `tower apps cancel my-app#3`.")
    client = api()
    with output.spinner("Cancelling run..."):
        body = client.cancel_run(name, run_number)
    status = body.get("run", {}).get("status", "cancelled")
    output.success(f"Run #{run_number} of app `{name}` is now {status}")


@apps_group.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_command(name: str, yes: bool) -> None:
    """Delete an app. Deleted apps cannot be recovered."""
    # Only a person at a terminal is asked; scripts pass through without hanging.
    if not yes and stdin_is_tty():
        click.confirm(
            f"Delete app '{name}' with all its versions and runs? This cannot be undone.",
            abort=True,
        )
    client = api()
    with output.spinner("Deleting app..."):
        client.delete_app(name)
    output.success(f'App "{name}" was deleted')
