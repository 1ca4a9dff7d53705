"""Fire due ticks: each tick of a schedule becomes at most one run, whoever fires it.

A tick is claimed by moving the schedule's `next_fire_at` from the due value to the
next tick with a compare-and-set, in the same transaction that creates the run: a
second control plane (or a restarted one) finds the value moved and does nothing, and
a crash before the commit leaves the tick due for whoever looks next.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from tower.core import errors
from tower.core import schedules as syntax
from tower.core.runs import RunStatus, is_active
from tower.server.services import lifecycle
from tower.server.services import runs as runs_service
from tower.server.services.context import ServerContext, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

logger = logging.getLogger(__name__)

#: the initiator type the runner maps to TOWER__RUNTIME__SCHEDULE_ID / IS_MANUAL_RUN
INITIATOR_TYPE = "tower_scheduler"
#: due schedules handled per transaction (the rest follow at once in the next one)
BATCH_SIZE = 500


@dataclass
class FireReport:
    fired: int = 0
    skipped: int = 0
    #: whether a full batch was due (more may be waiting)
    more: bool = False


def fire_due(
    ctx: ServerContext, now: datetime | None = None, *, batch_size: int = BATCH_SIZE
) -> FireReport:
    """Fire every schedule due at `now` (one batch); runs are queued before returning."""
    now = now or utcnow()
    max_lateness = _max_lateness(ctx)
    report = FireReport()
    wake = lifecycle.Wakeups()
    with ctx.sessions.begin() as session:
        due = list(
            session.scalars(
                select(models.Schedule)
                .where(models.Schedule.status == "active", models.Schedule.next_fire_at <= now)
                # A total order: two planes firing at once lock rows in the same order, so
                # the second waits on the first row instead of deadlocking on another.
                .order_by(models.Schedule.next_fire_at, models.Schedule.id)
                .limit(batch_size)
            )
        )
        report.more = len(due) == batch_size
        batch = _Batch.load(session, due)
        for schedule in due:
            _fire_one(session, batch, schedule, now, max_lateness, wake, report)
    wake.fire(ctx.notifier)
    return report


def next_due(ctx: ServerContext) -> datetime | None:
    """The earliest tick of any active schedule (an index read)."""
    with read_session(ctx) as session:
        return session.scalar(
            select(func.min(models.Schedule.next_fire_at)).where(models.Schedule.status == "active")
        )


def _max_lateness(ctx: ServerContext) -> timedelta | None:
    seconds = ctx.settings.schedule_max_lateness_seconds
    return None if seconds is None else timedelta(seconds=seconds)


@dataclass
class _Batch:
    """What the due schedules of one batch refer to, read with one query per kind (a
    minute boundary may bring hundreds of ticks of the same few apps)."""

    apps: dict[uuid.UUID, models.App]
    environments: dict[uuid.UUID, models.Environment]
    #: (number, status) of each schedule's previous run, for the `skip` policy
    previous_runs: dict[uuid.UUID, tuple[int, str]]
    #: held so the session's (weak) identity map keeps them for run creation to find
    pinned: list[object] = field(default_factory=list)

    @classmethod
    def load(cls, session: Session, due: list[models.Schedule]) -> _Batch:
        if not due:
            return cls({}, {}, {})
        app_ids = {s.app_id for s in due}
        # Locked (in id order) because runs are numbered from the app row.
        apps = session.scalars(
            select(models.App)
            .where(models.App.id.in_(app_ids))
            .order_by(models.App.id)
            .with_for_update()
        )
        environments = session.scalars(
            select(models.Environment).where(
                models.Environment.id.in_({s.environment_id for s in due})
            )
        )
        # Into the identity map: run creation then finds pins and versions without a query.
        pins = list(
            session.scalars(
                select(models.AppEnvironmentVersion).where(
                    models.AppEnvironmentVersion.app_id.in_(app_ids)
                )
            )
        )
        versions = list(
            session.scalars(
                select(models.AppVersion).where(
                    models.AppVersion.id.in_({pin.version_id for pin in pins})
                )
            )
        )
        previous_ids = {s.last_run_id for s in due if s.last_run_id is not None}
        previous = session.execute(
            select(models.Run.id, models.Run.number, models.Run.status).where(
                models.Run.id.in_(previous_ids)
            )
        ).all()
        return cls(
            apps={app.id: app for app in apps},
            environments={env.id: env for env in environments},
            previous_runs={row.id: (row.number, row.status) for row in previous},
            pinned=[*pins, *versions],
        )


def _claim(session: Session, schedule: models.Schedule, next_fire_at: datetime) -> bool:
    """Move the schedule's tick forward if nobody else has: the compare-and-set."""
    # On the connection, not through the ORM: no autoflush, so the runs of the whole
    # batch are written together at the commit.
    claimed = session.connection().execute(
        update(models.Schedule.__table__)
        .where(
            models.Schedule.id == schedule.id,
            models.Schedule.next_fire_at == schedule.next_fire_at,
            models.Schedule.status == "active",
        )
        .values(next_fire_at=next_fire_at)
    )
    return claimed.rowcount == 1


def _fire_one(
    session: Session,
    batch: _Batch,
    schedule: models.Schedule,
    now: datetime,
    max_lateness: timedelta | None,
    wake: lifecycle.Wakeups,
    report: FireReport,
) -> None:
    assert schedule.next_fire_at is not None
    plan = syntax.plan_fire(
        schedule.cron,
        schedule.timezone,
        due=schedule.next_fire_at,
        now=now,
        max_lateness=max_lateness,
    )
    if not _claim(session, schedule, plan.next_fire_at):
        return  # another control plane fired this tick first
    # The row already holds the value: keep the ORM's copy in step without an UPDATE.
    set_committed_value(schedule, "next_fire_at", plan.next_fire_at)
    skipped, reason = plan.missed, "missed while no scheduler was running" if plan.missed else None
    if plan.fire_at is not None:
        run, why_not = _start_run(session, batch, schedule, plan.fire_at, wake)
        if run is None:
            skipped, reason = skipped + 1, why_not
        else:
            schedule.last_fired_at = now
            schedule.last_run_id = run.id
            report.fired += 1
    elif plan.missed:
        reason = "the tick was later than the maximum lateness"
    if skipped:
        schedule.skipped_ticks += skipped
        schedule.last_skipped_at = now
        schedule.last_skip_reason = reason
        report.skipped += skipped
        logger.info("schedule %s skipped %d tick(s): %s", schedule.id, skipped, reason)


def _start_run(
    session: Session,
    batch: _Batch,
    schedule: models.Schedule,
    tick: datetime,
    wake: lifecycle.Wakeups,
) -> tuple[models.Run | None, str]:
    """The run of this tick, or None and why the tick starts none."""
    app = batch.apps.get(schedule.app_id)
    env = batch.environments.get(schedule.environment_id)
    if app is None or env is None:
        return None, "the app or environment is gone"
    if app.status == "disabled":
        return None, f"app '{app.name}' is disabled"
    previous = batch.previous_runs.get(schedule.last_run_id) if schedule.last_run_id else None
    if schedule.overlap_policy == "skip" and previous is not None:
        number, status = previous
        if is_active(RunStatus(status)):
            return None, f"overlap policy skip: run #{number} is still {status}"
    initiator = {
        "type": INITIATOR_TYPE,
        "details": {
            "schedule_id": str(schedule.id),
            "schedule_name": schedule.name,
            "tick": tick.isoformat().replace("+00:00", "Z"),
        },
    }
    try:
        # queue_run checks everything before it changes anything: a tick that cannot
        # run (nothing deployed, a parameter the new version dropped) leaves no trace.
        view = runs_service.queue_run(
            session,
            app=app,
            env=env,
            parameters={p["name"]: p["value"] for p in schedule.parameters},
            initiator=initiator,
            created_by_id=schedule.created_by_id,
            wake=wake,
            pinned=runs_service.pinned_version(session, app, env),
        )
    except errors.TowerError as exc:
        return None, exc.message
    return view.run, ""
