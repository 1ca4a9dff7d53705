"""`tower run`: start an app on Tower and follow it, or run it on this machine (`--local`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tower.cli import config, output
from tower.cli.common import (
    api,
    directory_option,
    environment_option,
    parameters_callback,
    run_link,
    towerfile_in,
)
from tower.cli.exports import ExportKey
from tower.cli.follow import RunFollower
from tower.client import ApiError
from tower.client.api import TowerApi
from tower.core.catalogs import env_var_name, is_sensitive
from tower.core.errors import AppNotFound

#: The shell convention for "stopped by Ctrl-C".
EXIT_INTERRUPTED = 130
#: Run fields a server may use to say why a run errored, most specific first.
ERROR_REASON_KEYS = ("status_message",)
#: the environment name a local run reports (tower.info.environment(), TOWER_ENVIRONMENT)
LOCAL_ENVIRONMENT = "local"


@click.command("run")
@click.argument("app", required=False)
@directory_option
@environment_option()
@click.option(
    "-p",
    "--parameter",
    "parameters",
    multiple=True,
    metavar="KEY=VALUE",
    callback=parameters_callback,
    help="A parameter for this run; repeat for several.",
)
@click.option("--detached", is_flag=True, help="Schedule the run and return at once.")
@click.option("--local", is_flag=True, help="Run the app in DIR on this machine.")
@click.pass_context
def run_command(
    ctx: click.Context,
    app: str | None,
    directory: Path,
    environment: str,
    parameters: dict[str, str],
    detached: bool,
    local: bool,
) -> None:
    """Run an app on Tower (or here, with --local) and stream its logs.

    APP defaults to the app of the Towerfile in DIR.
    """
    if local:
        if detached:
            raise click.UsageError("--detached applies to runs on Tower, not to --local runs.")
        ctx.exit(run_locally(directory, app, environment, parameters))
    name = app or towerfile_in(directory).name
    client = api()
    run = schedule(client, name, environment, parameters)
    number = run["number"]
    output.success(f"Run #{number} for app `{name}` has been scheduled")
    if detached:
        output.info(f"See more: {run_link(run)}")
        return
    ctx.exit(follow(client, str(run.get("app_name") or name), number))


def schedule(
    client: TowerApi, name: str, environment: str, parameters: dict[str, str]
) -> dict[str, Any]:
    try:
        with output.spinner("Scheduling run..."):
            return client.run_app(name, environment=environment, parameters=parameters)["run"]
    except ApiError as exc:
        if exc.status != 404:
            raise
        message = exc.describe()
        if "tower deploy" not in message:  # the server may already name the fix
            message += f"\nDeploy app `{name}` first with `tower deploy`."
        raise AppNotFound(message) from exc


def follow(client: TowerApi, name: str, number: int) -> int:
    """Stream the run's logs until it ends; the exit code says how it ended."""
    output.stderr.print(
        f"Streaming logs of run #{number}... (Ctrl-C stops following; the run keeps going)",
        style="dim",
        markup=False,
    )
    try:
        run = RunFollower(client, name, number, on_line=output.print_log_line).follow()
    except KeyboardInterrupt:
        # Leaving the terminal must not cost the run: we only stop watching it.
        output.warning(f"Stopped following run #{number}; it is still running on Tower.")
        output.warning(
            f"See it later with `tower apps logs {name}#{number}` or `tower apps show {name}`."
        )
        return EXIT_INTERRUPTED
    return report_outcome(run)


def report_outcome(run: dict[str, Any]) -> int:
    number = run.get("number")
    status = str(run.get("status", "")).lower()
    if status == "exited":
        output.success(f"Run #{number} exited cleanly.")
        return 0
    if status == "crashed":
        output.error(f"Run #{number} crashed with exit code {run.get('exit_code')}")
    elif status == "errored":
        reason = error_reason(run)
        output.error(f"Run #{number} errored: {reason}" if reason else f"Run #{number} errored.")
    elif status == "cancelled":
        output.error(f"Run #{number} was cancelled.")
    else:
        output.error(f"Run #{number} ended with status '{status}'.")
    return 1


def error_reason(run: dict[str, Any]) -> str:
    for key in ERROR_REASON_KEYS:
        value = run.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


@dataclass(frozen=True)
class LocalRuntime:
    """What a local run gets from the server: secrets and catalog variables, in memory."""

    secrets: dict[str, str] = field(default_factory=dict)
    catalog_variables: dict[str, str] = field(default_factory=dict)
    masked: tuple[str, ...] = ()


def exported_runtime(environment: str) -> LocalRuntime:
    """The environment's secrets and catalogs, exported to a key pair that lives only in
    this process (the API never returns a plaintext value), then decrypted here."""
    export_key = ExportKey()
    with api() as client:
        secrets = client.export_secrets(export_key.public_pem, environment)
        catalogs = client.export_catalogs(export_key.public_pem, environment)

    variables: dict[str, str] = {}
    masked: list[str] = []
    for catalog in catalogs:
        for prop in catalog.get("properties") or []:
            value = export_key.open(prop)
            name = str(prop.get("name", ""))
            slug = str(catalog.get("name", ""))
            variables[prop.get("environment_variable") or env_var_name(slug, name)] = value
            if is_sensitive(name):
                masked.append(value)
    return LocalRuntime(
        secrets={str(item.get("name", "")): export_key.open(item) for item in secrets},
        catalog_variables=variables,
        masked=tuple(masked),
    )


def run_locally(
    directory: Path, app: str | None, environment: str, parameters: dict[str, str]
) -> int:
    """Run the app in `directory` on this machine, printing its output as it comes."""
    towerfile = towerfile_in(directory)
    if app and app != towerfile.name:
        raise click.UsageError(
            f"--local runs the app in {directory} (`{towerfile.name}`), not `{app}`. "
            "Drop the app name or point --dir at its directory."
        )
    # Imported here: the local runner pulls in process and venv management.
    from tower.cli.deploy import build
    from tower.runner.local import run_local

    # Building first shows packaging mistakes (missing script, bad globs) exactly as a
    # deploy would, before any dependency is installed.
    package = build(towerfile)
    settings = config.load_config()
    runtime = exported_runtime(environment) if settings.has_credentials else LocalRuntime()
    output.success(f"App `{towerfile.name}` has been launched")
    code = run_local(
        towerfile.base_dir,
        parameters=parameters,
        secrets=runtime.secrets,
        catalog_variables=runtime.catalog_variables,
        masked=runtime.masked,
        # The app sees `local` (tower.info.environment(), TOWER_ENVIRONMENT), as the docs
        # show; `environment` chose whose secrets and catalogs it gets.
        environment=LOCAL_ENVIRONMENT,
        tower_url=settings.url if settings.has_credentials else None,
        jwt=settings.jwt,
        out=output.print_local_line,
        package=package,
    )
    if code == 0:
        output.success("Your app exited cleanly.")
        return 0
    # `code` is 0/1 from run_local; the app's own exit code is in the line above.
    output.error("Your local run did not exit cleanly.")
    return 1
