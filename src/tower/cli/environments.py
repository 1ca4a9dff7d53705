"""`tower environments ...`: list, create, show, rename and delete environments.

Every account has `default`; other environments (`staging`, `production`) each run
their own version of every app and hold their own secrets and catalogs.
"""

from __future__ import annotations

from typing import Any

import click

from tower.cli import output
from tower.cli.common import DEFAULT_ENVIRONMENT, api, confirm, new_table, yes_option

name_option = click.option("-n", "--name", required=True, help="The environment's name.")


@click.group("environments")
def environments_group() -> None:
    """List, create and delete environments."""


@environments_group.command("list")
def list_command() -> None:
    """List your environments."""
    with output.spinner("Listing environments..."):
        envs = api().list_environments()
    table = new_table("Environment", "Deletable")
    for env in envs:
        table.add_row(str(env.get("name", "")), "yes" if env.get("is_deletable") else "no")
    output.print_table(table)


@environments_group.command("create")
@name_option
def create_command(name: str) -> None:
    """Create an environment."""
    client = api()
    with output.spinner("Creating environment..."):
        client.create_environment(name)
    output.success(f'Environment "{name}" was created')
    output.info(
        f"Deploy to it with `tower deploy --environment={name}`, or promote a version with "
        f"`tower apps promote APP --version vN --environment {name}`."
    )


@environments_group.command("show")
@name_option
def show_command(name: str) -> None:
    """Show an environment and how many secrets, catalogs and schedules it holds."""
    body = api().describe_environment(name)
    output.print_details(environment_details(body))


@environments_group.command("rename")
@name_option
@click.option("--new-name", required=True, help="The name it gets.")
def rename_command(name: str, new_name: str) -> None:
    """Rename an environment; its secrets, catalogs, versions and runs stay with it."""
    client = api()
    with output.spinner("Renaming environment..."):
        client.rename_environment(name, new_name)
    output.success(f'Environment "{name}" is now called "{new_name}"')


@environments_group.command("delete")
@name_option
@yes_option
def delete_command(name: str, yes: bool) -> None:
    """Delete an environment with its secrets, catalogs and runs."""
    if name == DEFAULT_ENVIRONMENT:
        raise _undeletable(name)
    client = api()
    body = client.describe_environment(name)
    if (body.get("environment") or {}).get("is_deletable") is False:
        raise _undeletable(name)
    output.print_details(environment_details(body))
    # Secrets and catalogs cannot be recovered, so a script must say --yes: it is never
    # deleted without someone having asked for it explicitly.
    confirm(
        f"Delete environment '{name}' with everything in it? This cannot be undone.",
        yes=yes,
        unanswered=(
            f"Deleting environment '{name}' needs confirmation: run it at a terminal or pass --yes."
        ),
    )
    with output.spinner("Deleting environment..."):
        client.delete_environment(name)
    output.success(f'Environment "{name}" was deleted')


def _undeletable(name: str) -> click.ClickException:
    return click.ClickException(
        f"Environment '{name}' cannot be deleted: every account has it and the other "
        "environments inherit its secrets and catalogs."
    )


def environment_details(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The describe response as `Label: value` rows."""
    env = body.get("environment") or {}
    return [
        ("Environment", str(env.get("name", ""))),
        ("Secrets", _count(body.get("number_secrets"))),
        ("Catalogs", _count(body.get("number_catalogs"))),
        ("Schedules", _count(body.get("number_schedules"))),
    ]


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "-"
