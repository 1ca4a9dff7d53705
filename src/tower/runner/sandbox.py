"""The sandbox a run's app executes in: limits, its own uid, and bubblewrap.

Three layers, each used when the host allows it:

1. **Resource limits, always** (`setrlimit` in the child before exec): address space
   (memory), CPU time, file size, and — when the run has a uid of its own — process
   count (RLIMIT_NPROC counts every process of a uid, so under the runner's own uid
   it would count the runner's processes too and is left unset).
2. **A uid per run, when the runner is root**: each run leases a uid from
   `TOWER_RUNNER_RUN_UIDS` (an flock in /run/tower/run-uids, so no two runners of
   a host ever hand out the same uid at once). The run's directories are
   chowned to it; other runs and the runner's files (0600/0700, root-owned) are out
   of its reach; after the run every process of that uid is killed, so nothing a
   run left behind meets the next run of the same uid (with bwrap and a memory
   cgroup, by emptying the cgroup; else by looking through /proc, see `UidLease`).
3. **bubblewrap (`bwrap`), when installed and working**: the app sees the system
   directories read-only (/usr, /bin, /lib*, a short list of /etc files, the Python
   install its venv links to), its venv read-only, its own run directories
   writable, a private /tmp and /dev/shm, a fresh /proc in a new PID namespace (the
   runner, its environment and every other run are invisible and cannot be
   signalled), and — for runs that ask, or on runners configured so — no network.
   As root, bwrap sets the sandbox up and `setpriv` drops to the run's uid inside.

Without bwrap the runner warns once at start and applies the limits (and the run
uid, when root) only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from tower.runner.cgroups import CgroupPool, MemoryCgroups, RunCgroup
from tower.runner.process import die_with_parent_hook, gate_shell, proc_files

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
#: RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL this much later (s)
CPU_KILL_GRACE_S = 5
#: top-level system paths bound read-only (symlinks, like /lib → usr/lib, are recreated)
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: the /etc entries an app may need (name resolution, TLS roots, users, time zone,
#: the dynamic linker); the rest of /etc (a runner's env file, keys) stays hidden
ETC_ENTRIES = (
    "alternatives",
    "ca-certificates",
    "ca-certificates.conf",
    "crypto-policies",
    "gai.conf",
    "group",
    "host.conf",
    "hostname",
    "hosts",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "pki",
    "protocols",
    "resolv.conf",
    "services",
    "ssl",
    "timezone",
)
#: output that says the app ran out of address space
MEMORY_MARKERS = (
    "MemoryError",
    "Cannot allocate memory",
    "cannot allocate memory",
    "std::bad_alloc",
    "out of memory",
)
#: output that says a fork was refused
PROCESS_MARKERS = ("Resource temporarily unavailable", "BlockingIOError", "fork: retry")
#: output that says a write went beyond RLIMIT_FSIZE (Python ignores SIGXFSZ)
FILE_SIZE_MARKERS = ("File too large",)
#: world-writable temp dirs a run uid may litter when there is no bwrap
SHARED_TEMP_DIRS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))
BWRAP_PROBE_TIMEOUT_S = 10.0
#: how many rounds the clean-up of a run uid's processes gets (a fork bomb races it)
#: how long a run uid's processes are killed for before the runner gives up on them
KILL_DEADLINE_S = 10.0


class SandboxMode:
    """TOWER_RUNNER_SANDBOX: `auto` (bwrap when it works), `bwrap` (required), `off`."""

    AUTO = "auto"
    BWRAP = "bwrap"
    OFF = "off"
    ALL = (AUTO, BWRAP, OFF)


class NetworkMode:
    """TOWER_RUNNER_NETWORK: `host` (runs may ask for none) or `none` (every run)."""

    HOST = "host"
    NONE = "none"
    ALL = (HOST, NONE)


class SandboxUnavailable(Exception):
    """The sandbox a run or the runner asked for cannot be provided here."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run; None means "no limit" for that resource."""

    memory_mb: int | None = None
    cpu_seconds: int | None = None
    file_size_mb: int | None = None
    processes: int | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def clamped_to(self, maximum: Limits) -> Limits:
        """Each limit no higher than the maximum's (a missing one becomes the maximum)."""
        values = {}
        for name in self.names():
            mine, cap = getattr(self, name), getattr(maximum, name)
            values[name] = cap if mine is None else (mine if cap is None else min(mine, cap))
        return Limits(**values)

    def overridden(self, requested: Mapping[str, Any] | None, maximum: Limits) -> Limits:
        """These defaults with an app's `limits` request applied, clamped to `maximum`.

        Unknown names and values that are not positive whole numbers are ignored (the
        defaults stay): a bad request must not lift a limit."""
        chosen = {}
        for name, value in (requested or {}).items():
            if name in self.names() and _is_positive_int(value):
                chosen[name] = int(value)
            else:
                logger.warning("ignoring the invalid limit %s=%r of a run", name, value)
        return replace(self, **chosen).clamped_to(maximum)


def clamp_notes(requested: Mapping[str, Any] | None, maximum: Limits) -> tuple[str, ...]:
    """What a run's log says about the limits an app asked for beyond this runner's
    maximums (the run gets the maximum instead)."""
    notes = []
    for name, value in (requested or {}).items():
        cap = getattr(maximum, name, None) if name in Limits.names() else None
        if _is_positive_int(value) and cap is not None and value > cap:
            notes.append(
                f"The app asks for {name}={value}, more than this runner allows; "
                f"the run gets its maximum, {name}={cap} (TOWER_RUNNER_MAX_{name.upper()})."
            )
    return tuple(notes)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def parse_uid_range(text: str) -> range:
    """`2000000-2000999` → range(2000000, 2001000); ValueError when malformed."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"expected FIRST-LAST (e.g. 2000000-2000999), got {text!r}")
    first, last = int(match.group(1)), int(match.group(2))
    if first < 1000 or last < first:
        raise ValueError(f"the range {text!r} must be FIRST-LAST with 1000 <= FIRST <= LAST")
    return range(first, last + 1)


@dataclass(frozen=True)
class SandboxConfig:
    """The runner's sandbox settings (see `RunnerSettings`)."""

    mode: str = SandboxMode.AUTO
    network: str = NetworkMode.HOST
    default_limits: Limits = field(default_factory=Limits)
    max_limits: Limits = field(default_factory=Limits)
    run_uids: range = range(2_000_000, 2_001_000)
    #: the runner dir (work dirs and venvs live under it)
    state_dir: Path = Path("/tmp")
    #: where run uid leases are kept: host-wide (and cleared at boot), so runners with
    #: different homes never share a uid, and a held lease means a live run
    uid_locks: Path = Path("/run/tower/run-uids")
    #: the interpreter venvs are made from (a run's uid must be able to reach it)
    python: str = sys.executable
    #: enforce the memory limit with a cgroup per run when the host allows it
    memory_cgroups: bool = True


@dataclass(frozen=True)
class RunRequest:
    """What one run asks of the sandbox (from its assignment)."""

    limits: Mapping[str, Any] | None = None
    isolate_network: bool = False
    #: host directories the run shares with others of its account (a local-file
    #: catalog): bound writable, and the run keeps the runner's uid to write them
    shared_dirs: tuple[Path, ...] = ()

    @classmethod
    def from_assignment(cls, assignment: Mapping[str, Any]) -> RunRequest:
        """`limits` (a dict) and `isolate_network` (a bool) of a claim's assignment."""
        limits = assignment.get("limits")
        return cls(
            limits=limits if isinstance(limits, Mapping) else None,
            isolate_network=assignment.get("isolate_network") is True,
        )


# ---------------------------------------------------------------------- argv building


@dataclass(frozen=True)
class Mounts:
    """What a run sees inside bwrap, besides the system directories."""

    #: the run's own directories (work dir, package dir)
    writable: tuple[Path, ...]
    #: its venv and the Python install the venv links to
    readable: tuple[Path, ...]
    cwd: Path
    #: host directories it shares with other runs of its account (local catalogs)
    shared: tuple[Path, ...] = ()


def system_binds(paths: Sequence[str] = SYSTEM_PATHS, etc: Path = Path("/etc")) -> list[str]:
    """bwrap arguments for the read-only system view of this host."""
    args: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), raw]
        elif path.is_dir():
            args += ["--ro-bind", raw, raw]
    args += ["--perms", "0755", "--dir", str(etc)]  # else 0700: a run uid could not enter
    for name in ETC_ENTRIES:
        entry = str(etc / name)
        args += ["--ro-bind-try", entry, entry]
    return args


def bwrap_argv(
    bwrap: str,
    command: Sequence[str],
    mounts: Mounts,
    *,
    system: Sequence[str],
    isolate_network: bool,
    run_as: int | None = None,
    setpriv: str | None = None,
    drop_caps: bool = False,
    own_pids: bool = True,
    keep_caps: Sequence[str] = (),
    hidden: Sequence[Path] = (),
) -> list[str]:
    """The argv that runs `command` inside bubblewrap (pure: no file system access).

    `run_as`: the uid (and gid) the app runs as, dropped to with `setpriv` once bwrap
    (running as root) has set the sandbox up. For a fork template (`tower.runner.forks`):
    `own_pids=False` keeps the runner's PID namespace (each run gets its own),
    `keep_caps` are the only capabilities left, `hidden` directories are covered by
    an empty tmpfs."""
    args = [bwrap, *system]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
    for parent in mount_parents([*mounts.readable, *mounts.writable, *mounts.shared]):
        # bwrap would create them 0700 (root's): the run's uid could not get through
        args += ["--perms", "0755", "--dir", str(parent)]
    for path in mounts.readable:
        args += ["--ro-bind", str(path), str(path)]
    for path in (*mounts.writable, *mounts.shared):
        args += ["--bind", str(path), str(path)]
    for path in hidden:
        args += ["--tmpfs", str(path)]
    args += ["--chdir", str(mounts.cwd)]
    args += ["--unshare-pid"] if own_pids else []
    args += ["--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if isolate_network:
        args.append("--unshare-net")
    if drop_caps or keep_caps:  # a root runner's own uid, without root's powers
        args += ["--cap-drop", "ALL"]
    for capability in keep_caps:
        args += ["--cap-add", capability]
    args += ["--die-with-parent", "--"]
    if run_as is not None:
        if setpriv is None:
            raise SandboxUnavailable("setpriv (util-linux) is needed to run apps as their own uid")
        args += [setpriv, f"--reuid={run_as}", f"--regid={run_as}", "--clear-groups"]
        args += ["--no-new-privs", "--"]
    return args + list(command)


#: directories the sandbox has already, never recreated as mount parents
_PROVIDED = frozenset(("/", "/tmp", "/dev", "/dev/shm", "/proc", *SYSTEM_PATHS))
#: prefixes of paths below a system directory (those exist in the sandbox already)
_INSIDE_SYSTEM = tuple(f"{path}/" for path in SYSTEM_PATHS)


#: URL prefixes of local-file catalog properties (an SQLite catalog, a file warehouse)
_LOCAL_URL_PREFIXES = ("sqlite:///", "file://")


def local_catalog_dirs(variables: Mapping[str, str], protected: Sequence[Path]) -> list[Path]:
    """The existing host directories a run's catalog variables point into (the SQLite
    file's directory, a `file://` warehouse), never one holding a `protected` path
    (the runner's own dir) nor a system directory."""
    found: list[Path] = []
    for value in variables.values():
        for prefix in _LOCAL_URL_PREFIXES:
            if not value.startswith(prefix):
                continue
            path = Path(value[len(prefix) :].split("?", 1)[0])
            if not path.is_absolute():
                continue
            directory = path if path.is_dir() else path.parent
            if directory.is_dir() and _may_share(directory, protected) and directory not in found:
                found.append(directory)
    return [d for d in found if not any(other in d.parents for other in found)]


def _may_share(directory: Path, protected: Sequence[Path]) -> bool:
    if str(directory) in _PROVIDED or str(directory).startswith(_INSIDE_SYSTEM):
        return False
    return not any(directory == p or directory in p.parents for p in protected)


def mount_parents(paths: Sequence[Path]) -> list[Path]:
    """The ancestors of bind targets, outermost first, that the sandbox must create."""
    parents: list[Path] = []
    seen: set[str] = set()
    for path in paths:
        for parent in reversed(path.parents):
            # Strings, not Path comparisons: this runs for every run on the hot path.
            text = str(parent)
            if text in _PROVIDED or text in seen or text.startswith(_INSIDE_SYSTEM):
                continue
            seen.add(text)
            parents.append(parent)
    return parents


def python_install_dirs(venv_dir: Path) -> list[Path]:
    """The Python install(s) a venv's interpreter links to (its `home`, its symlink)."""
    found: list[Path] = []
    cfg = venv_dir / "pyvenv.cfg"
    with contextlib.suppress(OSError):
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                found.append(Path(value.strip()).parent)
    real = Path(os.path.realpath(venv_dir / "bin" / "python"))
    if real.is_file():
        found.append(real.parent.parent)
    return _outside_system([p for p in found if p.is_dir()])


@lru_cache(maxsize=256)
def venv_install_dirs(venv_dir: Path) -> tuple[Path, ...]:
    """`python_install_dirs`, looked up once per venv (a few file reads saved on every
    run): a venv's path names its interpreter (the venv cache's key includes it) and a
    venv is never changed in place, so the answer holds for as long as the venv does."""
    return tuple(python_install_dirs(venv_dir))


def _outside_system(paths: Sequence[Path]) -> list[Path]:
    """Drop paths the system binds already show, and duplicates."""
    kept: list[Path] = []
    for path in paths:
        if any(path == Path(s) or Path(s) in path.parents for s in SYSTEM_PATHS):
            continue
        if path not in kept:
            kept.append(path)
    return kept


#: what sets the deferred variables (see `Jail.command_and_env`); in the system binds
ENV_COMMAND = "/usr/bin/env"
#: variables by which the dynamic linker or libc of a privileged process could be made
#: to load or run foreign code or files (glibc ignores them itself only in set-user-ID
#: programs), besides LD_* and MALLOC_*; TMPDIR and TZDIR of that list only name
#: where files go or come from (and the runner sets TMPDIR itself)
PRIVILEGED_UNSAFE = frozenset(
    {
        "GCONV_PATH",
        "GETCONF_DIR",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
    }
)


def privileged_unsafe(name: str) -> bool:
    """Whether variable `name` could make a privileged program run foreign code."""
    return name.startswith(("LD_", "MALLOC_")) or name in PRIVILEGED_UNSAFE


def rlimit_settings(
    limits: Limits, *, own_uid: bool, cgroup: bool
) -> list[tuple[int, tuple[int, int]]]:
    """The (resource, (soft, hard)) limits of a run's process. With a memory `cgroup`
    the cgroup (not RLIMIT_AS, which caps address space rather than memory) enforces
    the memory limit."""
    settings: list[tuple[int, tuple[int, int]]] = []
    if limits.memory_mb is not None and not cgroup:
        size = limits.memory_mb * MIB
        settings.append((resource.RLIMIT_AS, (size, size)))
    if limits.cpu_seconds is not None:
        settings.append(
            (resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + CPU_KILL_GRACE_S))
        )
    if limits.file_size_mb is not None:
        size = limits.file_size_mb * MIB
        settings.append((resource.RLIMIT_FSIZE, (size, size)))
    if limits.processes is not None and own_uid:
        settings.append((resource.RLIMIT_NPROC, (limits.processes, limits.processes)))
    return settings


def limits_preexec(
    limits: Limits, *, own_uid: bool, cgroup: RunCgroup | None = None
) -> Callable[[], None]:
    """A `preexec_fn`: the runner's die-with-parent request, then the limits. With a
    memory `cgroup` the process joins it (see `rlimit_settings`)."""
    settings = rlimit_settings(limits, own_uid=own_uid, cgroup=cgroup is not None)
    join = cgroup.join_hook() if cgroup is not None else None
    die_with_parent = die_with_parent_hook()

    def preexec() -> None:
        if die_with_parent is not None:
            die_with_parent()
        if join is not None:
            join()
        for which, value in settings:
            resource.setrlimit(which, value)

    return preexec


# ---------------------------------------------------------------------- limit explanations


class LimitWatch:
    """Wraps a line sink and notices output that says a limit was hit."""

    def __init__(self, sink: Callable[[str, str], None]) -> None:
        self.sink = sink
        self.memory = False
        self.processes = False
        self.file_size = False

    def __call__(self, channel: str, content: str) -> None:
        if any(marker in content for marker in MEMORY_MARKERS):
            self.memory = True
        if any(marker in content for marker in PROCESS_MARKERS):
            self.processes = True
        if any(marker in content for marker in FILE_SIZE_MARKERS):
            self.file_size = True
        self.sink(channel, content)

    def explain(
        self, limits: Limits, killed_by: int | None, *, oom_killed: bool = False
    ) -> str | None:
        """Which limit ended a failed run, in words, or None when none did.

        `oom_killed`: the run's memory cgroup says the kernel killed it for memory."""
        if oom_killed and limits.memory_mb is not None:
            return f"the app exceeded the memory limit of {limits.memory_mb} MiB"
        if killed_by == signal.SIGXCPU and limits.cpu_seconds is not None:
            return f"the app exceeded the CPU time limit of {limits.cpu_seconds} s"
        if limits.memory_mb is not None and self.memory:
            return f"the app exceeded the memory limit of {limits.memory_mb} MiB"
        if limits.file_size_mb is not None and (self.file_size or killed_by == signal.SIGXFSZ):
            return f"the app exceeded the file size limit of {limits.file_size_mb} MiB"
        if limits.processes is not None and self.processes:
            return f"the app hit the process limit of {limits.processes} processes"
        return None


# ---------------------------------------------------------------------- the runner's sandbox


@dataclass(frozen=True)
class Jail:
    """One run's confinement: how to wrap its command and start its process."""

    limits: Limits
    uid: int | None
    bwrap: str | None
    setpriv: str | None
    isolate_network: bool
    system: tuple[str, ...] = ()
    #: the runner is root but the run keeps its uid: bwrap drops every capability
    drop_caps: bool = False
    #: what the run's log should say about the app's limits (those clamped)
    notes: tuple[str, ...] = ()
    #: the run's memory cgroup, when the host allows one (it enforces memory_mb)
    cgroup: RunCgroup | None = None

    @property
    def wrapped(self) -> bool:
        """True when the started process is bwrap, which forwards the app's status."""
        return self.bwrap is not None

    @property
    def gated(self) -> bool:
        """True when the process is started behind a gate (`AppProcess(prepare=...)`):
        held before it execs bwrap while the runner moves it into the cgroup and sets
        its limits (`prepare`). It needs no `preexec_fn`, so CPython spawns it with
        vfork instead of forking the whole runner; bwrap's `--die-with-parent` stands
        in for the runner's die-with-parent hook.

        (Between the gate opening and bwrap's own PR_SET_PDEATHSIG, a millisecond, a
        runner killed outright would leave the app running, confined and limited; the
        next runner's start-up sweep of run uids kills it. A runner gone before it
        opens the gate leaves nothing: the gate then closes and nothing starts.)
        Without the gate's shell (`gate_shell`) the limits are set in a `preexec_fn`."""
        return self.bwrap is not None and gate_shell() is not None

    def command(self, argv: Sequence[str], mounts: Mounts) -> list[str]:
        if self.bwrap is None:
            return list(argv)
        return bwrap_argv(
            self.bwrap,
            argv,
            mounts,
            system=self.system,
            isolate_network=self.isolate_network,
            run_as=self.uid,
            setpriv=self.setpriv,
            drop_caps=self.drop_caps,
        )

    def command_and_env(
        self, argv: Sequence[str], mounts: Mounts, env: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        """The command that runs `argv` with the app's environment `env`, and the
        environment to start that command with.

        With bwrap, the gate's shell, bwrap and setpriv run before the app, as root (or
        the runner's user) and partly outside the sandbox. The app's variables (its
        secrets and parameters, named by its users) reach them too, so those the
        dynamic linker or libc obey (`LD_PRELOAD=./x.so` with a `.so` shipped in the
        package...) would run the app's code with their privileges. Such variables are
        left out of their environment and set by `env` once the privileges are gone,
        right before the app starts. (Their values show in that `env`'s command line
        for a moment; secrets by those names are unusual.)"""
        deferred = {name: value for name, value in env.items() if privileged_unsafe(name)}
        if self.bwrap is None or not deferred:
            return self.command(argv, mounts), dict(env)
        safe = {name: value for name, value in env.items() if name not in deferred}
        settings = [f"{name}={value}" for name, value in deferred.items()]
        return self.command([ENV_COMMAND, *settings, *argv], mounts), safe

    def preexec(self) -> Callable[[], None] | None:
        """The `preexec_fn` of the run's process; None when it is `gated`."""
        if self.gated:
            return None
        return limits_preexec(self.limits, own_uid=self.uid is not None, cgroup=self.cgroup)

    def prepare(self) -> Callable[[int], None] | None:
        """For a `gated` process: what confines it, given its pid, before it starts."""
        if not self.gated:
            return None
        return self.confiner()

    def confiner(self) -> Callable[[int], None]:
        """What moves a waiting process, given its pid, into the run's cgroup and sets
        its limits (for `prepare`, and for runs forked from a template)."""
        own_uid = self.uid is not None
        settings = rlimit_settings(self.limits, own_uid=own_uid, cgroup=self.cgroup is not None)
        cgroup = self.cgroup

        def confine(pid: int) -> None:
            if cgroup is not None:
                try:
                    cgroup.add(pid)
                except OSError as exc:
                    raise OSError(f"it could not join its memory cgroup ({exc})") from exc
            for which, value in settings:
                resource.prlimit(pid, which, value)

        return confine

    def oom_killed(self) -> bool:
        """Whether the kernel killed the run for exceeding its memory cgroup's limit."""
        return self.cgroup is not None and self.cgroup.oom_killed()

    def popen_user(self) -> dict[str, Any]:
        """Popen arguments that switch to the run's uid (only without bwrap: with it,
        bwrap needs root to set up and `setpriv` switches inside)."""
        if self.uid is None or self.bwrap is not None:
            return {}
        return {"user": self.uid, "group": self.uid, "extra_groups": []}

    def hand_over(self, dirs: Sequence[Path]) -> None:
        """Give the run's directories to its uid (0700: no other run can look in)."""
        if self.uid is None:
            return
        for top in dirs:
            _chown_tree(top, self.uid)
            top.chmod(0o700)


def _chown_tree(top: Path, uid: int) -> None:
    os.chown(top, uid, uid, follow_symlinks=False)
    for root, dirs, files in os.walk(top):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)


class Sandbox:
    """The runner's sandbox: what this host supports, decided (and warned about) once."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.is_root = os.geteuid() == 0
        self.bwrap: str | None = None
        self.setpriv: str | None = shutil.which("setpriv") if self.is_root else None
        #: bwrap arguments for the read-only system view
        self.system = tuple(system_binds())
        self._uid_lock = threading.Lock()
        #: whether runs get a uid of their own (root, and the uid can reach its files)
        self.run_uids = self.is_root
        self._detect()
        self.cgroups = self._detect_cgroups()
        #: the runs' memory cgroups, reused from one run to the next
        self._cgroup_pool = CgroupPool(self.cgroups) if self.cgroups is not None else None
        if self.is_root:
            self.sweep()

    def close(self) -> None:
        """Remove the memory cgroups kept for later runs (see `CgroupPool`)."""
        if self._cgroup_pool is not None:
            self._cgroup_pool.close()

    def _detect_cgroups(self) -> MemoryCgroups | None:
        """A memory cgroup per run when the host allows it; else RLIMIT_AS, said once."""
        if not self.config.memory_cgroups:
            return None
        cgroups = MemoryCgroups.detect()
        if cgroups is None:
            logger.info(
                "no writable memory cgroup for this runner: a run's memory limit caps "
                "its address space (RLIMIT_AS) instead"
            )
            return None
        cgroups.sweep()
        logger.info(
            "memory limits are enforced by a cgroup (v%s) per run under %s",
            cgroups.version,
            cgroups.base,
        )
        return cgroups

    def _detect(self) -> None:
        """Decide what confinement this host allows, and say it once."""
        if self.config.mode == SandboxMode.OFF:
            problem = "the sandbox is off (TOWER_RUNNER_SANDBOX=off)"
        else:
            problem = self._bwrap_problem()
        if problem is None:
            logger.info("runs execute in bubblewrap (%s)%s", self.bwrap, self._uid_note())
            return
        if self.config.mode == SandboxMode.BWRAP:
            raise SandboxUnavailable(
                f"TOWER_RUNNER_SANDBOX=bwrap but {problem}. Install bubblewrap "
                "(`apt-get install bubblewrap`) or set TOWER_RUNNER_SANDBOX=auto."
            )
        blocked = self._unreachable() if self.is_root else []
        self.run_uids = self.is_root and not blocked
        logger.warning("%s; runs are not isolated by bubblewrap: %s", problem, self._fallback())
        if blocked:
            logger.warning(
                "a run uid could not reach %s (a parent directory is not world-searchable, "
                "like /root). Put TOWER_HOME and the runner's Python under world-searchable "
                "directories (e.g. /var/lib/tower-runner, /usr or /opt) for a uid per run.",
                ", ".join(str(p) for p in blocked),
            )

    def _bwrap_problem(self) -> str | None:
        """None when bwrap works here (it is then remembered), else what is wrong."""
        path = shutil.which("bwrap")
        if path is None:
            return "bubblewrap (bwrap) is not installed"
        if self.is_root and self.setpriv is None:
            return "setpriv (util-linux) is not installed"
        probe = [path, *self.system, "--proc", "/proc", "--dev", "/dev", "--unshare-pid"]
        probe += ["--die-with-parent", "--", "true"]
        try:
            result = subprocess.run(
                probe, capture_output=True, text=True, timeout=BWRAP_PROBE_TIMEOUT_S
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap cannot be run ({exc})"
        if result.returncode != 0:
            return f"bubblewrap does not work on this host ({result.stderr.strip()})"
        self.bwrap = path
        return None

    def _unreachable(self) -> list[Path]:
        """Without bwrap an app sees the real file system: as its own uid it must be
        able to walk to its work dir, its venv and the Python install."""
        python_home = Path(os.path.realpath(self.config.python)).parent.parent
        return [p for p in (self.config.state_dir, python_home) if not reachable_by_all(p)]

    def sweep(self) -> list[int]:
        """Kill what runs of a crashed runner left under run uids no live runner holds
        (with bwrap they die with it; without, a process that left its group would
        not); returns the uids cleaned."""
        uids = self.config.run_uids
        left = sorted({uid for uid in all_process_uids() if uid in uids})
        locks = self.config.uid_locks
        cleaned = []
        for uid in left:
            if not locks.is_dir():
                break
            handle = (locks / f"{uid}.lock").open("a+b")
            with handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live runner's run
                kill_uid_processes(uid)
                remove_temp_files_of(uid)
                cleaned.append(uid)
        if cleaned:
            logger.warning("killed processes left under run uids %s by a previous runner", cleaned)
        return cleaned

    def _uid_note(self) -> str:
        if self.is_root:
            first, last = self.config.run_uids[0], self.config.run_uids[-1]
            return f", each as its own uid from {first}-{last}"
        return ", as the runner's own user (run the runner as root for a uid per run)"

    def _fallback(self) -> str:
        if self.run_uids:
            return "each run executes as its own uid, with resource limits"
        return (
            "runs execute as the runner's own user with resource limits only "
            "(memory, CPU time, file size; no process-count limit without a uid per run)"
        )

    @contextmanager
    def confine(self, request: RunRequest) -> Iterator[Jail]:
        """A jail for one run; its uid (when root) is leased for the `with` block and
        every process left running under it is killed at the end."""
        isolate = request.isolate_network or self.config.network == NetworkMode.NONE
        if isolate and self.bwrap is None:
            raise SandboxUnavailable(
                "The app asks for network isolation, but this runner has no working "
                "bubblewrap to provide it. Install bubblewrap on the runner host."
            )
        limits = self.config.default_limits.overridden(request.limits, self.config.max_limits)
        notes = clamp_notes(request.limits, self.config.max_limits)
        with self._run_uid(own=not request.shared_dirs) as lease:
            uid = lease.uid if lease is not None else None
            drop_caps = self.is_root and uid is None
            cgroup = self._run_cgroup(limits, uid)
            try:
                yield Jail(
                    limits,
                    uid,
                    self.bwrap,
                    self.setpriv,
                    isolate,
                    self.system,
                    drop_caps,
                    notes,
                    cgroup,
                )
            finally:
                emptied = self._end_cgroup(cgroup)
                if lease is not None:
                    self._release(lease, cgroup_emptied=emptied)

    def _run_cgroup(self, limits: Limits, uid: int | None) -> RunCgroup | None:
        if self._cgroup_pool is None or limits.memory_mb is None:
            return None
        try:
            return self._cgroup_pool.acquire(limits.memory_mb, uid)
        except OSError as exc:
            logger.warning("no memory cgroup for a run (%s); it gets RLIMIT_AS instead", exc)
            return None

    def _end_cgroup(self, cgroup: RunCgroup | None) -> bool:
        """Whether the run's cgroup was emptied (then kept for a later run, or removed)."""
        if cgroup is None or self._cgroup_pool is None:
            return False
        return self._cgroup_pool.release(cgroup)

    def _release(self, lease: UidLease, *, cgroup_emptied: bool) -> None:
        """Make sure nothing of the run is left under its uid, and say so in the lease.

        With bwrap and a memory cgroup, the emptied cgroup is the proof: every process
        of the run descends from the one that joined it, and none can leave it (the
        sandbox shows no cgroup file system; moving needs write access to another
        cgroup). Else every process of the host is looked at (/proc)."""
        proven = cgroup_emptied and self.bwrap is not None
        if not proven:
            proven = kill_uid_processes(lease.uid)
        if self.bwrap is None:  # with bwrap, /tmp and /dev/shm were its own
            remove_temp_files_of(lease.uid)
        if proven:
            lease.mark_clean()

    @contextmanager
    def _run_uid(self, *, own: bool) -> Iterator[UidLease | None]:
        if not (self.run_uids and own):
            yield None
            return
        locks = self.config.uid_locks
        locks.mkdir(parents=True, exist_ok=True)
        with self._uid_lock:
            handle, uid = _lease_uid(locks, self.config.run_uids)
        lease = UidLease(handle, uid)
        try:
            if not lease.left_clean():
                kill_uid_processes(uid)  # whatever a crashed runner left under this uid
            lease.mark_in_use()
            yield lease
        finally:
            handle.close()  # releases the flock


class UidLease:
    """A run uid held for one run: an flock on its lock file, host-wide.

    The file says whether its last holder made sure, at the end of its run, that no
    process of the uid was left (`clean`), so the next holder need not look through
    every process of the host for leftovers. It is marked in use while held: a
    runner that crashes leaves it so, and the next holder looks. (The lock files
    are root's, under /run, which a reboot clears.)"""

    CLEAN = b"clean\n"

    def __init__(self, handle: Any, uid: int) -> None:
        self.handle = handle
        self.uid = uid

    def left_clean(self) -> bool:
        self.handle.seek(0)
        return bool(self.handle.read(len(self.CLEAN) + 1) == self.CLEAN)

    def mark_in_use(self) -> None:
        self._write(b"")

    def mark_clean(self) -> None:
        self._write(self.CLEAN)

    def _write(self, content: bytes) -> None:
        self.handle.truncate(0)
        self.handle.write(content)  # the file is opened to append: this lands at 0
        self.handle.flush()


def remove_temp_files_of(uid: int, dirs: Sequence[Path] = SHARED_TEMP_DIRS) -> list[Path]:
    """Remove what `uid` left at the top of the shared temp dirs; returns the paths."""
    removed = []
    for top in dirs:
        with contextlib.suppress(OSError):
            for entry in top.iterdir():
                with contextlib.suppress(OSError):
                    if entry.lstat().st_uid != uid:
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()
                    removed.append(entry)
    return removed


def reachable_by_all(path: Path) -> bool:
    """Whether any user can walk down to `path` (every ancestor world-searchable)."""
    for directory in [*reversed(path.parents), path]:
        try:
            mode = directory.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


def _lease_uid(locks: Path, uids: range) -> tuple[Any, int]:
    for uid in uids:
        handle = (locks / f"{uid}.lock").open("a+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return handle, uid
    raise SandboxUnavailable(
        f"every run uid of {uids.start}-{uids.stop - 1} is in use; widen TOWER_RUNNER_RUN_UIDS "
        "(it needs at least one uid per concurrent run)"
    )


def all_process_uids() -> set[int]:
    """The real uids of every live process (one pass over /proc)."""
    found = set()
    for _, status in proc_files("status"):
        match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
        if match:
            found.add(int(match.group(1)))
    return found


def uid_processes(uid: int) -> list[int]:
    """Pids of live processes whose real uid is `uid`."""
    found = []
    for pid, status in proc_files("status"):
        match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
        state = re.search(r"^State:\s+(\S)", status, re.MULTILINE)
        if match and int(match.group(1)) == uid and not (state and state.group(1) == "Z"):
            found.append(pid)
    return found


def kill_uid_processes(uid: int) -> bool:
    """SIGKILL every process of `uid`: `kill(-1)` as that uid reaches them all at once,
    repeated while a fork bomb keeps spawning or killed processes are still exiting
    (on a busy host that takes more than a few milliseconds). True when none is left."""
    deadline = time.monotonic() + KILL_DEADLINE_S
    while uid_processes(uid):
        if time.monotonic() > deadline:
            logger.error("processes of run uid %s survived %ss of kills", uid, KILL_DEADLINE_S)
            return False
        _kill_all_as(uid)
        time.sleep(0.01)
    return True


def _kill_all_as(uid: int) -> None:
    def kill_all() -> None:
        # Runs in the child after setreuid(uid): kill(-1) reaches every process of
        # the uid (but not the caller); then leave without exec (a fork bomb may
        # hold the uid's process limit, and exec would fail).
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)
        os._exit(0)

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["true"], user=uid, group=uid, extra_groups=[], preexec_fn=kill_all, check=False
        )
