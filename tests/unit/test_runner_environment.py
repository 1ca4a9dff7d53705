"""The scrubbed app environment: nothing from the runner leaks, Tower's variables win."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tower.runner.environment import (
    RunContext,
    RunPaths,
    build_environment,
    runtime_variables,
    secret_env_name,
)
from tower.runner.settings import run_parent_environment


def paths(root: Path) -> RunPaths:
    return RunPaths(
        app_dir=root / "pkg" / "app",
        module_dirs=(root / "pkg" / "modules" / "shared", root / "pkg" / "modules" / "lib"),
        venv_dir=root / "venv",
        home_dir=root / "work" / "home",
        tmp_dir=root / "work" / "tmp",
    )


def test_parent_secrets_never_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_FROM_PARENT", "hunter2")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = build_environment(RunContext(), paths(tmp_path), run_parent_environment())
    assert "SECRET_FROM_PARENT" not in env
    assert "hunter2" not in env.values()
    assert env["LANG"] == "C.UTF-8"


def test_system_variables(tmp_path: Path) -> None:
    p = paths(tmp_path)
    env = build_environment(RunContext(), p, {"PATH": "/usr/bin:/bin", "TZ": "UTC"})
    assert env["PATH"] == f"{tmp_path / 'venv' / 'bin'}{os.pathsep}/usr/bin:/bin"
    assert env["HOME"] == str(p.home_dir)
    assert env["TMPDIR"] == str(p.tmp_dir)
    assert env["VIRTUAL_ENV"] == str(p.venv_dir)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TZ"] == "UTC"
    assert env["PYTHONPATH"].split(os.pathsep) == [
        str(p.module_dirs[0]),
        str(p.module_dirs[1]),
        str(p.app_dir),
    ]


def test_secrets_then_parameters_later_wins(tmp_path: Path) -> None:
    ctx = RunContext(
        secrets={"API_KEY": "s3cr3t", "SHARED": "from-secret", "dlt.destination.password": "pw"},
        parameters={"SHARED": "from-param", "friend": "Ada"},
    )
    env = build_environment(ctx, paths(tmp_path), {})
    assert env["API_KEY"] == "s3cr3t"
    assert env["SHARED"] == "from-param"
    assert env["friend"] == "Ada"
    assert env["DESTINATION__PASSWORD"] == "pw"


def test_parameters_cannot_break_the_interpreter(tmp_path: Path) -> None:
    ctx = RunContext(
        parameters={"PATH": "/nowhere", "TOWER__RUNTIME__RUN_ID": "forged"}, run_id="r1"
    )
    env = build_environment(ctx, paths(tmp_path), {"PATH": "/usr/bin"})
    assert env["PATH"].startswith(str(tmp_path / "venv" / "bin"))
    assert env["TOWER__RUNTIME__RUN_ID"] == "r1"


def test_secret_env_name() -> None:
    assert secret_env_name("dlt.x.y") == "X__Y"
    assert secret_env_name("dlt.sources.github.token") == "SOURCES__GITHUB__TOKEN"
    assert secret_env_name("MY_SECRET") == "MY_SECRET"
    assert secret_env_name("lower.case") == "lower.case"


def test_runtime_variables_only_set_ones() -> None:
    ctx = RunContext(
        environment="prod",
        run_id="abc",
        run_number=7,
        app_name="hello",
        team_name="admin",
        is_tower_managed=True,
        is_local=False,
        is_manual_run=True,
        runner_name="r",
    )
    assert runtime_variables(ctx) == {
        "TOWER__RUNTIME__RUN_ID": "abc",
        "TOWER__RUNTIME__RUN_NUMBER": "7",
        "TOWER__RUNTIME__APP_NAME": "hello",
        "TOWER__RUNTIME__TEAM_NAME": "admin",
        "TOWER__RUNTIME__ENVIRONMENT_NAME": "prod",
        "TOWER__RUNTIME__IS_TOWER_MANAGED": "true",
        "TOWER__RUNTIME__IS_LOCAL": "false",
        "TOWER__RUNTIME__IS_MANUAL_RUN": "true",
        "TOWER__RUNTIME__RUNNER_NAME": "r",
    }


def test_tower_variables(tmp_path: Path) -> None:
    ctx = RunContext(environment="staging", tower_url="http://x:1", jwt="ey.jwt", is_local=True)
    env = build_environment(ctx, paths(tmp_path), {})
    assert env["TOWER_ENVIRONMENT"] == "staging"
    assert env["TOWER_URL"] == "http://x:1"
    assert env["TOWER_JWT"] == "ey.jwt"
    assert env["TOWER__RUNTIME__IS_LOCAL"] == "true"
    bare = build_environment(RunContext(), paths(tmp_path), {})
    assert "TOWER_URL" not in bare
    assert "TOWER_JWT" not in bare
    assert bare["TOWER_ENVIRONMENT"] == "default"
