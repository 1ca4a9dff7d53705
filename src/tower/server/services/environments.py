"""Environments of an account, and which version of each app every environment runs.

An environment owns its secrets, catalogs, app pins and runs. `default` always exists:
it is the base layer others inherit from, so it can be neither renamed nor deleted.
Runs resolve their environment's pin when they are created (services.runs), so moving
a pin (deploy, promote, roll back) never changes a run that already exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm import Session

from tower.core import errors
from tower.core.runs import ACTIVE
from tower.server.services import apps as apps_service
from tower.server.services import audit, deploys
from tower.server.services.accounts import DEFAULT_ENVIRONMENT
from tower.server.services.context import Principal, ServerContext, owned
from tower.server.store import models

ACTIVE_STATUSES = sorted(status.value for status in ACTIVE)


@dataclass(frozen=True)
class EnvironmentSummary:
    """An environment and how much lives in it (what `tower environments delete` shows)."""

    environment: models.Environment
    number_catalogs: int
    number_schedules: int
    number_secrets: int


@dataclass(frozen=True)
class DeletedEnvironment:
    """A deleted environment and how many of its rows went with it."""

    environment: models.Environment
    counts: dict[str, int]


@dataclass(frozen=True)
class Pin:
    """The version of one app that one environment runs."""

    environment: str
    version: str
    updated_at: datetime
    previous_version: str | None = None


def is_deletable(env: models.Environment) -> bool:
    return env.name != DEFAULT_ENVIRONMENT


# ----------------------------------------------------------------------- environments


def list_environments(
    ctx: ServerContext, principal: Principal, *, page: int, page_size: int
) -> tuple[list[models.Environment], int]:
    """One page of the caller's environments (`default` first) and how many there are.

    `page=0` means every environment (the official CLI relies on that).
    """
    stmt = owned(select(models.Environment), models.Environment, principal)
    stmt = stmt.order_by(models.Environment.name != DEFAULT_ENVIRONMENT, models.Environment.name)
    if page > 0:
        stmt = stmt.offset((page - 1) * page_size).limit(page_size)
    with ctx.sessions.begin() as session:
        total = session.scalar(
            owned(
                select(func.count()).select_from(models.Environment), models.Environment, principal
            )
        )
        return list(session.scalars(stmt)), total or 0


def create_environment(ctx: ServerContext, principal: Principal, name: str) -> models.Environment:
    apps_service.validate_environment_name(name)
    with ctx.sessions.begin() as session:
        if _find(session, principal, name) is not None:
            raise _already_exists(name)
        env = models.Environment(account_id=principal.account_id, name=name)
        session.add(env)
        _flush_unique(session, name)
        audit.record(session, principal, "environment.create", f"environments/{name}")
        return env


def describe_environment(ctx: ServerContext, principal: Principal, name: str) -> EnvironmentSummary:
    with ctx.sessions.begin() as session:
        env = apps_service.get_environment(session, principal, name)
        return EnvironmentSummary(
            environment=env,
            number_catalogs=_count(
                session, models.Catalog, models.Catalog.environment_id == env.id
            ),
            number_schedules=_count_schedules(session, env),
            number_secrets=_count(session, models.Secret, models.Secret.environment_id == env.id),
        )


def rename_environment(
    ctx: ServerContext, principal: Principal, name: str, new_name: str
) -> models.Environment:
    """Give an environment a new name; everything in it stays (rows refer to it by id)."""
    apps_service.validate_environment_name(new_name)
    with ctx.sessions.begin() as session:
        env = _get_locked(session, principal, name)
        if new_name == env.name:
            return env
        if not is_deletable(env):
            raise errors.Conflict(
                f"Environment '{DEFAULT_ENVIRONMENT}' cannot be renamed: every account has it "
                "and other environments inherit its secrets and catalogs. Create a new "
                f"environment with `tower environments create --name={new_name}` instead."
            )
        if _find(session, principal, new_name) is not None:
            raise _already_exists(new_name)
        env.name = new_name
        _flush_unique(session, new_name)
        audit.record(
            session, principal, "environment.update", f"environments/{new_name}", renamed_from=name
        )
        return env


def delete_environment(ctx: ServerContext, principal: Principal, name: str) -> DeletedEnvironment:
    """Delete an environment with its secrets, catalogs, app pins and finished runs.

    Refused while runs in it are still active: deleting them would pull the rows out
    from under a runner. The environment row is locked first, so a run created
    concurrently either is counted here or fails on the missing environment.
    """
    with ctx.sessions.begin() as session:
        env = _get_locked(session, principal, name)
        if not is_deletable(env):
            raise errors.Conflict(
                f"Environment '{DEFAULT_ENVIRONMENT}' cannot be deleted: every account has "
                "it and other environments inherit its secrets and catalogs. Delete the "
                "secrets or catalogs in it one by one instead."
            )
        active = _count(
            session,
            models.Run,
            models.Run.environment_id == env.id,
            models.Run.status.in_(ACTIVE_STATUSES),
        )
        if active:
            noun = "run is" if active == 1 else "runs are"
            raise errors.Conflict(
                f"Environment '{name}' cannot be deleted: {active} {noun} still active in "
                f"it. Cancel them first (`tower runs list --environment={name} --status "
                "pending ...`, then `tower apps cancel APP#N`), or wait for them to finish."
            )
        counts = _delete_contents(session, env)
        session.delete(env)
        audit.record(session, principal, "environment.delete", f"environments/{name}", **counts)
        return DeletedEnvironment(environment=env, counts=counts)


def _delete_contents(session: Session, env: models.Environment) -> dict[str, int]:
    """Delete every row that belongs to `env`, children first.

    Explicit deletes rather than ON DELETE CASCADE: SQLite only cascades when foreign
    keys are switched on, and correctness should not hang on a PRAGMA.
    """
    run_ids = select(models.Run.id).where(models.Run.environment_id == env.id)
    for child in (models.RunLogLine, models.RunTransition, models.RunAttempt):
        session.execute(delete(child).where(child.run_id.in_(run_ids)))
    catalog_ids = select(models.Catalog.id).where(models.Catalog.environment_id == env.id)
    session.execute(
        delete(models.CatalogProperty).where(models.CatalogProperty.catalog_id.in_(catalog_ids))
    )
    counts = {
        "runs": _delete_where(session, models.Run, models.Run.environment_id == env.id),
        "secrets": _delete_where(session, models.Secret, models.Secret.environment_id == env.id),
        "catalogs": _delete_where(session, models.Catalog, models.Catalog.environment_id == env.id),
        "app_pins": _delete_where(
            session,
            models.AppEnvironmentVersion,
            models.AppEnvironmentVersion.environment_id == env.id,
        ),
    }
    counts["schedules"] = _delete_where(
        session, models.Schedule, models.Schedule.environment_id == env.id
    )
    return counts


# ----------------------------------------------------------------------- app pins


def app_pins(ctx: ServerContext, principal: Principal, app_name: str) -> list[Pin]:
    """Which version of the app each environment runs (only environments with a pin)."""
    with ctx.sessions.begin() as session:
        app = apps_service.get_app(session, principal, app_name)
        rows = session.execute(
            _pins_query(app.id).order_by(
                models.Environment.name != DEFAULT_ENVIRONMENT, models.Environment.name
            )
        )
        return [Pin(env_name, f"v{number}", updated_at) for env_name, number, updated_at, _ in rows]


def environments_by_version(
    ctx: ServerContext, principal: Principal, app_name: str
) -> dict[uuid.UUID, list[str]]:
    """For each version of the app, the environments pinned to it (one query)."""
    with ctx.sessions.begin() as session:
        app = apps_service.get_app(session, principal, app_name)
        rows = session.execute(_pins_query(app.id).order_by(models.Environment.name))
        pinned: dict[uuid.UUID, list[str]] = {}
        for env_name, _number, _updated_at, version_id in rows:
            pinned.setdefault(version_id, []).append(env_name)
        return pinned


def pin_version(
    ctx: ServerContext, principal: Principal, app_name: str, environment: str, version: str
) -> Pin:
    """Make `environment` run an existing version of the app (promote or roll back).

    No new version is made and nothing is rebuilt; runs created from now on get this
    version, runs that already exist keep theirs. A missing environment is created, as
    a deploy to it would.
    """
    number = deploys.parse_version(version)
    with ctx.sessions.begin() as session:
        # The app row lock orders this against deploys and run creation of the same app.
        app = apps_service.get_app(session, principal, app_name, lock=True)
        target = session.scalar(
            select(models.AppVersion).where(
                models.AppVersion.app_id == app.id, models.AppVersion.number == number
            )
        )
        if target is None:
            raise _version_not_found(session, app, version)
        env = apps_service.get_or_create_environment(session, principal, environment)
        previous = _pinned_number(session, app, env)
        row = deploys.pin(session, app, env, target.id)
        audit.record(
            session,
            principal,
            "app.promote",
            f"apps/{app_name}",
            environment=env.name,
            version=target.version,
            previous_version=f"v{previous}" if previous is not None else None,
        )
        return Pin(
            environment=env.name,
            version=target.version,
            updated_at=row.updated_at,
            previous_version=f"v{previous}" if previous is not None else None,
        )


def _pins_query(app_id: uuid.UUID) -> Select[tuple[str, int, datetime, uuid.UUID]]:
    return (
        select(
            models.Environment.name,
            models.AppVersion.number,
            models.AppEnvironmentVersion.updated_at,
            models.AppVersion.id,
        )
        .join(models.AppVersion, models.AppVersion.id == models.AppEnvironmentVersion.version_id)
        .join(
            models.Environment,
            models.Environment.id == models.AppEnvironmentVersion.environment_id,
        )
        .where(models.AppEnvironmentVersion.app_id == app_id)
    )


def _pinned_number(session: Session, app: models.App, env: models.Environment) -> int | None:
    return session.scalar(
        select(models.AppVersion.number)
        .join(
            models.AppEnvironmentVersion,
            models.AppEnvironmentVersion.version_id == models.AppVersion.id,
        )
        .where(
            models.AppEnvironmentVersion.app_id == app.id,
            models.AppEnvironmentVersion.environment_id == env.id,
        )
    )


def _version_not_found(session: Session, app: models.App, version: str) -> errors.VersionNotFound:
    numbers = list(
        session.scalars(
            select(models.AppVersion.number)
            .where(models.AppVersion.app_id == app.id)
            .order_by(models.AppVersion.number)
        )
    )
    if not numbers:
        return errors.VersionNotFound(
            f"App '{app.name}' has no version {version}: it has not been deployed yet. "
            "Run `tower deploy` first."
        )
    return errors.VersionNotFound(
        f"App '{app.name}' has no version {version}; it has {_describe_numbers(numbers)}. "
        f"See them with `tower apps versions {app.name}`."
    )


def _describe_numbers(numbers: list[int]) -> str:
    """`v1, v2, v3` or, for a long history, `v1 to v40` (numbers are gap-free)."""
    if len(numbers) <= 10:
        return ", ".join(f"v{n}" for n in numbers)
    return f"v{numbers[0]} to v{numbers[-1]}"


# ----------------------------------------------------------------------- helpers


def _find(session: Session, principal: Principal, name: str) -> models.Environment | None:
    stmt = owned(select(models.Environment), models.Environment, principal)
    return session.scalar(stmt.where(models.Environment.name == name))


def _get_locked(session: Session, principal: Principal, name: str) -> models.Environment:
    stmt = owned(select(models.Environment), models.Environment, principal)
    env = session.scalar(stmt.where(models.Environment.name == name).with_for_update())
    if env is None:
        # Raises EnvironmentNotFound with the house message.
        return apps_service.get_environment(session, principal, name)
    return env


def _already_exists(name: str) -> errors.AlreadyExists:
    return errors.AlreadyExists(
        f"Environment '{name}' already exists. Pick another name, or use it as it is.",
        location="body.name",
        value=name,
    )


def _flush_unique(session: Session, name: str) -> None:
    """Flush, turning a lost race on the (account, name) unique constraint into a 409."""
    try:
        session.flush()
    except DatabaseIntegrityError as exc:
        raise _already_exists(name) from exc


def _count(session: Session, model: Any, *where: ColumnElement[bool]) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _delete_where(session: Session, model: Any, where: ColumnElement[bool]) -> int:
    result = session.execute(delete(model).where(where))
    return int(getattr(result, "rowcount", 0) or 0)


def _count_schedules(session: Session, env: models.Environment) -> int:
    return _count(session, models.Schedule, models.Schedule.environment_id == env.id)
