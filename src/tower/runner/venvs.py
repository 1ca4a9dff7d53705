"""The venv cache: one virtual environment per dependency spec, built with `uv`.

A venv lives in `<root>/<key>`, where the key hashes the app's dependency spec
(`requirements.txt`, or `pyproject.toml` plus `uv.lock` when present, or nothing),
the interpreter's version and the identity of the Tower SDK that gets installed.

Building is crash- and race-safe: a per-key `fcntl` lock serialises builders of the
same key (across threads and processes), the venv is built in a temp dir next to
its final place (`uv venv --relocatable`, so it still works after the move) and
published with an atomic rename. A crash leaves at most a temp dir, removed by the
next builder of that key.

The cache is bounded (`max_mb`): after each run the least recently used venvs are
removed until the cache fits. A venv in use is never removed: `use()` holds a
shared lock on it for the run, and eviction only takes venvs whose lock it can
take exclusively.

SDK injection: unless the app declares a dependency named `tower` (or `tower-oss`),
this project's SDK is installed into the venv. When the running `tower` package is a
source checkout, a wheel is built once per source-tree hash with `uv build` and
cached in the SDK dir; otherwise `tower-oss==<installed version>` comes from the index.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import tower
from tower.core.errors import TowerError
from tower.runner.process import die_with_parent_hook

logger = logging.getLogger(__name__)

#: bump to invalidate every cached venv (e.g. when the build recipe changes)
KEY_SCHEMA_VERSION = "1"
#: hex characters of the venv key (128 bits)
KEY_LENGTH = 32
#: how many installer output lines an error message shows
ERROR_TAIL_LINES = 25
#: how quickly a cancel stops the installer (s)
CANCEL_WATCH_S = 0.05
LOCKS_DIR_NAME = ".locks"
TEMP_PREFIX = ".tmp-"
#: in a venv: its size in bytes, written when it was built
SIZE_FILE = ".tower-size"
#: in a venv: touched on every use; its mtime orders eviction
LAST_USED_FILE = ".tower-last-used"
#: how often a runner marks a venv it keeps using as used (s): eviction only needs
#: the order of venvs unused for far longer
MARK_USED_EVERY_S = 60.0
USE_LOCK_SUFFIX = ".use"
SDK_DIST_NAME = "tower-oss"
#: dependency names (PEP 503-normalised) that mean "the app brings its own SDK"
SDK_NAMES = frozenset({"tower", "tower-oss"})
REQUIREMENTS_FILE = "requirements.txt"
PYPROJECT_FILE = "pyproject.toml"
LOCK_FILE = "uv.lock"
SETUP_CHANNEL = "setup"
UV_ENV = {
    "UV_LINK_MODE": "hardlink",
    "UV_PYTHON_DOWNLOADS": "never",
    "UV_NO_PROGRESS": "1",
    "NO_COLOR": "1",
}
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PYTHON_ID_CODE = (
    "import platform; "
    "print(platform.python_implementation(), platform.python_version(), platform.machine())"
)

LineSink = Callable[[str, str], None]


class DependencyInstallError(TowerError):
    """The app's dependencies could not be installed."""

    code = "dependency_install_failed"

    def __init__(self, message: str, *, file: str | None = None, output_tail: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.output_tail = output_tail


@dataclass(frozen=True)
class DependencySpec:
    """What an app asks to have installed."""

    #: "none", "requirements" or "pyproject"
    kind: str
    #: (file name, content) of every file that defines the dependencies
    files: tuple[tuple[str, bytes], ...] = ()
    #: the app declares `tower` itself, so no SDK is injected
    declares_tower: bool = False

    @property
    def source_file(self) -> str | None:
        return self.files[0][0] if self.files else None

    @property
    def frozen(self) -> bool:
        return any(name == LOCK_FILE for name, _ in self.files)


@dataclass(frozen=True)
class SdkSource:
    """Where this project's SDK comes from: a local source checkout, or the index."""

    ident: str
    project_dir: Path | None = None
    requirement: str | None = None


@dataclass(frozen=True)
class Venv:
    """A ready virtual environment."""

    path: Path
    key: str
    cache_hit: bool

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def normalize_name(name: str) -> str:
    """PEP 503 normalisation: `Tower_OSS` → `tower-oss`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The normalised project name of a requirement line, or None for options/comments."""
    text = line.split("#", 1)[0].strip()
    if not text or text.startswith("-"):
        return None
    match = _REQUIREMENT_NAME.match(text)
    return normalize_name(match.group(1)) if match else None


def requirements_names(text: str) -> set[str]:
    names = (requirement_name(line) for line in text.splitlines())
    return {name for name in names if name}


def pyproject_names(text: str) -> set[str]:
    """Names of the dependencies `uv sync` installs by default (project + dev group)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return set()
    project = data.get("project") or {}
    groups = data.get("dependency-groups") or {}
    legacy_dev = ((data.get("tool") or {}).get("uv") or {}).get("dev-dependencies") or []
    entries = [*(project.get("dependencies") or []), *(groups.get("dev") or []), *legacy_dev]
    names = (requirement_name(e) for e in entries if isinstance(e, str))
    return {name for name in names if name}


def read_dependency_spec(app_dir: Path) -> DependencySpec:
    """The dependency spec of an app dir: pyproject.toml wins over requirements.txt."""
    pyproject = app_dir / PYPROJECT_FILE
    if pyproject.is_file():
        files = [(PYPROJECT_FILE, pyproject.read_bytes())]
        if (app_dir / LOCK_FILE).is_file():
            files.append((LOCK_FILE, (app_dir / LOCK_FILE).read_bytes()))
        names = pyproject_names(files[0][1].decode("utf-8", errors="replace"))
        return DependencySpec("pyproject", tuple(files), bool(names & SDK_NAMES))
    requirements = app_dir / REQUIREMENTS_FILE
    if requirements.is_file():
        content = requirements.read_bytes()
        names = requirements_names(content.decode("utf-8", errors="replace"))
        return DependencySpec(
            "requirements", ((REQUIREMENTS_FILE, content),), bool(names & SDK_NAMES)
        )
    return DependencySpec("none")


def venv_key(spec: DependencySpec, python_id: str, sdk_ident: str) -> str:
    """The cache key: same spec, interpreter and SDK → same venv."""
    material = {
        "schema": KEY_SCHEMA_VERSION,
        "kind": spec.kind,
        "files": {name: hashlib.sha256(content).hexdigest() for name, content in spec.files},
        "python": python_id,
        "sdk": sdk_ident,
    }
    encoded = json.dumps(material, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:KEY_LENGTH]


def source_tree_hash(project_dir: Path) -> str:
    """Content hash of `src/tower/**/*.py` plus `pyproject.toml` of a source checkout."""
    digest = hashlib.sha256()
    files = sorted((project_dir / "src" / "tower").rglob("*.py"))
    for path in [project_dir / PYPROJECT_FILE, *files]:
        digest.update(path.relative_to(project_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:KEY_LENGTH]


def find_sdk_source() -> SdkSource | None:
    """How this project's SDK gets into app venvs (None when it cannot be found)."""
    project_dir = Path(tower.__file__).resolve().parents[2]
    pyproject = project_dir / PYPROJECT_FILE
    if pyproject.is_file() and _project_name(pyproject) == SDK_DIST_NAME:
        return SdkSource(f"src-{source_tree_hash(project_dir)}", project_dir=project_dir)
    try:
        version = importlib.metadata.version(SDK_DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        logger.warning("neither a %s checkout nor an installed distribution found", SDK_DIST_NAME)
        return None
    requirement = f"{SDK_DIST_NAME}=={version}"
    return SdkSource(f"index-{requirement}", requirement=requirement)


def _project_name(pyproject: Path) -> str | None:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return (data.get("project") or {}).get("name")


def find_uv() -> str:
    """The `uv` executable: on PATH, else the one shipped by the `uv` PyPI package."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        import uv  # the PyPI wheel that bundles the binary
    except ImportError as exc:
        raise DependencyInstallError(
            "uv is not installed. Install it (`pip install uv`) or put it on PATH."
        ) from exc
    return uv.find_uv_bin()


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive `fcntl` lock on `path`, held for the `with` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class BuildCancelled(DependencyInstallError):
    """The run was cancelled while its venv was being built; the build was stopped."""


def run_streaming(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    on_line: LineSink,
    cancel: threading.Event | None = None,
) -> tuple[int, list[str]]:
    """Run a command, sending each output line to `on_line("setup", …)`; (code, tail).

    The command runs in its own process group and dies with the runner (PDEATHSIG);
    setting `cancel` kills the whole group at once (uv spawns build backends)."""
    tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
    with (
        subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        ) as proc,
        _killed_on(cancel, proc),
    ):
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            tail.append(line)
            on_line(SETUP_CHANNEL, line)
        code = proc.wait()
    return code, list(tail)


@contextmanager
def _killed_on(cancel: threading.Event | None, proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """While the block runs, a set `cancel` SIGKILLs the process group of `proc`."""
    if cancel is None:
        yield
        return
    finished = threading.Event()

    def watch() -> None:
        while not finished.is_set():
            if cancel.wait(CANCEL_WATCH_S) and not finished.is_set():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return

    watcher = threading.Thread(target=watch, name=f"cancel-watch-{proc.pid}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join()


@dataclass
class _Installer:
    """A build's output sink and the cancel that stops it, handed down together."""

    on_line: LineSink
    cancel: threading.Event | None = None

    def __call__(self, channel: str, content: str) -> None:
        self.on_line(channel, content)

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


class VenvCache:
    """Builds and reuses app venvs under `root`.

    Args:
        root: the venvs dir (`$TOWER_HOME/runner/venvs`).
        uv_cache_dir: uv's shared download/build cache.
        sdk_dir: where built SDK wheels are cached.
        python: the interpreter venvs are created from.
        base_env: variables the installer inherits (proxies, CA bundles, index URLs).
    """

    def __init__(
        self,
        root: Path,
        *,
        uv_cache_dir: Path,
        sdk_dir: Path,
        python: str,
        base_env: Mapping[str, str] | None = None,
        uv_bin: str | None = None,
        max_mb: int | None = None,
    ) -> None:
        self.root = root
        #: LRU eviction keeps the cache within this size (None: unbounded)
        self.max_mb = max_mb
        self.uv_cache_dir = uv_cache_dir
        self.sdk_dir = sdk_dir
        self.python = python
        self.base_env = dict(base_env or {})
        self._uv_bin = uv_bin
        self._python_id: str | None = None
        self._sdk: SdkSource | None = None
        self._sdk_resolved = False
        self._memo_lock = threading.Lock()
        #: when this process last marked each venv used (monotonic), by key
        self._marked_used: dict[str, float] = {}
        #: the cache may be over `max_mb`: it grew (a build), or a venv in use was spared
        self._may_be_over = True

    @property
    def uv_bin(self) -> str:
        if self._uv_bin is None:
            self._uv_bin = find_uv()
        return self._uv_bin

    def ensure(
        self, app_dir: Path, on_line: LineSink, cancel: threading.Event | None = None
    ) -> Venv:
        """A venv for the app in `app_dir`: the cached one, or a freshly built one.

        Setting `cancel` stops a build in progress (BuildCancelled)."""
        spec = read_dependency_spec(app_dir)
        return self._ensure(app_dir, spec, self._key_of(spec), on_line, cancel)

    def _ensure(
        self,
        app_dir: Path,
        spec: DependencySpec,
        key: str,
        on_line: LineSink,
        cancel: threading.Event | None,
    ) -> Venv:
        sdk = None if spec.declares_tower else self.sdk_source()
        final = self.root / key
        if _is_venv(final):
            on_line(SETUP_CHANNEL, f"Reusing the cached virtual environment {key}")
            return Venv(final, key, cache_hit=True)
        with file_lock(self.root / LOCKS_DIR_NAME / f"{key}.lock"):
            if _is_venv(final):
                on_line(SETUP_CHANNEL, f"Reusing the cached virtual environment {key}")
                return Venv(final, key, cache_hit=True)
            self._build(key, spec, sdk, app_dir, _Installer(on_line, cancel))
            self._may_be_over = True
        return Venv(final, key, cache_hit=False)

    @contextmanager
    def use(
        self, app_dir: Path, on_line: LineSink, cancel: threading.Event | None = None
    ) -> Iterator[Venv]:
        """`ensure()` for the `with` block, during which the venv cannot be evicted;
        afterwards the cache is trimmed to `max_mb` if it may have outgrown it (only a
        build makes it grow: a run of a cached venv does not look)."""
        spec = read_dependency_spec(app_dir)
        key = self._key_of(spec)
        try:
            with self.pinned(key):
                venv = self._ensure(app_dir, spec, key, on_line, cancel)
                self._mark_used(venv)
                yield venv
        finally:
            if self.max_mb is not None and self._may_be_over:
                self._trim(self.max_mb * 1024 * 1024)

    def _mark_used(self, venv: Venv) -> None:
        """Note the use for the LRU order: on disk (other runners sharing the cache
        read it) when the venv was just built, else at most every `MARK_USED_EVERY_S`,
        which is all the order needs."""
        now = time.monotonic()
        last = self._marked_used.get(venv.key)
        if not venv.cache_hit or last is None or now - last >= MARK_USED_EVERY_S:
            _touch(venv.path / LAST_USED_FILE)
            self._marked_used[venv.key] = now

    def _trim(self, max_bytes: int) -> None:
        self._may_be_over = False  # a build from now on sets it again
        self.evict(max_bytes)

    @contextmanager
    def pinned(self, key: str) -> Iterator[None]:
        """The venv `key` cannot be evicted during the `with` block (a shared lock)."""
        lock_path = self.root / LOCKS_DIR_NAME / f"{key}{USE_LOCK_SUFFIX}"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
            yield

    def evict(self, max_bytes: int) -> list[str]:
        """Remove least recently used venvs (never one in use) until the cache holds
        at most `max_bytes`; returns the keys removed."""
        venvs = sorted(self._cached(), key=lambda entry: entry[1])
        total = sum(size for _, _, size in venvs)
        removed = []
        for path, _, size in venvs:
            if total <= max_bytes:
                break
            if self._remove_unused(path):
                total -= size
                removed.append(path.name)
                logger.info("evicted the venv %s (%d MiB) from the cache", path.name, size >> 20)
        if total > max_bytes:  # what is in use now may go after a later run
            self._may_be_over = True
        return removed

    def _cached(self) -> list[tuple[Path, float, int]]:
        """(path, last used, size) of every published venv."""
        found = []
        if not self.root.is_dir():
            return found
        for path in self.root.iterdir():
            if path.name.startswith(".") or not _is_venv(path):
                continue
            try:
                used = (path / LAST_USED_FILE).stat().st_mtime
            except OSError:
                used = 0.0
            found.append((path, used, venv_size(path)))
        return found

    def _remove_unused(self, path: Path) -> bool:
        lock_path = self.root / LOCKS_DIR_NAME / f"{path.name}{USE_LOCK_SUFFIX}"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a run uses it
            # Renamed first, so a builder never finds a half-removed venv; a crash
            # leaves a temp dir the next builder of this key removes.
            doomed = self.root / f"{TEMP_PREFIX}{path.name}-evicted-{uuid.uuid4().hex[:8]}"
            try:
                path.rename(doomed)
            except OSError:
                return False
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def key_for(self, app_dir: Path) -> str:
        """The venv key `ensure` would use for `app_dir` (without building anything)."""
        return self._key_of(read_dependency_spec(app_dir))

    def _key_of(self, spec: DependencySpec) -> str:
        sdk = None if spec.declares_tower else self.sdk_source()
        return venv_key(spec, self.python_id(), sdk.ident if sdk else "none")

    def python_id(self) -> str:
        """Implementation, version and machine of the interpreter, e.g. `CPython 3.11.7 x86_64`."""
        with self._memo_lock:
            if self._python_id is None:
                self._python_id = self._probe_python()
            return self._python_id

    def sdk_source(self) -> SdkSource | None:
        """The SDK to inject, resolved once per cache object (a runner keeps its SDK)."""
        with self._memo_lock:
            if not self._sdk_resolved:
                self._sdk = find_sdk_source()
                self._sdk_resolved = True
            return self._sdk

    def _probe_python(self) -> str:
        try:
            result = subprocess.run(
                [self.python, "-c", _PYTHON_ID_CODE], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            raise DependencyInstallError(
                f"The runner's Python interpreter {self.python!r} cannot be run ({exc}). "
                "Point TOWER_RUNNER_PYTHON at a working python3."
            ) from exc
        return result.stdout.strip()

    def _build(
        self,
        key: str,
        spec: DependencySpec,
        sdk: SdkSource | None,
        app_dir: Path,
        on_line: _Installer,
    ) -> None:
        self._remove_leftovers(key)
        temp = self.root / f"{TEMP_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
        on_line(SETUP_CHANNEL, f"Creating a virtual environment {key}")
        try:
            self._create(temp, on_line)
            self._install_dependencies(temp, spec, app_dir, on_line)
            if sdk is not None:
                self._install_sdk(temp, sdk, on_line)
            venv_size(temp)
            temp.rename(self.root / key)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise

    def _remove_leftovers(self, key: str) -> None:
        """Temp dirs of this key from a crashed build (we hold the key's lock)."""
        for leftover in self.root.glob(f"{TEMP_PREFIX}{key}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def _create(self, venv_dir: Path, on_line: _Installer) -> None:
        argv = [self.uv_bin, "venv", "--relocatable", "--python", self.python, str(venv_dir)]
        self._uv(argv, None, on_line, what="creating the virtual environment", file=None)

    def _install_dependencies(
        self, venv_dir: Path, spec: DependencySpec, app_dir: Path, on_line: _Installer
    ) -> None:
        # Runs see their venv read-only (and may run with PYTHONDONTWRITEBYTECODE): the
        # dependencies' bytecode is compiled once here, not again by every run importing
        # them. (Not the SDK's: a run imports a few of its modules, the build would
        # compile them all.)
        if spec.kind == "requirements":
            python = str(venv_dir / "bin" / "python")
            argv = [self.uv_bin, "pip", "install", "--compile-bytecode", "--python", python]
            argv += ["-r", REQUIREMENTS_FILE]
            self._uv(
                argv, app_dir, on_line, what="installing the dependencies", file=REQUIREMENTS_FILE
            )
        elif spec.kind == "pyproject":
            argv = [self.uv_bin, "sync", "--no-install-project", "--compile-bytecode"]
            if spec.frozen:
                argv.append("--frozen")
            extra = {"UV_PROJECT_ENVIRONMENT": str(venv_dir)}
            self._uv(
                argv,
                app_dir,
                on_line,
                what="installing the dependencies",
                file=PYPROJECT_FILE,
                extra=extra,
            )

    def _install_sdk(self, venv_dir: Path, sdk: SdkSource, on_line: _Installer) -> None:
        target = str(self._sdk_wheel(sdk, on_line)) if sdk.project_dir else sdk.requirement
        assert target is not None
        on_line(SETUP_CHANNEL, f"Installing the Tower SDK ({Path(target).name})")
        argv = [self.uv_bin, "pip", "install", "--python", str(venv_dir / "bin" / "python"), target]
        self._uv(argv, None, on_line, what="installing the Tower SDK", file=None)

    def _sdk_wheel(self, sdk: SdkSource, on_line: _Installer) -> Path:
        """The SDK wheel of a source checkout, built once per source-tree hash."""
        out_dir = self.sdk_dir / sdk.ident
        with file_lock(self.sdk_dir / LOCKS_DIR_NAME / f"{sdk.ident}.lock"):
            wheels = sorted(out_dir.glob("*.whl"))
            if wheels:
                return wheels[0]
            temp = self.sdk_dir / f"{TEMP_PREFIX}{sdk.ident}-{uuid.uuid4().hex[:8]}"
            on_line(SETUP_CHANNEL, f"Building the Tower SDK wheel from {sdk.project_dir}")
            argv = [self.uv_bin, "build", "--wheel", "--out-dir", str(temp), str(sdk.project_dir)]
            try:
                self._uv(argv, None, on_line, what="building the Tower SDK wheel", file=None)
                temp.rename(out_dir)
            finally:
                shutil.rmtree(temp, ignore_errors=True)
        return sorted(out_dir.glob("*.whl"))[0]

    def _uv(
        self,
        argv: Sequence[str],
        cwd: Path | None,
        on_line: _Installer,
        *,
        what: str,
        file: str | None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        env = {**self.base_env, **UV_ENV, "UV_CACHE_DIR": str(self.uv_cache_dir), **(extra or {})}
        if on_line.cancelled:
            raise BuildCancelled(f"The run was cancelled before {what}.")
        try:
            code, tail = run_streaming(
                argv, cwd=cwd, env=env, on_line=on_line, cancel=on_line.cancel
            )
        except OSError as exc:
            raise DependencyInstallError(f"Could not start uv ({argv[0]}): {exc}") from exc
        if on_line.cancelled:
            raise BuildCancelled(f"The run was cancelled while {what}; uv was stopped.")
        if code != 0:
            raise _install_error(what, file, code, tail)


def _install_error(
    what: str, file: str | None, code: int, tail: list[str]
) -> DependencyInstallError:
    """The first line says what failed; the rest is the tail of uv's output."""
    where = f" from {file}" if file else ""
    output = "\n".join(tail)
    message = f"{what[:1].upper()}{what[1:]}{where} failed (uv exited with code {code})."
    if output:
        message += f"\nLast lines of the installer output:\n{output}"
    return DependencyInstallError(message, file=file, output_tail=output)


def venv_size(path: Path) -> int:
    """Bytes in a venv's files, counted once and remembered in the venv."""
    size_file = path / SIZE_FILE
    with contextlib.suppress(OSError, ValueError):
        return int(size_file.read_text())
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    with contextlib.suppress(OSError):
        size_file.write_text(str(total))
    return total


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.touch()


def _is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file()
