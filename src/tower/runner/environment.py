"""The scrubbed environment a user app runs with (contract §4.3, §7.3, §7.5).

Pure: nothing here reads `os.environ`; the caller passes the few parent variables
it wants to forward (see `tower.runner.settings.run_parent_environment`).

Precedence, later wins:
1. LANG, LC_ALL and TZ forwarded from the runner;
2. catalog properties (`PYICEBERG_CATALOG__<SLUG>__<PROPERTY>`, or their own variable);
3. secrets (a key `dlt.x.y` becomes `X__Y`);
4. parameters;
5. what Tower itself controls: PATH, HOME, TMPDIR, VIRTUAL_ENV, PYTHONPATH,
   PYTHONUNBUFFERED, `TOWER__RUNTIME__*`, TOWER_ENVIRONMENT, TOWER_URL, TOWER_JWT.
   A secret or parameter can never break the interpreter lookup or the run's identity.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: parent variables forwarded as low-precedence defaults
FORWARDED_VARS = ("LANG", "LC_ALL", "TZ")
#: secret keys with this prefix are dlt configuration keys
DLT_PREFIX = "dlt."
RUNTIME_PREFIX = "TOWER__RUNTIME__"


@dataclass(frozen=True)
class RunContext:
    """Who and what is running; unset optional fields are left out of the environment."""

    environment: str = "default"
    parameters: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    catalog_variables: Mapping[str, str] = field(default_factory=dict)
    run_id: str | None = None
    run_number: int | None = None
    app_name: str | None = None
    team_name: str | None = None
    runner_name: str | None = None
    runner_id: str | None = None
    is_tower_managed: bool | None = None
    is_local: bool | None = None
    is_manual_run: bool | None = None
    schedule_id: str | None = None
    schedule_name: str | None = None
    tower_url: str | None = None
    jwt: str | None = None


@dataclass(frozen=True)
class RunPaths:
    """Where the run's files live."""

    app_dir: Path
    module_dirs: tuple[Path, ...]
    venv_dir: Path
    home_dir: Path
    tmp_dir: Path


def secret_env_name(key: str) -> str:
    """The variable a secret is exposed as: `dlt.x.y` → `X__Y`, anything else unchanged."""
    if key.startswith(DLT_PREFIX):
        return key[len(DLT_PREFIX) :].replace(".", "__").upper()
    return key


def runtime_variables(ctx: RunContext) -> dict[str, str]:
    """The `TOWER__RUNTIME__*` variables `tower.info` reads, for the fields that are set."""
    values: dict[str, str | int | bool | None] = {
        "RUN_ID": ctx.run_id,
        "RUN_NUMBER": ctx.run_number,
        "APP_NAME": ctx.app_name,
        "TEAM_NAME": ctx.team_name,
        "ENVIRONMENT_NAME": ctx.environment,
        "IS_TOWER_MANAGED": ctx.is_tower_managed,
        "IS_LOCAL": ctx.is_local,
        "RUNNER_NAME": ctx.runner_name,
        "RUNNER_ID": ctx.runner_id,
        "IS_MANUAL_RUN": ctx.is_manual_run,
        "SCHEDULE_ID": ctx.schedule_id,
        "SCHEDULE_NAME": ctx.schedule_name,
    }
    return {
        RUNTIME_PREFIX + name: _env_value(value)
        for name, value in values.items()
        if value is not None and value != ""
    }


def build_environment(
    ctx: RunContext, paths: RunPaths, parent_env: Mapping[str, str]
) -> dict[str, str]:
    """The complete environment of the app process, starting from nothing."""
    env = {name: parent_env[name] for name in FORWARDED_VARS if name in parent_env}
    env.update({str(k): str(v) for k, v in ctx.catalog_variables.items()})
    env.update({secret_env_name(k): str(v) for k, v in ctx.secrets.items()})
    env.update({str(k): str(v) for k, v in ctx.parameters.items()})
    env.update(_system_variables(paths, parent_env))
    env.update(runtime_variables(ctx))
    env.update(_tower_variables(ctx))
    return env


def interpreter_environment(paths: RunPaths, parent_env: Mapping[str, str]) -> dict[str, str]:
    """What a run's environment holds whatever the run and its package: the forwarded
    variables and Tower's system variables except PYTHONPATH (which names the package's
    directories). A pre-started interpreter starts with exactly this."""
    env = {name: parent_env[name] for name in FORWARDED_VARS if name in parent_env}
    env.update(_system_variables(paths, parent_env))
    del env["PYTHONPATH"]
    return env


def _system_variables(paths: RunPaths, parent_env: Mapping[str, str]) -> dict[str, str]:
    venv_bin = str(paths.venv_dir / "bin")
    parent_path = parent_env.get("PATH", os.defpath)
    python_path = [str(p) for p in paths.module_dirs] + [str(paths.app_dir)]
    return {
        "PATH": os.pathsep.join([venv_bin, parent_path]) if parent_path else venv_bin,
        "HOME": str(paths.home_dir),
        "TMPDIR": str(paths.tmp_dir),
        "TMP": str(paths.tmp_dir),
        "TEMP": str(paths.tmp_dir),
        "VIRTUAL_ENV": str(paths.venv_dir),
        "PYTHONPATH": os.pathsep.join(python_path),
        "PYTHONUNBUFFERED": "1",
    }


def _tower_variables(ctx: RunContext) -> dict[str, str]:
    env = {"TOWER_ENVIRONMENT": ctx.environment}
    if ctx.tower_url:
        env["TOWER_URL"] = ctx.tower_url
    if ctx.jwt:
        env["TOWER_JWT"] = ctx.jwt
    return env


def _env_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
