"""Per-run work dirs: wiped afterwards, leftovers of a crash removed (with the app
processes a killed runner left running), live ones kept."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tower.runner.process import group_members
from tower.runner.workdirs import group_record, record_app_group, remove_leftovers, run_work_dir

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


def test_the_app_group_is_recorded_in_the_lock_file(tmp_path: Path) -> None:
    """No third file per run: the record shares the lock file, which the run holds."""
    with run_work_dir(tmp_path, "r-1") as work:
        record_app_group(work, os.getpid())
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r-1", "r-1.lock"]
        assert group_record(work) == tmp_path / "r-1.lock"
        assert json.loads(group_record(work).read_text())["pgid"] == os.getpid()
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


def test_leftover_app_group_is_killed(tmp_path: Path) -> None:
    run_dir = tmp_path / "crashed"
    run_dir.mkdir()
    app = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record_app_group(run_dir, app.pid)
        assert remove_leftovers(tmp_path) == ["crashed"]
        assert app.wait(5) == -signal.SIGKILL
        assert group_members(app.pid) == []
        assert list(tmp_path.iterdir()) == []
    finally:
        _kill_group(app)


def test_group_outliving_its_leader_is_killed(tmp_path: Path) -> None:
    run_dir = tmp_path / "crashed"
    run_dir.mkdir()
    app = subprocess.Popen(
        ["bash", "-c", "sleep 60 & echo $!; sleep 60"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        child = int(app.stdout.readline())
        record_app_group(run_dir, app.pid)
        app.kill()  # the leader dies first (as PR_SET_PDEATHSIG has it); its child stays
        app.wait()
        assert group_members(app.pid) == [child]
        assert remove_leftovers(tmp_path) == ["crashed"]
        _wait_for(lambda: group_members(app.pid) == [])
    finally:
        _kill_group(app)


@pytest.mark.parametrize(
    ("field", "value"), [("leader_start", 1), ("boot_id", "another-boot")], ids=["reused", "reboot"]
)
def test_a_group_id_now_used_by_someone_else_is_spared(
    tmp_path: Path, field: str, value: object
) -> None:
    run_dir = tmp_path / "crashed"
    run_dir.mkdir()
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record_app_group(run_dir, stranger.pid)
        record = json.loads(group_record(run_dir).read_text())
        group_record(run_dir).write_text(json.dumps({**record, field: value}))
        assert remove_leftovers(tmp_path) == ["crashed"]
        time.sleep(0.1)
        assert stranger.poll() is None
    finally:
        _kill_group(stranger)


def _kill_group(leader: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
