"""`tower catalogs ...`: list, show, create and delete Iceberg catalogs.

Property values never travel in the clear: `create` encrypts each one to the server's
public key on this machine; the server only ever shows masked previews.
"""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from tower.cli import output
from tower.cli.common import (
    all_environments_option,
    api,
    confirm,
    environment_option,
    environment_scope,
    json_option,
    new_table,
    parse_key_values,
    print_rows,
    yes_option,
)
from tower.core import crypto
from tower.core.catalogs import CATALOG_TYPES

TYPE_CHOICES = sorted(CATALOG_TYPES)


@click.group("catalogs")
def catalogs_group() -> None:
    """Manage Iceberg catalogs.

    Apps load a catalog by its name with `tower.tables(..., catalog=NAME)` or
    pyiceberg's `load_catalog(NAME)`. Catalogs of the `default` environment are
    inherited by every other environment unless it has its own of the same name.
    """


#: `-e` of the commands that act on one catalog.
catalog_environment_option = environment_option("The environment the catalog belongs to.")


@catalogs_group.command("list")
@environment_option("Show what a run in this environment sees (inherited catalogs included).")
@all_environments_option
@click.option("--type", "catalog_type", default=None, help="Only catalogs of this type.")
@json_option("Print the catalogs as JSON.")
def list_command(
    environment: str, all_environments: bool, catalog_type: str | None, as_json: bool
) -> None:
    """List catalogs."""
    rows = api().list_catalogs(
        environment, all_environments=all_environments, catalog_type=catalog_type
    )
    print_rows(
        rows,
        _catalogs_table,
        as_json=as_json,
        empty=(
            f"No catalogs found in {environment_scope(environment, all_environments)}. "
            "Create one with "
            "`tower catalogs create NAME --type TYPE -p uri=... -p warehouse=...`."
        ),
    )


def _catalogs_table(rows: list[dict[str, Any]]) -> Table:
    table = new_table("Catalog", "Type", "Environment", "Properties")
    for row in rows:
        # Plain strings, never Rich markup: names are user data.
        table.add_row(
            str(row.get("name", "")),
            str(row.get("type", "")),
            str(row.get("environment", "")),
            ", ".join(str(p.get("name", "")) for p in row.get("properties") or []),
        )
    return table


@catalogs_group.command("show")
@click.argument("name")
@environment_option("The environment to look in (its own catalog, or the inherited one).")
@json_option("Print the catalog as JSON.")
def show_command(name: str, environment: str, as_json: bool) -> None:
    """Show a catalog and its properties (values masked)."""
    catalog = api().describe_catalog(name, environment).get("catalog") or {}
    if as_json:
        output.print_json(catalog)
        return
    output.print_details(
        [
            ("Name", str(catalog.get("name", name))),
            ("Type", str(catalog.get("type", ""))),
            ("Environment", str(catalog.get("environment", ""))),
            ("Created", output.format_timestamp(catalog.get("created_at"))),
        ]
    )
    properties = catalog.get("properties") or []
    if not properties:
        output.info("No properties.")
        return
    output.print_table(_properties_table(properties))


def _properties_table(properties: list[dict[str, Any]]) -> Table:
    table = new_table("Property", "Preview", "Environment variable")
    for prop in properties:
        table.add_row(
            str(prop.get("name", "")),
            str(prop.get("preview", "")),
            str(prop.get("environment_variable") or ""),
        )
    return table


@catalogs_group.command("create")
@click.argument("name")
@click.option(
    "-t",
    "--type",
    "catalog_type",
    required=True,
    type=click.Choice(TYPE_CHOICES),
    help="The kind of Iceberg catalog.",
)
@click.option(
    "-p",
    "--property",
    "properties",
    multiple=True,
    metavar="KEY=VALUE",
    help="A catalog property (repeat), e.g. -p uri=https://... -p warehouse=lake.",
)
@click.option(
    "--variable",
    "variables",
    multiple=True,
    metavar="KEY=ENV_VAR",
    help="Give property KEY to runs as ENV_VAR instead of PYICEBERG_CATALOG__<NAME>__<KEY>.",
)
@catalog_environment_option
def create_command(
    name: str,
    catalog_type: str,
    properties: tuple[str, ...],
    variables: tuple[str, ...],
    environment: str,
) -> None:
    """Create a catalog (values are encrypted on this machine before they are sent).

    \b
    Required properties by type:
      apache-polaris, snowflake-open-catalog, lakekeeper: uri, credential, scope, warehouse
      cloudflare-r2-catalog: uri, warehouse, token
      s3-tables: access-key-id, secret-access-key, warehouse, region
      pyiceberg-sql: uri, warehouse
    """
    values = parse_key_values(properties, "property")
    own_variables = parse_key_values(variables, "variable")
    unknown = sorted(set(own_variables) - set(values))
    if unknown:
        raise click.BadParameter(
            f"No property {', '.join(unknown)} was given with -p.", param_hint="--variable"
        )
    client = api()
    with output.spinner("Creating catalog..."):
        server_key = crypto.load_public_key(client.secrets_key())
        payload = []
        for key, value in values.items():
            item = {
                "name": key,
                "encrypted_value": crypto.hybrid_encrypt(server_key, value),
                "preview": crypto.preview(value),
            }
            if key in own_variables:
                item["environment_variable"] = own_variables[key]
            payload.append(item)
        client.create_catalog(name, catalog_type, payload, environment=environment)
    output.success(f'Catalog "{name}" was created in environment "{environment}"')


@catalogs_group.command("delete")
@click.argument("name")
@catalog_environment_option
@yes_option
def delete_command(name: str, environment: str, yes: bool) -> None:
    """Delete a catalog. The tables and data it points at are not touched."""
    confirm(f"Delete catalog '{name}' from environment '{environment}'?", yes=yes)
    client = api()
    with output.spinner("Deleting catalog..."):
        client.delete_catalog(name, environment=environment)
    output.success(f'Catalog "{name}" was deleted from environment "{environment}"')
