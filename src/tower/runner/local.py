"""`tower run --local`: run an app from a directory through the runner's execution path.

The app is packaged in memory exactly as `tower deploy` would package it, extracted
into a temp dir and executed by :func:`tower.runner.execute.execute` — the same code
the runner agent uses — with `TOWER__RUNTIME__IS_LOCAL=true`. Every line (setup and
program) is printed as `YYYY-MM-DD HH:MM:SS | <content>` (UTC).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tower.core.errors import UnknownParameter
from tower.core.package import BuiltPackage, build_package, extract_package
from tower.core.runs import RunStatus
from tower.core.towerfile import Towerfile, load_towerfile
from tower.runner.environment import RunContext
from tower.runner.execute import Outcome, execute
from tower.runner.logs import LineSink, printing_sink
from tower.runner.masking import SecretMasker
from tower.runner.settings import (
    RunnerSettings,
    installer_environment,
    run_parent_environment,
)
from tower.runner.venvs import VenvCache

logger = logging.getLogger(__name__)

TEMP_PREFIX = "tower-local-"
PACKAGE_DIR_NAME = "package"
WORK_DIR_NAME = "work"
#: exit code of `tower run --local` when the app did not exit cleanly
FAILURE_EXIT_CODE = 1


def merge_parameters(towerfile: Towerfile, given: Mapping[str, str]) -> dict[str, str]:
    """Towerfile defaults overlaid by `given`; an undeclared name is an error."""
    defaults = towerfile.parameter_defaults()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        declared = ", ".join(sorted(defaults)) or "none"
        raise UnknownParameter(
            f"Unknown parameter {unknown[0]!r}: the Towerfile {towerfile.path} does not declare "
            f"it (declared: {declared}). Add a [[parameters]] entry or fix the name.",
            value=unknown[0],
        )
    return {**defaults, **{k: str(v) for k, v in given.items()}}


def default_venv_cache(settings: RunnerSettings | None = None) -> VenvCache:
    """The venv cache under `$TOWER_HOME/runner`, shared with the local runner agent."""
    settings = settings or RunnerSettings.from_env()
    return VenvCache(
        settings.venvs_dir,
        uv_cache_dir=settings.uv_cache_dir,
        sdk_dir=settings.sdk_dir,
        python=settings.python,
        base_env=installer_environment(),
    )


def run_local(
    directory: Path,
    *,
    parameters: dict[str, str],
    secrets: dict[str, str],
    environment: str,
    catalog_variables: dict[str, str] | None = None,
    masked: Sequence[str] = (),
    tower_url: str | None,
    jwt: str | None,
    out: Callable[[str], None],
    venvs: VenvCache | None = None,
    package: BuiltPackage | None = None,
) -> int:
    """Run the app in `directory` locally; 0 when it exited cleanly, else 1.

    `package` is the app already built from `directory` (the CLI builds it first to
    report packaging mistakes); without it the package is built here.

    Raises TowerfileError, PackageError or UnknownParameter before anything runs.
    """
    towerfile = load_towerfile(Path(directory))
    merged = merge_parameters(towerfile, parameters)
    built = package or build_package(towerfile)
    ctx = RunContext(
        environment=environment,
        parameters=merged,
        secrets=dict(secrets),
        catalog_variables=dict(catalog_variables or {}),
        app_name=towerfile.name,
        is_local=True,
        tower_url=tower_url,
        jwt=jwt,
    )
    try:
        masker = SecretMasker([*secrets.values(), *masked])
        sink = printing_sink(out, redact=masker or None)
        outcome = _execute_package(built.data, ctx, venvs or default_venv_cache(), sink)
    except KeyboardInterrupt:
        out("Your local run was cancelled.")
        return FAILURE_EXIT_CODE
    out(summary(outcome))
    return 0 if outcome.status == RunStatus.EXITED else FAILURE_EXIT_CODE


def _execute_package(data: bytes, ctx: RunContext, venvs: VenvCache, sink: LineSink) -> Outcome:
    """Extract the package into a temp dir, run it there, and always remove the dir."""
    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as temp:
        package_dir = Path(temp) / PACKAGE_DIR_NAME
        manifest = extract_package(data, package_dir)
        return execute(
            package_dir,
            manifest,
            ctx,
            venvs,
            sink,
            work_dir=Path(temp) / WORK_DIR_NAME,
            parent_env=run_parent_environment(),
        )


def summary(outcome: Outcome) -> str:
    """The closing sentence of a local run, as the official CLI words it."""
    if outcome.status == RunStatus.EXITED:
        return "Your local run exited cleanly."
    if outcome.status == RunStatus.CRASHED:
        return f"Your local run crashed with exit code: {outcome.exit_code}"
    headline = (outcome.message or "unknown error").splitlines()[0]
    return f"Your local run failed due to a platform error: {headline}"
