"""Per-run memory cgroups on the real kernel: the limit holds, an OOM kill is seen,
and nothing of a run is left behind. Skips where this host's cgroups are not writable;
the file-level parts run everywhere against a fake cgroup tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tower.runner.cgroups import NAME_PREFIX, CgroupPool, MemoryCgroups, RunCgroup

REAL = MemoryCgroups.detect()
needs_cgroups = pytest.mark.skipif(
    REAL is None, reason="needs a writable memory cgroup (cgroup v1 memory, or v2 delegated)"
)
HOG = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 1024 * 1024))\n"


def _run_in(cgroup: RunCgroup, code: str) -> int:
    """The exit status of `python -c code` started in `cgroup`."""
    ran = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=cgroup.join_hook(), timeout=60, check=False
    )
    return ran.returncode


def _limit_mb(cgroup: RunCgroup) -> int:
    name = "memory.limit_in_bytes" if cgroup.version == 1 else "memory.max"
    return int((cgroup.path / name).read_text()) // (1024 * 1024)


@needs_cgroups
def test_a_process_over_the_limit_is_oom_killed_and_that_is_seen() -> None:
    assert REAL is not None
    cgroup = REAL.create(32, uid=None)
    try:
        assert _run_in(cgroup, HOG) == -9  # SIGKILL from the kernel's OOM killer
        assert cgroup.oom_killed()
    finally:
        cgroup.remove()
    assert not cgroup.path.exists()


@needs_cgroups
def test_a_process_within_the_limit_is_not_reported() -> None:
    assert REAL is not None
    cgroup = REAL.create(256, uid=None)
    try:
        assert _run_in(cgroup, "x = bytearray(16 * 1024 * 1024)") == 0
        assert not cgroup.oom_killed()
    finally:
        cgroup.remove()


@needs_cgroups
def test_remove_kills_what_the_run_left_running() -> None:
    assert REAL is not None
    cgroup = REAL.create(64, uid=None)
    left = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], preexec_fn=cgroup.join_hook()
    )
    assert cgroup.pids() == [left.pid]
    cgroup.remove()
    assert left.wait(10) == -9
    assert not cgroup.path.exists()


@needs_cgroups
def test_sweep_removes_only_cgroups_of_runners_that_are_gone() -> None:
    assert REAL is not None
    dead_pid = _dead_pid()
    stale = REAL.base / f"{NAME_PREFIX}{dead_pid}-abc"
    mine = REAL.create(64, uid=None)
    stale.mkdir()
    try:
        # (Other test processes that ended may have left cgroups of their own.)
        swept = REAL.sweep()
        assert stale in swept and mine.path not in swept
        assert not stale.exists() and mine.path.exists()
    finally:
        mine.remove()
        RunCgroup(stale, REAL.version).remove()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _fake_v1(tmp_path: Path) -> tuple[Path, Path]:
    proc = tmp_path / "cgroup"
    proc.write_text("5:devices:/\n4:memory:/runners/r1\n0::/\n")
    base = tmp_path / "mnt" / "memory" / "runners" / "r1"
    base.mkdir(parents=True)
    return proc, base


def test_detect_finds_the_v1_memory_cgroup_of_the_process(tmp_path: Path) -> None:
    proc, base = _fake_v1(tmp_path)
    assert MemoryCgroups.detect(proc, tmp_path / "mnt") == MemoryCgroups(base, 1)


def test_detect_v2_needs_the_memory_controller_delegated(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/system.slice/tower-runner.service\n")
    base = tmp_path / "mnt" / "system.slice" / "tower-runner.service"
    base.mkdir(parents=True)
    (base / "cgroup.subtree_control").write_text("cpu pids\n")
    assert MemoryCgroups.detect(proc, tmp_path / "mnt") is None
    (base / "cgroup.subtree_control").write_text("cpu memory pids\n")
    assert MemoryCgroups.detect(proc, tmp_path / "mnt") == MemoryCgroups(base, 2)


def test_detect_is_none_without_a_memory_cgroup_or_permission(tmp_path: Path) -> None:
    assert MemoryCgroups.detect(tmp_path / "missing", tmp_path) is None
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/not/there\n")
    assert MemoryCgroups.detect(proc, tmp_path / "mnt") is None


@pytest.mark.parametrize(
    ("version", "events", "text", "killed"),
    [
        (1, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", True),
        (1, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", False),
        (2, "memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n", True),
        (2, "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n", False),
    ],
)
def test_oom_killed_reads_the_kernel_counter(
    tmp_path: Path, version: int, events: str, text: str, killed: bool
) -> None:
    (tmp_path / events).write_text(text)
    assert RunCgroup(tmp_path, version).oom_killed() is killed


def test_oom_killed_counts_from_the_baseline_a_reused_cgroup_had(tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text("max 4\noom 2\noom_kill 2\n")
    assert not RunCgroup(tmp_path, 2, 64, oom_baseline=2).oom_killed()
    (tmp_path / "memory.events").write_text("max 5\noom 3\noom_kill 3\n")
    assert RunCgroup(tmp_path, 2, 64, oom_baseline=2).oom_killed()


def test_limit_writes_the_version_file(tmp_path: Path) -> None:
    RunCgroup(tmp_path, 1).limit(64)
    assert (tmp_path / "memory.limit_in_bytes").read_text() == str(64 * 1024 * 1024)
    RunCgroup(tmp_path, 2).limit(32)
    assert (tmp_path / "memory.max").read_text() == str(32 * 1024 * 1024)


@needs_cgroups
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the cgroup to another uid")
def test_the_run_uid_may_join_but_not_change_the_limit() -> None:
    assert REAL is not None
    uid = 2_299_999
    cgroup = REAL.create(64, uid=uid)
    try:
        assert (cgroup.path / "cgroup.procs").stat().st_uid == uid
        assert (cgroup.path / "memory.limit_in_bytes").stat().st_uid == 0 or REAL.version == 2
        joined = subprocess.run(
            ["/bin/true"],  # the run uid cannot reach this venv's Python under /root
            user=uid,
            group=uid,
            extra_groups=[],
            preexec_fn=cgroup.join_hook(),
            timeout=60,
            check=False,
        )
        assert joined.returncode == 0
    finally:
        cgroup.remove()


@needs_cgroups
def test_a_released_cgroup_serves_the_next_run_of_its_limit_counting_oom_kills_afresh() -> None:
    assert REAL is not None
    pool = CgroupPool(REAL)
    try:
        first = pool.acquire(32, uid=None)
        assert _run_in(first, HOG) == -9 and first.oom_killed()
        assert pool.release(first)
        again = pool.acquire(32, uid=None)
        assert again.path == first.path and not again.oom_killed()
        assert _run_in(again, "x = bytearray(4 * 1024 * 1024)") == 0
        assert not again.oom_killed() and _limit_mb(again) == 32
        other = pool.acquire(64, uid=None)  # another limit: a cgroup of its own
        assert other.path != again.path and _limit_mb(other) == 64
        for cgroup in (again, other):
            assert pool.release(cgroup)
    finally:
        pool.close()
    assert not first.path.exists()


@needs_cgroups
def test_release_kills_what_the_run_left_before_the_cgroup_is_kept() -> None:
    assert REAL is not None
    pool = CgroupPool(REAL)
    try:
        cgroup = pool.acquire(64, uid=None)
        left = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"], preexec_fn=cgroup.join_hook()
        )
        assert pool.release(cgroup)
        assert left.wait(10) == -9
        assert cgroup.pids() == [] and cgroup.path.exists()
    finally:
        pool.close()
    assert not cgroup.path.exists()


@needs_cgroups
def test_the_pool_keeps_at_most_its_bound_and_nothing_after_close() -> None:
    assert REAL is not None
    pool = CgroupPool(REAL, most_kept=1)
    kept, removed = pool.acquire(64, uid=None), pool.acquire(64, uid=None)
    assert pool.release(kept) and pool.release(removed)
    assert kept.path.exists() and not removed.path.exists()
    pool.close()
    assert not kept.path.exists()
    late = REAL.create(64, uid=None)
    assert pool.release(late)  # released after close: removed, not kept
    assert not late.path.exists()


@needs_cgroups
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the cgroup to another uid")
def test_a_kept_cgroup_is_taken_back_from_the_uid_of_its_last_run() -> None:
    assert REAL is not None
    pool = CgroupPool(REAL)
    try:
        cgroup = pool.acquire(64, uid=2_299_998)
        assert (cgroup.path / "cgroup.procs").stat().st_uid == 2_299_998
        assert pool.release(cgroup)
        # Kept: the last run's uid can no longer move a process in.
        assert (cgroup.path / "cgroup.procs").stat().st_uid == 0
        again = pool.acquire(64, uid=2_299_997)
        assert again.path == cgroup.path
        assert (again.path / "cgroup.procs").stat().st_uid == 2_299_997
        assert pool.release(again)
    finally:
        pool.close()
