"""Per-run working directories: `<work>/<run_id>`, wiped after every run.

While a run is in progress its worker holds an exclusive `fcntl` lock on
`<work>/<run_id>.lock`. At start, an agent removes every run dir whose lock it can
take: those were left behind by a crashed runner. Dirs of runs that another live
runner (sharing the same `$TOWER_HOME`) is executing stay untouched.

When the app starts, its process group is recorded in that lock file — next to the
run dir, not in it: a sandboxed app owns its run dir and must not be able to forge
the record a later clean-up acts on. A runner killed with SIGKILL cannot stop its
apps, so the clean-up first SIGKILLs the group recorded in each leftover dir: no app
outlives its runner's restart. The record also holds the boot id and the group
leader's start time, so a group id the kernel has since handed to an unrelated
process is never killed.

A runner reuses the directories of finished runs (`RunDirs`): every inode a run
creates and deletes costs an allocation, and on ext4 without a journal each
allocation skips every inode freed in the last minutes, so that cost grows with the
square of the rate of runs. A finished run dir is emptied but for its HOME and
TMPDIR (emptied too), and the three are made what a fresh `mkdir` makes: owned by
the runner, the same mode, none of the extended attributes or ACLs an app that owned
them could have set. It waits in the runner's own spares directory (held by its
lock, like a run dir) for the next run. Only the runner's processes are left by
then: a sandboxed run's processes end with it (its PID namespace), an unsandboxed
one's with its process group. (The record shares the lock file for the same reason:
one inode less per run.)

For the same reason the spares directory also keeps, for the next runs:

- *lock files*: a finished run's lock file is renamed there (still locked) instead of
  deleted, and emptied and linked in as the next run's (a link, so a lock file that
  is already there, perhaps held by another runner, is never replaced);
- *package skeletons*: a finished run's package directory stripped of everything but
  its directories, each made what `mkdir` makes. The next run's package is copied
  into one (`RunDirs.package_dir`, `tower.runner.packages`), so a run of the same
  package creates and deletes only its files. The package's files are never reused:
  a process of the app's account could still hold one open for writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import stat
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
PROC = Path("/proc")
BOOT_ID_FILE = PROC / "sys" / "kernel" / "random" / "boot_id"
#: index of `starttime` among the fields of /proc/<pid>/stat that follow `(comm)`
STAT_STARTTIME_INDEX = 19
#: a run's HOME and TMPDIR, and where its package goes, inside its run dir
HOME_DIR_NAME = "home"
TMP_DIR_NAME = "tmp"
PACKAGE_DIR_NAME = "package"
#: finished run dirs a runner keeps for reuse, at most (a run takes one, and a warm
#: interpreter's slot another)
DEFAULT_SPARES = 32
SPARES_PREFIX = ".spares-"
#: a package skeleton with more directories than this is not kept (an app may have
#: made any number of them; stripping and pruning them would cost more than it saves)
MOST_SKELETON_DIRS = 64
#: extended attributes an app owning a directory can set: its own, and ACLs
APP_XATTR_PREFIXES = ("user.", "system.posix_acl_")


class RunDirs:
    """The run dirs of one runner process under `root`, reused (see the module doc)."""

    def __init__(self, root: Path, most_spares: int = DEFAULT_SPARES) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._most = most_spares
        self._lock = threading.Lock()
        self._spares: list[Path] = []
        self._spare_locks: list[Path] = []
        #: False once a lock file could not be linked (a file system without hard
        #: links): lock files are then made and deleted per run, as before
        self._link_locks = True
        self._skeletons: list[Path] = []
        #: the mode `mkdir` gives (under this process's umask), read off the first one
        self._mode: int | None = None
        self._spares_dir: HeldDir | None = None
        self._closed = False

    @contextmanager
    def open(self, name: str) -> Iterator[Path]:
        """`<root>/<name>`, empty but perhaps for an empty HOME and TMPDIR, for the
        `with` block; afterwards kept for another run, or removed."""
        lock_path = self.root / f"{name}{LOCK_SUFFIX}"
        with self._hold_lock(lock_path):
            path = self.root / name
            shutil.rmtree(path, ignore_errors=True)  # a crashed attempt's
            self._place(path)
            try:
                yield path
            finally:
                if not self._keep(path):
                    shutil.rmtree(path, ignore_errors=True)
                self._release_lock(lock_path)

    def package_dir(self, run_dir: Path) -> Path:
        """Where the package of the run in `run_dir` goes: a kept package skeleton is
        moved there when there is one (only directories, owned by the runner), else
        nothing is there yet."""
        path = run_dir / PACKAGE_DIR_NAME
        with self._lock:
            skeleton = self._skeletons.pop() if self._skeletons else None
        if skeleton is not None:
            try:
                skeleton.rename(path)
            except OSError as exc:
                logger.warning("could not reuse a package skeleton (%s)", exc)
                shutil.rmtree(skeleton, ignore_errors=True)
        return path

    def spare_count(self) -> int:
        with self._lock:
            return len(self._spares)

    def close(self) -> None:
        """Remove the spares (and their directory); a run ending later is not kept."""
        with self._lock:
            self._closed = True
            self._spares.clear()
            self._spare_locks.clear()
            self._skeletons.clear()
            if self._spares_dir is not None:
                self._spares_dir.remove()
                self._spares_dir = None

    def _place(self, path: Path) -> None:
        """A spare renamed to `path`, or a new directory there."""
        with self._lock:
            spare = self._spares.pop() if self._spares else None
        if spare is not None:
            try:
                spare.rename(path)
                return
            except OSError as exc:
                logger.warning("could not reuse a run dir (%s); making a new one", exc)
                shutil.rmtree(spare, ignore_errors=True)
        path.mkdir()
        if self._mode is None:
            self._mode = path.stat().st_mode & 0o7777

    def _keep(self, path: Path) -> bool:
        """Reset `path` and move it to the spares; False when it was not kept."""
        if not self._has_room(self._spares) or self._mode is None:
            return False
        self._keep_skeleton(path / PACKAGE_DIR_NAME, self._mode)
        return reset_for_reuse(path, self._mode) and self._stash(path, self._spares, "run dir")

    def _keep_skeleton(self, package: Path, mode: int) -> None:
        """Strip `package` to its directories, reset them and keep them for the next
        run's package; what is left where it was goes with the run dir."""
        if not self._has_room(self._skeletons):
            return
        try:
            if not stat.S_ISDIR(os.lstat(package).st_mode):
                return
            directories = strip_to_directories(package, MOST_SKELETON_DIRS)
        except FileNotFoundError:  # a run that had no package (or moved it away)
            return
        except OSError as exc:
            logger.warning("could not keep the package directories of %s: %s", package, exc)
            return
        if directories is None:
            return
        try:
            for directory in directories:
                _reset_inode(directory, mode)
        except OSError as exc:
            logger.warning("could not reset the package directories of %s: %s", package, exc)
            return
        self._stash(package, self._skeletons, "package skeleton")

    @contextmanager
    def _hold_lock(self, lock_path: Path) -> Iterator[None]:
        """`lock_path` flocked for the `with` block: a spare lock file linked there, or
        the file there (made when missing), once any other holder lets it go."""
        handle = self._reused_lock_file(lock_path)
        if handle is None:
            handle = lock_path.open("a+b")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        with handle:
            yield

    def _reused_lock_file(self, lock_path: Path) -> IO[bytes] | None:
        """A spare lock file, locked and emptied (no group record of an earlier run),
        then linked at `lock_path`; None when there is none, or a file is there already
        (a link never replaces one: it may be another runner's, held)."""
        with self._lock:
            spare = self._spare_locks.pop() if self._spare_locks else None
        if spare is None:
            return None
        try:
            handle = spare.open("r+b")
        except OSError as exc:
            logger.warning("could not reuse a lock file (%s)", exc)
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # this runner's own
            handle.truncate(0)
            os.link(spare, lock_path)
        except OSError as exc:
            handle.close()
            if not isinstance(exc, FileExistsError):
                logger.warning("could not reuse a lock file (%s); making one per run", exc)
                self._link_locks = False
            spare.unlink(missing_ok=True)
            return None
        spare.unlink(missing_ok=True)
        return handle

    def _release_lock(self, lock_path: Path) -> None:
        """Keep the lock file for another run (moved while still locked) or delete it."""
        if not (self._link_locks and self._stash(lock_path, self._spare_locks, "lock file")):
            lock_path.unlink(missing_ok=True)

    def _stash(self, path: Path, kept: list[Path], what: str) -> bool:
        """Move `path` into the spares directory and add it to `kept` (one of the
        lists of spares); False when there is no room or it could not be moved."""
        with self._lock:
            if self._closed or len(kept) >= self._most:  # meanwhile
                return False
            try:
                if self._spares_dir is None:
                    self._spares_dir = HeldDir(self.root, SPARES_PREFIX)
                spare = self._spares_dir.path / uuid.uuid4().hex
                path.rename(spare)
            except OSError as exc:
                logger.warning("could not keep a %s for reuse: %s", what, exc)
                return False
            kept.append(spare)
        return True

    def _has_room(self, kept: list[Path]) -> bool:
        with self._lock:
            return not self._closed and len(kept) < self._most


class HeldDir:
    """A directory of this process's own, `<parent>/<prefix><random>`, held in use by an
    flock on its `.lock` file for as long as it lives, as a run dir is: a runner
    sharing `parent` passes it by, and removes it once its process is gone."""

    def __init__(self, parent: Path, prefix: str = "") -> None:
        name = f"{prefix}{uuid.uuid4().hex}"
        self._lock_file = (parent / f"{name}{LOCK_SUFFIX}").open("a+b")
        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX)
        self.path = parent / name
        self.path.mkdir(mode=0o700)

    @property
    def removed(self) -> bool:
        return self._lock_file.closed

    def remove(self) -> None:
        """The directory goes, then its lock file (only the first call does anything)."""
        if self._lock_file.closed:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        Path(self._lock_file.name).unlink(missing_ok=True)
        self._lock_file.close()


def run_work_dir(root: Path, run_id: str) -> contextlib.AbstractContextManager[Path]:
    """A fresh `<root>/<run_id>` for the `with` block, removed when it ends."""
    return RunDirs(root, most_spares=0).open(run_id)


def reset_for_reuse(run_dir: Path, mode: int) -> bool:
    """Empty `run_dir` but for its HOME and TMPDIR, empty those, and make the three
    what `mkdir` made them (`mode`, this process's owner, no app-set attributes).
    False when that could not be done: the dir must not be reused then."""
    try:
        kept = [run_dir]
        with os.scandir(run_dir) as entries:
            for entry in entries:
                if entry.name in (HOME_DIR_NAME, TMP_DIR_NAME) and entry.is_dir(
                    follow_symlinks=False
                ):
                    _empty(entry.path)
                    kept.append(Path(entry.path))
                else:
                    _remove(entry)
        for directory in kept:
            _reset_inode(directory, mode)
    except OSError as exc:
        logger.warning("could not reset %s for reuse: %s", run_dir, exc)
        return False
    return True


def strip_to_directories(top: Path, most: int) -> list[Path] | None:
    """Delete everything under `top` but its directories (symlinks are deleted, never
    followed); the directories, `top` first, or None (and stop) beyond `most` of them."""
    directories = [top]
    pending = [str(top)]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
                    continue
                if len(directories) >= most:
                    return None
                directories.append(Path(entry.path))
                pending.append(entry.path)
    return directories


def _empty(directory: str) -> None:
    with os.scandir(directory) as entries:
        for entry in entries:
            _remove(entry)


def _remove(entry: os.DirEntry[str]) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)  # never follows a symlink out of the tree
    else:
        os.unlink(entry.path)


def _reset_inode(directory: Path, mode: int) -> None:
    os.chown(directory, os.geteuid(), os.getegid(), follow_symlinks=False)
    os.chmod(directory, mode)  # a real directory (checked), not a symlink
    try:
        names = os.listxattr(directory, follow_symlinks=False)
    except OSError:  # no extended attributes on this file system
        return
    for name in names:
        if name.startswith(APP_XATTR_PREFIXES):
            os.removexattr(directory, name, follow_symlinks=False)


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
