"""Tower: the SDK that apps import, and the root of the orchestrator package.

Inside a Tower run, secrets and parameters arrive as environment variables::

    import tower

    password = tower.secret("DATABASE_PASSWORD")
    batch_size = int(tower.parameter("batch_size", default="100"))
    print(tower.info.run_id(), tower.info.environment())

and apps start other apps and wait for them::

    run = tower.run_app("child", parameters={"n": "1"})
    final = tower.wait_for_run(run, timeout=3600)
    ok, failed = tower.wait_for_runs([run, tower.run_app("other")])

Importing `tower` must stay light (standard library only): it runs at the start of
every app, in a venv that may not even have the server dependencies installed.
"""

from __future__ import annotations

from tower import _env, info

# `typing` is not imported at run time (it would be the heaviest module here); type
# checkers treat a module-level TYPE_CHECKING like typing.TYPE_CHECKING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from tower._orchestration import run_app, wait_for_run, wait_for_runs

__all__ = [
    "__version__",
    "info",
    "param",
    "parameter",
    "run_app",
    "secret",
    "wait_for_run",
    "wait_for_runs",
]

_DISTRIBUTION = "tower-oss"
_UNKNOWN_VERSION = "0.0.0"


def secret(name: str, default: str = "") -> str:
    """Return the secret `name` injected into the run's environment, or `default`."""
    value = _env.first_set(name)
    return default if value is None else value


def param(name: str, default: str = "") -> str:
    """Return the run parameter `name`, or `default` when it was not passed.

    Parameters are read from ``TOWER__PARAMETER__<name>`` first (where Tower will scope
    them), then from the plain variable ``<name>`` (where runners put them today).
    """
    value = _env.first_set(_env.PARAMETER_PREFIX + name, name)
    return default if value is None else value


def parameter(name: str, default: str = "") -> str:
    """Alias of `param`."""
    return param(name, default)


def _read_version() -> str:
    # importlib.metadata costs tens of milliseconds to import, so it is only paid on use.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_DISTRIBUTION)
    except PackageNotFoundError:
        return _UNKNOWN_VERSION


_ORCHESTRATION = frozenset({"run_app", "wait_for_run", "wait_for_runs"})


def __getattr__(name: str) -> Any:
    # Lazy attributes of the package, imported on first use: an app that never starts
    # another app does not pay for the HTTP and JSON modules. The data helpers
    # (tables, llms) will plug in here the same way.
    if name == "__version__":
        value: Any = _read_version()
    elif name in _ORCHESTRATION:
        from tower import _orchestration

        value = getattr(_orchestration, name)
    elif name == "exceptions":
        from tower import exceptions as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value
