"""`tower apps ...`: list, create, show, update, logs, cancel and delete apps and their
runs."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from tower.cli import output
from tower.cli.common import api, confirm, new_table, parse_run_ref, yes_option
from tower.cli.follow import RunFollower
from tower.cli.runs import RunQuery, describe_retry_policy, run_list_options, show_runs
from tower.client.api import TowerApi
from tower.core.retries import MAX_RETRIES_LIMIT, MAX_RETRY_DELAY_SECONDS, RetryPolicy
from tower.core.sandbox_settings import LIMIT_BOUNDS, LIMIT_NAMES

#: What an app without a stored retry policy does: never retry.
NO_RETRIES = asdict(RetryPolicy())


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
    output.print_table(runs_table(runs, now=datetime.now(UTC)))


def runs_table(runs: list[dict[str, Any]], *, now: datetime) -> Table:
    """The official `#  Status  Start Time  Elapsed Time` table, newest run first, with
    how many attempts each run has had added as a last column."""
    table = new_table()
    table.add_column("#", justify="right")
    table.add_column("Status")
    table.add_column("Start Time")
    table.add_column("Elapsed Time")
    table.add_column("Attempts", justify="right")
    for run in sorted(runs, key=lambda r: r.get("number") or 0, reverse=True):
        attempts = run.get("num_attempts")
        table.add_row(
            str(run.get("number", "")),
            output.status_text(run.get("status")),
            output.format_timestamp(run.get("started_at")),
            output.run_elapsed(run, now),
            str(attempts) if isinstance(attempts, int) else "-",
        )
    return table


@apps_group.command("runs")
@click.argument("name")
@run_list_options
def runs_command(
    name: str,
    statuses: tuple[str, ...],
    environment: str | None,
    page: int,
    page_size: int,
    as_json: bool,
) -> None:
    """List the runs of an app, newest first.

    The same as `tower runs list NAME`.
    """
    show_runs(name, RunQuery(tuple(statuses), environment, page, page_size), as_json=as_json)


@apps_group.command("update")
@click.argument("name")
@click.option("--description", default=None, help="A new short description.")
@click.option(
    "--disable/--enable",
    "disabled",
    default=None,
    help="A disabled app starts no new runs and retries none.",
)
@click.option(
    "--pending-timeout",
    type=click.IntRange(min=0),
    metavar="SECONDS",
    help="How long a run may wait for a runner before it errors; 0 = no limit.",
)
@click.option(
    "--running-timeout",
    type=click.IntRange(min=0),
    metavar="SECONDS",
    help="How long an attempt may run before it is stopped; 0 = no limit.",
)
@click.option(
    "--max-retries",
    # The ranges are the server's: checked here too so a typo fails before any request.
    type=click.IntRange(0, MAX_RETRIES_LIMIT),
    metavar="N",
    help="Retries after a crashed or errored attempt; 0 = never retry.",
)
@click.option(
    "--retry-delay",
    type=click.IntRange(0, MAX_RETRY_DELAY_SECONDS),
    metavar="SECONDS",
    help="Wait before each retry.",
)
@click.option(
    "--exponential-backoff/--no-exponential-backoff",
    default=None,
    help="Double the wait after every retry (never beyond an hour).",
)
@click.option(
    "--memory-mb",
    type=click.IntRange(0, LIMIT_BOUNDS["memory_mb"][0]),
    metavar="MB",
    help="Memory a run may use; 0 = the runner's default.",
)
@click.option(
    "--cpu-seconds",
    type=click.IntRange(0, LIMIT_BOUNDS["cpu_seconds"][0]),
    metavar="SECONDS",
    help="CPU time a run may use; 0 = the runner's default.",
)
@click.option(
    "--file-size-mb",
    type=click.IntRange(0, LIMIT_BOUNDS["file_size_mb"][0]),
    metavar="MB",
    help="The largest file a run may write; 0 = the runner's default.",
)
@click.option(
    "--processes",
    type=click.IntRange(0, LIMIT_BOUNDS["processes"][0]),
    metavar="N",
    help="Processes a run may have at once; 0 = the runner's default.",
)
@click.option(
    "--isolate-network/--no-isolate-network",
    default=None,
    help="Run with no network at all (the runner needs bubblewrap).",
)
def update_command(
    name: str,
    description: str | None,
    disabled: bool | None,
    pending_timeout: int | None,
    running_timeout: int | None,
    max_retries: int | None,
    retry_delay: int | None,
    exponential_backoff: bool | None,
    memory_mb: int | None,
    cpu_seconds: int | None,
    file_size_mb: int | None,
    processes: int | None,
    isolate_network: bool | None,
) -> None:
    """Change an app's description, status, timeouts, retry policy or sandbox settings.

    Only the settings given change; retry settings not given keep their current value.
    A runner never gives a run more than its own maximums (the run's log says so).
    """
    sandbox = {
        "memory_mb": memory_mb,
        "cpu_seconds": cpu_seconds,
        "file_size_mb": file_size_mb,
        "processes": processes,
        "isolate_network": isolate_network,
    }
    sandbox = {key: value for key, value in sandbox.items() if value is not None}
    retry_changes = {
        "max_retries": max_retries,
        "retry_delay_seconds": retry_delay,
        "use_exponential_backoff": exponential_backoff,
    }
    retry_changes = {key: value for key, value in retry_changes.items() if value is not None}
    status = None if disabled is None else ("disabled" if disabled else "active")
    plain_changes = (description, status, pending_timeout, running_timeout)
    if all(value is None for value in plain_changes) and not (retry_changes or sandbox):
        raise click.UsageError(
            "Nothing to update. Give at least one of --description, --disable/--enable, "
            "--pending-timeout, --running-timeout, --max-retries, --retry-delay, "
            "--exponential-backoff/--no-exponential-backoff, --memory-mb, --cpu-seconds, "
            "--file-size-mb, --processes, --isolate-network/--no-isolate-network."
        )
    client = api()
    with output.spinner("Updating app..."):
        policy = merged_retry_policy(client, name, retry_changes) if retry_changes else None
        body = client.update_app(
            name,
            short_description=description,
            status=status,
            pending_timeout=pending_timeout,
            running_timeout=running_timeout,
            retry_policy=policy,
            sandbox=sandbox or None,
        )
    output.success(f'App "{name}" was updated')
    output.print_details(app_settings(body.get("app") or {}))


def merged_retry_policy(client: TowerApi, name: str, changes: dict[str, Any]) -> dict[str, Any]:
    """The app's current retry policy with `changes` applied.

    The API replaces the policy as a whole, so fields the user did not mention must be
    sent with their current values or they would be reset.
    """
    current = client.describe_app(name).get("app", {}).get("retry_policy")
    policy = dict(NO_RETRIES)
    if isinstance(current, dict):
        policy.update({key: current[key] for key in NO_RETRIES if key in current})
    policy.update(changes)
    return policy


def app_settings(app: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings `apps update` can change, as the server now has them (the sandbox
    ones only when the server has them: they are ours, not the contract's)."""
    settings = [
        ("Status", str(app.get("status") or "active")),
        ("Description", str(app.get("short_description") or "No description")),
        ("Pending timeout", _timeout(app.get("pending_timeout"))),
        ("Running timeout", _timeout(app.get("running_timeout"))),
        ("Retry policy", describe_retry_policy(app.get("retry_policy"))),
    ]
    sandbox = describe_sandbox(app)
    return settings + ([("Sandbox", sandbox)] if sandbox else [])


#: how each limit reads in `describe_sandbox`
LIMIT_LABELS = {
    "memory_mb": "memory {} MB",
    "cpu_seconds": "CPU {} s",
    "file_size_mb": "files {} MB",
    "processes": "{} processes",
}


def describe_sandbox(app: dict[str, Any]) -> str | None:
    """An app's sandbox settings in a line; None from a server without them."""
    if not any(key in app for key in (*LIMIT_NAMES, "isolate_network")):
        return None
    parts = [
        LIMIT_LABELS[name].format(app[name]) for name in LIMIT_NAMES if app.get(name) is not None
    ]
    limits = ", ".join(parts) if parts else "the runner's default limits"
    network = "no network" if app.get("isolate_network") else "network"
    return f"{limits}; {network}"


def _timeout(seconds: Any) -> str:
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        return "-"
    return output.format_elapsed(seconds) if seconds > 0 else "no limit"


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
    children = body.get("cancelled_child_runs")
    if isinstance(children, int) and children > 0:
        noun = "run" if children == 1 else "runs"
        output.info(f"Also cancelled {children} child {noun} it started.")


@apps_group.command("delete")
@click.argument("name")
@yes_option
def delete_command(name: str, yes: bool) -> None:
    """Delete an app. Deleted apps cannot be recovered."""
    confirm(f"Delete app '{name}' with all its versions and runs? This cannot be undone.", yes=yes)
    client = api()
    with output.spinner("Deleting app..."):
        client.delete_app(name)
    output.success(f'App "{name}" was deleted')


@apps_group.command("versions")
@click.argument("name")
def versions_command(name: str) -> None:
    """List an app's versions, newest first, with the environments running each."""
    with output.spinner("Listing versions..."):
        versions = api().list_app_versions(name)
    if not versions:
        output.info(f"App `{name}` has no versions yet. Deploy it with `tower deploy`.")
        return
    output.print_table(versions_table(versions))


def versions_table(versions: list[dict[str, Any]]) -> Table:
    table = new_table("Version", "Created", "Environments")
    for version in versions:
        # `environments` is our server's addition; other servers leave it out.
        pinned = version.get("environments")
        table.add_row(
            str(version.get("version", "")),
            output.format_timestamp(version.get("created_at")),
            ", ".join(pinned) if isinstance(pinned, list) and pinned else "-",
        )
    return table


@apps_group.command("promote")
@click.argument("name")
@click.option("--version", "version", required=True, help="The version to run, e.g. v3.")
@click.option("-e", "--environment", required=True, help="The environment that should run it.")
def promote_command(name: str, version: str, environment: str) -> None:
    """Make an environment run an existing version of an app.

    Promotes a version (e.g. from default to production) or rolls back to an older
    one, without building anything. Runs already started keep their version.
    """
    client = api()
    with output.spinner("Promoting version..."):
        body = client.pin_app_version(name, environment, version)
    pinned = body.get("version") or version
    previous = body.get("previous_version")
    was = f" (was {previous})" if previous and previous != pinned else ""
    target = body.get("environment") or environment
    output.success(f"Environment '{target}' now runs version `{pinned}` of app `{name}`{was}")
