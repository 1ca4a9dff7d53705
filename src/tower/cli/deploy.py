"""`tower deploy`: build the package from the Towerfile and upload it as a new version."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tower.cli import output
from tower.cli.common import api, directory_option, stdin_is_tty, towerfile_in
from tower.client import ApiError
from tower.client.api import TowerApi
from tower.core.errors import AppNotFound
from tower.core.towerfile import Towerfile

#: A repeated idempotency key answered with a version older than this means "nothing new".
REUSE_HINT_AGE = timedelta(seconds=60)
GIT_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


@click.command("deploy")
@directory_option
@click.option("-e", "--environment", default=None, help="Deploy to this environment [default].")
@click.option("--all", "all_environments", is_flag=True, help="Deploy to every environment.")
@click.option("-f", "--create", is_flag=True, help="Create the app if it does not exist yet.")
@click.option(
    "--idempotency-key", default=None, help="Deploy only once per key (default: git HEAD)."
)
@click.option("--no-idempotency-key", is_flag=True, help="Send no idempotency key.")
def deploy_command(
    directory: Path,
    environment: str | None,
    all_environments: bool,
    create: bool,
    idempotency_key: str | None,
    no_idempotency_key: bool,
) -> None:
    """Build the app in DIR and deploy it as a new version."""
    if environment and all_environments:
        raise click.UsageError("Use either --environment or --all, not both.")
    if idempotency_key and no_idempotency_key:
        raise click.UsageError("Use either --idempotency-key or --no-idempotency-key, not both.")

    towerfile = towerfile_in(directory)
    package = build(towerfile)
    client = api()
    ensure_app(client, towerfile, create=create)

    key = None if no_idempotency_key else (idempotency_key or git_head_if_clean(directory))
    body = upload(client, towerfile.name, package, environment, all_environments, key)
    report(body.get("version") or {}, towerfile.name, environment, all_environments, key)


def build(towerfile: Towerfile) -> Any:
    """Build the package behind a spinner (raises PackageError with the fix)."""
    # Imported here: only deploy and local runs need the packager.
    from tower.core.package import build_package

    with output.spinner("Building package..."):
        return build_package(towerfile)


def ensure_app(client: TowerApi, towerfile: Towerfile, *, create: bool) -> None:
    """Make sure the app exists, creating it when allowed (flag or a person saying yes)."""
    name = towerfile.name
    try:
        client.describe_app(name)
        return
    except ApiError as exc:
        if exc.status != 404:
            raise
    if not create:
        if not stdin_is_tty():
            raise AppNotFound(
                f"App '{name}' does not exist. Run `tower deploy --create` to create it "
                f"while deploying, or create it first with `tower apps create --name {name}`."
            )
        if not click.confirm(f"App '{name}' does not exist. Create it?", default=True):
            raise AppNotFound(
                f"Deploy cancelled: app '{name}' does not exist. "
                f"Create it with `tower apps create --name {name}`."
            )
    with output.spinner("Creating app..."):
        client.create_app(name, short_description=towerfile.description)


def upload(
    client: TowerApi,
    name: str,
    package: Any,
    environment: str | None,
    all_environments: bool,
    key: str | None,
) -> dict[str, Any]:
    """Stream the package to the server with a byte progress bar on stderr."""
    columns = (
        TextColumn("Deploying to Tower..."),
        TimeElapsedColumn(),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=output.stderr) as progress:
        task = progress.add_task("upload", total=package.size)
        return client.deploy(
            name,
            package.data,
            package.sha256,
            # Name the target even for the default, as the official CLI does.
            environment=None if all_environments else (environment or "default"),
            all_environments=all_environments,
            idempotency_key=key,
            on_progress=lambda sent: progress.update(task, completed=sent),
        )


def report(
    version: dict[str, Any],
    name: str,
    environment: str | None,
    all_environments: bool,
    key: str | None,
) -> None:
    label = version_label(version.get("version"))
    created = output.parse_timestamp(version.get("created_at"))
    if key and version.get("idempotency_key") == key and is_old(created):
        output.info(f"No changes since {key} (deployed on {output.format_timestamp(created)} UTC)")
    if all_environments:
        # Our server names the environments a version is pinned to; others do not.
        landed = version.get("environments")
        names = f" ({', '.join(map(str, landed))})" if isinstance(landed, list) and landed else ""
        target = f"to all environments{names}!"
    else:
        target = f"to environment '{environment or 'default'}'!"
    output.success(f"Version `{label}` of app `{name}` has been deployed {target}")


def is_old(created: datetime | None) -> bool:
    """Whether a version the server returned was made before this deploy started.

    A repeated idempotency key gets the existing version back; its age tells "nothing
    new to deploy" apart from "we just made it" (a retry of our own request).
    """
    return created is not None and datetime.now(UTC) - created > REUSE_HINT_AGE


def version_label(value: Any) -> str:
    """`v3` whether the server says `v3` or `3`."""
    text = str(value or "?")
    return f"v{text}" if text.isdigit() else text


def git_head_if_clean(directory: Path) -> str | None:
    """The HEAD commit when `directory` is in a git worktree with no changes, else None.

    Any failure (no git, not a repository, no commit yet) just means "no key": the
    idempotency key is an optimisation, never a reason to fail a deploy.
    """
    try:
        head = _git(directory, "rev-parse", "HEAD")
        # Untracked files count as changes: they may well end up in the package.
        status = _git(directory, "status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return None
    if status.strip():
        return None
    sha = head.strip()
    return sha if GIT_SHA_RE.match(sha) else None


def _git(directory: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(directory), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=15,
    )
    return result.stdout
