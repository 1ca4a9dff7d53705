"""What the home page shows: runs per status over time, and the health of every app.

Run statistics are counted by the database, grouped by status and by a "slot" of
time (seconds since the epoch divided by the slot length). The slot is the longest
length that divides every bucket boundary of the requested time zone: a day for
daily buckets in UTC, an hour for Europe/Paris, half an hour for Asia/Kolkata. The
database returns one small row per slot and status that has runs (30 days in
Paris: at most 720 slots x 9 statuses), added up into the buckets here: time zones
work the same on SQLite (which has no zone data) and PostgreSQL.

App health follows the product documentation ("Observe and improve"): Running
while a run is active, Disabled when switched off, else Successful or Failed from
the last completed run (cancelled runs don't count; none yet is Successful). An
app has issues when at least 2 of its last 10 runs crashed or errored.
"""

from __future__ import annotations

import bisect
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    Subquery,
    cast,
    func,
    literal_column,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from tower.core import errors
from tower.core.runs import ACTIVE, FAILED, RunStatus
from tower.server.services import apps as apps_service
from tower.server.services.context import Principal, ServerContext, owned
from tower.server.services.run_queries import NEWEST_FIRST, parse_instant, read_session
from tower.server.store import models

Run = models.Run
HOURLY_MAX_SPAN = timedelta(hours=48)
MAX_SPAN = timedelta(days=1000)
RECENT_RUNS = 10
ISSUE_THRESHOLD = 2
# Completed = ended on its own; a cancelled run says nothing about the app's health.
COMPLETED = (RunStatus.EXITED, RunStatus.CRASHED, RunStatus.ERRORED)
_HOUR_S = 3600
_DAY_S = 86400


# -- run statistics ------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsWindow:
    """[start_at, end_at) cut into hourly (≤ 48 h) or daily buckets of `timezone`."""

    start_at: datetime
    end_at: datetime
    timezone: str
    zone: ZoneInfo

    @property
    def interval(self) -> str:
        return "hourly" if self.end_at - self.start_at <= HOURLY_MAX_SPAN else "daily"

    def bucket_starts(self) -> list[datetime]:
        """The start (UTC) of every bucket the window touches, empty ones included."""
        if self.interval == "hourly":
            local = self.start_at.astimezone(self.zone)
            first = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
            count = math.ceil((self.end_at - first) / timedelta(hours=1))
            return [first + timedelta(hours=i) for i in range(max(count, 1))]
        first_day = self.start_at.astimezone(self.zone).date()
        last_day = (self.end_at - timedelta(microseconds=1)).astimezone(self.zone).date()
        days = (last_day - first_day).days + 1
        return [
            datetime.combine(first_day + timedelta(days=i), time(), self.zone).astimezone(UTC)
            for i in range(max(days, 1))
        ]


@dataclass
class RunStatistics:
    window: StatsWindow
    environment: str | None
    totals: dict[RunStatus, int]
    series: list[tuple[datetime, dict[RunStatus, int]]]

    @property
    def active(self) -> int:
        return sum(self.totals[s] for s in ACTIVE)

    @property
    def total(self) -> int:
        return sum(self.totals.values())


def parse_timezone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise errors.InvalidInput(
            f"Unknown time zone '{name}': use an IANA name such as UTC or Europe/Paris.",
            location="query.timezone",
            value=name,
        ) from None


def make_window(start_at: str | None, end_at: str | None, timezone: str | None) -> StatsWindow:
    """Validate the statistics window: both ends required, end after start, ≤ MAX_SPAN."""
    start, end = _required(start_at, "start_at"), _required(end_at, "end_at")
    if end <= start:
        raise errors.InvalidInput(
            f"end_at ({end.isoformat()}) must be after start_at ({start.isoformat()}).",
            location="query.end_at",
            value=end_at,
        )
    if end - start > MAX_SPAN:
        raise errors.InvalidInput(
            f"The window spans {(end - start).days} days; statistics cover at most "
            f"{MAX_SPAN.days} days at a time.",
            location="query.end_at",
            value=end_at,
        )
    zone = parse_timezone(timezone)
    return StatsWindow(start, end, zone.key, zone)


def _required(value: str | None, name: str) -> datetime:
    parsed = parse_instant(value, name=name)
    if parsed is None:
        raise errors.InvalidInput(
            f"{name} is required: give the window as RFC 3339 timestamps, e.g. "
            "start_at=2025-01-01T00:00:00Z&end_at=2025-01-31T00:00:00Z.",
            location=f"query.{name}",
        )
    return parsed


def slot_seconds(starts: Sequence[datetime], bucket_seconds: int) -> int:
    """The longest slot length (seconds) that divides every bucket boundary."""
    size = bucket_seconds
    for start in starts:
        size = math.gcd(size, int(start.timestamp()))
    return size


def _slot_of(dialect: Dialect, size: int) -> ColumnElement[int]:
    """floor(epoch seconds of created_at / size), in SQL. `size` is inlined: the same
    expression must appear in SELECT and GROUP BY, and two bound parameters would not
    be the same expression to PostgreSQL."""
    seconds: ColumnElement[int]
    if dialect.name != "sqlite":
        # date_part is double precision; EXTRACT is numeric since PostgreSQL 14 (slower).
        epoch = func.date_part(literal_column("'epoch'"), Run.created_at)
        seconds = cast(func.floor(epoch), BigInteger)
    elif dialect.dbapi.sqlite_version_info >= (3, 38, 0):
        seconds = func.unixepoch(Run.created_at, type_=Integer)  # 1.5x strftime's speed
    else:
        seconds = cast(func.strftime("%s", Run.created_at), Integer)
    # Both sides integers: plain integer division in SQL, no FLOOR().
    return seconds // literal_column(str(int(size)), Integer)


def run_statistics(
    ctx: ServerContext,
    principal: Principal,
    window: StatsWindow,
    *,
    statuses: Sequence[RunStatus] = (),
    environment: str | None = None,
) -> RunStatistics:
    """Runs created in the window per status, in total and per bucket (empty ones too)."""
    starts = window.bucket_starts()
    bucket_s = _HOUR_S if window.interval == "hourly" else _DAY_S
    size = slot_seconds(starts, bucket_s)
    # Every status spelled out even when none is asked for: then the (account_id,
    # status, created_at, number) index holds all the query reads.
    wanted = [s.value for s in (statuses or RunStatus)]
    with read_session(ctx) as session:
        slot = _slot_of(session.get_bind().dialect, size)
        stmt = owned(select(slot, Run.status, func.count()), Run, principal).where(
            Run.status.in_(wanted),
            Run.created_at >= window.start_at,
            Run.created_at < window.end_at,
        )
        if environment:
            env = apps_service.get_environment(session, principal, environment)
            stmt = stmt.where(Run.environment_id == env.id)
        rows = session.execute(stmt.group_by(slot, Run.status)).all()
    return _fold(window, environment, starts, size, rows)


def _fold(
    window: StatsWindow,
    environment: str | None,
    starts: list[datetime],
    size: int,
    rows: Sequence[tuple[int, str, int]],
) -> RunStatistics:
    edges = [int(s.timestamp()) for s in starts]
    series = [(start, dict.fromkeys(RunStatus, 0)) for start in starts]
    totals = dict.fromkeys(RunStatus, 0)
    for slot, status, count in rows:
        index = max(bisect.bisect_right(edges, int(slot) * size) - 1, 0)
        series[index][1][RunStatus(status)] += int(count)
        totals[RunStatus(status)] += int(count)
    return RunStatistics(window, environment, totals, series)


# -- app health ----------------------------------------------------------------------------


class AppState(StrEnum):
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    DISABLED = "disabled"


@dataclass(frozen=True)
class AppHealth:
    state: AppState
    #: crashed or errored runs among the last RECENT_RUNS
    recent_failures: int = 0
    #: how many runs that is out of (fewer than RECENT_RUNS for a young app)
    recent_runs: int = 0
    #: an enabled app with ISSUE_THRESHOLD or more recent failures
    has_issues: bool = False

    @property
    def health_status(self) -> str:
        """The App model's `health_status`."""
        return "warning" if self.state == AppState.FAILED or self.has_issues else "healthy"


def app_health(
    session: Session,
    account_id: uuid.UUID,
    app_ids: Sequence[uuid.UUID],
    *,
    environment_id: uuid.UUID | None = None,
) -> dict[uuid.UUID, AppHealth]:
    """Health of many apps in two queries, whatever their number."""
    if not app_ids:
        return {}
    env = [Run.environment_id == environment_id] if environment_id else []
    active = set(
        session.scalars(
            select(Run.app_id)
            .where(
                Run.account_id == account_id,
                Run.status.in_([s.value for s in ACTIVE]),
                Run.app_id.in_(app_ids),
                *env,
            )
            .distinct()
        )
    )
    rows = session.execute(_health_select(env).where(models.App.id.in_(app_ids)))
    return {
        app_id: _health(app_id in active, status, last, failures, considered)
        for app_id, status, last, failures, considered in rows
    }


def _health_select(env: list[ColumnElement[bool]]) -> Select[Any]:
    """Per app: its status, its last completed run's status, failures among its last runs.

    Correlated subqueries, each an index walk of a few rows on (app_id, created_at,
    number): the cost grows with the number of apps, not of runs.
    """
    App = models.App
    mine = [Run.app_id == App.id, *env]
    last_completed = (
        select(Run.status)
        .where(*mine, Run.status.in_([s.value for s in COMPLETED]))
        .order_by(*NEWEST_FIRST)
        .limit(1)
        .correlate(App)
        .scalar_subquery()
    )

    def recent() -> Subquery:
        return (
            select(Run.status)
            .where(*mine)
            .order_by(*NEWEST_FIRST)
            .limit(RECENT_RUNS)
            .correlate(App)
            .subquery()
        )

    failed, considered = recent(), recent()
    failures = (
        select(func.count())
        .select_from(failed)
        .where(failed.c.status.in_([s.value for s in FAILED]))
        .scalar_subquery()
    )
    counted = select(func.count()).select_from(considered).scalar_subquery()
    return select(App.id, App.status, last_completed, failures, counted)


def _health(
    active: bool, app_status: str, last: str | None, failures: int, considered: int
) -> AppHealth:
    if active:
        state = AppState.RUNNING
    elif app_status == "disabled":
        state = AppState.DISABLED
    elif last is not None and RunStatus(last) in FAILED:
        state = AppState.FAILED
    else:
        state = AppState.SUCCESSFUL
    # The documentation lists issues for active apps only: a disabled one is intended.
    issues = app_status != "disabled" and failures >= ISSUE_THRESHOLD
    return AppHealth(state, int(failures), int(considered), issues)


@dataclass(frozen=True)
class AppIssue:
    name: str
    failed_runs: int
    last_runs: int


@dataclass
class AppStatistics:
    counts: dict[AppState, int] = field(default_factory=lambda: dict.fromkeys(AppState, 0))
    all_apps: int = 0
    issues: list[AppIssue] = field(default_factory=list)


def app_statistics(
    ctx: ServerContext, principal: Principal, *, environment: str | None = None
) -> AppStatistics:
    """Every app of the account by health state, and those with issues (worst first)."""
    with read_session(ctx) as session:
        env_id = None
        if environment:
            env_id = apps_service.get_environment(session, principal, environment).id
        names = owned(select(models.App.id, models.App.name), models.App, principal)
        # .all(): a Result has .keys(), so dict() would take it for a mapping.
        apps = dict(session.execute(names).all())
        health = app_health(session, principal.account_id, list(apps), environment_id=env_id)
    stats = AppStatistics(all_apps=len(apps))
    for app_id, item in health.items():
        stats.counts[item.state] += 1
        if item.has_issues:
            stats.issues.append(AppIssue(apps[app_id], item.recent_failures, item.recent_runs))
    stats.issues.sort(key=lambda issue: (-issue.failed_runs, issue.name))
    return stats
