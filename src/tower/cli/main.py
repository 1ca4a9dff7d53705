"""The `tower` command: entry point, command registry and error reporting.

Heavy commands (`tower up`, `tower server`: FastAPI, SQLAlchemy, uvicorn) are
registered lazily by import path, so `tower --help` and everyday commands start fast
and work on an install without the server extra.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import click

from tower.cli import output
from tower.cli.apps import apps_group
from tower.cli.deploy import deploy_command
from tower.cli.run import run_command
from tower.cli.runs import runs_group
from tower.client import ApiError, ConnectionFailed
from tower.core.errors import TowerError

DIST_NAME = "tower-oss"
CREDENTIALS_REJECTED = (
    "Not logged in or the credentials were rejected by {url}. Run `tower up` (local "
    "server), or set TOWER_URL and TOWER_API_KEY (or TOWER_JWT)."
)


def tower_version() -> str:
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return "0+unknown"


class TowerGroup(click.Group):
    """A click group with lazily imported subcommands and friendly error reporting.

    `lazy_commands` maps a command name to `(module, attribute, short help)`; the
    module is imported only when that command actually runs.
    """

    def __init__(
        self, *args: Any, lazy_commands: dict[str, tuple[str, str, str]] | None = None, **kw: Any
    ) -> None:
        super().__init__(*args, **kw)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy_commands:
            command = self._load(cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing commands must not import the lazy ones: their help text is stored here.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name][2]))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            output.error(describe_api_error(exc))
        except ConnectionFailed as exc:
            output.error(str(exc))
        except TowerError as exc:
            output.error(exc.message)
        ctx.exit(1)

    def _load(self, name: str) -> click.Command:
        module_name, attribute, _ = self.lazy_commands[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.ClickException(
                f"`tower {name}` is not available in this installation ({exc}). "
                "Install the server extra: pip install 'tower-oss[server]'."
            ) from exc
        command = getattr(module, attribute)
        self.add_command(command, name)
        return command


def describe_api_error(exc: ApiError) -> str:
    if exc.status == 401:
        from tower.cli import config

        return CREDENTIALS_REJECTED.format(url=config.load_config().url)
    if exc.status >= 500:
        return f"The Tower server failed ({exc.status}): {exc.describe()}"
    return exc.describe()


LAZY_COMMANDS = {
    "up": ("tower.cli.up", "up_command", "Start Tower on this machine (server + runner)."),
    "server": ("tower.cli.up", "server_command", "Start the Tower control plane only."),
    "environments": (
        "tower.cli.environments",
        "environments_group",
        "List, create and delete environments.",
    ),
    "secrets": ("tower.cli.secrets", "secrets_group", "Create, list and delete secrets."),
    "catalogs": ("tower.cli.catalogs", "catalogs_group", "Manage Iceberg catalogs."),
    "runners": ("tower.cli.runners", "runners_group", "List runners, create runner credentials."),
    "teams": ("tower.cli.teams", "teams_group", "List and switch teams; manage members."),
    "audit": ("tower.cli.audit", "audit_group", "Show who changed what in the account."),
    "login": ("tower.cli.login", "login_command", "Log in to a Tower server (browser or API key)."),
    "schedules": (
        "tower.cli.schedules",
        "schedules_group",
        "Create, list, update and delete schedules.",
    ),
}


@click.group(cls=TowerGroup, lazy_commands=LAZY_COMMANDS)
@click.version_option(tower_version(), "--version", "-V", prog_name="tower")
def cli() -> None:
    """Tower: deploy, run and watch your data apps."""


@cli.command("version")
def version_command() -> None:
    """Print the version of this Tower CLI."""
    output.info(f"tower {tower_version()}")


@cli.group("runner")
def runner_group() -> None:
    """Run the processes that execute apps."""


@runner_group.command("start")
def runner_start_command() -> None:
    """Start a runner that claims runs from the control plane (settings: TOWER_* env)."""
    # Imported here: the runner pulls in venv, sandbox and process management.
    from tower.runner.agent import main as runner_main

    sys.exit(runner_main())


cli.add_command(apps_group)
cli.add_command(deploy_command)
cli.add_command(run_command)
cli.add_command(runs_group)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`tower = tower.cli.main:main`)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="tower")


if __name__ == "__main__":
    main()
