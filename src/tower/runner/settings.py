"""Runner settings: the only module of `tower.runner` that reads the process environment.

Values come from real environment variables first, then from a `.env` file in the
working directory (which never overrides a real variable), then from defaults.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values

from tower.core.errors import TowerError
from tower.runner.sandbox import Limits, NetworkMode, SandboxConfig, SandboxMode, parse_uid_range

DEFAULT_URL = "http://127.0.0.1:8000"
#: runs at once when TOWER_RUNNER_CAPACITY is not set: one per CPU core
DEFAULT_CAPACITY = os.cpu_count() or 1
DEFAULT_CANCEL_GRACE_S = 10.0
#: how long status reports and log lines are retried while the control plane is down (s)
DEFAULT_REPORT_DEADLINE_S = 900.0
#: `running` waits this long after the app started: a run that ends sooner is
#: reported once, its final report saying when it started (s)
DEFAULT_RUNNING_REPORT_DELAY_S = 0.1
DEFAULT_HOME = "~/.tower"
#: a run's limits unless its app asks otherwise (see `tower.runner.sandbox`)
DEFAULT_LIMITS = Limits(memory_mb=4096, cpu_seconds=86_400, file_size_mb=10_240, processes=1024)
#: the most an app may ask for
DEFAULT_MAX_LIMITS = Limits(
    memory_mb=16_384, cpu_seconds=604_800, file_size_mb=102_400, processes=4096
)
#: the variable of each limit: TOWER_RUNNER_<NAME> (default), TOWER_RUNNER_MAX_<NAME>
LIMIT_VARIABLES = {
    "memory_mb": "MEMORY_MB",
    "cpu_seconds": "CPU_SECONDS",
    "file_size_mb": "FILE_SIZE_MB",
    "processes": "PROCESSES",
}
DEFAULT_RUN_UIDS = "2000000-2000999"
DEFAULT_VENV_CACHE_MAX_MB = 10_240
#: TOWER_RUNNER_CGROUPS values
CGROUP_MODES = ("auto", "off")
#: pre-started interpreters (see `tower.runner.warm`): how many (venv, request) pairs
#: keep one, and how long an idle one lives
DEFAULT_WARM_KEYS = 4
DEFAULT_WARM_IDLE_S = 120.0
WARM_START_CHOICES = ("on", "off")

#: variables a child app inherits from the runner (everything else is scrubbed)
RUN_PASSTHROUGH_VARS = ("PATH", "LANG", "LC_ALL", "TZ")
#: variables the dependency installer (uv) inherits: network, TLS and index configuration
INSTALLER_PASSTHROUGH_VARS = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "UV_INDEX",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_NATIVE_TLS",
    "UV_INSECURE_HOST",
    "UV_OFFLINE",
    "UV_HTTP_TIMEOUT",
    "UV_CONCURRENT_DOWNLOADS",
)


class SettingsError(TowerError):
    """The runner is not configured correctly."""

    code = "runner_settings"


@dataclass(frozen=True)
class RunnerSettings:
    """Everything a runner needs to know, resolved once at start."""

    url: str = DEFAULT_URL
    token: str | None = None
    #: TOWER_API_KEY: used only to mint the runner's own credentials when it has none
    api_key: str | None = None
    #: TOWER_RUNNER_PACKAGE_KEY: the control plane's package signing key, pinned (as
    #: `tower runners credentials` prints it); unset = the one announced at registration
    package_key: str | None = None
    name: str = ""
    environment: str | None = None
    capacity: int = DEFAULT_CAPACITY
    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME).expanduser())
    python: str = sys.executable
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S
    #: TOWER_RUNNER_REPORT_DEADLINE_SECONDS: how long an undelivered report is retried
    report_deadline_s: float = DEFAULT_REPORT_DEADLINE_S
    #: TOWER_RUNNER_RUNNING_REPORT_DELAY_SECONDS: see docs/runner-protocol.md
    running_report_delay_s: float = DEFAULT_RUNNING_REPORT_DELAY_S
    #: TOWER_RUNNER_UV_CACHE_DIR: share uv's download cache between runner homes
    uv_cache_override: Path | None = None
    #: TOWER_RUNNER_SANDBOX: auto (bubblewrap when it works), bwrap (required), off
    sandbox: str = SandboxMode.AUTO
    #: TOWER_RUNNER_NETWORK: host (runs may ask for isolation), none (every run isolated)
    network: str = NetworkMode.HOST
    #: TOWER_RUNNER_{MEMORY_MB,CPU_SECONDS,FILE_SIZE_MB,PROCESSES}
    limits: Limits = DEFAULT_LIMITS
    #: TOWER_RUNNER_MAX_{MEMORY_MB,...}: the most an app's `limits` may ask for
    max_limits: Limits = DEFAULT_MAX_LIMITS
    #: TOWER_RUNNER_RUN_UIDS: uids leased to runs when the runner is root
    run_uids: range = field(default_factory=lambda: parse_uid_range(DEFAULT_RUN_UIDS))
    #: TOWER_RUNNER_VENV_CACHE_MAX_MB: LRU-evict venvs beyond this size (None: unbounded)
    venv_cache_max_mb: int | None = DEFAULT_VENV_CACHE_MAX_MB
    #: TOWER_CA_BUNDLE: PEM CA certificates the control plane's HTTPS certificate is
    #: checked against (unset: the system trust store)
    ca_bundle: Path | None = None
    #: TOWER_RUNNER_CERT_FILE / TOWER_RUNNER_KEY_FILE: the client certificate and key of
    #: `tower runners credentials`, presented when the control plane requires mutual TLS
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def client_certificate(self) -> tuple[Path, Path] | None:
        if self.cert_file and self.key_file:
            return (self.cert_file, self.key_file)
        return None

    #: TOWER_RUNNER_CGROUPS: auto (a memory cgroup per run when the host allows), off
    memory_cgroups: bool = True
    #: TOWER_RUNNER_WARM_START: on (pre-start interpreters for recently used apps) / off
    warm_start: bool = True
    #: TOWER_RUNNER_FORK_START: on (fork runs from a template where the runner can, see
    #: `tower.runner.forks`) / off
    fork_start: bool = True
    #: TOWER_RUNNER_WARM_KEYS: at most this many warm interpreters (one per venv + request)
    warm_keys: int = DEFAULT_WARM_KEYS
    #: TOWER_RUNNER_WARM_IDLE_SECONDS: an unused warm interpreter is stopped after this
    warm_idle_s: float = DEFAULT_WARM_IDLE_S

    @property
    def runner_dir(self) -> Path:
        return self.home / "runner"

    @property
    def venvs_dir(self) -> Path:
        return self.runner_dir / "venvs"

    @property
    def work_dir(self) -> Path:
        return self.runner_dir / "work"

    @property
    def uv_cache_dir(self) -> Path:
        return self.uv_cache_override or self.runner_dir / "uv-cache"

    @property
    def sdk_dir(self) -> Path:
        return self.runner_dir / "sdk"

    def sandbox_config(self) -> SandboxConfig:
        return SandboxConfig(
            mode=self.sandbox,
            network=self.network,
            default_limits=self.limits.clamped_to(self.max_limits),
            max_limits=self.max_limits,
            run_uids=self.run_uids,
            state_dir=self.runner_dir,
            python=self.python,
            memory_cgroups=self.memory_cgroups,
        )

    def require_token(self) -> str:
        """The runner token, or a clear error saying how to get one."""
        if not self.token:
            raise SettingsError(
                "TOWER_RUNNER_TOKEN is not set. A runner needs its own credentials: "
                "`tower up` mints one for the embedded runner; elsewhere run "
                "`tower runners credentials` and set TOWER_RUNNER_TOKEN, or set "
                "TOWER_API_KEY and the runner mints its own."
            )
        return self.token

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv_path: Path | None = None
    ) -> RunnerSettings:
        """Resolve the settings from the environment (plus `.env`) and defaults."""
        values = merged_environment(environ, dotenv_path=dotenv_path)
        home = Path(values.get("TOWER_HOME") or DEFAULT_HOME).expanduser()
        return cls(
            url=values.get("TOWER_URL") or DEFAULT_URL,
            token=values.get("TOWER_RUNNER_TOKEN") or None,
            api_key=values.get("TOWER_API_KEY") or None,
            package_key=values.get("TOWER_RUNNER_PACKAGE_KEY") or None,
            name=values.get("TOWER_RUNNER_NAME") or socket.gethostname(),
            # TOWER_ENVIRONMENT is the name the product documentation gives the tag.
            environment=values.get("TOWER_RUNNER_ENVIRONMENT")
            or values.get("TOWER_ENVIRONMENT")
            or None,
            capacity=_positive_int(values, "TOWER_RUNNER_CAPACITY", DEFAULT_CAPACITY),
            home=home,
            python=values.get("TOWER_RUNNER_PYTHON") or sys.executable,
            uv_cache_override=_optional_path(values.get("TOWER_RUNNER_UV_CACHE_DIR")),
            cancel_grace_s=_non_negative_float(
                values, "TOWER_RUNNER_CANCEL_GRACE_SECONDS", DEFAULT_CANCEL_GRACE_S
            ),
            report_deadline_s=_non_negative_float(
                values, "TOWER_RUNNER_REPORT_DEADLINE_SECONDS", DEFAULT_REPORT_DEADLINE_S
            ),
            running_report_delay_s=_non_negative_float(
                values, "TOWER_RUNNER_RUNNING_REPORT_DELAY_SECONDS", DEFAULT_RUNNING_REPORT_DELAY_S
            ),
            sandbox=_choice(values, "TOWER_RUNNER_SANDBOX", SandboxMode.ALL, SandboxMode.AUTO),
            network=_choice(values, "TOWER_RUNNER_NETWORK", NetworkMode.ALL, NetworkMode.HOST),
            limits=_limits(values, "TOWER_RUNNER_", DEFAULT_LIMITS),
            max_limits=_limits(values, "TOWER_RUNNER_MAX_", DEFAULT_MAX_LIMITS),
            run_uids=_uid_range(values.get("TOWER_RUNNER_RUN_UIDS") or DEFAULT_RUN_UIDS),
            venv_cache_max_mb=_optional_size(
                values, "TOWER_RUNNER_VENV_CACHE_MAX_MB", DEFAULT_VENV_CACHE_MAX_MB
            ),
            memory_cgroups=_choice(values, "TOWER_RUNNER_CGROUPS", CGROUP_MODES, "auto") == "auto",
            ca_bundle=_existing_file(values, "TOWER_CA_BUNDLE"),
            **_client_certificate(values),
            warm_start=_choice(values, "TOWER_RUNNER_WARM_START", WARM_START_CHOICES, "on") == "on",
            fork_start=_choice(values, "TOWER_RUNNER_FORK_START", WARM_START_CHOICES, "on") == "on",
            warm_keys=_positive_int(values, "TOWER_RUNNER_WARM_KEYS", DEFAULT_WARM_KEYS),
            warm_idle_s=_non_negative_float(
                values, "TOWER_RUNNER_WARM_IDLE_SECONDS", DEFAULT_WARM_IDLE_S
            ),
        )


def _existing_file(values: Mapping[str, str], name: str) -> Path | None:
    path = _optional_path(values.get(name))
    if path is not None and not path.is_file():
        raise SettingsError(f"{name}={path}: no such file.")
    return path


def _client_certificate(values: Mapping[str, str]) -> dict[str, Path | None]:
    cert = _existing_file(values, "TOWER_RUNNER_CERT_FILE")
    key = _existing_file(values, "TOWER_RUNNER_KEY_FILE")
    if (cert is None) != (key is None):
        raise SettingsError(
            "Set both TOWER_RUNNER_CERT_FILE and TOWER_RUNNER_KEY_FILE (the certificate and "
            "private key of `tower runners credentials`), or neither."
        )
    return {"cert_file": cert, "key_file": key}


def _choice(values: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    raw = (values.get(name) or default).strip().lower()
    if raw not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {raw!r}.")
    return raw


def _limits(values: Mapping[str, str], prefix: str, defaults: Limits) -> Limits:
    """The limits named `<prefix><NAME>`; `0` lifts a limit, unset keeps the default."""
    chosen = {}
    for name, suffix in LIMIT_VARIABLES.items():
        variable = prefix + suffix
        if values.get(variable):
            chosen[name] = _optional_size(values, variable, None)
    return Limits(**{**{n: getattr(defaults, n) for n in Limits.names()}, **chosen})


def _uid_range(raw: str) -> range:
    try:
        return parse_uid_range(raw)
    except ValueError as exc:
        raise SettingsError(f"TOWER_RUNNER_RUN_UIDS: {exc}.") from exc


def _optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def merged_environment(
    environ: Mapping[str, str] | None = None, *, dotenv_path: Path | None = None
) -> dict[str, str]:
    """`.env` values overlaid by the real environment (real variables always win)."""
    real = dict(os.environ if environ is None else environ)
    path = dotenv_path if dotenv_path is not None else Path.cwd() / ".env"
    from_file = {k: v for k, v in dotenv_values(path).items() if v is not None}
    return {**from_file, **real} if path.is_file() else real


def run_parent_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The few variables a user app inherits from the runner process."""
    source = os.environ if environ is None else environ
    return {name: source[name] for name in RUN_PASSTHROUGH_VARS if name in source}


def installer_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables the dependency installer inherits (proxies, CA bundles, indexes)."""
    source = os.environ if environ is None else environ
    return {name: source[name] for name in INSTALLER_PASSTHROUGH_VARS if name in source}


#: int or float: what a numeric setting parses to
N = TypeVar("N", int, float)


def _number(
    values: Mapping[str, str], name: str, parse: Callable[[str], N], minimum: N, must: str
) -> N | None:
    """Variable `name` parsed, or None when unset; a SettingsError saying what it `must`
    be when it does not parse or is below `minimum`."""
    raw = values.get(name)
    if not raw:
        return None
    try:
        number = parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {must}, got {raw!r}.") from None
    if number < minimum:
        raise SettingsError(f"{name} must be {must}, got {raw!r}.")
    return number


def _optional_size(values: Mapping[str, str], name: str, default: int | None) -> int | None:
    """A whole number of at least 0 (0 means "no limit" → None)."""
    number = _number(values, name, int, 0, "a whole number (0 for no limit)")
    return default if number is None else number or None


def _positive_int(values: Mapping[str, str], name: str, default: int) -> int:
    number = _number(values, name, int, 1, "a whole number of at least 1")
    return default if number is None else number


def _non_negative_float(values: Mapping[str, str], name: str, default: float) -> float:
    number = _number(values, name, float, 0.0, "a number of seconds (0 or more)")
    return default if number is None else number
