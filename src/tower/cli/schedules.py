"""`tower schedules ...`: run apps on a cron schedule.

`--cron` takes a 5-field cron expression or a phrase ("every 15 minutes", "every day
at 8am"); the server stores and shows the cron form. A schedule runs whatever version
is deployed to its environment when it fires.
"""

from __future__ import annotations

from typing import Any

import click

from tower.cli import output
from tower.cli.common import (
    api,
    environment_option,
    json_option,
    new_table,
    parameters_callback,
    print_rows,
)

parameter_option = click.option(
    "-p",
    "--parameter",
    "parameters",
    multiple=True,
    callback=parameters_callback,
    help="A parameter (key=value) every run gets; repeatable.",
)
timezone_option = click.option(
    "--timezone", help="IANA time zone the cron is read in (e.g. Europe/Amsterdam); default UTC."
)
overlap_option = click.option(
    "--overlap",
    "overlap_policy",
    type=click.Choice(["allow", "skip"]),
    help="skip: no new run while the previous one is still active.",
)


@click.group("schedules")
def schedules_group() -> None:
    """Create, list, update and delete schedules."""


@schedules_group.command("list")
@click.option("-a", "--app", help="Only this app's schedules.")
@click.option("-e", "--environment", help="Only this environment's schedules.")
@json_option("Print the schedules as JSON.")
def list_command(app: str | None, environment: str | None, as_json: bool) -> None:
    """List your schedules."""
    with output.spinner("Listing schedules..."):
        schedules = api().list_schedules(app=app, environment=environment)
    print_rows(schedules, _table, as_json=as_json, empty="No schedules found.")


def _table(schedules: list[dict[str, Any]]) -> Any:
    table = new_table("ID", "App", "Environment", "Cron", "Status", "Next run")
    for schedule in schedules:
        table.add_row(
            str(schedule.get("id", "")),
            str(schedule.get("app_name", "")),
            str(schedule.get("environment", "")),
            str(schedule.get("cron", "")),
            str(schedule.get("status", "")),
            output.format_timestamp(schedule.get("next_fire_at")),
        )
    return table


@schedules_group.command("create")
@click.option("-a", "--app", required=True, help="The app to run.")
@environment_option("The environment whose deployed version runs.")
@click.option("-c", "--cron", required=True, help='Cron ("0 9 * * 1") or "every hour" etc.')
@parameter_option
@click.option("--name", help="A name for the schedule (default: APP-<id>).")
@timezone_option
@overlap_option
def create_command(
    app: str,
    environment: str,
    cron: str,
    parameters: dict[str, str],
    name: str | None,
    timezone: str | None,
    overlap_policy: str | None,
) -> None:
    """Create a schedule for an app."""
    fields = _fields(name=name, timezone=timezone, overlap_policy=overlap_policy)
    with output.spinner("Creating schedule..."):
        body = api().create_schedule(app, cron, environment, parameters, **fields)
    schedule = body.get("schedule") or {}
    output.success(f"Schedule {schedule.get('id', '')} created ({schedule.get('cron', cron)})")
    _print_next(schedule)


@schedules_group.command("update")
@click.argument("schedule_id")
@click.option("-c", "--cron", help="The new cron expression or phrase.")
@parameter_option
@click.option("--name", help="A new name.")
@timezone_option
@overlap_option
def update_command(
    schedule_id: str,
    cron: str | None,
    parameters: dict[str, str],
    name: str | None,
    timezone: str | None,
    overlap_policy: str | None,
) -> None:
    """Update a schedule (by id or name); what is not given stays."""
    fields = _fields(name=name, timezone=timezone, overlap_policy=overlap_policy)
    if cron is None and not parameters and not fields:
        raise click.UsageError("Nothing to update: give --cron, --parameter or another option.")
    with output.spinner("Updating schedule..."):
        body = api().update_schedule(schedule_id, cron, parameters, **fields)
    schedule = body.get("schedule") or {}
    output.success(f"Schedule {schedule.get('id', schedule_id)} updated")
    _print_next(schedule)


@schedules_group.command("show")
@click.argument("schedule_id")
@json_option("Print the schedule as JSON.")
def show_command(schedule_id: str, as_json: bool) -> None:
    """Show a schedule and when it runs next."""
    schedule = api().describe_schedule(schedule_id).get("schedule") or {}
    if as_json:
        output.print_json(schedule)
        return
    parameters = ", ".join(f"{p['name']}={p['value']}" for p in schedule.get("parameters") or [])
    output.print_details(
        [
            ("ID", str(schedule.get("id", ""))),
            ("Name", str(schedule.get("name", ""))),
            ("App", str(schedule.get("app_name", ""))),
            ("Environment", str(schedule.get("environment", ""))),
            ("Version", str(schedule.get("app_version") or "- (nothing deployed)")),
            ("Cron", f"{schedule.get('cron', '')} ({schedule.get('timezone', 'UTC')})"),
            ("Status", str(schedule.get("status", ""))),
            ("Overlap", str(schedule.get("overlap_policy", ""))),
            ("Parameters", parameters or "-"),
            ("Last run", output.format_timestamp(schedule.get("last_fired_at"))),
            ("Skipped ticks", _skipped(schedule)),
        ]
    )
    ticks = schedule.get("next_fire_times") or []
    if ticks:
        output.info("Next runs:")
        for tick in ticks:
            output.info(f"  {output.format_timestamp(tick)}")


@schedules_group.command("delete")
@click.argument("schedule_ids", nargs=-1, required=True)
def delete_command(schedule_ids: tuple[str, ...]) -> None:
    """Delete schedules (by id or name); the runs they started stay."""
    with output.spinner("Deleting schedules..."):
        deleted = api().delete_schedules(schedule_ids)
    for schedule in deleted:
        output.success(f"Schedule {schedule.get('id', '')} deleted")


@schedules_group.command("activate")
@click.argument("schedule_ids", nargs=-1, required=True)
def activate_command(schedule_ids: tuple[str, ...]) -> None:
    """Activate schedules: they run again from their next tick."""
    _set_active(schedule_ids, True)


@schedules_group.command("deactivate")
@click.argument("schedule_ids", nargs=-1, required=True)
def deactivate_command(schedule_ids: tuple[str, ...]) -> None:
    """Deactivate schedules: they start no runs until activated."""
    _set_active(schedule_ids, False)


def _set_active(schedule_ids: tuple[str, ...], active: bool) -> None:
    with output.spinner("Updating schedules..."):
        schedules = api().set_schedules_active(schedule_ids, active)
    for schedule in schedules:
        output.success(f"Schedule {schedule.get('id', '')} is {schedule.get('status', '')}")


def _fields(**values: str | None) -> dict[str, str]:
    return {key: value for key, value in values.items() if value is not None}


def _skipped(schedule: dict[str, Any]) -> str:
    count = schedule.get("skipped_ticks") or 0
    reason = schedule.get("last_skip_reason")
    return f"{count} (last: {reason})" if count and reason else str(count)


def _print_next(schedule: dict[str, Any]) -> None:
    if schedule.get("next_fire_at"):
        output.info(f"Next run: {output.format_timestamp(schedule['next_fire_at'])}")
