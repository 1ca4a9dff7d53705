"""Control-plane settings: every one is a `TOWER_*` environment variable.

Entrypoints build one `ServerSettings` and pass it down; nothing else reads the
environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path("~/.tower")


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOWER_", extra="ignore")

    home: Path = Field(DEFAULT_HOME, description="Where data, keys and blobs live (TOWER_HOME).")
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8000, description="Port the API listens on.")
    public_url: str | None = Field(
        None, description="URL users and runners reach the API at; default http://HOST:PORT."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default SQLite at $TOWER_HOME/tower.db."
    )
    storage_url: str | None = Field(
        None, description="Blob storage as file://DIR; default the directory $TOWER_HOME/blobs."
    )
    master_key: str | None = Field(
        None,
        description="Base64 32-byte master key; default a 0600 key file $TOWER_HOME/master.key.",
    )
    admin_email: str = Field("admin@localhost", description="Email of the first admin user.")
    admin_api_key: str | None = Field(
        None, description="First start only: use this sk-… key as the admin's API key."
    )
    lease_ttl_seconds: float = Field(
        30.0, description="How long a claimed run survives without a runner heartbeat."
    )
    claim_wait_max_seconds: float = Field(60.0, description="Longest long-poll a runner may ask.")
    runner_reservation_seconds: float = Field(
        3600.0,
        description="An environment stays reserved for its tagged runners this long after "
        "one was last seen (untagged runners don't take its runs meanwhile).",
    )
    session_ttl_days: int = Field(30, description="Lifetime of a CLI session token.")
    allow_signup: bool = Field(
        False,
        description="Anyone may create a user (POST /v1/accounts); off: only admins create users.",
    )
    device_login_ttl_seconds: int = Field(
        600, description="How long a `tower login` request waits for approval in the browser."
    )
    feature_flags: dict[str, Any] = Field(
        default_factory=dict,
        description='Feature flag values as JSON, e.g. {"new-ui": true} (/v1/feature-flags/KEY).',
    )
    health_requires_runner: bool = Field(
        False, description="/healthz answers 503 until a runner is online (set by `tower up`)."
    )
    log_level: str = Field("info", description="Log level of the control plane.")
    rate_limit_per_second: float = Field(
        20.0,
        ge=0,
        description="Requests a second each credential (or client IP without one) may make, "
        "per control-plane process; 0 disables the limit.",
    )
    rate_limit_burst: int = Field(
        20,
        ge=0,
        description="Requests a credential may make at once before the steady rate applies "
        "(the token bucket's size); 0 disables the limit.",
    )

    @property
    def rate_limited(self) -> bool:
        return self.rate_limit_per_second > 0 and self.rate_limit_burst > 0

    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) to serve HTTPS with; unset = plain HTTP "
        "(fine on loopback only).",
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of TOWER_TLS_CERT_FILE.")
    runner_mtls: str = Field(
        "off",
        description="`required`: runner endpoints (/v1/runner/*) only on TOWER_RUNNER_PORT, "
        "with a client certificate from `tower runners credentials`; `off`: on the API port.",
    )
    runner_port: int | None = Field(
        None,
        description="Port of the runner listener (mutual TLS) when TOWER_RUNNER_MTLS=required.",
    )
    runner_url: str | None = Field(
        None,
        description="URL runners reach the runner listener at; default the public URL's host "
        "on TOWER_RUNNER_PORT.",
    )
    runner_credential_overlap_seconds: float = Field(
        300.0,
        ge=0,
        description="After a runner rotates its credential the old one keeps working this long.",
    )

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def runner_mtls_required(self) -> bool:
        return self.runner_mtls.strip().lower() == "required"

    scheduler_enabled: bool = Field(
        True, description="Fire schedules from this control plane (one leads on PostgreSQL)."
    )
    scheduler_max_sleep_seconds: float = Field(
        1.0,
        description="Longest the scheduler sleeps between looks at the database (changes "
        "made through another control plane are seen within it).",
    )
    schedule_max_lateness_seconds: float | None = Field(
        None,
        description="A tick later than this (after downtime) is skipped, not run; "
        "default one interval of the schedule.",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'tower.db'}"

    @property
    def blobs_dir(self) -> Path:
        if self.storage_url and self.storage_url.startswith("file://"):
            return Path(self.storage_url.removeprefix("file://")).expanduser()
        return self.home_dir / "blobs"

    @property
    def resolved_public_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_enabled else "http"
        return f"{scheme}://{self._reachable_host}:{self.port}"

    @property
    def _reachable_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host

    @property
    def resolved_runner_url(self) -> str:
        """Where runners send /v1/runner/*: the runner listener under mutual TLS, else the
        public URL."""
        if not self.runner_mtls_required:
            return self.resolved_public_url
        if self.runner_url:
            return self.runner_url.rstrip("/")
        public = urlsplit(self.resolved_public_url)
        return f"https://{public.hostname}:{self.runner_port}"
