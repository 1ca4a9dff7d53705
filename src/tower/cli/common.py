"""Small pieces several commands share: the API factory hook, TTY checks and
confirmations, run refs, the common options and the house table style."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich import box
from rich.table import Table

from tower.cli import config, output
from tower.client.api import TowerApi
from tower.core.towerfile import Towerfile, load_towerfile

F = TypeVar("F", bound=Callable[..., Any])
Rows = list[dict[str, Any]]

#: The environment every account has; the others inherit its secrets and catalogs.
DEFAULT_ENVIRONMENT = "default"


def api() -> TowerApi:
    """The API client for this invocation.

    Looked up through the module at call time so tests can monkeypatch
    `tower.cli.config.make_api`.
    """
    return config.make_api()


def stdin_is_tty() -> bool:
    """Whether we may ask the person a question (scripts and CI never get prompts)."""
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def towerfile_in(directory: Path) -> Towerfile:
    """The Towerfile of an app directory (raises TowerfileError with the fix)."""
    return load_towerfile(directory)


def parse_key_values(values: Iterable[str], what: str = "parameter") -> dict[str, str]:
    """`["a=1", "b=x=y"]` → `{"a": "1", "b": "x=y"}`; a bad item raises click.BadParameter."""
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"{item!r} is not KEY=VALUE. Write the {what} as e.g. -p name=value."
            )
        result[key.strip()] = value
    return result


def parameters_callback(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """click callback for repeatable `-p/--parameter k=v` options."""
    return parse_key_values(values)


def parse_run_ref(app: str, number: str | None) -> tuple[str, int | None]:
    """`name#7`, (`name`, `7`) or `name` → (name, number or None)."""
    name = app
    raw = number
    if "#" in app:
        name, _, from_ref = app.rpartition("#")
        if number is not None:
            raise click.UsageError(f"Give the run number once: `{app}` or `{name} {number}`.")
        raw = from_ref
    if not name:
        raise click.BadParameter(f"{app!r} does not name an app.", param_hint="APP")
    if raw is None:
        return name, None
    try:
        value = int(raw)
    except ValueError:
        raise click.BadParameter(
            f"{raw!r} is not a run number (use e.g. `{name}#3`).", param_hint="APP"
        ) from None
    if value < 1:
        raise click.BadParameter(f"Run numbers start at 1, got {value}.", param_hint="APP")
    return name, value


def run_link(run: dict[str, Any]) -> str:
    return str(run.get("$link") or "")


#: `-d/--dir`: the app directory, shared by the commands that read a Towerfile.
directory_option = click.option(
    "-d",
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The app directory (holding the Towerfile).",
)


def environment_option(help: str | None = None) -> Callable[[F], F]:
    """`-e/--environment`, `default` unless given; `help` says what it chooses here."""
    return click.option(
        "-e", "--environment", default=DEFAULT_ENVIRONMENT, show_default=True, help=help
    )


#: `-a/--all`: every environment instead of the one `-e` names.
all_environments_option = click.option(
    "-a", "--all", "all_environments", is_flag=True, help="Every environment."
)


def json_option(help: str) -> Callable[[F], F]:
    """`--json`: print what the API answered instead of a table."""
    return click.option("--json", "as_json", is_flag=True, help=help)


#: `-y/--yes`: for commands that ask before they destroy something.
yes_option = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")


def confirm(question: str, *, yes: bool, unanswered: str | None = None) -> None:
    """Ask `question` unless --yes was given; a "no" aborts the command.

    Only a person at a terminal is asked: scripts pass through without hanging, or,
    where going on unasked would be too much, fail with the usage error `unanswered`.
    """
    if yes:
        return
    if stdin_is_tty():
        click.confirm(question, abort=True)
    elif unanswered is not None:
        raise click.UsageError(unanswered)


def environment_scope(environment: str, all_environments: bool) -> str:
    """Where a listing looked, for its "nothing found" message."""
    return "any environment" if all_environments else f"environment '{environment}'"


def new_table(*columns: str) -> Table:
    """A table in the house style (a bold header over a rule, no borders), with `columns`."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def print_rows(rows: Rows, table: Callable[[Rows], Table], *, as_json: bool, empty: str) -> None:
    """A listing: the rows as JSON with --json, else their table, or `empty` if none."""
    if as_json:
        output.print_json(rows)
        return
    if not rows:
        output.info(empty)
        return
    output.print_table(table(rows))
