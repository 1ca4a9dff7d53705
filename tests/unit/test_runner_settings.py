"""Runner settings from the environment, a `.env` file and defaults."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from tower.runner.settings import (
    RunnerSettings,
    SettingsError,
    installer_environment,
    run_parent_environment,
)


def test_defaults(tmp_path: Path) -> None:
    settings = RunnerSettings.from_env({}, dotenv_path=tmp_path / "missing.env")
    assert settings.url == "http://127.0.0.1:8000"
    assert settings.token is None
    assert settings.name == socket.gethostname()
    assert settings.environment is None
    assert settings.capacity == os.cpu_count()
    assert settings.api_key is None
    assert settings.home == Path("~/.tower").expanduser()
    assert settings.python == sys.executable
    assert settings.cancel_grace_s == 10.0
    assert settings.report_deadline_s == 900.0


def test_values_and_dirs(tmp_path: Path) -> None:
    env = {
        "TOWER_URL": "http://tower:9000",
        "TOWER_RUNNER_TOKEN": "rt-abc",
        "TOWER_RUNNER_NAME": "gpu-1",
        "TOWER_RUNNER_ENVIRONMENT": "prod",
        "TOWER_RUNNER_CAPACITY": "2",
        "TOWER_HOME": str(tmp_path),
        "TOWER_RUNNER_PYTHON": "/usr/bin/python3",
        "TOWER_RUNNER_CANCEL_GRACE_SECONDS": "2.5",
        "TOWER_RUNNER_REPORT_DEADLINE_SECONDS": "120",
    }
    s = RunnerSettings.from_env(env, dotenv_path=tmp_path / "none")
    assert (s.url, s.token, s.name, s.environment) == (
        "http://tower:9000",
        "rt-abc",
        "gpu-1",
        "prod",
    )
    assert (s.capacity, s.python, s.cancel_grace_s) == (2, "/usr/bin/python3", 2.5)
    assert s.report_deadline_s == 120.0
    assert s.venvs_dir == tmp_path / "runner" / "venvs"
    assert s.work_dir == tmp_path / "runner" / "work"
    assert s.uv_cache_dir == tmp_path / "runner" / "uv-cache"
    assert s.sdk_dir == tmp_path / "runner" / "sdk"
    assert s.require_token() == "rt-abc"


def test_the_documented_environment_tag_and_an_api_key(tmp_path: Path) -> None:
    env = {"TOWER_ENVIRONMENT": "production", "TOWER_API_KEY": "sk-123"}
    s = RunnerSettings.from_env(env, dotenv_path=tmp_path / "none")
    assert (s.environment, s.api_key, s.token) == ("production", "sk-123", None)
    both = {"TOWER_ENVIRONMENT": "production", "TOWER_RUNNER_ENVIRONMENT": "staging"}
    assert RunnerSettings.from_env(both, dotenv_path=tmp_path / "none").environment == "staging"


def test_dotenv_never_overrides_real_env(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("TOWER_RUNNER_TOKEN=rt-from-file\nTOWER_RUNNER_NAME=from-file\n")
    s = RunnerSettings.from_env({"TOWER_RUNNER_NAME": "from-env"}, dotenv_path=dotenv)
    assert s.token == "rt-from-file"
    assert s.name == "from-env"


def test_dotenv_in_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("TOWER_RUNNER_CAPACITY=7\n")
    monkeypatch.chdir(tmp_path)
    assert RunnerSettings.from_env({}).capacity == 7


def test_missing_token_names_the_variable(tmp_path: Path) -> None:
    s = RunnerSettings.from_env({}, dotenv_path=tmp_path / "none")
    with pytest.raises(SettingsError) as info:
        s.require_token()
    assert "TOWER_RUNNER_TOKEN" in info.value.message
    assert "tower up" in info.value.message
    assert "tower runners credentials" in info.value.message
    assert "TOWER_API_KEY" in info.value.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOWER_RUNNER_CAPACITY", "0"),
        ("TOWER_RUNNER_CAPACITY", "many"),
        ("TOWER_RUNNER_CANCEL_GRACE_SECONDS", "-1"),
        ("TOWER_RUNNER_REPORT_DEADLINE_SECONDS", "soon"),
    ],
)
def test_bad_numbers(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        RunnerSettings.from_env({name: value}, dotenv_path=tmp_path / "none")


def test_passthrough_helpers() -> None:
    env = {"PATH": "/bin", "SECRET": "x", "HTTPS_PROXY": "http://proxy:3128", "TZ": "UTC"}
    assert run_parent_environment(env) == {"PATH": "/bin", "TZ": "UTC"}
    assert installer_environment(env) == {
        "PATH": "/bin",
        "HTTPS_PROXY": "http://proxy:3128",
        "TZ": "UTC",
    }


def test_main_without_token_fails_clearly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tower.runner.agent import main

    assert main(RunnerSettings(home=tmp_path)) == 1
    assert "TOWER_RUNNER_TOKEN" in caplog.text
