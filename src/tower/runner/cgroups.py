"""A memory cgroup per run, when the host lets the runner make them.

RLIMIT_AS caps a run's address space, which is not its memory: it refuses harmless
virtual reservations, and when a run goes beyond it the only evidence is what the app
happened to print. A memory cgroup under the runner's own cgroup caps what the run
really uses (every process of it, whatever it forks), and after the run the kernel's
own counter says whether it was OOM-killed for going beyond the limit.

cgroup v1 (a `memory` hierarchy): `memory.limit_in_bytes`, `memory.oom_control`'s
`oom_kill`. cgroup v2: `memory.max`, `memory.events`' `oom_kill` — only where the
runner's cgroup already delegates the memory controller to its children (v2 forbids
enabling it on a cgroup that holds processes, like the runner's own).

Where neither works (no permission, no controller), `MemoryCgroups.detect` answers
None and the sandbox keeps to RLIMIT_AS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
CGROUP_MOUNT = Path("/sys/fs/cgroup")
#: run cgroups are named `tower-run-<runner pid>-<random>`: a sweep knows whose they are
NAME_PREFIX = "tower-run-"
#: how long the processes left in a run's cgroup are killed for before giving up (s)
KILL_DEADLINE_S = 10.0
#: the most emptied run cgroups a runner keeps for its next runs (see `CgroupPool`)
MOST_KEPT = 32


@dataclass(frozen=True)
class MemoryCgroups:
    """Where this runner makes per-run memory cgroups: under its own cgroup."""

    base: Path
    version: int

    @classmethod
    def detect(
        cls, proc_cgroup: Path = Path("/proc/self/cgroup"), mount: Path = CGROUP_MOUNT
    ) -> MemoryCgroups | None:
        """The runner's memory cgroup when it may make children there, else None."""
        try:
            lines = proc_cgroup.read_text().splitlines()
        except OSError:
            return None
        found = _v1_memory(lines, mount) or _v2_memory(lines, mount)
        if found is None or not _can_make_children(found.base):
            return None
        return found

    def create(self, memory_mb: int, uid: int | None) -> RunCgroup:
        """A fresh cgroup limited to `memory_mb`; `uid` (the run's) may move into it."""
        path = self.base / f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        cgroup = RunCgroup(path, self.version, memory_mb)
        try:
            cgroup.limit(memory_mb)
            if uid is not None:
                cgroup.hand_to(uid)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def sweep(self) -> list[Path]:
        """Remove the empty run cgroups a crashed runner left (its pid is gone). One
        still holding processes is left alone: the sandbox's sweep of run uids kills
        what a crashed runner's runs left, and a pid may belong to another namespace."""
        removed = []
        for path in self.base.glob(f"{NAME_PREFIX}*"):
            match = re.fullmatch(rf"{NAME_PREFIX}(\d+)-\w+", path.name)
            if not (match and path.is_dir()) or _alive(int(match.group(1))):
                continue
            try:
                path.rmdir()
            except OSError:
                continue
            removed.append(path)
        return removed


@dataclass(frozen=True)
class RunCgroup:
    """One run's memory cgroup."""

    path: Path
    version: int
    #: its limit (None: not known to this process)
    memory_mb: int | None = None
    #: the kernel's OOM count when the run got the cgroup (a reused one counts on)
    oom_baseline: int = 0

    def hand_to(self, uid: int | None) -> None:
        """Let `uid` (a run's own, None: none) move its processes in, and no one else.
        The run's process joins itself after dropping to its uid (Popen's preexec runs
        after setuid): it may write only this file."""
        owner = (uid, uid) if uid is not None else (os.geteuid(), os.getegid())
        os.chown(self.path / "cgroup.procs", *owner)

    def limit(self, memory_mb: int) -> None:
        size = str(memory_mb * MIB)
        if self.version == 1:
            (self.path / "memory.limit_in_bytes").write_text(size)
            # With swap accounting, also cap memory+swap, or the run would swap instead.
            with contextlib.suppress(OSError):
                (self.path / "memory.memsw.limit_in_bytes").write_text(size)
        else:
            (self.path / "memory.max").write_text(size)
            with contextlib.suppress(OSError):
                (self.path / "memory.swap.max").write_text("0")

    def join_hook(self) -> Callable[[], None]:
        """For a `preexec_fn`: move the calling (child) process into this cgroup."""
        procs = os.fsencode(self.path / "cgroup.procs")

        def join() -> None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)

        return join

    def add(self, pid: int) -> None:
        """Move process `pid` into this cgroup (what it forks from then on is in it)."""
        fd = os.open(self.path / "cgroup.procs", os.O_WRONLY)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the run for going over the limit."""
        return self.oom_count() > self.oom_baseline

    def oom_count(self) -> int:
        """The kernel's count of OOM kills in this cgroup since it was made (0 when it
        cannot be read)."""
        events = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (self.path / events).read_text()
        except OSError:
            return 0
        match = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
        if match:
            return int(match.group(1))
        # Kernels before 4.13 have no oom_kill count (v1): the limit was at least hit.
        if self.version == 1:
            with contextlib.suppress(OSError, ValueError):
                return int((self.path / "memory.failcnt").read_text())
        return 0

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError, ValueError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def empty(self) -> bool:
        """Kill what is left in the cgroup; True once no process is left in it."""
        deadline = time.monotonic() + KILL_DEADLINE_S
        while pids := self.pids():
            if time.monotonic() > deadline:
                logger.error("processes %s outlived their run in %s", pids, self.path)
                return False
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        return True

    def remove(self) -> bool:
        """Kill what is left in the cgroup, then remove it. True when no process is
        left in it (whether or not the directory could be removed)."""
        if not self.empty():
            return False
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove the run cgroup %s: %s", self.path, exc)
        return True


class CgroupPool:
    """Run cgroups of one runner, reused: making and removing a memory cgroup is kernel
    work (about 1 ms of CPU a run on a 2-core VM, some of it in kernel workers), and a
    runner makes one per run. A run's cgroup, once emptied, is kept for the next run
    with the same limit (so its limit stays as it is), handed back to the runner's
    user first so the last run's uid can no longer move a process in; the next run
    counts OOM kills from the count it finds. At most `most_kept` are kept; `close`
    removes them. A runner that is killed leaves them, empty, to the next one's
    `MemoryCgroups.sweep`.

    What a reused cgroup still has is its charged page cache (files an earlier run
    read, like the venv's): reclaimable, it makes way when a run needs the memory."""

    def __init__(self, cgroups: MemoryCgroups, most_kept: int = MOST_KEPT) -> None:
        self.cgroups = cgroups
        self.most_kept = most_kept
        self._lock = threading.Lock()
        self._kept: dict[int, list[RunCgroup]] = {}
        self._closed = False

    def acquire(self, memory_mb: int, uid: int | None) -> RunCgroup:
        """A cgroup limited to `memory_mb` that `uid` may move into: a kept one, or a
        fresh one."""
        with self._lock:
            kept = self._kept.get(memory_mb)
            cgroup = kept.pop() if kept else None
        if cgroup is None:
            return self.cgroups.create(memory_mb, uid)
        try:
            if uid is not None:
                cgroup.hand_to(uid)
        except OSError:
            cgroup.remove()
            return self.cgroups.create(memory_mb, uid)
        return replace(cgroup, oom_baseline=cgroup.oom_count())

    def release(self, cgroup: RunCgroup) -> bool:
        """Kill what the run left in its cgroup, then keep or remove it. True when no
        process is left in it (as `RunCgroup.remove`)."""
        if not cgroup.empty():
            return False
        return self._keep(cgroup) or cgroup.remove()

    def _keep(self, cgroup: RunCgroup) -> bool:
        """Keep an emptied cgroup for a later run of its limit; False when it is not."""
        if cgroup.memory_mb is None:
            return False
        try:
            cgroup.hand_to(None)
        except OSError:
            return False
        with self._lock:
            if self._closed or sum(map(len, self._kept.values())) >= self.most_kept:
                return False
            self._kept.setdefault(cgroup.memory_mb, []).append(cgroup)
        return True

    def close(self) -> None:
        """Remove the kept cgroups; a cgroup released after this is removed."""
        with self._lock:
            self._closed = True
            kept = [cgroup for group in self._kept.values() for cgroup in group]
            self._kept.clear()
        for cgroup in kept:
            cgroup.remove()


def _v1_memory(lines: list[str], mount: Path) -> MemoryCgroups | None:
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return MemoryCgroups(mount / "memory" / path.lstrip("/"), 1)
    return None


def _v2_memory(lines: list[str], mount: Path) -> MemoryCgroups | None:
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            base = mount / path.lstrip("/")
            with contextlib.suppress(OSError):
                if "memory" in (base / "cgroup.subtree_control").read_text().split():
                    return MemoryCgroups(base, 2)
    return None


def _can_make_children(base: Path) -> bool:
    probe = base / f"{NAME_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
