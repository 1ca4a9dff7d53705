"""Per-run working directories: `<work>/<run_id>`, always wiped afterwards.

While a run is in progress its worker holds an exclusive `fcntl` lock on
`<work>/<run_id>.lock`. At start, an agent removes every run dir whose lock it can
take: those were left behind by a crashed runner. Dirs of runs that another live
runner (sharing the same `$TOWER_HOME`) is executing stay untouched.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"


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
