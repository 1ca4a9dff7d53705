"""Looking at real processes from runner tests (Linux /proc)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tower.runner.process import group_members

__all__ = ["alive", "group_members", "wait_until"]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
