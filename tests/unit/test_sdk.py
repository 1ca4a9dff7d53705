"""Tests of the app-facing SDK: tower.secret/param/parameter, tower.info and import weight."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

import tower
from tower import _env, info

RUNTIME_VARS = [
    "TOWER__RUNTIME__" + key
    for key in (
        "RUN_ID",
        "RUN_NUMBER",
        "APP_NAME",
        "TEAM_NAME",
        "ENVIRONMENT_NAME",
        "SCHEDULE_ID",
        "SCHEDULE_NAME",
        "IS_MANUAL_RUN",
        "RUNNER_ID",
        "RUNNER_NAME",
        "IS_TOWER_MANAGED",
        "IS_LOCAL",
    )
] + ["TOWER__HOST", "TOWER__PORT", "TOWER_ENVIRONMENT"]

HEAVY_MODULES = ["fastapi", "sqlalchemy", "httpx", "pydantic", "starlette", "uvicorn"]
# What `import tower` alone must not load: the orchestration helpers are paid on use.
LAZY_MODULES = ["tower._orchestration", "tower._http", "tower.exceptions"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests may themselves run inside a Tower run; start from a blank slate.
    for name in RUNTIME_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith(_env.PARAMETER_PREFIX) or name.startswith("TOWER_SDK_TEST_"):
            monkeypatch.delenv(name)


# ------------------------------------------------------------- secret / parameter


def test_secret_reads_env_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tower.secret("TOWER_SDK_TEST_PW") == ""
    assert tower.secret("TOWER_SDK_TEST_PW", default="dev") == "dev"
    monkeypatch.setenv("TOWER_SDK_TEST_PW", "hunter2")
    assert tower.secret("TOWER_SDK_TEST_PW", default="dev") == "hunter2"


def test_secret_set_but_empty_is_not_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_SDK_TEST_PW", "")
    assert tower.secret("TOWER_SDK_TEST_PW", default="dev") == ""


def test_secret_ignores_parameter_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER__PARAMETER__TOWER_SDK_TEST_PW", "param")
    assert tower.secret("TOWER_SDK_TEST_PW", default="d") == "d"


@pytest.mark.parametrize("read", [tower.param, tower.parameter])
def test_param_plain_variable(monkeypatch: pytest.MonkeyPatch, read: Callable[..., str]) -> None:
    assert read("TOWER_SDK_TEST_BATCH") == ""
    assert read("TOWER_SDK_TEST_BATCH", default="100") == "100"
    monkeypatch.setenv("TOWER_SDK_TEST_BATCH", "7")
    assert read("TOWER_SDK_TEST_BATCH", default="100") == "7"


@pytest.mark.parametrize("read", [tower.param, tower.parameter])
def test_param_prefixed_variable_wins(
    monkeypatch: pytest.MonkeyPatch, read: Callable[..., str]
) -> None:
    monkeypatch.setenv("TOWER__PARAMETER__TOWER_SDK_TEST_BATCH", "scoped")
    assert read("TOWER_SDK_TEST_BATCH") == "scoped"
    monkeypatch.setenv("TOWER_SDK_TEST_BATCH", "plain")
    assert read("TOWER_SDK_TEST_BATCH") == "scoped"
    # Set-but-empty under the prefix is still the value that was passed.
    monkeypatch.setenv("TOWER__PARAMETER__TOWER_SDK_TEST_BATCH", "")
    assert read("TOWER_SDK_TEST_BATCH", default="d") == ""


def test_param_name_is_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("tower_sdk_test_lower", "v")
    assert tower.param("tower_sdk_test_lower") == "v"


def test_public_surface() -> None:
    assert set(tower.__all__) == {
        "__version__",
        "info",
        "param",
        "parameter",
        "secret",
        "run_app",
        "wait_for_run",
        "wait_for_runs",
    }
    assert tower.info is info
    assert tower.__version__ == importlib.metadata.version("tower-oss")
    with pytest.raises(AttributeError):
        _ = tower.no_such_thing  # type: ignore[attr-defined]


def test_orchestration_names_resolve_lazily() -> None:
    from tower import _orchestration, exceptions

    assert tower.run_app is _orchestration.run_app
    assert tower.wait_for_run is _orchestration.wait_for_run
    assert tower.wait_for_runs is _orchestration.wait_for_runs
    assert tower.exceptions is exceptions
    from tower import run_app  # `from tower import …` goes through the same hook

    assert run_app is _orchestration.run_app


def test_exceptions_match_the_official_sdk() -> None:
    from tower import exceptions as exc

    # Base classes decide which `except` clauses catch them: keep the official ones.
    assert issubclass(exc.RunFailedError, RuntimeError)
    assert issubclass(exc.AppNotFoundError, RuntimeError)
    for name in ("NotFoundException", "UnauthorizedException", "UnknownException"):
        cls = getattr(exc, name)
        assert not issubclass(cls, RuntimeError) and str(cls("m")) == "m"
    assert str(exc.RunFailedError("etl", 4, "crashed")) == "Run etl#4 failed with status 'crashed'"
    assert str(exc.AppNotFoundError("etl")) == "App 'etl' not found in the Tower."
    assert str(exc.TimeoutException(2.5)) == "A timeout occurred after 2.5 seconds."
    assert "'paused' was unexpected" in str(exc.UnhandledRunStateException("paused"))


# ------------------------------------------------------------------------ booleans


@pytest.mark.parametrize("word", ["y", "yes", "t", "true", "on", "1", "TRUE", "Yes", " On "])
def test_parse_bool_true(word: str) -> None:
    assert _env.parse_bool("X", word) is True


@pytest.mark.parametrize("word", ["n", "no", "f", "false", "off", "0", "FALSE", "No", "OFF"])
def test_parse_bool_false(word: str) -> None:
    assert _env.parse_bool("X", word) is False


@pytest.mark.parametrize("word", ["maybe", "2", "truthy", "nope"])
def test_parse_bool_rejects_other_values(word: str) -> None:
    with pytest.raises(ValueError, match=rf"TOWER__RUNTIME__IS_LOCAL='{word}'"):
        _env.parse_bool("TOWER__RUNTIME__IS_LOCAL", word)


def test_env_bool_unset_and_blank_use_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _env.env_bool("TOWER_SDK_TEST_FLAG") is False
    assert _env.env_bool("TOWER_SDK_TEST_FLAG", default=True) is True
    monkeypatch.setenv("TOWER_SDK_TEST_FLAG", "  ")
    assert _env.env_bool("TOWER_SDK_TEST_FLAG") is False


def test_env_int(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _env.env_int("TOWER_SDK_TEST_N") is None
    monkeypatch.setenv("TOWER_SDK_TEST_N", " 42 ")
    assert _env.env_int("TOWER_SDK_TEST_N") == 42
    monkeypatch.setenv("TOWER_SDK_TEST_N", "forty")
    with pytest.raises(ValueError, match="TOWER_SDK_TEST_N='forty' is not an integer"):
        _env.env_int("TOWER_SDK_TEST_N")


# ---------------------------------------------------------------------- tower.info


def test_info_local_run_defaults() -> None:
    assert info.run_id() is None
    assert info.run_number() is None
    assert info.app_name() == ""
    assert info.team_name() == ""
    assert info.environment() == ""
    assert info.schedule_id() is None
    assert info.schedule_name() is None
    assert info.is_scheduled_run() is False
    assert info.is_manual_run() is False
    assert info.runner_id() == ""
    assert info.runner_name() == ""
    assert info.hostname() is None
    assert info.port() is None
    assert info.is_cloud_run() is False
    assert info.is_local() is False


def test_info_reads_runtime_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "TOWER__RUNTIME__RUN_ID": "run-abc",
        "TOWER__RUNTIME__RUN_NUMBER": "12",
        "TOWER__RUNTIME__APP_NAME": "etl",
        "TOWER__RUNTIME__TEAM_NAME": "data",
        "TOWER__RUNTIME__ENVIRONMENT_NAME": "production",
        "TOWER__RUNTIME__SCHEDULE_ID": "sch-1",
        "TOWER__RUNTIME__SCHEDULE_NAME": "nightly",
        "TOWER__RUNTIME__IS_MANUAL_RUN": "false",
        "TOWER__RUNTIME__RUNNER_ID": "rn-1",
        "TOWER__RUNTIME__RUNNER_NAME": "box-1",
        "TOWER__RUNTIME__IS_TOWER_MANAGED": "true",
        "TOWER__RUNTIME__IS_LOCAL": "0",
        "TOWER__HOST": "etl.internal",
        "TOWER__PORT": "8080",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    assert info.run_id() == "run-abc"
    assert info.run_number() == 12
    assert info.app_name() == "etl"
    assert info.team_name() == "data"
    assert info.environment() == "production"
    assert info.schedule_id() == "sch-1"
    assert info.schedule_name() == "nightly"
    assert info.is_scheduled_run() is True
    assert info.is_manual_run() is False
    assert info.runner_id() == "rn-1"
    assert info.runner_name() == "box-1"
    assert info.hostname() == "etl.internal"
    assert info.port() == 8080
    assert info.is_cloud_run() is True
    assert info.is_local() is False


def test_info_manual_and_local_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER__RUNTIME__IS_MANUAL_RUN", "yes")
    monkeypatch.setenv("TOWER__RUNTIME__IS_LOCAL", "true")
    assert info.is_manual_run() is True
    assert info.is_local() is True
    assert info.is_scheduled_run() is False


def test_info_scheduled_by_name_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER__RUNTIME__SCHEDULE_NAME", "hourly")
    assert info.is_scheduled_run() is True


def test_info_blank_values_mean_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOWER__RUNTIME__RUN_ID", "TOWER__RUNTIME__SCHEDULE_ID", "TOWER__PORT"):
        monkeypatch.setenv(name, "")
    assert info.run_id() is None
    assert info.is_scheduled_run() is False
    assert info.port() is None


def test_info_environment_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER_ENVIRONMENT", "local")
    assert info.environment() == "local"
    monkeypatch.setenv("TOWER__RUNTIME__ENVIRONMENT_NAME", "staging")
    assert info.environment() == "staging"


def test_info_bad_boolean_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER__RUNTIME__IS_TOWER_MANAGED", "sometimes")
    with pytest.raises(ValueError, match="TOWER__RUNTIME__IS_TOWER_MANAGED='sometimes'"):
        info.is_cloud_run()


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1"])
def test_info_bad_port_raises(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TOWER__PORT", value)
    with pytest.raises(ValueError, match="TOWER__PORT"):
        info.port()


def test_info_bad_run_number_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOWER__RUNTIME__RUN_NUMBER", "twelve")
    with pytest.raises(ValueError, match="TOWER__RUNTIME__RUN_NUMBER"):
        info.run_number()


# -------------------------------------------------------------------- import weight


def _loaded_after(code: str, modules: list[str]) -> list[str]:
    # A fresh interpreter: this test process has already imported pytest plugins etc.
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {modules!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return [m for m in result.stdout.strip().split(",") if m]


def test_import_tower_stays_light() -> None:
    code = "import tower; tower.secret('X'); tower.param('X'); tower.info.run_id()"
    assert _loaded_after(code, HEAVY_MODULES + LAZY_MODULES) == []
    assert _loaded_after(code + "; tower.__version__", HEAVY_MODULES) == []


def test_orchestration_helpers_stay_light() -> None:
    code = "import tower; tower.run_app; tower.wait_for_runs; tower.exceptions"
    assert _loaded_after(code, [*HEAVY_MODULES, "dataclasses", "urllib.request"]) == []
