"""Tower: the SDK that apps import, and the root of the orchestrator package.

Inside a Tower run, secrets and parameters arrive as environment variables::

    import tower

    password = tower.secret("DATABASE_PASSWORD")
    batch_size = int(tower.parameter("batch_size", default="100"))
    print(tower.info.run_id(), tower.info.environment())

Importing `tower` must stay light (standard library only): it runs at the start of
every app, in a venv that may not even have the server dependencies installed.
"""

from __future__ import annotations

from tower import _env, info

__all__ = ["__version__", "info", "param", "parameter", "secret"]

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


def __getattr__(name: str) -> str:
    # Lazy attributes of the package. The orchestration and data helpers (run_app,
    # wait_for_run, wait_for_runs, tables, llms) will plug in here once their modules
    # exist, imported on first use so that `import tower` never pulls in httpx/pydantic.
    if name == "__version__":
        value = _read_version()
        globals()["__version__"] = value  # cache: later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
