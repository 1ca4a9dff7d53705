"""Looking at real processes from runner tests (Linux /proc)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tower.runner.process import group_members

#: tests that run apps as their own uids inside bubblewrap
NEEDS_ROOT_AND_BWRAP = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None, reason="needs root and bubblewrap"
)
#: run uids a test file may lease per xdist worker
UIDS_PER_WORKER = 16


def worker_uids(first: int) -> range:
    """The run uids of this xdist worker in a test file's own range from `first` (no
    two workers, and no two files with ranges apart, ever lease the same uid)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    start = first + UIDS_PER_WORKER * worker
    return range(start, start + UIDS_PER_WORKER)


__all__ = ["Sink", "alive", "group_members", "wait_until"]


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


class Sink:
    """A line sink that keeps every (channel, line) a run emits, from any thread."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, channel: str, content: str) -> None:
        with self.lock:
            self.lines.append((channel, content))

    def channel(self, name: str) -> list[str]:
        return [content for channel, content in self.lines if channel == name]

    def program(self) -> list[str]:
        return self.channel("program")

    def setup(self) -> list[str]:
        return self.channel("setup")
