"""Fixtures: the official CLI (cached venv, see official.py) and one `tower up` per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.official import OfficialCli, ensure_official_venv
from tests.live import LiveTower, free_port, tower_env


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist registers this marker; with `-p no:xdist`, --strict-markers would
    # reject it, so declare it here too (a duplicate declaration is harmless).
    config.addinivalue_line("markers", "xdist_group(name): run the group on one xdist worker")


@pytest.fixture(scope="session")
def official_tower_binary() -> Path:
    return ensure_official_venv()


@pytest.fixture(scope="module")
def compat_tower(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveTower]:
    """One real `tower up` (control plane + local runner) for the whole module."""
    root = tmp_path_factory.mktemp("compat-tower")
    tower = LiveTower(root, free_port(), tower_env(root))
    try:
        tower.start()
        yield tower
    finally:
        if tower.process is not None:
            tower.stop()


@pytest.fixture(scope="module")
def official_cli(
    official_tower_binary: Path,
    compat_tower: LiveTower,
    tmp_path_factory: pytest.TempPathFactory,
) -> OfficialCli:
    home = tmp_path_factory.mktemp("official-cli-home")
    return OfficialCli(
        binary=official_tower_binary, home=home, url=compat_tower.url, api_key=compat_tower.api_key
    )
