"""Per-run working directories: `<work>/<run_id>`, always wiped afterwards.

While a run is in progress its worker holds an exclusive `fcntl` lock on
`<work>/<run_id>.lock`. At start, an agent removes every run dir whose lock it can
take: those were left behind by a crashed runner. Dirs of runs that another live
runner (sharing the same `$TOWER_HOME`) is executing stay untouched.

When the app starts, its process group is recorded in that lock file — next to the
run dir, not in it: a sandboxed app owns its run dir and must not be able to forge
the record a later clean-up acts on. (One file for both: every file a run creates
and deletes is an inode to allocate, and on ext4 without a journal that search
skips every inode freed in the last minutes, so its cost grows with the rate of
runs.) A runner
killed with SIGKILL cannot stop its apps, so the clean-up first SIGKILLs the group
recorded in each leftover dir: no app outlives its runner's restart. The record also
holds the boot id and the group leader's start time, so a group id the kernel has
since handed to an unrelated process is never killed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
PROC = Path("/proc")
BOOT_ID_FILE = PROC / "sys" / "kernel" / "random" / "boot_id"
#: index of `starttime` among the fields of /proc/<pid>/stat that follow `(comm)`
STAT_STARTTIME_INDEX = 19
#: a run's HOME and TMPDIR, inside its run dir
HOME_DIR_NAME = "home"
TMP_DIR_NAME = "tmp"


@contextmanager
def run_work_dir(root: Path, run_id: str) -> Iterator[Path]:
    """A fresh `<root>/<run_id>` for the `with` block, removed when it ends."""
    root.mkdir(parents=True, exist_ok=True)
    lock_path = root / f"{run_id}{LOCK_SUFFIX}"
    with lock_path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        path = root / run_id
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
            lock_path.unlink(missing_ok=True)


def home_and_tmp_paths(run_dir: Path) -> tuple[Path, Path]:
    """Where the run's HOME and TMPDIR are inside `run_dir`."""
    return run_dir / HOME_DIR_NAME, run_dir / TMP_DIR_NAME


def home_and_tmp(run_dir: Path) -> tuple[Path, Path]:
    """The run's HOME and TMPDIR inside `run_dir`, created if missing."""
    home, tmp = home_and_tmp_paths(run_dir)
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    return home, tmp


def remove_leftovers(root: Path) -> list[str]:
    """Remove run dirs (and lock files) no live worker holds; returns the run ids removed."""
    if not root.is_dir():
        return []
    names = {p.name.removesuffix(LOCK_SUFFIX) for p in root.iterdir()}
    return sorted(run_id for run_id in names if _remove_if_unlocked(root, run_id))


def _remove_if_unlocked(root: Path, run_id: str) -> bool:
    lock_path = root / f"{run_id}{LOCK_SUFFIX}"
    try:
        with lock_path.open("a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live worker owns it
            target = root / run_id
            existed = target.exists()
            kill_recorded_group(target)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not clean up %s: %s", root / run_id, exc)
        return False
    if existed:
        logger.info("removed the work dir of run %s left by a previous runner", run_id)
    return existed


def group_record(run_dir: Path) -> Path:
    """Where the process group of the app running in `run_dir` is recorded: the run
    dir's lock file (it exists for as long as the run dir does)."""
    return run_dir.with_name(run_dir.name + LOCK_SUFFIX)


def record_app_group(run_dir: Path, pgid: int) -> None:
    """Note the app's process group of `run_dir`, for the clean-up after a runner crash."""
    record = {"pgid": pgid, "leader_start": _start_time(pgid), "boot_id": _boot_id()}
    try:
        group_record(run_dir).write_text(json.dumps(record))
    except OSError as exc:  # the app runs anyway; only the crash clean-up loses track of it
        logger.warning("could not record the process group of %s: %s", run_dir, exc)


def kill_recorded_group(run_dir: Path) -> int | None:
    """SIGKILL the process group recorded in `run_dir`, if it is still that group.

    Returns the group id signalled, or None when there was nothing (safe) to kill.
    """
    record = _read_record(group_record(run_dir))
    if record is None or not _same_group(record):
        return None
    pgid = int(record["pgid"])
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return None
    logger.warning("killed process group %s left running by a previous runner", pgid)
    return pgid


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pgid"), int):
        return None
    return record if record["pgid"] > 1 else None  # never pgid 0/1: that is us or init


def _same_group(record: dict[str, Any]) -> bool:
    """Whether the group id still names the group the app started.

    The kernel never reuses an id while a process uses it as a group id, so the group
    is ours unless it emptied and the id came back: after a reboot (another boot id),
    or as a new process with pid == pgid (the leader then started at another time).
    While the original leader lives, its start time matches. Without /proc nothing
    can be checked, and killing a stranger's group is worse than leaving an orphan.
    """
    boot_id = _boot_id()
    if boot_id is None or record.get("boot_id") != boot_id:
        return False
    pgid = int(record["pgid"])
    started = _start_time(pgid)
    return started is None or started == record.get("leader_start")


@cache
def _boot_id() -> str | None:
    """This boot's id (read once: it cannot change while the runner runs)."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot; None if it is gone (or no /proc)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[STAT_STARTTIME_INDEX])
    except (OSError, IndexError, ValueError):
        return None
