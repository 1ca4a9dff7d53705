"""`tower audit list`: who changed what in the account, newest first."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from tower.cli import output
from tower.cli.common import api, json_option, new_table

MAX_PAGE_SIZE = 1000


@click.group("audit")
def audit_group() -> None:
    """Show who changed what in the account."""


@audit_group.command("list")
@click.option("--action", help="One action (secret.create) or a resource's (secret).")
@click.option("--since", help="From this time on (RFC 3339, e.g. 2026-01-31T08:00:00Z).")
@click.option("--until", help="Before this time (RFC 3339).")
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--page-size", type=click.IntRange(1, MAX_PAGE_SIZE), default=20, show_default=True)
@json_option("Print the API's JSON answer instead of a table.")
def list_command(
    action: str | None,
    since: str | None,
    until: str | None,
    page: int,
    page_size: int,
    as_json: bool,
) -> None:
    """List the account's audit events, newest first."""
    body = api().list_audit_events(
        action=action, since=since, until=until, page=page, page_size=page_size
    )
    if as_json:
        output.print_json(body)
        return
    events = body.get("audit_events") or []
    if not events:
        output.info("No audit events match.")
        return
    output.print_table(events_table(events))
    pages = body.get("pages") or {}
    if page < int(pages.get("num_pages") or 1):
        output.note(f"Page {page} of {pages['num_pages']}: --page {page + 1} for more.")


def events_table(events: list[dict[str, Any]]) -> Table:
    table = new_table("Time", "Action", "Target", "Who", "Credential", "Details")
    for event in events:
        actor = event.get("actor") or {}
        table.add_row(
            output.format_timestamp(event.get("created_at")),
            str(event.get("action", "")),
            str(event.get("target", "")),
            str(actor.get("email") or actor.get("user_id") or ""),
            " ".join(str(v) for v in (actor.get("credential_kind"), actor.get("credential")) if v),
            _details(event.get("details") or {}),
        )
    return table


def _details(details: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in details.items())
