"""The scheduler coroutine: sleep until the earliest tick, fire, repeat.

It wakes early when a schedule is created or changed in this process (SCHEDULER_TOPIC);
changes made through another control plane are seen within `scheduler_max_sleep_seconds`.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool

from tower.server.dispatch.notifier import SCHEDULER_TOPIC, pause
from tower.server.scheduler.firing import fire_due, next_due
from tower.server.scheduler.leadership import Leadership
from tower.server.services.context import ServerContext
from tower.server.store.types import utcnow

logger = logging.getLogger(__name__)

#: don't spin on a tick that is just due (timers may fire a hair early)
MIN_SLEEP_S = 0.005


def _tick(ctx: ServerContext, leadership: Leadership) -> float:
    """One round; the seconds to sleep before the next."""
    max_sleep = ctx.settings.scheduler_max_sleep_seconds
    if not leadership.holds():
        return max_sleep
    # Read first: an idle round takes no write lock (SQLite) and writes nothing.
    earliest = next_due(ctx)
    now = utcnow()
    if earliest is not None and earliest <= now:
        if fire_due(ctx, now).more:
            return 0.0
        earliest = next_due(ctx)
    if earliest is None:
        return max_sleep
    return min(max((earliest - utcnow()).total_seconds(), 0.0), max_sleep)


async def run_scheduler(ctx: ServerContext) -> None:
    engine = ctx.sessions.kw["bind"]
    leadership = Leadership(engine)
    try:
        while True:
            with ctx.notifier.listen(SCHEDULER_TOPIC) as woken:
                try:
                    wait = await run_in_threadpool(_tick, ctx, leadership)
                except Exception:  # a failed round must not stop the next one
                    logger.exception("scheduler round failed")
                    wait = ctx.settings.scheduler_max_sleep_seconds
                await pause(ctx.notifier, woken, max(wait, MIN_SLEEP_S))
    finally:
        leadership.release()  # quick; must run even while the task is being cancelled
