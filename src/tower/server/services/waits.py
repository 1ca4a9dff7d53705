"""Waiting for runs to end: the use case behind `POST /v1/runs/await`.

A caller (usually an app that started other apps) names up to `MAX_RUNS` runs and
is answered as soon as at least one of them is in a terminal status, or when its
timeout passes, with every named run as it is now.

Wake-ups come from the in-process notifier: every status change of a run notifies
`run_topic(run_id)`. The waiter registers on each run's topic before reading the
database, so a change that commits between the read and the wait still wakes it,
and re-reads at least every `RECHECK_S` because another control-plane process may
have changed a run without waking this one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session

from tower.core import errors
from tower.core.runs import RunStatus, is_terminal
from tower.server.dispatch.notifier import run_topic, wait_for_any
from tower.server.services import apps as apps_service
from tower.server.services import run_queries
from tower.server.services.context import Principal, ServerContext, owned
from tower.server.services.runs import RunView
from tower.server.store import models

Run = models.Run

MAX_RUNS = 100
MAX_TIMEOUT_S = 60.0
DEFAULT_TIMEOUT_S = 30.0
#: re-read at least this often: changes made by another control plane wake no one here
RECHECK_S = 2.0


@dataclass(frozen=True)
class RunRef:
    """A run as callers name it."""

    app_name: str
    number: int


async def await_runs(
    ctx: ServerContext, principal: Principal, refs: Sequence[RunRef], timeout: float
) -> list[RunView]:
    """The runs named by `refs`, in that order, once one of them has ended or
    `timeout` seconds have passed (or the server is shutting down).

    Unknown apps and runs, and other accounts' runs, raise NotFound (404)."""
    deadline = time.monotonic() + timeout
    views = await to_thread.run_sync(find_runs, ctx, principal, refs)
    if any_ended(views) or timeout <= 0:
        return views
    run_ids = [view.run.id for view in views]
    topics = sorted({run_topic(run_id) for run_id in run_ids})
    while True:
        with ExitStack() as stack:
            # Listen before reading, so a change committed in between still wakes us.
            woken = [stack.enter_context(ctx.notifier.listen(topic)) for topic in topics]
            views = await to_thread.run_sync(read_runs, ctx, refs, run_ids)
            remaining = deadline - time.monotonic()
            if any_ended(views) or remaining <= 0 or ctx.notifier.closing:
                return views
            await wait_for_any(tuple(woken), min(RECHECK_S, remaining))


def any_ended(views: Sequence[RunView]) -> bool:
    return any(is_terminal(RunStatus(view.run.status)) for view in views)


def find_runs(ctx: ServerContext, principal: Principal, refs: Sequence[RunRef]) -> list[RunView]:
    """The caller's runs named by `refs`, in order (404 naming the first that is not one).

    A constant number of queries however many runs, in a read-only session (a regular
    one would hold SQLite's write lock and stall runners' reports)."""
    with run_queries.read_session(ctx) as session:
        app_ids = _app_ids(session, principal, {ref.app_name for ref in refs})
        stmt = run_queries.with_names(owned(select(Run), Run, principal)).where(
            Run.app_id.in_(set(app_ids.values())), Run.number.in_({ref.number for ref in refs})
        )
        # The IN pair above may match more than was asked (app A's run 2 when only B's
        # run 2 was named); the lookup below takes only the exact pairs.
        found = {
            (view.app_name, view.run.number): view for view in run_queries.views(session, stmt)
        }
        views = []
        for ref in refs:
            view = found.get((ref.app_name, ref.number))
            if view is None:
                raise _run_not_found(ref)
            views.append(view)
        return views


def read_runs(
    ctx: ServerContext, refs: Sequence[RunRef], run_ids: Sequence[uuid.UUID]
) -> list[RunView]:
    """Re-read runs already found (and checked against the caller) by `find_runs`."""
    with run_queries.read_session(ctx) as session:
        stmt = run_queries.with_names(select(Run)).where(Run.id.in_(set(run_ids)))
        by_id = {view.run.id: view for view in run_queries.views(session, stmt)}
    views = []
    for ref, run_id in zip(refs, run_ids, strict=True):
        view = by_id.get(run_id)
        if view is None:  # deleted while we waited
            raise _run_not_found(ref)
        views.append(view)
    return views


def _app_ids(session: Session, principal: Principal, names: set[str]) -> dict[str, uuid.UUID]:
    stmt = owned(select(models.App.name, models.App.id), models.App, principal)
    rows = session.execute(stmt.where(models.App.name.in_(names)))
    app_ids: dict[str, uuid.UUID] = {row.name: row.id for row in rows}
    for name in sorted(names - set(app_ids)):
        apps_service.get_app(session, principal, name)  # raises AppNotFound, worded as usual
    return app_ids


def _run_not_found(ref: RunRef) -> errors.RunNotFound:
    return errors.RunNotFound(f"App '{ref.app_name}' has no run #{ref.number}.")
