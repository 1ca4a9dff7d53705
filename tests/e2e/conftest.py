"""One real `tower up` per test module, with an isolated HOME and TOWER_HOME."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveTower, free_port, tower_env


@pytest.fixture(scope="module")
def tower(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveTower]:
    root = tmp_path_factory.mktemp("tower")
    live = LiveTower(root, free_port(), tower_env(root))
    live.start()
    try:
        yield live
    finally:
        live.stop()


def write_app(root: Path, name: str, script: str, body: str, extra: str = "", **files: str) -> Path:
    """A throwaway app directory with a Towerfile."""
    app = root / name
    app.mkdir(parents=True)
    (app / "Towerfile").write_text(f'[app]\nname = "{name}"\nscript = "./{script}"\n{extra}')
    (app / script).write_text(body)
    for filename, content in files.items():
        (app / filename.replace("__", ".")).write_text(content)
    return app
