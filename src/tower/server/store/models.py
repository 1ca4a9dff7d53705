"""The metadata schema. Every table carries the owning account (tenancy).

Only `tower.server.store` imports SQLAlchemy models; services work through
these classes inside one session per use case.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tower.server.store.types import UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s__%(column_0_N_name)s",
    "uq": "uq_%(table_name)s__%(column_0_N_name)s",
    "ck": "ck_%(table_name)s__%(constraint_name)s",
    "fk": "fk_%(table_name)s__%(column_0_name)s__%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


def _account_fk() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)


def _created() -> Mapped[datetime]:
    return mapped_column(default=utcnow)


class Account(Base):
    """A tenant: a user's personal account or a team."""

    __tablename__ = "accounts"
    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(16))  # personal | team
    # The account key (AES-256) wrapped by the master key; wraps every data key of the account.
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _created()
    #: runs go only to the account's own runners, never to the installation's pool
    self_hosted_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = _id()
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(128), default="")
    last_name: Mapped[str] = mapped_column(String(128), default="")
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # The user's personal account; its own row in `memberships` too.
    personal_account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = _created()


class Membership(Base):
    __tablename__ = "memberships"
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(32), default="admin")
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    identifier: Mapped[str] = mapped_column(String(32))  # shown in lists; never the key
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = _created()
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    #: set when the key belongs to a service account (then `user_id` is null)
    service_account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("service_accounts.id", ondelete="CASCADE"), index=True
    )


class Session(Base):
    """A signed-in session; its JWTs carry `sid` so revoking the row revokes them."""

    __tablename__ = "sessions"
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = _created()


class EncryptedValue:
    """Columns of a value under envelope encryption: its own data key, wrapped by the
    account key, and the sealed value. The AAD binding both to their owner is
    computed from ids (see `tower.server.services.vault`), so rows cannot be swapped."""

    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    #: masked, computed from the plaintext when it was stored (never the value)
    preview: Mapped[str] = mapped_column(String(32))


class Secret(EncryptedValue, Base):
    """A named secret of one environment; `default`'s are inherited by every environment."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("environment_id", "name"),)
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    environment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Catalog(Base):
    """An Iceberg catalog of one environment, reachable in apps by its name (the slug)."""

    __tablename__ = "catalogs"
    __table_args__ = (UniqueConstraint("environment_id", "name"),)
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    environment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class CatalogProperty(EncryptedValue, Base):
    __tablename__ = "catalog_properties"
    catalog_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("catalogs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[uuid.UUID] = _account_fk()
    #: the variable the value is injected as; empty = PYICEBERG_CATALOG__<SLUG>__<NAME>
    environment_variable: Mapped[str] = mapped_column(String(256), default="")


class ServerKey(Base):
    """The control plane's long-term RSA key clients encrypt secrets to (`GET /secrets/key`).

    Stored in the database, sealed by a key derived from the master key, so every
    control-plane replica serves the same key.
    """

    __tablename__ = "server_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    public_key_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()


class App(Base):
    __tablename__ = "apps"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    name: Mapped[str] = mapped_column(String(128))
    short_description: Mapped[str] = mapped_column(Text, default="")
    #: guests (people outside the account) may be let into it with a login URL
    is_externally_accessible: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="0"
    )
    status: Mapped[str] = mapped_column(String(16), default="active")
    pending_timeout: Mapped[int] = mapped_column(Integer, default=600)
    running_timeout: Mapped[int] = mapped_column(Integer, default=0)
    # The retry policy every new run of the app gets (a run request may override it).
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_delay_seconds: Mapped[int] = mapped_column(Integer, default=0)
    use_exponential_backoff: Mapped[bool] = mapped_column(Boolean, default=False)
    # What its runs ask of the runner's sandbox (tower.core.sandbox_settings); null
    # limits leave the runner's default, and a runner clamps each to its own maximum.
    memory_mb: Mapped[int | None] = mapped_column(Integer)
    cpu_seconds: Mapped[int | None] = mapped_column(Integer)
    file_size_mb: Mapped[int | None] = mapped_column(Integer)
    processes: Mapped[int | None] = mapped_column(Integer)
    isolate_network: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Counters handed out under the app row's lock so numbers never repeat.
    last_run_number: Mapped[int] = mapped_column(Integer, default=0)
    last_version_number: Mapped[int] = mapped_column(Integer, default=0)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created()


class AppVersion(Base):
    """An immutable deployed package."""

    __tablename__ = "app_versions"
    __table_args__ = (
        UniqueConstraint("app_id", "number"),
        UniqueConstraint("app_id", "idempotency_key"),
    )
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    app_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    towerfile: Mapped[str] = mapped_column(Text)
    parameters: Mapped[list[Any]] = mapped_column(default=list)
    invoke: Mapped[str] = mapped_column(String(1024))
    content_checksum: Mapped[str] = mapped_column(String(64))
    package_sha256: Mapped[str] = mapped_column(String(64))  # of the plaintext .tar.gz
    #: the control plane's Ed25519 signature of (version, sha256, checksum); null for
    #: versions stored before signing existed, which are signed when first dispatched
    package_signature: Mapped[str | None] = mapped_column(String(128))
    package_size: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(512))
    wrapped_data_key: Mapped[bytes] = mapped_column(LargeBinary)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = _created()

    @property
    def version(self) -> str:
        return f"v{self.number}"


class AppEnvironmentVersion(Base):
    """Which version each environment runs: one row per (app, environment)."""

    __tablename__ = "app_environment_versions"
    account_id: Mapped[uuid.UUID] = _account_fk()
    app_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True
    )
    environment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_versions.id", ondelete="CASCADE"))
    updated_at: Mapped[datetime] = _created()


class Run(Base):
    """A run; the runs table is also the queue (status='pending')."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("app_id", "number"),
        Index("ix_runs__queue", "status", "created_at"),
        # Newest first is (created_at, number): each index below ends with both so it
        # reads in that order (without statistics SQLite otherwise prefers whichever
        # index orders the whole ORDER BY). One app's runs; the search of an account:
        Index("ix_runs__app_id_created_at_number", "app_id", "created_at", "number"),
        Index("ix_runs__account_id_created_at_number", "account_id", "created_at", "number"),
        # Status filters (read one status at a time), statistics (which spell out every
        # status to read only the index) and each app's run counts per status:
        Index(
            "ix_runs__account_id_status_created_at_number",
            "account_id",
            "status",
            "created_at",
            "number",
        ),
        Index(
            "ix_runs__app_id_status_created_at_number", "app_id", "status", "created_at", "number"
        ),
    )
    # Deadlines and retry times are stored, not computed, so the sweeps that act on
    # them are plain indexed comparisons on both databases.
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    app_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"))
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("app_versions.id", ondelete="CASCADE"))
    environment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    # [{name, value, hidden}]: defaults applied; hidden values never leave through the API.
    parameters: Mapped[list[Any]] = mapped_column(default=list)
    initiator: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    exit_code: Mapped[int | None]
    status_message: Mapped[str | None] = mapped_column(Text)
    num_attempts: Mapped[int] = mapped_column(Integer, default=0)
    runner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    lease_expires_at: Mapped[datetime | None]
    # The run that started this one with run_app (no foreign key: a parent may live in
    # another app and be deleted with it; the graph tolerates a missing parent).
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    # The retry policy of this run: the app's at creation, or the run request's override.
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_delay_seconds: Mapped[int] = mapped_column(Integer, default=0)
    use_exponential_backoff: Mapped[bool] = mapped_column(Boolean, default=False)
    #: while `retrying`: when the next attempt is queued
    retry_at: Mapped[datetime | None]
    #: while `pending`: when the run gives up waiting for a runner (pending_timeout)
    pending_deadline_at: Mapped[datetime | None]
    #: while `running`: when the attempt is stopped (running_timeout; null = no limit)
    running_deadline_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created()
    scheduled_at: Mapped[datetime] = _created()
    pending_at: Mapped[datetime | None]
    starting_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]


class RunAttempt(Base):
    __tablename__ = "run_attempts"
    __table_args__ = (
        UniqueConstraint("run_id", "seq"),
        # A runner's heartbeat long poll looks up the attempts of its own that the
        # control plane ended while it waited (services.runners.heartbeat).
        Index("ix_run_attempts__runner_id_ended_at", "runner_id", "ended_at"),
    )
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    runner_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Opaque token every report of this attempt must carry: a superseded attempt's
    # runner cannot forge the current one's (fencing).
    fencing_token: Mapped[str] = mapped_column(String(64), default="")
    exit_code: Mapped[int | None]
    starting_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class RunTransition(Base):
    """Every status change of every run, timestamped (so time-in-status is measurable)."""

    __tablename__ = "run_transitions"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account_id: Mapped[uuid.UUID] = _account_fk()
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    attempt_seq: Mapped[int] = mapped_column(Integer, default=0)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = _created()


class RunLogLine(Base):
    __tablename__ = "run_log_lines"
    account_id: Mapped[uuid.UUID] = _account_fk()
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    line_num: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_seq: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    reported_at: Mapped[datetime]


class RunnerCredential(Base):
    """A token a runner authenticates with. `account_id` null = serves every account."""

    __tablename__ = "runner_credentials"
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    #: hex serial of the client certificate issued with the token (mutual TLS checks it)
    certificate_serial: Mapped[str | None] = mapped_column(String(40))
    #: the credential this one replaced by rotation (the runner keeps its identity)
    rotated_from_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("runner_credentials.id", ondelete="SET NULL")
    )


class Runner(Base):
    __tablename__ = "runners"
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    credential_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runner_credentials.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(128))
    hostname: Mapped[str] = mapped_column(String(255), default="")
    version: Mapped[str] = mapped_column(String(64), default="")
    environment: Mapped[str | None] = mapped_column(String(128))
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    public_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    last_heartbeat_at: Mapped[datetime | None]


class Team(Base):
    """What a team account has beyond its account row: its descriptive name.

    The account's `name` is the team's slug (the identifier in URLs and the CLI)."""

    __tablename__ = "teams"
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    display_name: Mapped[str] = mapped_column(String(128))
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created()


class TeamInvitation(Base):
    """A pending invitation of an email address to a team, with the role it grants."""

    __tablename__ = "team_invitations"
    __table_args__ = (UniqueConstraint("account_id", "email"),)
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    email: Mapped[str] = mapped_column(String(320), index=True)  # stored lowercased
    role: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    invited_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created()
    sent_at: Mapped[datetime] = _created()


class ServiceAccount(Base):
    """A non-human member of an account with a role; it acts through its own API keys."""

    __tablename__ = "service_accounts"
    __table_args__ = (UniqueConstraint("account_id", "name"),)
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    #: customer-supplied JSON, stored as given (validated as JSON)
    metadata_json: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class ServiceAccountRun(Base):
    """Which runs a service account started, so deleting it can cancel those in flight."""

    __tablename__ = "service_account_runs"
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    service_account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("service_accounts.id", ondelete="CASCADE"), index=True
    )


class Guest(Base):
    """Someone outside the account allowed into one app through a login URL.

    Only hashes of the login token and of guest session tokens are stored."""

    __tablename__ = "guests"
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    app_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    login_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    login_expires_at: Mapped[datetime]
    #: how long a session opened with the login URL lasts
    session_seconds: Mapped[int] = mapped_column(Integer)
    redirect_url: Mapped[str] = mapped_column(String(2048), default="")
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created()


class Schedule(Base):
    """Runs an app in one environment on a cron schedule (see tower.core.schedules).

    The scheduler fires a tick by moving `next_fire_at` forward with a compare-and-set
    in the transaction that creates the run, so two control planes never fire it twice.
    """

    __tablename__ = "schedules"
    __table_args__ = (
        UniqueConstraint("account_id", "name"),
        # The scheduler's only question: which active schedule is due first?
        Index("ix_schedules__status_next_fire_at", "status", "next_fire_at"),
    )
    id: Mapped[uuid.UUID] = _id()
    account_id: Mapped[uuid.UUID] = _account_fk()
    app_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    environment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(256))
    #: always the 5-field cron form, also when a phrase was given
    cron: Mapped[str] = mapped_column(String(256))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    overlap_policy: Mapped[str] = mapped_column(String(16), default="allow")  # allow | skip
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    #: [{name, value}] given to every run it starts
    parameters: Mapped[list[Any]] = mapped_column(default=list)
    #: the next tick (UTC); null while disabled
    next_fire_at: Mapped[datetime | None]
    last_fired_at: Mapped[datetime | None]
    #: the run the last tick started (the `skip` overlap policy looks at it)
    last_run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    #: ticks that started no run (downtime, too late, overlap, app disabled, failure)
    skipped_ticks: Mapped[int] = mapped_column(Integer, default=0)
    last_skipped_at: Mapped[datetime | None]
    last_skip_reason: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    #: the service account that created it: deleting that account disables it
    service_account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("service_accounts.id", ondelete="SET NULL"), index=True
    )


class GuestSession(Base):
    """A browser session a guest opened with their login URL; deleted with the guest."""

    __tablename__ = "guest_sessions"
    id: Mapped[uuid.UUID] = _id()
    guest_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("guests.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime]


class AuditEvent(Base):
    """Who did what, when, with which credential: one row per change, written in the
    change's own transaction (services.audit). Never holds a secret: credentials appear
    as their masked identifier, secret values not at all."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # Newest first per account, and the same filtered by action.
        Index("ix_audit_events__account_id_created_at", "account_id", "created_at"),
        Index(
            "ix_audit_events__account_id_action_created_at", "account_id", "action", "created_at"
        ),
    )
    id: Mapped[uuid.UUID] = _id()
    # Not `_account_fk()`: the composite indexes above serve every per-account lookup.
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = _created()
    # No foreign key: the record of what a user did outlives the user.
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor_kind: Mapped[str] = mapped_column(String(16))  # session | api_key | run
    #: the API key's masked identifier (`sk-abcd…wxyz`), or the run a run token belongs to
    actor_credential: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class UserProfile(Base):
    """What a user tells about themselves beyond email and name, and their email choices.

    A row appears the first time a user changes one of these; until then the defaults
    below are what `GET /v1/user` shows.
    """

    __tablename__ = "user_profiles"
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    company: Mapped[str] = mapped_column(String(256), default="")
    country: Mapped[str] = mapped_column(String(128), default="")
    promo_code: Mapped[str] = mapped_column(String(128), default="")
    is_alerts_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: the email lists (contract EmailSubscriptions: feature_updates, marketing, newsletter)
    is_subscribed_to_changelog: Mapped[bool] = mapped_column(Boolean, default=False)
    is_subscribed_to_marketing_emails: Mapped[bool] = mapped_column(Boolean, default=False)
    is_subscribed_to_newsletter: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = _created()


class Organization(Base):
    """The organization name an account shows (`Team.organization`); default: the account's."""

    __tablename__ = "organizations"
    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(128))
    updated_at: Mapped[datetime] = _created()


class DeviceLogin(Base):
    """A `tower login` ticket: the CLI polls with the device code (stored hashed) while a
    signed-in person approves the short user code in a browser. The session is minted
    when the CLI collects it, so no token is ever stored in the clear."""

    __tablename__ = "device_logins"
    id: Mapped[uuid.UUID] = _id()
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime]
    #: who approved it, and when; null while pending
    claimed_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    claimed_at: Mapped[datetime | None]
    #: when the CLI collected its session; a ticket is good for one session only
    collected_at: Mapped[datetime | None]
