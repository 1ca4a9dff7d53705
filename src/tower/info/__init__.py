"""Information about the current run, read from the environment the runner sets.

A runner exports ``TOWER__RUNTIME__*``, ``TOWER__HOST`` and ``TOWER__PORT``; a local
run (`tower run --local`) sets almost none of them, so every function here has an
"unknown" answer: None for optional values, "" for names, False for flags.
"""

from __future__ import annotations

from tower._env import env_bool, env_int, env_text

__all__ = [
    "app_name",
    "environment",
    "hostname",
    "is_cloud_run",
    "is_local",
    "is_manual_run",
    "is_scheduled_run",
    "port",
    "run_id",
    "run_number",
    "runner_id",
    "runner_name",
    "schedule_id",
    "schedule_name",
    "team_name",
]

_RUNTIME = "TOWER__RUNTIME__"
_MAX_PORT = 65535


def _runtime(key: str) -> str | None:
    return env_text(_RUNTIME + key)


def run_id() -> str | None:
    """ID of the current run; None for local runs."""
    return _runtime("RUN_ID")


def run_number() -> int | None:
    """Sequential number of the run within its app; None for local runs."""
    return env_int(_RUNTIME + "RUN_NUMBER")


def app_name() -> str:
    """Name of the app being run, or "" if unknown."""
    return _runtime("APP_NAME") or ""


def team_name() -> str:
    """Name of the team the run belongs to, or "" if unknown."""
    return _runtime("TEAM_NAME") or ""


def environment() -> str:
    """Name of the environment the run executes in, or "" if unknown."""
    # Local runs only get TOWER_ENVIRONMENT (the CLI sets it, runners set both), and the
    # docs present it as the same value, so fall back to it rather than answer "".
    return _runtime("ENVIRONMENT_NAME") or env_text("TOWER_ENVIRONMENT") or ""


def schedule_id() -> str | None:
    """ID of the schedule that triggered the run; None if no schedule did."""
    return _runtime("SCHEDULE_ID")


def schedule_name() -> str | None:
    """Name of the schedule that triggered the run; None if no schedule did."""
    return _runtime("SCHEDULE_NAME")


def is_scheduled_run() -> bool:
    """True if a schedule triggered the run."""
    return schedule_id() is not None or schedule_name() is not None


def is_manual_run() -> bool:
    """True if someone triggered the run by hand (UI, CLI or API)."""
    return env_bool(_RUNTIME + "IS_MANUAL_RUN")


def runner_id() -> str:
    """ID of the runner executing the run, or "" if unknown."""
    return _runtime("RUNNER_ID") or ""


def runner_name() -> str:
    """Name of the runner executing the run, or "" if unknown."""
    return _runtime("RUNNER_NAME") or ""


def hostname() -> str | None:
    """Hostname the runtime assigned to the run (TOWER__HOST), or None."""
    return env_text("TOWER__HOST")


def port() -> int | None:
    """Port the runtime assigned to the run (TOWER__PORT), or None."""
    value = env_int("TOWER__PORT")
    if value is not None and not 0 < value <= _MAX_PORT:
        raise ValueError(f"Environment variable TOWER__PORT={value} is not a port (1-65535).")
    return value


def is_cloud_run() -> bool:
    """True on Tower-managed infrastructure, False on a self-hosted runner or locally."""
    return env_bool(_RUNTIME + "IS_TOWER_MANAGED")


def is_local() -> bool:
    """True when the run was started with `tower run --local` on the user's machine."""
    return env_bool(_RUNTIME + "IS_LOCAL")
