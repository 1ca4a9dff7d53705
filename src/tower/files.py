"""Private files: keys, tokens and passwords on disk, readable by their owner only.

The control plane (admin key and password files), the runner (its saved credential)
and the CLI (its session, runner certificates) all write them the same way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private(path: Path, text: str) -> Path:
    """Replace `path` with `text`, mode 0600 from its first byte, atomically.

    A reader sees the old content or the new one, never half a file (a crash can't
    leave a truncated token behind), and a file that had a wider mode does not keep it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        # mkstemp creates 0600 already; fchmod keeps that true whatever the umask.
        os.fchmod(fd, PRIVATE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path
