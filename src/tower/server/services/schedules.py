"""Schedules of an account: create, list, describe, update, delete, (de)activate.

A schedule runs one app in one environment on a cron schedule; it never names a
version: each tick runs the version pinned to its environment at that moment. The
scheduler (tower.server.scheduler) fires the ticks; this module only changes what
it fires, and wakes it when a change may move the earliest tick.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from tower.core import errors
from tower.core import schedules as syntax
from tower.server.dispatch.notifier import SCHEDULER_TOPIC
from tower.server.services import apps as apps_service
from tower.server.services import runs as runs_service
from tower.server.services.context import Principal, ServerContext, owned, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

OVERLAP_POLICIES = ("allow", "skip")
STATUSES = ("active", "disabled")
DEFAULT_ENVIRONMENT = "default"
MAX_NAME_LENGTH = 256
#: how many upcoming ticks a describe shows
NEXT_FIRE_TIMES = 5


@dataclass
class ScheduleView:
    """A schedule with the names the API shows next to it."""

    schedule: models.Schedule
    app_name: str
    app_status: str
    environment: str
    owner_name: str
    #: the version the next tick would run (None: nothing deployed there yet)
    app_version: str | None = None
    next_fire_times: list[datetime] = field(default_factory=list)


@dataclass(frozen=True)
class ScheduleChanges:
    """What a create or an update sets; None leaves a field as it is (or its default)."""

    cron: str | None = None
    name: str | None = None
    environment: str | None = None
    timezone: str | None = None
    overlap_policy: str | None = None
    status: str | None = None
    parameters: list[dict[str, str]] | None = None


# ----------------------------------------------------------------------- validation


def _choice(value: str, allowed: tuple[str, ...], field_name: str) -> str:
    if value not in allowed:
        raise errors.InvalidInput(
            f"{field_name} {value!r} is not valid: use one of {', '.join(allowed)}.",
            location=f"body.{field_name}",
            value=value,
        )
    return value


def _parameters(given: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """`[{name, value}]`, names unique and non-empty, values as strings."""
    result: dict[str, str] = {}
    for item in given:
        name = str(item.get("name") or "")
        if not name:
            raise errors.InvalidInput(
                "Every schedule parameter needs a name: send [{'name': 'k', 'value': 'v'}].",
                location="body.parameters",
            )
        if name in result:
            raise errors.InvalidInput(
                f"Parameter '{name}' is given twice; give each parameter once.",
                location="body.parameters",
                value=name,
            )
        result[name] = "" if item.get("value") is None else str(item.get("value"))
    return [{"name": name, "value": value} for name, value in result.items()]


def _check_parameters_against_pin(
    session: Session, schedule: models.Schedule, app: models.App, env: models.Environment
) -> None:
    """Refuse parameters the deployed version does not declare (when one is deployed):
    the mistake shows now instead of as a skipped tick later."""
    pin = session.get(models.AppEnvironmentVersion, (app.id, env.id))
    if pin is None:
        return
    version = session.get(models.AppVersion, pin.version_id)
    runs_service.resolve_parameters(
        version.parameters,
        {p["name"]: p["value"] for p in schedule.parameters},
        app=app.name,
        version=version.version,
    )


def _validate_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise errors.InvalidInput(
            f"Schedule name {name!r} is not valid: use 1-{MAX_NAME_LENGTH} characters.",
            location="body.name",
            value=name,
        )
    return name


# ----------------------------------------------------------------------- lookups


def _by_id_or_name(principal: Principal, id_or_name: str) -> Any:
    stmt = owned(select(models.Schedule), models.Schedule, principal)
    try:
        as_id = uuid.UUID(id_or_name)
    except ValueError:
        return stmt.where(models.Schedule.name == id_or_name)
    return stmt.where(or_(models.Schedule.id == as_id, models.Schedule.name == id_or_name))


def get_schedule(
    session: Session, principal: Principal, id_or_name: str, *, lock: bool = False
) -> models.Schedule:
    """The caller's schedule with that id or name, or ScheduleNotFound."""
    stmt = _by_id_or_name(principal, id_or_name)
    if lock:
        stmt = stmt.with_for_update()
    schedule = session.scalars(stmt).first()
    if schedule is None:
        raise errors.ScheduleNotFound(
            f"Schedule '{id_or_name}' was not found in account '{principal.account_name}'. "
            "`tower schedules list` shows the ids."
        )
    return schedule


def _view(
    session: Session, schedule: models.Schedule, *, upcoming: int = 0, now: datetime | None = None
) -> ScheduleView:
    app = session.get(models.App, schedule.app_id)
    env = session.get(models.Environment, schedule.environment_id)
    owner = session.get(models.User, schedule.created_by_id) if schedule.created_by_id else None
    pin = session.get(models.AppEnvironmentVersion, (schedule.app_id, schedule.environment_id))
    version = session.get(models.AppVersion, pin.version_id) if pin else None
    ticks: list[datetime] = []
    if upcoming and schedule.status == "active":
        after = schedule.next_fire_at or now or utcnow()
        ticks = [
            after,
            *syntax.next_fire_times(schedule.cron, schedule.timezone, after, upcoming - 1),
        ]
    return ScheduleView(
        schedule=schedule,
        app_name=app.name if app else "",
        app_status=app.status if app else "disabled",
        environment=env.name if env else "",
        owner_name=owner.email if owner else "",
        app_version=version.version if version else None,
        next_fire_times=ticks,
    )


def _views(session: Session, schedules: list[models.Schedule]) -> list[ScheduleView]:
    """Views of many schedules with one query per kind of name (a listing may hold
    thousands)."""
    if not schedules:
        return []
    app_ids = {s.app_id for s in schedules}
    apps = {
        row.id: row
        for row in session.execute(
            select(models.App.id, models.App.name, models.App.status).where(
                models.App.id.in_(app_ids)
            )
        )
    }
    envs = dict(
        session.execute(
            select(models.Environment.id, models.Environment.name).where(
                models.Environment.id.in_({s.environment_id for s in schedules})
            )
        ).all()
    )
    owner_ids = {s.created_by_id for s in schedules if s.created_by_id}
    owners = dict(
        session.execute(
            select(models.User.id, models.User.email).where(models.User.id.in_(owner_ids))
        ).all()
    )
    pin = models.AppEnvironmentVersion
    pins = {
        (app_id, env_id): number
        for app_id, env_id, number in session.execute(
            select(pin.app_id, pin.environment_id, models.AppVersion.number)
            .join(models.AppVersion, models.AppVersion.id == pin.version_id)
            .where(pin.app_id.in_(app_ids))
        ).all()
    }
    views = []
    for schedule in schedules:
        app = apps.get(schedule.app_id)
        number = pins.get((schedule.app_id, schedule.environment_id))
        views.append(
            ScheduleView(
                schedule=schedule,
                app_name=app.name if app else "",
                app_status=app.status if app else "disabled",
                environment=envs.get(schedule.environment_id, ""),
                owner_name=owners.get(schedule.created_by_id, "") if schedule.created_by_id else "",
                app_version=f"v{number}" if number is not None else None,
            )
        )
    return views


def _first_tick(schedule: models.Schedule, now: datetime) -> datetime | None:
    if schedule.status != "active":
        return None
    return syntax.next_fire_after(schedule.cron, schedule.timezone, now)


# ----------------------------------------------------------------------- use cases


def create_schedule(
    ctx: ServerContext, principal: Principal, *, app_name: str, changes: ScheduleChanges
) -> ScheduleView:
    if changes.cron is None:
        raise errors.InvalidInput("A schedule needs `cron`.", location="body.cron")
    cron = syntax.parse_schedule(changes.cron)
    timezone = syntax.validate_timezone(changes.timezone)
    overlap = _choice(changes.overlap_policy or "allow", OVERLAP_POLICIES, "overlap_policy")
    status = _choice(changes.status or "active", STATUSES, "status")
    parameters = _parameters(changes.parameters or [])
    now = utcnow()
    with ctx.sessions.begin() as session:
        app = apps_service.get_app(session, principal, app_name)
        env = apps_service.get_environment(
            session, principal, changes.environment or DEFAULT_ENVIRONMENT
        )
        schedule_id = uuid.uuid4()
        name = _validate_name(changes.name) if changes.name else f"{app.name}-{schedule_id.hex[:8]}"
        taken = session.scalar(
            owned(
                select(func.count()).select_from(models.Schedule), models.Schedule, principal
            ).where(models.Schedule.name == name)
        )
        if taken:
            raise errors.AlreadyExists(
                f"A schedule named '{name}' already exists.", location="body.name"
            )
        schedule = models.Schedule(
            id=schedule_id,
            account_id=principal.account_id,
            app_id=app.id,
            environment_id=env.id,
            name=name,
            cron=cron,
            timezone=timezone,
            overlap_policy=overlap,
            status=status,
            parameters=parameters,
            created_by_id=principal.user_id,
            service_account_id=principal.service_account_id,
            created_at=now,
            updated_at=now,
            skipped_ticks=0,
        )
        _check_parameters_against_pin(session, schedule, app, env)
        schedule.next_fire_at = _first_tick(schedule, now)
        session.add(schedule)
        session.flush()
        view = _view(session, schedule, upcoming=NEXT_FIRE_TIMES, now=now)
    ctx.notifier.notify(SCHEDULER_TOPIC)
    return view


def update_schedule(
    ctx: ServerContext, principal: Principal, id_or_name: str, changes: ScheduleChanges
) -> ScheduleView:
    """Apply `changes`. A new cron, time zone or status recomputes the next tick from
    now: ticks that passed before the change are not made up."""
    now = utcnow()
    with ctx.sessions.begin() as session:
        schedule = get_schedule(session, principal, id_or_name, lock=True)
        app = session.get(models.App, schedule.app_id)
        env = session.get(models.Environment, schedule.environment_id)
        timing_changed = False
        if changes.cron is not None:
            cron = syntax.parse_schedule(changes.cron)
            timing_changed |= cron != schedule.cron
            schedule.cron = cron
        if changes.timezone is not None:
            timezone = syntax.validate_timezone(changes.timezone)
            timing_changed |= timezone != schedule.timezone
            schedule.timezone = timezone
        if changes.status is not None:
            status = _choice(changes.status, STATUSES, "status")
            timing_changed |= status != schedule.status
            schedule.status = status
        if changes.overlap_policy is not None:
            schedule.overlap_policy = _choice(
                changes.overlap_policy, OVERLAP_POLICIES, "overlap_policy"
            )
        if changes.environment is not None:
            env = apps_service.get_environment(session, principal, changes.environment)
            schedule.environment_id = env.id
        if changes.name is not None and changes.name != schedule.name:
            _rename(session, principal, schedule, _validate_name(changes.name))
        if changes.parameters is not None:
            schedule.parameters = _parameters(changes.parameters)
        _check_parameters_against_pin(session, schedule, app, env)
        if timing_changed:
            schedule.next_fire_at = _first_tick(schedule, now)
        schedule.updated_at = now
        session.flush()
        view = _view(session, schedule, upcoming=NEXT_FIRE_TIMES, now=now)
    ctx.notifier.notify(SCHEDULER_TOPIC)
    return view


def _rename(session: Session, principal: Principal, schedule: models.Schedule, name: str) -> None:
    taken = session.scalar(
        owned(select(func.count()).select_from(models.Schedule), models.Schedule, principal).where(
            models.Schedule.name == name, models.Schedule.id != schedule.id
        )
    )
    if taken:
        raise errors.AlreadyExists(
            f"A schedule named '{name}' already exists.", location="body.name"
        )
    schedule.name = name


def describe_schedule(ctx: ServerContext, principal: Principal, id_or_name: str) -> ScheduleView:
    with read_session(ctx) as session:
        schedule = get_schedule(session, principal, id_or_name)
        return _view(session, schedule, upcoming=NEXT_FIRE_TIMES)


def list_schedules(
    ctx: ServerContext,
    principal: Principal,
    *,
    app: str | None = None,
    environment: str | None = None,
    page: int = 0,
    page_size: int = 100,
) -> tuple[list[ScheduleView], int]:
    """One page (`page=0`: all) of the caller's schedules, oldest first, and the total."""
    with read_session(ctx) as session:
        stmt = owned(select(models.Schedule), models.Schedule, principal)
        if app:
            stmt = stmt.join(models.App, models.App.id == models.Schedule.app_id).where(
                models.App.name == app
            )
        if environment:
            stmt = stmt.join(
                models.Environment, models.Environment.id == models.Schedule.environment_id
            ).where(models.Environment.name == environment)
        total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        stmt = stmt.order_by(models.Schedule.created_at, models.Schedule.id)
        if page > 0:
            stmt = stmt.offset((page - 1) * page_size).limit(page_size)
        return _views(session, list(session.scalars(stmt))), total


def _many(session: Session, principal: Principal, ids: list[str]) -> list[models.Schedule]:
    """Every schedule named (by id or name); ScheduleNotFound before anything changes."""
    if not ids:
        raise errors.InvalidInput(
            "Name at least one schedule: send {'ids': ['<schedule id>']}.", location="body.ids"
        )
    found: dict[uuid.UUID, models.Schedule] = {}
    for id_or_name in ids:
        schedule = get_schedule(session, principal, id_or_name, lock=True)
        found[schedule.id] = schedule
    return list(found.values())


def delete_schedules(
    ctx: ServerContext, principal: Principal, ids: list[str]
) -> list[ScheduleView]:
    """Delete the named schedules (all or none); their past runs stay."""
    with ctx.sessions.begin() as session:
        schedules = _many(session, principal, ids)
        views = _views(session, schedules)
        for schedule in schedules:
            session.delete(schedule)
    return views


def disable_owned_by(session: Session, service_account_id: uuid.UUID) -> int:
    """Disable the active schedules a service account created (it is being deleted);
    how many. The caller's transaction; the caller wakes the scheduler."""
    schedules = session.scalars(
        select(models.Schedule).where(
            models.Schedule.service_account_id == service_account_id,
            models.Schedule.status == "active",
        )
    ).all()
    now = utcnow()
    for schedule in schedules:
        schedule.status, schedule.next_fire_at, schedule.updated_at = "disabled", None, now
    return len(schedules)


def set_status(
    ctx: ServerContext, principal: Principal, ids: list[str], status: str
) -> list[ScheduleView]:
    """Activate or deactivate the named schedules (all or none). Activating waits for
    the next tick from now: ticks that passed while it was disabled are not made up."""
    now = utcnow()
    with ctx.sessions.begin() as session:
        schedules = _many(session, principal, ids)
        for schedule in schedules:
            if schedule.status != status:
                schedule.status = status
                schedule.next_fire_at = _first_tick(schedule, now)
                schedule.updated_at = now
        session.flush()
        views = _views(session, schedules)
    ctx.notifier.notify(SCHEDULER_TOPIC)
    return views
