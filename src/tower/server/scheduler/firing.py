"""Fire due ticks: each tick of a schedule becomes at most one run, whoever fires it.

A tick is claimed by moving the schedule's `next_fire_at` from the due value to the
next tick with a compare-and-set, in the same transaction that creates the run: a
second control plane (or a restarted one) finds the value moved and does nothing, and
a crash before the commit leaves the tick due for whoever looks next.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

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
        due = session.execute(
            select(models.Schedule.id, models.Schedule.next_fire_at)
            .where(models.Schedule.status == "active", models.Schedule.next_fire_at <= now)
            # A total order: two planes firing at once lock rows in the same order, so
            # the second waits on the first row instead of deadlocking on another.
            .order_by(models.Schedule.next_fire_at, models.Schedule.id)
            .limit(batch_size)
        ).all()
        report.more = len(due) == batch_size
        for schedule_id, due_at in due:
            fired = _fire_one(session, schedule_id, due_at, now, max_lateness, wake, report)
            if fired is not None:
                report.fired += 1
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


def _fire_one(
    session: Session,
    schedule_id: uuid.UUID,
    due_at: datetime,
    now: datetime,
    max_lateness: timedelta | None,
    wake: lifecycle.Wakeups,
    report: FireReport,
) -> models.Run | None:
    schedule = session.get(models.Schedule, schedule_id, populate_existing=True)
    if schedule is None:
        return None
    plan = syntax.plan_fire(
        schedule.cron, schedule.timezone, due=due_at, now=now, max_lateness=max_lateness
    )
    claimed = session.execute(
        update(models.Schedule)
        .where(
            models.Schedule.id == schedule_id,
            models.Schedule.next_fire_at == due_at,
            models.Schedule.status == "active",
        )
        .values(next_fire_at=plan.next_fire_at)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # another control plane fired this tick first
        return None
    schedule.next_fire_at = plan.next_fire_at
    skipped, reason = plan.missed, "missed while no scheduler was running" if plan.missed else None
    run = None
    if plan.fire_at is not None:
        run, why_not = _start_run(session, schedule, plan.fire_at, wake)
        if run is None:
            skipped, reason = skipped + 1, why_not
        else:
            schedule.last_fired_at = now
            schedule.last_run_id = run.id
    elif plan.missed:
        reason = "the tick was later than the maximum lateness"
    if skipped:
        schedule.skipped_ticks += skipped
        schedule.last_skipped_at = now
        schedule.last_skip_reason = reason
        report.skipped += skipped
        logger.info("schedule %s skipped %d tick(s): %s", schedule.id, skipped, reason)
    return run


def _start_run(
    session: Session, schedule: models.Schedule, tick: datetime, wake: lifecycle.Wakeups
) -> tuple[models.Run | None, str]:
    """The run of this tick, or None and why the tick starts none."""
    app = session.get(models.App, schedule.app_id, with_for_update=True)
    env = session.get(models.Environment, schedule.environment_id)
    if app is None or env is None:
        return None, "the app or environment is gone"
    if app.status == "disabled":
        return None, f"app '{app.name}' is disabled"
    if schedule.overlap_policy == "skip" and schedule.last_run_id is not None:
        previous = session.get(models.Run, schedule.last_run_id)
        if previous is not None and is_active(RunStatus(previous.status)):
            return None, f"overlap policy skip: run #{previous.number} is still {previous.status}"
    initiator = {
        "type": INITIATOR_TYPE,
        "details": {
            "schedule_id": str(schedule.id),
            "schedule_name": schedule.name,
            "tick": tick.isoformat().replace("+00:00", "Z"),
        },
    }
    try:
        # A savepoint: a tick that cannot run (nothing deployed, a parameter the new
        # version dropped) undoes only its own run, never the other schedules' ticks.
        with session.begin_nested():
            view = runs_service.queue_run(
                session,
                app=app,
                env=env,
                parameters={p["name"]: p["value"] for p in schedule.parameters},
                initiator=initiator,
                created_by_id=schedule.created_by_id,
                wake=wake,
            )
    except errors.TowerError as exc:
        return None, exc.message
    return view.run, ""
