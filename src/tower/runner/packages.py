"""Packages this runner has verified and extracted, kept for the next run of the same one.

Opening a package (decrypt, hash, untar, check the MANIFEST) costs milliseconds of
CPU on every run, and most runs are of a version that ran a moment ago. The first
run of a package extracts it as before; right after the checks pass (before the app
can touch its copy) the tree is copied here, under the package's sha256 (which the
control plane signs together with the version: it covers the MANIFEST and the
Towerfile, unlike the contents checksum). A later run whose signed sha256 is here
gets a copy of the tree instead. The cache is the runner's own (0700, never mounted
into a sandbox), bounded to the most recently used packages, and emptied when the
runner starts: a tree this process did not verify is never used.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from tower.core.package import Manifest

#: packages kept at most (least recently used go first)
DEFAULT_MOST = 32


class PackageCache:
    def __init__(self, root: Path, most: int = DEFAULT_MOST) -> None:
        self.root = root
        self._most = most
        self._lock = threading.Lock()
        self._manifests: OrderedDict[str, Manifest] = OrderedDict()
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def copy_to(self, sha256: str, dest: Path) -> Manifest | None:
        """Copy the package with this sha256 to `dest` (which must not exist); its
        MANIFEST, or None when it is not here."""
        with self._lock:  # held while copying, so the tree is not evicted under us
            manifest = self._manifests.get(sha256)
            if manifest is None:
                return None
            self._manifests.move_to_end(sha256)
            shutil.copytree(self.root / sha256, dest, symlinks=True)
        return manifest

    def keep(self, sha256: str, extracted: Path, manifest: Manifest) -> None:
        """Remember the package just verified and extracted at `extracted`."""
        if not sha256 or sha256 in self._manifests:
            return
        staging = self.root / f".{uuid.uuid4().hex}"
        shutil.copytree(extracted, staging, symlinks=True)
        with self._lock:
            if sha256 in self._manifests:  # another run of it got here first
                shutil.rmtree(staging, ignore_errors=True)
                return
            os.replace(staging, self.root / sha256)
            self._manifests[sha256] = manifest
            while len(self._manifests) > self._most:
                oldest, _ = self._manifests.popitem(last=False)
                shutil.rmtree(self.root / oldest, ignore_errors=True)
