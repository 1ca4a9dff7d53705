"""Runs as users see them: create, describe, list, read logs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from tower.core import errors
from tower.core.retries import RetryPolicy
from tower.core.runs import RunStatus, is_active
from tower.server.dispatch.notifier import run_topic
from tower.server.services import apps as apps_service
from tower.server.services import audit, lifecycle, service_accounts
from tower.server.services.context import Principal, ServerContext, owned, owned_once, owner
from tower.server.store import models
from tower.server.store.types import utcnow

DEFAULT_RECENT_RUNS = 20


@dataclass
class RunView:
    """A run with the names the API shows next to it."""

    run: models.Run
    app_name: str
    version: str
    environment: str
    attempts: list[models.RunAttempt] = field(default_factory=list)


def resolve_parameters(
    declared: list[dict[str, Any]], given: dict[str, str], *, app: str, version: str
) -> list[dict[str, Any]]:
    """Towerfile defaults for what is not given; an undeclared name is an error."""
    known = {p["name"]: p for p in declared}
    unknown = sorted(set(given) - set(known))
    if unknown:
        names = ", ".join(known) or "none"
        raise errors.UnknownParameter(
            f"Unknown parameter '{unknown[0]}': app '{app}' ({version}) declares {names}. "
            "Add it to the Towerfile's [[parameters]] and deploy, or drop it from the run.",
            location="body.parameters",
            value=unknown[0],
        )
    resolved = []
    for name, spec in known.items():
        value = given.get(name, "" if spec.get("hidden") else spec.get("default", ""))
        resolved.append(
            {
                "name": name,
                "value": str(value),
                "hidden": bool(spec.get("hidden", False)),
                "is_override": name in given,
            }
        )
    return resolved


def _deployed(
    app: models.App, env: models.Environment, version: models.AppVersion | None
) -> models.AppVersion:
    if version is None:
        raise errors.VersionNotFound(
            f"App '{app.name}' has no version deployed to environment '{env.name}'. "
            f"Run `tower deploy --environment={env.name}` first.",
            location="body.environment",
        )
    return version


# The app (locked), the environment named and the version pinned there, in one query
# (built once: every run submitted reads them); a missing one comes back as None.
_RUN_TARGET = (
    owned_once(select(models.App, models.Environment, models.AppVersion), models.App)
    .select_from(models.App)
    .outerjoin(
        models.Environment,
        (models.Environment.account_id == models.App.account_id)
        & (models.Environment.name == bindparam("environment_name")),
    )
    .outerjoin(
        models.AppEnvironmentVersion,
        (models.AppEnvironmentVersion.app_id == models.App.id)
        & (models.AppEnvironmentVersion.environment_id == models.Environment.id),
    )
    .outerjoin(models.AppVersion, models.AppVersion.id == models.AppEnvironmentVersion.version_id)
    .where(models.App.name == bindparam("app_name"))
    .with_for_update(of=models.App)
)


def _run_target(
    session: Session, principal: Principal, app_name: str, environment: str
) -> tuple[models.App, models.Environment, models.AppVersion | None]:
    """The caller's app `app_name` (its row locked), its environment `environment` and
    the version pinned there (None if none); AppNotFound or EnvironmentNotFound."""
    values = {**owner(principal), "app_name": app_name, "environment_name": environment}
    row = session.execute(_RUN_TARGET, values).first()
    if row is None:
        raise apps_service.app_not_found(app_name)
    app, env, version = row
    if env is None:
        raise apps_service.environment_not_found(principal, environment)
    return app, env, version


# The version an environment's pin names, in one query (built once: every run reads it).
_PINNED_VERSION = (
    select(models.AppVersion)
    .join(
        models.AppEnvironmentVersion,
        models.AppEnvironmentVersion.version_id == models.AppVersion.id,
    )
    .where(
        models.AppEnvironmentVersion.app_id == bindparam("app_id"),
        models.AppEnvironmentVersion.environment_id == bindparam("environment_id"),
    )
)


def pinned_version(
    session: Session, app: models.App, env: models.Environment
) -> models.AppVersion | None:
    """The version pinned to `env` for `app`, or None when nothing is deployed there."""
    return session.scalar(_PINNED_VERSION, {"app_id": app.id, "environment_id": env.id})


@dataclass(frozen=True)
class Submission:
    """A request to run an app, as `create_run` takes it."""

    principal: Principal
    app_name: str
    environment: str
    parameters: dict[str, str]
    initiator: dict[str, Any] | None = None
    retry_policy: RetryPolicy | None = None
    parent_run_id: uuid.UUID | None = None


#: submissions that arrive while one transaction writes are written together by the next
MAX_SUBMISSIONS_PER_TRANSACTION = 32


def create_run(ctx: ServerContext, submission: Submission) -> RunView:
    """Queue a run of the version pinned to the submission's environment.

    `retry_policy` overrides the app's for this run only. The parent is the run that
    started this one (`run_app` inside an app): given, or the run whose token calls.
    Submissions made at the same moment share a transaction (`services.batching`);
    each still gets its own run or its own refusal."""
    return ctx.batcher(create_runs, MAX_SUBMISSIONS_PER_TRANSACTION).submit(submission)


def create_runs(ctx: ServerContext, submissions: list[Submission]) -> list[RunView | Exception]:
    """Queue the submissions' runs in one transaction: per submission, its run or the
    error that refused it (which refuses that one only)."""
    try:
        return _create_together(ctx, submissions)
    except Exception as failed:
        if len(submissions) == 1:
            return [failed]
    # The transaction failed as a whole (a database error, not a refusal): each one
    # again on its own, so that each gets its own answer.
    return [outcome for one in submissions for outcome in create_runs(ctx, [one])]


def _create_together(
    ctx: ServerContext, submissions: list[Submission]
) -> list[RunView | Exception]:
    wake = lifecycle.Wakeups()
    outcomes: list[RunView | Exception] = []
    # A refusal leaves the session and the database as they were (every check comes
    # before the first write), so the others are written all the same. Without
    # autoflush the app's run counter is flushed once, at the commit, not at each read.
    with ctx.sessions.begin() as session, session.no_autoflush:
        for submission in submissions:
            try:
                outcomes.append(_submit(session, submission, wake))
            except errors.TowerError as refused:
                outcomes.append(refused)
    wake.fire(ctx.notifier)
    return outcomes


def _submit(session: Session, submission: Submission, wake: lifecycle.Wakeups) -> RunView:
    principal = submission.principal
    parent_run_id = submission.parent_run_id or principal.run_id
    app, env, pinned = _run_target(session, principal, submission.app_name, submission.environment)
    parent = _parent_run(session, principal, parent_run_id) if parent_run_id else None
    view = queue_run(
        session,
        app=app,
        env=env,
        parameters=submission.parameters,
        initiator=submission.initiator or _initiator_for(session, parent),
        created_by_id=principal.user_id,
        wake=wake,
        retry_policy=submission.retry_policy,
        parent=parent,
        pinned=pinned,
    )
    service_accounts.record_run(session, principal, view.run.id)
    audit.record(
        session,
        principal,
        "run.create",
        f"apps/{app.name}/runs/{view.run.number}",
        run_id=str(view.run.id),
        version=view.version,
        environment=env.name,
        parent_run_id=str(parent.id) if parent else None,
    )
    return view


def queue_run(
    session: Session,
    *,
    app: models.App,
    env: models.Environment,
    parameters: dict[str, str],
    initiator: dict[str, Any],
    created_by_id: uuid.UUID | None,
    wake: lifecycle.Wakeups,
    retry_policy: RetryPolicy | None = None,
    parent: models.Run | None = None,
    pinned: models.AppVersion | None,
) -> RunView:
    """Create and enqueue a run inside the caller's transaction (the app row locked):
    the one place runs are made, for users (`create_run`) and the scheduler alike.
    `pinned`: the version pinned to `env` (None: nothing is deployed there), read by
    the caller with the app (`_run_target`) or on its own (`pinned_version`).

    Every check comes before the first change, so a refused run leaves the session and
    the database as they were. The run and its first transition are written at once,
    one plain INSERT each (`store.rows`: cheaper than flushing them)."""
    if app.status == "disabled":
        raise errors.Conflict(f"App '{app.name}' is disabled; enable it before running it.")
    version = _deployed(app, env, pinned)
    resolved = resolve_parameters(
        version.parameters, parameters, app=app.name, version=version.version
    )
    app.last_run_number += 1
    run = models.Run(
        id=uuid.uuid4(),
        account_id=app.account_id,
        app_id=app.id,
        version_id=version.id,
        environment_id=env.id,
        number=app.last_run_number,
        status=RunStatus.SCHEDULED.value,
        parameters=resolved,
        initiator=initiator,
        created_by_id=created_by_id,
        parent_run_id=parent.id if parent else None,
    )
    lifecycle.apply_policy(run, retry_policy or lifecycle.policy_of(app))
    lifecycle.enqueue(session, run, app, utcnow())  # writes the run, as queued
    wake.queue_changed()
    return RunView(run, app.name, version.version, env.name)


def _parent_run(session: Session, principal: Principal, run_id: uuid.UUID) -> models.Run:
    parent = session.scalar(
        owned(select(models.Run), models.Run, principal).where(models.Run.id == run_id)
    )
    if parent is None:
        raise errors.InvalidInput(
            f"parent_run_id {run_id} names no run of account '{principal.account_name}'.",
            location="body.parent_run_id",
            value=str(run_id),
        )
    return parent


def _initiator_for(session: Session, parent: models.Run | None) -> dict[str, Any]:
    if parent is None:
        return {"type": "tower_cli", "details": {}}
    parent_app = session.get(models.App, parent.app_id)
    return {
        "type": "tower_run",
        "details": {
            "run_app_name": parent_app.name if parent_app else None,
            "run_number": parent.number,
        },
    }


def _view(session: Session, run: models.Run, *, with_attempts: bool = False) -> RunView:
    # One query for the three names (listings build their views in bulk in run_queries).
    app_name, version_number, env_name = session.execute(
        select(models.App.name, models.AppVersion.number, models.Environment.name)
        .join(models.AppVersion, models.AppVersion.app_id == models.App.id)
        .join(models.Environment, models.Environment.account_id == models.App.account_id)
        .where(
            models.App.id == run.app_id,
            models.AppVersion.id == run.version_id,
            models.Environment.id == run.environment_id,
        )
    ).one()
    attempts: list[models.RunAttempt] = []
    if with_attempts:
        attempts = list(
            session.scalars(
                select(models.RunAttempt)
                .where(models.RunAttempt.run_id == run.id)
                .order_by(models.RunAttempt.seq)
            )
        )
    return RunView(run, app_name, f"v{version_number}", env_name, attempts)


def get_run(session: Session, principal: Principal, app_name: str, number: int) -> models.Run:
    app = apps_service.get_app(session, principal, app_name)
    run = session.scalar(
        owned(select(models.Run), models.Run, principal).where(
            models.Run.app_id == app.id, models.Run.number == number
        )
    )
    if run is None:
        raise errors.RunNotFound(f"App '{app_name}' has no run #{number}.")
    return run


def describe_run(ctx: ServerContext, principal: Principal, app_name: str, number: int) -> RunView:
    with ctx.sessions.begin() as session:
        return _view(session, get_run(session, principal, app_name, number), with_attempts=True)


def neighbours(ctx: ServerContext, run: models.Run) -> tuple[int | None, int | None]:
    """Numbers of the previous and next runs of the same app (for `$links`)."""
    with ctx.sessions.begin() as session:
        base = select(models.Run.number).where(models.Run.app_id == run.app_id)
        prev = session.scalar(
            base.where(models.Run.number < run.number).order_by(models.Run.number.desc()).limit(1)
        )
        nxt = session.scalar(
            base.where(models.Run.number > run.number).order_by(models.Run.number).limit(1)
        )
        return prev, nxt


def read_logs(
    ctx: ServerContext, principal: Principal, app_name: str, number: int, *, after: int = 0
) -> tuple[models.Run, list[models.RunLogLine]]:
    with ctx.sessions.begin() as session:
        run = get_run(session, principal, app_name, number)
        return run, log_lines(session, run.id, after=after)


def log_lines(session: Session, run_id: uuid.UUID, *, after: int = 0) -> list[models.RunLogLine]:
    stmt = (
        select(models.RunLogLine)
        .where(models.RunLogLine.run_id == run_id, models.RunLogLine.line_num > after)
        .order_by(models.RunLogLine.line_num)
    )
    return list(session.scalars(stmt))


def run_status_and_lines(
    ctx: ServerContext, run_id: uuid.UUID, after: int
) -> tuple[RunStatus, list[models.RunLogLine]]:
    """For the log stream: the run's status and its lines past `after`, read together."""
    with ctx.sessions.begin() as session:
        run = session.get(models.Run, run_id)
        return RunStatus(run.status), log_lines(session, run_id, after=after)


__all__ = ["RunView", "Submission", "create_run", "create_runs", "describe_run", "run_topic"]


def cancel_run(
    ctx: ServerContext, principal: Principal, app_name: str, number: int
) -> tuple[RunView, int]:
    """Cancel an active run and every active run it started (children, grandchildren…);
    runners holding them are told at once. Returns the run and how many children ended."""
    wake = lifecycle.Wakeups()
    with ctx.sessions.begin() as session:
        run = get_run(session, principal, app_name, number)
        session.refresh(run, with_for_update=True)
        if not is_active(RunStatus(run.status)):
            raise errors.Conflict(
                f"Run #{number} of app '{app_name}' is already {run.status}; only active runs "
                "(scheduled, pending, starting, running, retrying) can be cancelled.",
                value=run.status,
            )
        now = utcnow()
        lifecycle.cancel(session, run, now=now, wake=wake)
        children = [
            child
            for child in lifecycle.descendants(session, run.id)
            if is_active(RunStatus(child.status))
        ]
        for child in children:
            lifecycle.cancel(session, child, now=now, wake=wake)
        view = _view(session, run, with_attempts=True)
        audit.record(
            session,
            principal,
            "run.cancel",
            f"apps/{app_name}/runs/{number}",
            run_id=str(run.id),
            children_cancelled=len(children),
        )
    wake.fire(ctx.notifier)
    return view, len(children)


GraphNode = tuple[str, int]


def run_graph(
    ctx: ServerContext, principal: Principal, app_name: str, number: int
) -> list[tuple[GraphNode, GraphNode]]:
    """(child, parent) edges of the tree the run belongs to, root first."""
    with ctx.sessions.begin() as session:
        run = get_run(session, principal, app_name, number)
        root = run
        seen = {run.id}
        while root.parent_run_id is not None and root.parent_run_id not in seen:
            parent = session.get(models.Run, root.parent_run_id)
            if parent is None or parent.account_id != run.account_id:
                break
            seen.add(parent.id)
            root = parent
        family = [root, *lifecycle.descendants(session, root.id, lock=False)]
        by_id = {member.id: member for member in family}
        app_names = dict(
            session.execute(
                select(models.App.id, models.App.name).where(
                    models.App.id.in_({member.app_id for member in family})
                )
            ).all()
        )

        def node(member: models.Run) -> GraphNode:
            return (app_names[member.app_id], member.number)

        return [
            (node(member), node(by_id[member.parent_run_id]))
            for member in family
            if member.parent_run_id in by_id
        ]
