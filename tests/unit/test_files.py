"""Private files: 0600 from the first byte, replaced atomically."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tower.files import write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_private(tmp_path / "deep" / "key", "sk-secret\n")
    finally:
        os.umask(old)
    assert path.read_text() == "sk-secret\n"
    assert _mode(path) == 0o600


def test_a_wider_existing_file_does_not_keep_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "new")
    assert (path.read_text(), _mode(path)) == ("new", 0o600)


def test_a_failed_write_leaves_the_old_file_and_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "session.json"
    write_private(path, "old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_private(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["session.json"]
