"""Packages this runner has verified and extracted, kept for the next run of the same one.

Opening a package (decrypt, hash, untar, check the MANIFEST) costs milliseconds of
CPU on every run, and most runs are of a version that ran a moment ago. The first
run of a package extracts it as before; right after the checks pass (before the app
can touch its copy) the tree is copied here, under the package's sha256 (which the
control plane signs together with the version: it covers the MANIFEST and the
Towerfile, unlike the contents checksum). A later run whose signed sha256 is here
gets a copy of the tree instead. The cache is the runner process's own (0700, never
mounted into a sandbox; several runners may share a `$TOWER_HOME`, each has its own
directory, held by an flock), bounded to the most recently used packages, and made
anew when the runner starts: a tree this process did not verify is never used, and
the directories of runners that are gone are removed. The cache only saves work: when
it fails (a full disk...), the run opens its package as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from tower.core.package import Manifest
from tower.runner.workdirs import LOCK_SUFFIX, HeldDir

logger = logging.getLogger(__name__)

#: packages kept at most (least recently used go first)
DEFAULT_MOST = 32


class PackageCache:
    """The packages of one runner process, under `parent/<its own name>`."""

    def __init__(self, parent: Path, most: int = DEFAULT_MOST) -> None:
        self._most = most
        self._lock = threading.Lock()
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_abandoned(parent)
        # Held (flock) for as long as this process lives: it says the directory is used.
        self._held = HeldDir(parent)
        self.root = self._held.path

    def close(self) -> None:
        """Give the kept packages up: their directory goes, and the lock with it."""
        with self._lock:
            if self._held.removed:
                return
            self._manifests.clear()
            self._held.remove()

    def copy_to(self, sha256: str, dest: Path) -> Manifest | None:
        """Copy the package with this sha256 to `dest`; its MANIFEST, or None when it
        is not here (or could not be copied), and then nothing is left at `dest`.

        `dest` may hold a package skeleton (directories only, see
        `tower.runner.workdirs`): its directories the package has are used, the others
        removed, so the copy ends up exactly the package's tree."""
        with self._lock:
            manifest = self._manifests.get(sha256)
            if manifest is not None:
                self._manifests.move_to_end(sha256)
        if manifest is None:
            shutil.rmtree(dest, ignore_errors=True)
            return None
        # Outside the lock, so runs starting together copy at the same time. A tree
        # evicted meanwhile is renamed away before it is deleted (`_evict`): a copy
        # either completes or fails on a path that is gone, it never comes out short.
        source = self.root / sha256
        try:
            _prune_directories(dest, source)
            shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
        except OSError as exc:
            logger.warning("could not copy a kept package (%s); opening it again", exc)
            shutil.rmtree(dest, ignore_errors=True)
            return None
        return manifest

    def keep(self, sha256: str, extracted: Path, manifest: Manifest) -> None:
        """Remember the package just verified and extracted at `extracted`."""
        if not sha256 or sha256 in self._manifests:
            return
        staging = self.root / f".{uuid.uuid4().hex}"
        try:
            shutil.copytree(extracted, staging, symlinks=True)
            with self._lock:
                if sha256 in self._manifests:  # another run of it got here first
                    return
                os.replace(staging, self.root / sha256)
                self._manifests[sha256] = manifest
                evicted = []
                while len(self._manifests) > self._most:
                    oldest, _ = self._manifests.popitem(last=False)
                    evicted.append(self._evict(oldest))
            for gone in evicted:
                shutil.rmtree(gone, ignore_errors=True)
        except OSError as exc:
            logger.warning("could not keep a package for later runs (%s)", exc)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _evict(self, sha256: str) -> Path:
        """Rename a kept tree out of the way (see `copy_to`); answers where it went, to
        be deleted (where it is, if it could not be renamed)."""
        gone = self.root / f".evicted-{uuid.uuid4().hex}"
        try:
            os.rename(self.root / sha256, gone)
        except OSError as exc:
            logger.warning("could not move an evicted package aside (%s)", exc)
            return self.root / sha256
        return gone


def _prune_directories(skeleton: Path, source: Path) -> None:
    """Remove the directories of `skeleton` (nothing but directories) that `source`
    does not have as directories."""
    if not skeleton.is_dir():
        return
    with os.scandir(skeleton) as entries:
        for entry in entries:
            counterpart = source / entry.name
            if counterpart.is_dir() and not counterpart.is_symlink():
                _prune_directories(Path(entry.path), counterpart)
            else:
                shutil.rmtree(entry.path)


def remove_abandoned(parent: Path) -> None:
    """Remove the package directories of runner processes that are gone (their lock
    file is not held)."""
    for lock_path in parent.glob(f"*{LOCK_SUFFIX}"):
        with contextlib.suppress(OSError), lock_path.open("a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live runner's
            shutil.rmtree(parent / lock_path.name.removesuffix(LOCK_SUFFIX), ignore_errors=True)
            lock_path.unlink()
