"""Fixtures for runner tests that execute real apps with real uv.

One venv cache root per test session (per xdist worker); the uv download cache
is the machine's shared one, so repeated sessions do not download again. Test
modules here join the `runner-uv` xdist group so they share that cache.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tower.core.package import Manifest, build_package, extract_package
from tower.core.towerfile import load_towerfile
from tower.runner.settings import RunnerSettings, installer_environment
from tower.runner.venvs import VenvCache, find_uv

MakeApp = Callable[..., Path]
Extract = Callable[[Path], tuple[Path, Manifest]]


@pytest.fixture(scope="session")
def runner_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's TOWER_HOME for runner tests; `venv_cache` uses its layout."""
    return tmp_path_factory.mktemp("tower-home")


@pytest.fixture(scope="session")
def venv_cache(runner_root: Path) -> VenvCache:
    """The session's venv cache: venvs and SDK wheels are built once and reused."""
    uv = find_uv()
    uv_cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True)
    settings = RunnerSettings(home=runner_root)
    return VenvCache(
        settings.venvs_dir,
        uv_cache_dir=Path(uv_cache.stdout.strip()),
        sdk_dir=settings.sdk_dir,
        python=sys.executable,
        base_env=installer_environment(),
        uv_bin=uv,
    )


def towerfile_text(
    name: str, script: str, parameters: dict[str, str], import_paths: list[str]
) -> str:
    lines = ["[app]", f'name = "{name}"', f'script = "{script}"']
    if import_paths:
        lines.append("import_paths = [" + ", ".join(f'"{p}"' for p in import_paths) + "]")
    for param, default in parameters.items():
        lines += ["", "[[parameters]]", f'name = "{param}"', f'default = "{default}"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_app(tmp_path: Path) -> MakeApp:
    """`make_app({"main.py": "..."}, script=..., parameters={name: default})` → app dir.

    Keys of `files` are relative to the app dir; `../x/y` puts files next to it
    (for import paths).
    """
    counter = itertools.count()

    def make(
        files: dict[str, str],
        *,
        script: str = "./main.py",
        parameters: dict[str, str] | None = None,
        import_paths: list[str] | None = None,
        name: str = "demo",
    ) -> Path:
        app_dir = tmp_path / f"src-{next(counter)}" / "app"
        app_dir.mkdir(parents=True)
        text = towerfile_text(name, script, parameters or {}, import_paths or [])
        (app_dir / "Towerfile").write_text(text)
        for rel, content in files.items():
            target = (app_dir / rel).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        return app_dir

    return make


@pytest.fixture
def extract(tmp_path: Path) -> Extract:
    """Package an app dir exactly like a deploy and extract it; (package dir, manifest)."""
    counter = itertools.count()

    def run(app_dir: Path) -> tuple[Path, Manifest]:
        built = build_package(load_towerfile(app_dir))
        dest = tmp_path / f"pkg-{next(counter)}"
        return dest, extract_package(built.data, dest)

    return run
