"""Blob storage for packages: a local directory by default (S3 plugs in here later)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tower.core import errors


class LocalBlobStore:
    """Blobs as files under one root; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._resolved_root = root.resolve()  # once: every dispatched run reads a blob

    def _path(self, key: str) -> Path:
        path = (self._resolved_root / key).resolve()
        if self._resolved_root not in path.parents:
            raise errors.BadRequest(f"Invalid blob key {key!r}.")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise errors.NotFound(f"Blob {key!r} is missing from storage.") from exc

    def delete_prefix(self, prefix: str) -> None:
        base = self._path(prefix)
        if not base.exists():
            return
        for path in sorted(base.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        base.rmdir()
