"""Reading runs in bulk: one app's runs, a search across the caller's apps, per-app summaries.

Every listing is newest first (created_at, then number) and costs a constant number of
queries whatever the page size: the names a Run shows (app, version, environment) come
from joins, never from one lookup per run. The indexes behind each query are on `Run`
in store/models.py (migration 0003).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, func, select, union_all
from sqlalchemy.orm import Session, aliased

from tower.core import errors
from tower.core.runs import RunStatus
from tower.server.services import apps as apps_service
from tower.server.services.context import Principal, ServerContext, read_session
from tower.server.services.runs import RunView
from tower.server.store import models

Run = models.Run
NEWEST_FIRST = (Run.created_at.desc(), Run.number.desc())
STATUS_NAMES = ", ".join(s.value for s in RunStatus)
_PLUS_AS_SPACE = re.compile(r"(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


@dataclass(frozen=True)
class RunFilter:
    """What a listing keeps: any of `statuses` (none = all), one environment, a time window
    on created_at (start inclusive, end exclusive)."""

    statuses: tuple[RunStatus, ...] = ()
    environment: str | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None


@dataclass(frozen=True)
class Page:
    """`number` 0 means everything (the official CLI relies on it); else 1-based pages."""

    number: int = 1
    size: int = 20

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size if self.number > 0 else 0

    @property
    def limit(self) -> int | None:
        return self.size if self.number > 0 else None


def parse_statuses(values: Sequence[str] | None) -> tuple[RunStatus, ...]:
    """`?status=a&status=b` (or `a,b`) → run statuses; an unknown one is a 422 naming it."""
    found: list[RunStatus] = []
    for raw in values or ():
        for item in raw.split(","):
            name = item.strip().lower()
            if not name:
                continue
            try:
                status = RunStatus(name)
            except ValueError:
                raise errors.InvalidInput(
                    f"Unknown run status '{item.strip()}': use one of {STATUS_NAMES}.",
                    location="query.status",
                    value=item.strip(),
                ) from None
            if status not in found:
                found.append(status)
    return tuple(found)


def parse_instant(value: str | None, *, name: str) -> datetime | None:
    """An RFC 3339 timestamp from a query string, as an aware UTC datetime.

    A `+` left unencoded in a query string arrives as a space (`…T09:00:00 01:00`):
    a space between a time and an offset is read as `+`. No offset means UTC.
    """
    if value is None or not value.strip():
        return None
    text = _PLUS_AS_SPACE.sub(r"\1+\2", value.strip())
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise errors.InvalidInput(
            f"'{value}' is not an RFC 3339 timestamp for {name}: use e.g. 2025-01-31T08:00:00Z.",
            location=f"query.{name}",
            value=value,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def check_window(start_at: datetime | None, end_at: datetime | None) -> None:
    if start_at is not None and end_at is not None and end_at < start_at:
        raise errors.InvalidInput(
            f"end_at ({end_at.isoformat()}) is before start_at ({start_at.isoformat()}): "
            "the window is [start_at, end_at).",
            location="query.end_at",
            value=end_at.isoformat(),
        )


def make_filter(
    *,
    statuses: Sequence[str] | None = None,
    environment: str | None = None,
    start_at: str | None = None,
    end_at: str | None = None,
) -> RunFilter:
    """Validate raw query values into a RunFilter (422 with a message on any bad one)."""
    start, end = parse_instant(start_at, name="start_at"), parse_instant(end_at, name="end_at")
    check_window(start, end)
    return RunFilter(parse_statuses(statuses), environment or None, start, end)


def filter_conditions(
    session: Session, principal: Principal, flt: RunFilter
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of `flt` but its statuses (`_page` applies those); an unknown
    environment is a 404 like everywhere else."""
    conditions: list[ColumnElement[bool]] = []
    if flt.environment:
        env = apps_service.get_environment(session, principal, flt.environment)
        conditions.append(Run.environment_id == env.id)
    if flt.start_at is not None:
        conditions.append(Run.created_at >= flt.start_at)
    if flt.end_at is not None:
        conditions.append(Run.created_at < flt.end_at)
    return conditions


def list_app_runs(
    ctx: ServerContext, principal: Principal, app_name: str, flt: RunFilter, page: Page
) -> tuple[list[RunView], int]:
    """One app's runs, newest first, and how many match in all."""
    with read_session(ctx) as session:
        app = apps_service.get_app(session, principal, app_name)
        # No account_id here: the app is already the caller's, and a second equality
        # could tempt the planner onto the account-wide index.
        conditions = [Run.app_id == app.id, *filter_conditions(session, principal, flt)]
        return _page(session, conditions, flt.statuses, page)


def search_runs(
    ctx: ServerContext, principal: Principal, flt: RunFilter, page: Page
) -> tuple[list[RunView], int]:
    """Runs of every app of the caller's account, newest first, and how many match."""
    with read_session(ctx) as session:
        conditions = [
            Run.account_id == principal.account_id,
            *filter_conditions(session, principal, flt),
        ]
        return _page(session, conditions, flt.statuses, page)


def _page(
    session: Session,
    conditions: list[ColumnElement[bool]],
    statuses: Sequence[RunStatus],
    page: Page,
) -> tuple[list[RunView], int]:
    matching = (
        [*conditions, Run.status.in_([s.value for s in statuses])] if statuses else conditions
    )
    if len(statuses) > 1 and page.limit is not None:
        stmt = _merged_page(conditions, statuses, page.offset + page.limit)
    else:
        stmt = with_names(select(Run)).where(*matching).order_by(*NEWEST_FIRST)
    found = views(session, stmt.offset(page.offset).limit(page.limit))
    if page.limit is None or (len(found) < page.limit and (found or page.offset == 0)):
        # The last page (or everything): the total is known without counting, which
        # is the one part of a page whose cost grows with the number of runs.
        return found, page.offset + len(found)
    return found, session.scalar(select(func.count()).select_from(Run).where(*matching)) or 0


def _merged_page(
    conditions: list[ColumnElement[bool]], statuses: Sequence[RunStatus], depth: int
) -> Select[Any]:
    """The newest `depth` runs in any of `statuses`, newest first, read one status at a time.

    `status IN (a, b)` can't be read newest first from any index, so a planner either
    walks the newest-first index checking each run's status (a rare status means
    walking every run) or sorts every match (a common one means sorting most runs).
    One branch per status walks (…, status, created_at) in order and stops at `depth`;
    only those few rows are merged and sorted.
    """
    branches = [
        select(Run.id, Run.created_at, Run.number)
        .where(*conditions, Run.status == status.value)
        .order_by(*NEWEST_FIRST)
        .limit(depth)
        .subquery()
        for status in statuses
    ]
    candidates = union_all(*(select(branch) for branch in branches)).subquery()
    return (
        with_names(select(Run))
        .join(candidates, candidates.c.id == Run.id)
        .order_by(candidates.c.created_at.desc(), candidates.c.number.desc())
    )


def with_names(stmt: Select[Any]) -> Select[Any]:
    """Add the app name, version number and environment name a RunView needs."""
    return (
        stmt.add_columns(models.App.name, models.AppVersion.number, models.Environment.name)
        .join(models.App, models.App.id == Run.app_id)
        .join(models.AppVersion, models.AppVersion.id == Run.version_id)
        .join(models.Environment, models.Environment.id == Run.environment_id)
    )


def views(session: Session, stmt: Select[Any]) -> list[RunView]:
    """RunViews from a `with_names(select(Run))` statement: one query for the lot."""
    # The same label as AppVersion.version, without loading the version rows.
    return [
        RunView(run, app_name, f"v{version}", env_name)
        for run, app_name, version, env_name in session.execute(stmt)
    ]


def latest_runs(session: Session, app_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, RunView]:
    """The newest run of each app, in one query (a correlated LIMIT 1 per app)."""
    if not app_ids:
        return {}
    owner = aliased(models.App)
    newest = (
        select(Run.id)
        .where(Run.app_id == owner.id)
        .order_by(*NEWEST_FIRST)
        .limit(1)
        .correlate(owner)
        .scalar_subquery()
    )
    ids = select(newest).where(owner.id.in_(app_ids))
    stmt = with_names(select(Run)).where(Run.id.in_(ids))
    return {view.run.app_id: view for view in views(session, stmt)}


def status_counts(
    session: Session, app_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """How many runs each app has in each status (the App's `run_results`), in one query."""
    counts: dict[uuid.UUID, dict[str, int]] = {app_id: {} for app_id in app_ids}
    if not app_ids:
        return counts
    rows = session.execute(
        select(Run.app_id, Run.status, func.count())
        .where(Run.app_id.in_(app_ids))
        .group_by(Run.app_id, Run.status)
    )
    for app_id, status, count in rows:
        counts[app_id][str(status)] = int(count)
    return counts


def pinned_versions(
    session: Session, app_ids: Sequence[uuid.UUID], environment: str
) -> dict[uuid.UUID, str]:
    """The version each app runs in `environment` (by name), for many apps in one query."""
    if not app_ids:
        return {}
    rows = session.execute(
        select(models.AppEnvironmentVersion.app_id, models.AppVersion.number)
        .join(models.AppVersion, models.AppVersion.id == models.AppEnvironmentVersion.version_id)
        .join(
            models.Environment,
            models.Environment.id == models.AppEnvironmentVersion.environment_id,
        )
        .where(
            models.AppEnvironmentVersion.app_id.in_(app_ids),
            models.Environment.name == environment,
        )
    )
    return {app_id: f"v{number}" for app_id, number in rows}
