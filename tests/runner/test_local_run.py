"""`run_local`: a Towerfile app run through the runner's own execution path."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tower.core.errors import UnknownParameter
from tower.runner.local import run_local
from tower.runner.venvs import VenvCache

pytestmark = pytest.mark.xdist_group("runner-uv")

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| (.*)$")
APP = """\
import os
print(f"{os.environ['GREETING']}, {os.environ['NAME']}!")
print("local", os.environ["TOWER__RUNTIME__IS_LOCAL"], os.environ["TOWER_ENVIRONMENT"])
print("url", os.environ.get("TOWER_URL"), os.environ.get("TOWER_JWT"))
print("token", os.environ.get("TOKEN"))
raise SystemExit(int(os.environ["EXIT"]))
"""


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temp dirs of the run land here, so the test can see them removed."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def local(app: Path, venvs: VenvCache, **parameters: str) -> tuple[int, list[str]]:
    out: list[str] = []
    code = run_local(
        app,
        parameters=parameters,
        secrets={"TOKEN": "tok"},
        environment="dev",
        tower_url="http://127.0.0.1:1",
        jwt="ey.jwt",
        out=out.append,
        venvs=venvs,
    )
    return code, out


def contents(out: list[str]) -> list[str]:
    return [m.group(1) for line in out if (m := LINE.match(line))]


def test_run_local_with_parameters(
    make_app: Callable[..., Path], venv_cache: VenvCache, private_tmp: Path
) -> None:
    app = make_app({"main.py": APP}, parameters={"GREETING": "Hello", "NAME": "world", "EXIT": "0"})
    code, out = local(app, venv_cache, NAME="Ada")
    assert code == 0, out
    lines = contents(out)
    assert "Hello, Ada!" in lines
    assert "local true dev" in lines
    assert "url http://127.0.0.1:1 ey.jwt" in lines
    assert "token tok" in lines
    assert out[-1] == "Your local run exited cleanly."
    assert list(private_tmp.iterdir()) == []


def test_run_local_crash(
    make_app: Callable[..., Path], venv_cache: VenvCache, private_tmp: Path
) -> None:
    app = make_app({"main.py": APP}, parameters={"GREETING": "Hi", "NAME": "x", "EXIT": "0"})
    code, out = local(app, venv_cache, EXIT="2")
    assert code == 1
    assert out[-1] == "Your local run crashed with exit code: 2"
    assert list(private_tmp.iterdir()) == []


def test_unknown_parameter(make_app: Callable[..., Path], venv_cache: VenvCache) -> None:
    app = make_app({"main.py": APP}, parameters={"GREETING": "Hi"})
    with pytest.raises(UnknownParameter) as info:
        local(app, venv_cache, GREETNG="typo")
    assert "'GREETNG'" in info.value.message
    assert "GREETING" in info.value.message
