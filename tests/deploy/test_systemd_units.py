"""The systemd units in deploy/systemd: `systemd-analyze verify` finds nothing, and
each unit keeps its state where its sandboxing lets it write."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.live import BIN, REPO

UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
#: where the units expect the `tower` executable (a venv installed there)
INSTALLED_TOWER = "/opt/tower/bin/tower"


def _unit(path: Path) -> configparser.ConfigParser:
    # strict=False: a unit may repeat a key (e.g. Environment=); the last one is read here
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_the_units_are_there() -> None:
    assert [u.name for u in UNITS] == ["tower-runner.service", "tower-server.service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    # verify also checks that ExecStart= is executable: point it at this checkout's
    # `tower`, as a host with the documented install would have it.
    copies = []
    for unit in UNITS:
        text = unit.read_text()
        assert INSTALLED_TOWER in text, unit
        copy = tmp_path / unit.name
        copy.write_text(text.replace(INSTALLED_TOWER, str(BIN / "tower")))
        copies.append(str(copy))
    result = subprocess.run(
        ["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=60
    )
    ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if any(unit.name in line for unit in UNITS)
    ]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_tower_home_is_the_unit_state_directory(unit: Path) -> None:
    service = _unit(unit)["Service"]
    state = f"/var/lib/{service['StateDirectory']}"
    assert f"TOWER_HOME={state}" in service["Environment"]
    writable = service.get("ReadWritePaths")
    if service.get("ProtectSystem") == "strict":  # only the listed paths are writable
        assert writable is not None and state in writable.split()
