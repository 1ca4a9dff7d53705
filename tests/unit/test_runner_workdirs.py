"""Per-run work dirs: wiped afterwards, leftovers of a crash removed (with the app
processes a killed runner left running), live ones kept."""

from __future__ import annotations

import contextlib
import fcntl
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
from tower.runner.workdirs import (
    MOST_SKELETON_DIRS,
    RunDirs,
    group_record,
    home_and_tmp,
    record_app_group,
    remove_leftovers,
    run_work_dir,
)

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


def test_a_finished_run_dir_is_reused_empty(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    with dirs.open("r-1") as first:
        home, tmp = home_and_tmp(first)
        (home / ".cache" / "pip").mkdir(parents=True)
        (tmp / "scratch").write_text("x")
        (first / "package" / "app").mkdir(parents=True)
        (first / "out.csv").write_text("a,b")
        inode = first.stat().st_ino
    assert dirs.spare_count() == 1
    with dirs.open("r-2") as second:
        assert second == tmp_path / "r-2"
        assert second.stat().st_ino == inode  # the same directory, not a new one
        assert sorted(p.name for p in second.iterdir()) == ["home", "tmp"]
        assert list((second / "home").iterdir()) == list((second / "tmp").iterdir()) == []
        assert not (tmp_path / "r-1").exists() and not (tmp_path / "r-1.lock").exists()
    dirs.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a dir to another uid takes root")
def test_a_reused_dir_keeps_nothing_its_app_changed(tmp_path: Path) -> None:
    """An app owns its run dir: whatever it set on the dirs that are kept goes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    dirs = RunDirs(tmp_path / "work")
    with dirs.open("r-1") as run_dir:
        fresh_mode = run_dir.stat().st_mode
        home, tmp = home_and_tmp(run_dir)
        for path in (run_dir, home, tmp):  # what the app may do to its own dirs
            os.chown(path, 54321, 54321)
            path.chmod(0o777)
            os.setxattr(path, "user.note", b"from the app")
        tmp.rmdir()
        tmp.symlink_to(outside)  # a link out of the tree is removed, never followed
    with dirs.open("r-2") as run_dir:
        assert sorted(p.name for p in run_dir.iterdir()) == ["home"]
        for path in (run_dir, run_dir / "home"):
            info = path.stat()
            assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
            assert info.st_mode == fresh_mode
            assert os.listxattr(path) == []
    assert (outside / "precious").read_text() == "keep me"
    dirs.close()


def _held_elsewhere(lock_file: Path) -> bool:
    """Whether another open of `lock_file` finds it flocked (flocks belong to the open
    file, so this works within one process)."""
    with lock_file.open("rb") as other:
        try:
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def test_a_finished_runs_lock_file_becomes_the_next_ones_empty_and_held(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    with dirs.open("r-1") as first:
        record_app_group(first, os.getpid())
        inode = group_record(first).stat().st_ino
    assert not (tmp_path / "r-1.lock").exists()
    with dirs.open("r-2") as second:
        lock_file = group_record(second)
        assert lock_file.stat().st_ino == inode  # the same file, not a new one
        assert lock_file.read_bytes() == b"", "no group record of the run before"
        assert _held_elsewhere(lock_file)
    assert not (tmp_path / "r-2.lock").exists()
    dirs.close()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_already_there_is_used_never_replaced(tmp_path: Path) -> None:
    """It may be another runner's, held: a kept one is linked in only where none is."""
    dirs = RunDirs(tmp_path)
    with dirs.open("r-1"):
        pass
    there = tmp_path / "r-2.lock"
    there.write_text("")
    inode = there.stat().st_ino
    with dirs.open("r-2"):
        assert there.stat().st_ino == inode
        assert _held_elsewhere(there)
    with dirs.open("r-3") as third:
        assert group_record(third).stat().st_ino == inode, "kept in its turn"
    dirs.close()
    assert list(tmp_path.iterdir()) == []


def test_lock_files_are_made_per_run_where_they_cannot_be_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A file system without hard links: one warning, then lock files as before."""

    def no_links(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    dirs = RunDirs(tmp_path)
    for name in ("r-1", "r-2", "r-3", "r-4"):
        with dirs.open(name) as run_dir:
            assert _held_elsewhere(group_record(run_dir))
        assert not (tmp_path / f"{name}.lock").exists()
    warnings = [r for r in caplog.records if "lock file" in r.getMessage()]
    assert len(warnings) == 1
    dirs.close()
    assert list(tmp_path.iterdir()) == []


def _tree_of(top: Path) -> list[str]:
    return sorted(str(path.relative_to(top)) for path in top.rglob("*"))


def test_a_package_dir_is_kept_as_its_directories_for_the_next_package(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    with dirs.open("r-1") as first:
        package = dirs.package_dir(first)
        assert package == first / "package" and not package.exists()
        (package / "app" / "lib").mkdir(parents=True)
        (package / "app" / "main.py").write_text("print(1)")
        (package / "app" / "lib" / "util.py").write_text("")
        (package / "MANIFEST").write_text("{}")
        (package / "app" / "link").symlink_to(package / "MANIFEST")
        inodes = [(package / name).stat().st_ino for name in ("", "app", "app/lib")]
    with dirs.open("r-2") as second:
        assert list(second.iterdir()) == [], "the package is not in the run dir it left"
        package = dirs.package_dir(second)
        assert _tree_of(package) == ["app", "app/lib"], "its directories, no file"
        assert [(package / name).stat().st_ino for name in ("", "app", "app/lib")] == inodes
        assert not dirs.package_dir(tmp_path / "elsewhere").exists(), "one skeleton, taken"
    with dirs.open("r-3") as third:
        assert dirs.package_dir(third).stat().st_ino == inodes[0], "kept again after r-2"
    dirs.close()
    assert list(tmp_path.iterdir()) == []


def test_a_package_dir_with_too_many_directories_is_not_kept(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    with dirs.open("r-1") as first:
        package = dirs.package_dir(first)
        for n in range(MOST_SKELETON_DIRS):
            (package / "made" / str(n)).mkdir(parents=True)
    with dirs.open("r-2") as second:
        assert not dirs.package_dir(second).exists()
        assert list(second.iterdir()) == []
    dirs.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a dir to another uid takes root")
def test_a_kept_package_skeleton_keeps_nothing_its_app_changed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "inner" / "precious").write_text("keep me")
    dirs = RunDirs(tmp_path / "work")
    with dirs.open("r-1") as run_dir:
        fresh_mode = run_dir.stat().st_mode
        package = dirs.package_dir(run_dir)
        (package / "app").mkdir(parents=True)
        for path in (package, package / "app"):  # what the app may do to its own dirs
            os.chown(path, 54321, 54321)
            path.chmod(0o777)
            os.setxattr(path, "user.note", b"from the app")
        (package / "lib").symlink_to(outside)  # links out are deleted, never followed
        (package / "app" / "inner").symlink_to(outside / "inner")
    with dirs.open("r-2") as run_dir:
        package = dirs.package_dir(run_dir)
        assert _tree_of(package) == ["app"]
        for path in (package, package / "app"):
            info = path.lstat()
            assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
            assert info.st_mode == fresh_mode
            assert os.listxattr(path) == []
    assert (outside / "inner" / "precious").read_text() == "keep me"
    dirs.close()


def test_a_run_ending_after_the_close_is_not_kept(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    with dirs.open("r-1"):
        dirs.close()
    assert dirs.spare_count() == 0
    assert list(tmp_path.iterdir()) == []


def test_spares_are_bounded(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path, most_spares=1)
    with dirs.open("r-1"), dirs.open("r-2"):
        pass
    assert dirs.spare_count() == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".spares-")) == []
    dirs.close()


def test_another_runner_leaves_live_spares_alone(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path)
    with dirs.open("r-1"):
        pass
    assert remove_leftovers(tmp_path) == []  # held by this process: not a leftover
    assert dirs.spare_count() == 1
    with dirs.open("r-2") as reused:
        assert reused.is_dir()
    dirs.close()


def test_spares_of_a_runner_gone_are_leftovers(tmp_path: Path) -> None:
    spares = tmp_path / ".spares-0123"
    (spares / "abc" / "home").mkdir(parents=True)
    (tmp_path / ".spares-0123.lock").write_text("")
    assert remove_leftovers(tmp_path) == [".spares-0123"]
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
