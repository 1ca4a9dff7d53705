"""Per-run work dirs: wiped afterwards, leftovers of a crash removed, live ones kept."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tower.runner.workdirs import remove_leftovers, run_work_dir

HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "a+b")
fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_run_work_dir_is_removed(tmp_path: Path) -> None:
    with run_work_dir(tmp_path, "r-1") as work:
        (work / "file").write_text("x")
        assert work == tmp_path / "r-1"
    assert list(tmp_path.iterdir()) == []


def test_removed_even_on_error(tmp_path: Path) -> None:
    try:
        with run_work_dir(tmp_path, "r-1") as work:
            (work / "file").write_text("x")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []


def test_leftovers_removed_but_live_runs_kept(tmp_path: Path) -> None:
    (tmp_path / "crashed" / "home").mkdir(parents=True)
    (tmp_path / "crashed.lock").write_text("")
    (tmp_path / "live").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / "live.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert remove_leftovers(tmp_path) == ["crashed"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "live.lock"]
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    assert remove_leftovers(tmp_path) == ["live"]
    assert list(tmp_path.iterdir()) == []


def test_missing_root(tmp_path: Path) -> None:
    assert remove_leftovers(tmp_path / "nope") == []
