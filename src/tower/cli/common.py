"""Small pieces several commands share: the API factory hook, TTY checks, run refs."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from tower.cli import config
from tower.client.api import TowerApi
from tower.core.towerfile import Towerfile, load_towerfile


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
