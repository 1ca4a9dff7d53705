"""The sandbox's pure parts: bwrap arguments, limit clamping, requests, explanations,
settings; and the venv cache's LRU eviction on a real directory tree."""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from tower.runner.cgroups import RunCgroup
from tower.runner.sandbox import (
    Jail,
    Limits,
    LimitWatch,
    Mounts,
    NetworkMode,
    RunRequest,
    SandboxMode,
    SandboxUnavailable,
    UidLease,
    bwrap_argv,
    clamp_notes,
    local_catalog_dirs,
    mount_parents,
    parse_uid_range,
    reachable_by_all,
    remove_temp_files_of,
    rlimit_settings,
    system_binds,
)
from tower.runner.settings import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_LIMITS,
    RunnerSettings,
    SettingsError,
)
from tower.runner.venvs import LAST_USED_FILE, LOCKS_DIR_NAME, SIZE_FILE, USE_LOCK_SUFFIX, VenvCache

MOUNTS = Mounts(
    writable=(Path("/srv/tower/runner/work/r-1"),),
    readable=(Path("/srv/tower/runner/venvs/abc"), Path("/opt/python3.11")),
    cwd=Path("/srv/tower/runner/work/r-1/package/app"),
)
COMMAND = ["/srv/tower/runner/venvs/abc/bin/python", "main.py"]


def pairs(argv: list[str], flag: str) -> list[str]:
    """The values following each occurrence of `flag` (its first operand)."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_bwrap_argv_binds_only_the_runs_own_paths() -> None:
    argv = bwrap_argv(
        "bwrap", COMMAND, MOUNTS, system=["--ro-bind", "/usr", "/usr"], isolate_network=False
    )
    assert argv[0] == "bwrap"
    assert argv[-2:] == COMMAND
    assert pairs(argv, "--bind") == ["/srv/tower/runner/work/r-1"], "the only writable path"
    assert pairs(argv, "--ro-bind") == ["/usr", "/srv/tower/runner/venvs/abc", "/opt/python3.11"]
    assert pairs(argv, "--tmpfs") == ["/tmp", "/dev/shm"]
    assert pairs(argv, "--proc") == ["/proc"]
    assert pairs(argv, "--chdir") == [str(MOUNTS.cwd)]
    for flag in ("--unshare-pid", "--die-with-parent", "--unshare-ipc"):
        assert flag in argv
    assert "--unshare-net" not in argv
    assert "setpriv" not in " ".join(argv)
    # Mount points' parents exist and are enterable, in order, outermost first.
    assert pairs(argv, "--dir") == [
        "/srv",
        "/srv/tower",
        "/srv/tower/runner",
        "/srv/tower/runner/venvs",
        "/opt",
        "/srv/tower/runner/work",
    ]
    assert argv.index("--dir") < argv.index("--bind")


def test_bwrap_argv_network_isolation_and_run_uid() -> None:
    argv = bwrap_argv(
        "bwrap",
        COMMAND,
        MOUNTS,
        system=[],
        isolate_network=True,
        run_as=2000007,
        setpriv="/usr/bin/setpriv",
    )
    assert "--unshare-net" in argv
    inner = argv[argv.index("--") + 1 :]
    assert inner == [
        "/usr/bin/setpriv",
        "--reuid=2000007",
        "--regid=2000007",
        "--clear-groups",
        "--no-new-privs",
        "--",
        *COMMAND,
    ]
    with pytest.raises(SandboxUnavailable, match="setpriv"):
        bwrap_argv("bwrap", COMMAND, MOUNTS, system=[], isolate_network=False, run_as=1)


def test_mount_parents_skip_what_the_sandbox_provides() -> None:
    paths = [Path("/tmp/pytest/w"), Path("/usr/local/venvs/x"), Path("/a/b/c")]
    assert mount_parents(paths) == [Path("/tmp/pytest"), Path("/a"), Path("/a/b")]


def test_system_binds_recreate_symlinks_and_list_etc(tmp_path: Path) -> None:
    (tmp_path / "usr").mkdir()
    (tmp_path / "lib").symlink_to("usr/lib")
    paths = [str(tmp_path / "usr"), str(tmp_path / "lib"), str(tmp_path / "missing")]
    args = system_binds(paths, etc=tmp_path / "etc")
    assert args[:6] == ["--ro-bind", paths[0], paths[0], "--symlink", "usr/lib", paths[1]]
    assert paths[2] not in args
    etc_entries = pairs(args, "--ro-bind-try")
    assert str(tmp_path / "etc" / "resolv.conf") in etc_entries
    assert str(tmp_path / "etc" / "shadow") not in etc_entries
    assert all(not entry.endswith(".env") for entry in etc_entries)


def test_limits_overridden_within_bounds() -> None:
    defaults = Limits(memory_mb=512, cpu_seconds=60, file_size_mb=64, processes=64)
    maximum = Limits(memory_mb=1024, cpu_seconds=120, file_size_mb=None, processes=128)
    chosen = defaults.overridden(
        {"memory_mb": 4096, "cpu_seconds": 5, "file_size_mb": 10_000}, maximum
    )
    assert chosen == Limits(memory_mb=1024, cpu_seconds=5, file_size_mb=10_000, processes=64)
    assert defaults.overridden(None, maximum) == defaults


@pytest.mark.parametrize(
    "request_limits",
    [
        {"memory_mb": 0},
        {"memory_mb": -5},
        {"memory_mb": "9999"},
        {"memory_mb": True},
        {"disk_mb": 1},
    ],
)
def test_a_bad_limit_request_never_lifts_a_limit(request_limits: dict[str, object]) -> None:
    defaults = Limits(memory_mb=512, processes=64)
    assert defaults.overridden(request_limits, Limits(memory_mb=1024)) == Limits(
        memory_mb=512, processes=64
    )


def test_clamp_notes_name_each_limit_asked_beyond_the_maximum() -> None:
    maximum = Limits(memory_mb=1024, cpu_seconds=None, processes=128)
    asked = {"memory_mb": 4096, "cpu_seconds": 10**9, "processes": 100, "disk_mb": 5}
    [note] = clamp_notes(asked, maximum)
    assert "memory_mb=4096" in note and "memory_mb=1024" in note
    assert "TOWER_RUNNER_MAX_MEMORY_MB" in note
    assert clamp_notes(None, maximum) == ()
    assert clamp_notes({"memory_mb": "lots"}, maximum) == ()


def test_clamping_fills_missing_limits_with_the_maximum() -> None:
    assert Limits().clamped_to(Limits(memory_mb=100)) == Limits(memory_mb=100)
    assert Limits(memory_mb=300).clamped_to(Limits()) == Limits(memory_mb=300)


def test_run_request_from_assignment() -> None:
    assert RunRequest.from_assignment({}) == RunRequest()
    assert RunRequest.from_assignment(
        {"limits": {"memory_mb": 256}, "isolate_network": True}
    ) == RunRequest(limits={"memory_mb": 256}, isolate_network=True)
    assert RunRequest.from_assignment({"limits": "lots", "isolate_network": "yes"}) == RunRequest()


def test_parse_uid_range() -> None:
    assert parse_uid_range("2000000-2000009") == range(2000000, 2000010)
    for bad in ("2000000", "5-4", "0-100", "a-b"):
        with pytest.raises(ValueError):
            parse_uid_range(bad)


def test_limit_watch_explains_the_limit_that_was_hit() -> None:
    seen: list[tuple[str, str]] = []
    limits = Limits(memory_mb=256, cpu_seconds=10, file_size_mb=5, processes=32)
    watch = LimitWatch(lambda channel, line: seen.append((channel, line)))
    assert watch.explain(limits, None) is None
    assert watch.explain(limits, signal.SIGXCPU) == "the app exceeded the CPU time limit of 10 s"
    watch("program", "MemoryError")
    assert seen == [("program", "MemoryError")], "lines still reach the sink"
    assert watch.explain(limits, None) == "the app exceeded the memory limit of 256 MiB"
    assert watch.explain(Limits(), None) is None, "no limit, nothing to blame"
    fork = LimitWatch(lambda *_: None)
    fork("program", "BlockingIOError: [Errno 11] Resource temporarily unavailable")
    assert fork.explain(limits, None) == "the app hit the process limit of 32 processes"
    big = LimitWatch(lambda *_: None)
    big("program", "OSError: [Errno 27] File too large")
    assert big.explain(limits, None) == "the app exceeded the file size limit of 5 MiB"


def test_reachable_by_all(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    os.chmod(tmp_path, 0o755)
    assert not reachable_by_all(closed / "inner")
    closed.chmod(0o711)
    assert reachable_by_all(closed / "inner") == all(
        os.stat(p).st_mode & 0o001 for p in [*tmp_path.parents, tmp_path]
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another uid")
def test_temp_files_of_a_run_uid_are_removed(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "left-by-run", tmp_path / "someone-else"
    (mine / "deep").mkdir(parents=True)
    theirs.write_text("keep")
    os.chown(mine, 2_100_099, 2_100_099)
    assert remove_temp_files_of(2_100_099, [tmp_path]) == [mine]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["someone-else"]


# ---------------------------------------------------------------------- settings


def test_sandbox_settings_defaults(tmp_path: Path) -> None:
    settings = RunnerSettings.from_env({}, dotenv_path=tmp_path / "none.env")
    assert (settings.sandbox, settings.network) == (SandboxMode.AUTO, NetworkMode.HOST)
    assert (settings.limits, settings.max_limits) == (DEFAULT_LIMITS, DEFAULT_MAX_LIMITS)
    assert settings.run_uids == range(2_000_000, 2_001_000)
    assert settings.venv_cache_max_mb == 10_240
    config = settings.sandbox_config()
    assert config.state_dir == settings.runner_dir
    assert config.default_limits == DEFAULT_LIMITS
    assert config.memory_cgroups is True


def test_sandbox_settings_from_env(tmp_path: Path) -> None:
    env = {
        "TOWER_RUNNER_SANDBOX": "bwrap",
        "TOWER_RUNNER_NETWORK": "none",
        "TOWER_RUNNER_MEMORY_MB": "8192",
        "TOWER_RUNNER_PROCESSES": "0",
        "TOWER_RUNNER_MAX_MEMORY_MB": "2048",
        "TOWER_RUNNER_RUN_UIDS": "3000000-3000003",
        "TOWER_RUNNER_VENV_CACHE_MAX_MB": "0",
        "TOWER_RUNNER_CGROUPS": "off",
    }
    settings = RunnerSettings.from_env(env, dotenv_path=tmp_path / "none.env")
    assert settings.memory_cgroups is False and not settings.sandbox_config().memory_cgroups
    assert settings.sandbox == "bwrap" and settings.network == "none"
    assert settings.limits.memory_mb == 8192 and settings.limits.processes is None
    assert settings.max_limits.memory_mb == 2048
    assert settings.run_uids == range(3_000_000, 3_000_004)
    assert settings.venv_cache_max_mb is None
    # The default can never exceed the maximum; "0" (no limit) becomes the maximum.
    config = settings.sandbox_config()
    assert config.default_limits.memory_mb == 2048
    assert config.default_limits.processes == DEFAULT_MAX_LIMITS.processes


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TOWER_RUNNER_SANDBOX", "docker", "one of auto, bwrap, off"),
        ("TOWER_RUNNER_NETWORK", "bridge", "one of host, none"),
        ("TOWER_RUNNER_MEMORY_MB", "lots", "whole number"),
        ("TOWER_RUNNER_MAX_CPU_SECONDS", "-1", "whole number"),
        ("TOWER_RUNNER_RUN_UIDS", "12", "FIRST-LAST"),
        ("TOWER_RUNNER_VENV_CACHE_MAX_MB", "1.5", "whole number"),
        ("TOWER_RUNNER_CGROUPS", "v3", "one of auto, off"),
    ],
)
def test_bad_sandbox_settings_are_named(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=name) as raised:
        RunnerSettings.from_env({name: value}, dotenv_path=tmp_path / "none.env")
    assert message in raised.value.message


# ---------------------------------------------------------------------- venv cache bound


def fake_venv(root: Path, key: str, size: int, last_used: float) -> Path:
    """A published venv as the cache sees it (its recorded size and last use)."""
    path = root / key
    path.mkdir(parents=True)
    (path / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (path / SIZE_FILE).write_text(str(size))
    (path / LAST_USED_FILE).touch()
    os.utime(path / LAST_USED_FILE, (last_used, last_used))
    return path


def test_eviction_removes_least_recently_used_but_never_a_venv_in_use(tmp_path: Path) -> None:
    root = tmp_path / "venvs"
    mib = 1024 * 1024
    fake_venv(root, "oldest-in-use", 40 * mib, 1000)
    fake_venv(root, "old", 40 * mib, 2000)
    fake_venv(root, "recent", 40 * mib, 3000)
    fake_venv(root, "newest", 40 * mib, 4000)
    cache = VenvCache(
        root, uv_cache_dir=tmp_path / "uv", sdk_dir=tmp_path / "sdk", python="python3"
    )
    lock = root / LOCKS_DIR_NAME / f"oldest-in-use{USE_LOCK_SUFFIX}"
    lock.parent.mkdir(parents=True)
    with lock.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # a run uses it
        assert cache.evict(100 * mib) == ["old", "recent"]
    remaining = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert remaining == ["newest", "oldest-in-use"]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")], "no half-removed venv"
    assert cache.evict(100 * mib) == []


def test_venv_size_is_counted_once_when_unknown(tmp_path: Path) -> None:
    root = tmp_path / "venvs"
    venv = root / "k"
    (venv / "lib").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "lib" / "big.bin").write_bytes(b"x" * 5000)
    cache = VenvCache(
        root, uv_cache_dir=tmp_path / "uv", sdk_dir=tmp_path / "sdk", python="python3"
    )
    assert cache.evict(1) == ["k"]
    assert not venv.exists()


def test_local_catalog_dirs_are_shared_but_never_the_runners_own(tmp_path: Path) -> None:
    catalog = tmp_path / "home" / "catalogs" / "acct-1"
    (catalog / "warehouse").mkdir(parents=True)
    runner_dir = tmp_path / "home" / "runner"
    variables = {
        "PYICEBERG_CATALOG__DEFAULT__URI": f"sqlite:///{catalog / 'catalog.db'}",
        "PYICEBERG_CATALOG__DEFAULT__WAREHOUSE": f"file://{catalog / 'warehouse'}",
        "PYICEBERG_CATALOG__EVIL__URI": f"sqlite:///{tmp_path / 'home' / 'tower.db'}",
        "PYICEBERG_CATALOG__SYS__WAREHOUSE": "file:///usr/share",
        "PYICEBERG_CATALOG__REMOTE__URI": "https://catalog.example.com",
        "PYICEBERG_CATALOG__REL__URI": "sqlite:///relative.db",
    }
    assert local_catalog_dirs(variables, [runner_dir]) == [catalog]


def test_bwrap_argv_shared_dirs_and_dropped_capabilities() -> None:
    mounts = Mounts(MOUNTS.writable, MOUNTS.readable, MOUNTS.cwd, (Path("/data/catalogs/a"),))
    argv = bwrap_argv("bwrap", COMMAND, mounts, system=[], isolate_network=False, drop_caps=True)
    assert pairs(argv, "--bind") == ["/srv/tower/runner/work/r-1", "/data/catalogs/a"]
    assert pairs(argv, "--cap-drop") == ["ALL"]
    assert "--cap-drop" not in bwrap_argv(
        "bwrap", COMMAND, MOUNTS, system=[], isolate_network=False
    )


LIMITS = Limits(memory_mb=512, cpu_seconds=60, file_size_mb=64, processes=32)


def _jail(**options: object) -> Jail:
    config: dict[str, object] = {
        "limits": LIMITS,
        "uid": 2_000_001,
        "bwrap": "/usr/bin/bwrap",
        "setpriv": "/usr/bin/setpriv",
        "isolate_network": False,
    }
    return Jail(**{**config, **options})  # type: ignore[arg-type]


def test_a_bwrap_jail_is_confined_at_the_gate_not_in_a_preexec() -> None:
    jail = _jail()
    assert jail.gated and jail.preexec() is None, "no preexec_fn: CPython can vfork"
    assert jail.prepare() is not None
    assert jail.command(COMMAND, MOUNTS)[0] == "/usr/bin/bwrap"
    plain = _jail(bwrap=None)
    assert not plain.gated and plain.prepare() is None and plain.preexec() is not None
    assert plain.command(COMMAND, MOUNTS) == COMMAND


def test_the_gate_sets_the_limits_a_preexec_would(tmp_path: Path) -> None:
    """`prepare` on a real process: its limits are those `rlimit_settings` gives (the
    cgroup, when there is one, holds memory; RLIMIT_NPROC only with a run uid)."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        prepare = _jail(uid=None).prepare()
        assert prepare is not None
        prepare(sleeper.pid)
        mib = 1024 * 1024
        assert resource.prlimit(sleeper.pid, resource.RLIMIT_AS) == (512 * mib, 512 * mib)
        assert resource.prlimit(sleeper.pid, resource.RLIMIT_CPU) == (60, 65)
        assert resource.prlimit(sleeper.pid, resource.RLIMIT_FSIZE) == (64 * mib, 64 * mib)
        assert resource.prlimit(sleeper.pid, resource.RLIMIT_NPROC) == resource.getrlimit(
            resource.RLIMIT_NPROC
        ), "RLIMIT_NPROC would count the runner's own processes"
        assert rlimit_settings(LIMITS, own_uid=True, cgroup=True) == [
            (resource.RLIMIT_CPU, (60, 65)),
            (resource.RLIMIT_FSIZE, (64 * mib, 64 * mib)),
            (resource.RLIMIT_NPROC, (32, 32)),
        ]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_gate_that_cannot_join_its_cgroup_stays_closed(tmp_path: Path) -> None:
    prepare = _jail(cgroup=RunCgroup(tmp_path / "gone", 1)).prepare()
    assert prepare is not None
    with pytest.raises(OSError, match="could not join its memory cgroup"):
        prepare(os.getpid())


def test_a_uid_lease_says_whether_its_last_holder_left_it_clean(tmp_path: Path) -> None:
    path = tmp_path / "2000001.lock"
    with path.open("a+b") as handle:
        lease = UidLease(handle, 2_000_001)
        assert not lease.left_clean(), "a new lock file proves nothing"
        lease.mark_clean()
        assert lease.left_clean() and path.read_bytes() == UidLease.CLEAN
        lease.mark_in_use()
        assert not lease.left_clean() and path.read_bytes() == b""


def _cache_with_app(tmp_path: Path, max_mb: int) -> tuple[VenvCache, Path, Path]:
    """A cache bounded to `max_mb` holding the (fake) venv of a plain app, and that app."""
    root = tmp_path / "venvs"
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("print('hi')\n")
    cache = VenvCache(
        root,
        uv_cache_dir=tmp_path / "uv",
        sdk_dir=tmp_path / "sdk",
        python="python3",
        max_mb=max_mb,
    )
    fake_venv(root, cache.key_for(app), 1024 * 1024, 5000)
    return cache, root, app


def test_a_run_trims_the_cache_only_while_it_may_be_over_its_size(tmp_path: Path) -> None:
    cache, root, app = _cache_with_app(tmp_path, max_mb=10)
    fake_venv(root, "stale", 20 * 1024 * 1024, 1000)
    with cache.use(app, lambda channel, line: None):
        pass
    assert not (root / "stale").exists(), "the first run trims what it finds"
    fake_venv(root, "another-runners", 20 * 1024 * 1024, 1000)
    with cache.use(app, lambda channel, line: None) as venv:
        assert venv.cache_hit
    assert (root / "another-runners").exists(), "a cached venv's run does not scan the cache"


def test_a_venv_spared_because_in_use_is_trimmed_after_a_later_run(tmp_path: Path) -> None:
    cache, root, app = _cache_with_app(tmp_path, max_mb=10)
    fake_venv(root, "busy", 20 * 1024 * 1024, 1000)
    (root / LOCKS_DIR_NAME).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        for key in ("busy", cache.key_for(app)):  # other runs use both
            lock = root / LOCKS_DIR_NAME / f"{key}{USE_LOCK_SUFFIX}"
            handle = held.enter_context(lock.open("a+b"))
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        with cache.use(app, lambda channel, line: None):
            pass
    assert (root / "busy").exists()
    with cache.use(app, lambda channel, line: None):
        pass
    assert not (root / "busy").exists()
