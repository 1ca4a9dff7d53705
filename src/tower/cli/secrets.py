"""`tower secrets ...`: create, list and delete secrets.

Values never travel in the clear: `create` encrypts to the server's public key here,
and `list --show` asks the server to encrypt to a throwaway key made for this one
command, then decrypts locally.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import click
from rich.table import Table

from tower.cli import output
from tower.cli.common import (
    all_environments_option,
    api,
    environment_option,
    environment_scope,
    json_option,
    new_table,
    print_rows,
    stdin_is_tty,
)
from tower.cli.exports import ExportKey
from tower.client.api import TowerApi
from tower.core import crypto

#: `-e` of the commands that act on one secret.
secret_environment_option = environment_option("The environment the secret belongs to.")


@click.group("secrets")
def secrets_group() -> None:
    """Create, list and delete secrets.

    Secrets of the `default` environment are inherited by every other environment
    unless it has its own secret of the same name.
    """


@secrets_group.command("list")
@environment_option("Show what a run in this environment gets (inherited secrets included).")
@all_environments_option
@click.option("--show", is_flag=True, help="Show the values instead of masked previews.")
@json_option("Print the secrets as JSON (with --show: including their values).")
def list_command(environment: str, all_environments: bool, show: bool, as_json: bool) -> None:
    """List secrets, masked unless --show is given."""
    client = api()
    if show:
        rows = _revealed(client, environment, all_environments)
        value_column = "Value"
    else:
        rows = client.list_secrets(environment, all_environments=all_environments)
        value_column = "Preview"
    print_rows(
        rows,
        partial(_secrets_table, value_column=value_column),
        as_json=as_json,
        empty=(
            f"No secrets found in {environment_scope(environment, all_environments)}. "
            "Create one with `tower secrets create --name=NAME --value=VALUE`."
        ),
    )


def _revealed(client: TowerApi, environment: str, all_environments: bool) -> list[dict[str, Any]]:
    """The secrets with their values, exported to a key made for this command alone."""
    export_key = ExportKey()
    with output.spinner("Fetching secrets..."):
        items = client.export_secrets(
            export_key.public_pem, environment, all_environments=all_environments
        )
    return [
        {
            "name": item.get("name", ""),
            "environment": item.get("environment", ""),
            "value": export_key.open(item),
        }
        for item in items
    ]


def _secrets_table(rows: list[dict[str, Any]], value_column: str) -> Table:
    table = new_table("Secret", "Environment", value_column)
    key = value_column.lower()
    for row in rows:
        # Plain strings, never Rich markup: names and values are user data.
        table.add_row(
            str(row.get("name", "")), str(row.get("environment", "")), str(row.get(key, ""))
        )
    return table


@secrets_group.command("create")
@click.option("-n", "--name", required=True, help="The secret's name (an env var in runs).")
@click.option(
    "-v",
    "--value",
    default=None,
    help="The secret's value; asked for (hidden) when omitted at a terminal.",
)
@secret_environment_option
def create_command(name: str, value: str | None, environment: str) -> None:
    """Create a secret (encrypted on this machine before it is sent)."""
    if value is None:
        if not stdin_is_tty():
            raise click.UsageError("Give the value with -v/--value.")
        value = click.prompt("Value", hide_input=True)
    client = api()
    with output.spinner("Creating secret..."):
        server_key = crypto.load_public_key(client.secrets_key())
        client.create_secret(
            name,
            crypto.hybrid_encrypt(server_key, value),
            crypto.preview(value),
            environment=environment,
        )
    output.success(f'Secret "{name}" was created')


@secrets_group.command("delete")
@click.argument("name")
@secret_environment_option
def delete_command(name: str, environment: str) -> None:
    """Delete a secret: NAME or ENV/NAME.

    ENV/NAME wins over --environment, as in the official CLI.
    """
    secret_name, environment = split_qualified_name(name, environment)
    client = api()
    with output.spinner("Deleting secret..."):
        client.delete_secret(secret_name, environment=environment)
    output.success(f'Secret "{secret_name}" was deleted from environment "{environment}"')


def split_qualified_name(name: str, environment: str) -> tuple[str, str]:
    """`ENV/NAME` → (NAME, ENV), as the official CLI reads it; NAME keeps `environment`."""
    prefix, sep, rest = name.partition("/")
    if sep and prefix and rest:
        return rest, prefix
    return name, environment
