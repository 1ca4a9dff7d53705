"""Apps: create, list, describe, delete — always inside the caller's account."""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm import Session

from tower.core import errors
from tower.core.retries import RetryPolicy
from tower.core.sandbox_settings import LIMIT_NAMES, SandboxSettings, check_limit
from tower.server.services import audit, lifecycle
from tower.server.services.context import Principal, ServerContext, owned, owned_once, owner
from tower.server.store import models

APP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _validate_name(name: str, what: str, example: str) -> str:
    """Apps and environments share one naming rule (they appear in paths and env vars)."""
    if not APP_NAME_PATTERN.match(name or ""):
        raise errors.InvalidInput(
            f"{what} name {name!r} is not valid: use 1-128 letters, digits, '-', '_' or "
            f"'.', starting with a letter or digit (e.g. '{example}').",
            location="body.name",
            value=name,
        )
    return name


def validate_app_name(name: str) -> str:
    return _validate_name(name, "App", "hello-world")


# Built once: every run submitted and every run request looks its app up by name.
_APP_BY_NAME = owned_once(select(models.App), models.App).where(
    models.App.name == bindparam("app_name")
)
_APP_BY_NAME_LOCKED = _APP_BY_NAME.with_for_update()


def get_app(session: Session, principal: Principal, name: str, *, lock: bool = False) -> models.App:
    """The caller's app called `name`, or AppNotFound (also for other accounts' apps)."""
    stmt = _APP_BY_NAME_LOCKED if lock else _APP_BY_NAME
    app = session.scalar(stmt, {**owner(principal), "app_name": name})
    if app is None:
        raise app_not_found(name)
    return app


def app_not_found(name: str) -> errors.AppNotFound:
    return errors.AppNotFound(
        f"App '{name}' was not found. Create it with `tower apps create --name={name}` "
        "or deploy with `tower deploy --create`."
    )


def validate_environment_name(name: str) -> str:
    return _validate_name(name, "Environment", "production")


def get_or_create_environment(
    session: Session, principal: Principal, name: str
) -> models.Environment:
    """The named environment, created when a write names one that does not exist yet.

    The documented flows (`tower secrets create --environment=test`, then
    `tower deploy --environment=test`) never create the environment first.
    """
    stmt = owned(select(models.Environment), models.Environment, principal).where(
        models.Environment.name == name
    )
    env = session.scalar(stmt)
    if env is not None:
        return env
    env = models.Environment(account_id=principal.account_id, name=validate_environment_name(name))
    try:
        # A savepoint: if a concurrent request created it first, only this insert is undone.
        with session.begin_nested():
            session.add(env)
    except DatabaseIntegrityError:
        return session.scalars(stmt).one()
    audit.record(session, principal, "environment.create", f"environments/{name}", implicit=True)
    return env


_ENVIRONMENT_BY_NAME = owned_once(select(models.Environment), models.Environment).where(
    models.Environment.name == bindparam("environment_name")
)


def get_environment(session: Session, principal: Principal, name: str) -> models.Environment:
    env = session.scalar(_ENVIRONMENT_BY_NAME, {**owner(principal), "environment_name": name})
    if env is None:
        raise environment_not_found(principal, name)
    return env


def environment_not_found(principal: Principal, name: str) -> errors.EnvironmentNotFound:
    return errors.EnvironmentNotFound(
        f"Environment '{name}' does not exist in account '{principal.account_name}'."
    )


def create_app(
    ctx: ServerContext,
    principal: Principal,
    *,
    name: str,
    short_description: str = "",
    is_externally_accessible: bool = False,
    sandbox: SandboxChanges | None = None,
) -> models.App:
    validate_app_name(name)
    sandbox = sandbox or SandboxChanges()
    sandbox.validate()
    with ctx.sessions.begin() as session:
        exists = session.scalar(
            owned(select(func.count()).select_from(models.App), models.App, principal).where(
                models.App.name == name
            )
        )
        if exists:
            raise errors.AlreadyExists(f"App '{name}' already exists.", location="body.name")
        app = models.App(
            account_id=principal.account_id,
            name=name,
            short_description=short_description or "",
            is_externally_accessible=is_externally_accessible,
            created_by_id=principal.user_id,
        )
        sandbox.apply(app)
        session.add(app)
        session.flush()
        audit.record(session, principal, "app.create", f"apps/{name}")
        return app


@dataclass(frozen=True)
class SandboxChanges:
    """Sandbox settings a request sets: None leaves one as it is, a limit of 0 goes
    back to the runner's default."""

    memory_mb: int | None = None
    cpu_seconds: int | None = None
    file_size_mb: int | None = None
    processes: int | None = None
    isolate_network: bool | None = None

    def validate(self) -> None:
        """InvalidInput naming the first limit out of range, and the range."""
        for name in LIMIT_NAMES:
            value = getattr(self, name)
            try:
                check_limit(name, value or None)
            except ValueError as exc:
                raise errors.InvalidInput(
                    f"{exc}; 0 goes back to the runner's default.",
                    location=f"body.{name}",
                    value=value,
                ) from None

    def apply(self, app: models.App) -> None:
        for name in LIMIT_NAMES:
            value = getattr(self, name)
            if value is not None:
                setattr(app, name, value or None)
        if self.isolate_network is not None:
            app.isolate_network = self.isolate_network


def sandbox_settings(app: models.App) -> SandboxSettings:
    """What the app's runs ask of a runner's sandbox."""
    return SandboxSettings(
        memory_mb=app.memory_mb,
        cpu_seconds=app.cpu_seconds,
        file_size_mb=app.file_size_mb,
        processes=app.processes,
        isolate_network=bool(app.isolate_network),
    )


@dataclass(frozen=True)
class AppChanges:
    """Fields of an app a user may change; None leaves a field as it is."""

    short_description: str | None = None
    status: str | None = None
    pending_timeout: int | None = None
    running_timeout: int | None = None
    retry_policy: RetryPolicy | None = None
    is_externally_accessible: bool | None = None
    sandbox: SandboxChanges = dataclasses.field(default_factory=SandboxChanges)


def update_app(
    ctx: ServerContext, principal: Principal, name: str, changes: AppChanges
) -> models.App:
    """Apply `changes`; they affect runs created from now on (a run keeps its policy;
    sandbox settings apply to runs claimed from now on)."""
    changes.sandbox.validate()
    with ctx.sessions.begin() as session:
        app = get_app(session, principal, name, lock=True)
        for field in (
            "short_description",
            "status",
            "pending_timeout",
            "running_timeout",
            "is_externally_accessible",
        ):
            value = getattr(changes, field)
            if value is not None:
                setattr(app, field, value)
        if changes.retry_policy is not None:
            lifecycle.apply_policy(app, changes.retry_policy)
        changes.sandbox.apply(app)
        session.flush()
        audit.record(session, principal, "app.update", f"apps/{name}", changes=_changed(changes))
        return app


def _changed(changes: AppChanges) -> dict[str, object]:
    """What an update set, as JSON (the retry policy and sandbox settings as their fields)."""
    changed = {k: v for k, v in dataclasses.asdict(changes).items() if v is not None}
    sandbox = {k: v for k, v in changed.pop("sandbox", {}).items() if v is not None}
    return {**changed, **({"sandbox": sandbox} if sandbox else {})}


def list_apps(ctx: ServerContext, principal: Principal) -> list[models.App]:
    with ctx.sessions.begin() as session:
        stmt = owned(select(models.App), models.App, principal).order_by(models.App.name)
        return list(session.scalars(stmt))


def delete_app(ctx: ServerContext, principal: Principal, name: str) -> models.App:
    """Delete the app with its versions, runs and logs, and its package blobs."""
    with ctx.sessions.begin() as session:
        app = get_app(session, principal, name, lock=True)
        app_id = app.id
        # Children first, explicitly: SQLite only cascades when foreign keys are on,
        # and we don't want correctness to hang on a PRAGMA.
        for model in (
            models.RunLogLine,
            models.RunTransition,
            models.RunAttempt,
        ):
            session.execute(
                delete(model).where(
                    model.run_id.in_(select(models.Run.id).where(models.Run.app_id == app_id))
                )
            )
        for model in (
            models.Schedule,
            models.Run,
            models.AppEnvironmentVersion,
            models.AppVersion,
        ):
            session.execute(delete(model).where(model.app_id == app_id))
        session.delete(app)
        audit.record(session, principal, "app.delete", f"apps/{name}")
    ctx.blobs.delete_prefix(package_prefix(principal.account_id, app_id))
    return app


def package_prefix(account_id: uuid.UUID, app_id: uuid.UUID) -> str:
    return f"packages/{account_id}/{app_id}"
