"""The claim idea behind the queue: concurrent claimers never take the same run twice.

Tests the SQL shape on its own; tower.server.dispatch.queue.claim_next_run is
the production version (its own tests can reuse `_claim_all_concurrently`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Uuid, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.storage.factories import make_app_stack, make_pending_runs
from tower.server.dispatch import queue
from tower.server.store import db, models
from tower.server.store.types import utcnow

PENDING_RUNS = 20
CLAIMERS = 4
# Hold each claim's transaction open a moment so claimers really overlap.
HOLD_S = 0.005

CLAIM_SQL = """
UPDATE runs SET status = 'starting'
WHERE status = 'pending' AND id = (
    SELECT id FROM runs WHERE status = 'pending' ORDER BY created_at LIMIT 1 {lock}
)
RETURNING id
"""


def claim(session: Session) -> uuid.UUID | None:
    lock = "FOR UPDATE SKIP LOCKED" if session.get_bind().dialect.name == "postgresql" else ""
    statement = text(CLAIM_SQL.format(lock=lock)).columns(id=Uuid)
    return session.execute(statement).scalar_one_or_none()


def _claim_all_concurrently(
    factory: sessionmaker[Session], claim_one: Callable[[Session], uuid.UUID | None]
) -> list[list[uuid.UUID]]:
    """Each claimer claims until the queue looks empty; returns what each one got, in order."""
    barrier = threading.Barrier(CLAIMERS)
    claimed: list[list[uuid.UUID]] = [[] for _ in range(CLAIMERS)]
    errors: list[BaseException] = []

    def claimer(mine: list[uuid.UUID]) -> None:
        try:
            barrier.wait()
            while True:
                with db.transaction(factory) as session:
                    run_id = claim_one(session)
                    time.sleep(HOLD_S)
                if run_id is None:
                    return
                mine.append(run_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(mine,)) for mine in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return claimed


def test_every_pending_run_is_claimed_exactly_once(
    session_factory: sessionmaker[Session],
) -> None:
    with db.transaction(session_factory) as session:
        runs = make_pending_runs(session, make_app_stack(session), PENDING_RUNS)
        queue_order = [run.id for run in runs]

    claimed = _claim_all_concurrently(session_factory, claim)

    everything = [run_id for mine in claimed for run_id in mine]
    assert sorted(everything) == sorted(queue_order)  # all claimed, none twice
    for mine in claimed:  # each claimer got runs oldest first
        assert mine == sorted(mine, key=queue_order.index)
    with db.transaction(session_factory) as session:
        statuses = session.scalars(select(models.Run.status)).all()
    assert statuses == ["starting"] * PENDING_RUNS


def test_claim_on_an_empty_queue_returns_none(session_factory: sessionmaker[Session]) -> None:
    with db.transaction(session_factory) as session:
        make_app_stack(session).run(session, status="running")
    with db.transaction(session_factory) as session:
        assert claim(session) is None


def test_claimers_taking_several_runs_at_once_never_share_one(
    session_factory: sessionmaker[Session],
) -> None:
    """The production claim (`queue.claim_runs`) with a batch limit: concurrent
    claimers each take at most the limit per statement, and every run exactly once."""
    with db.transaction(session_factory) as session:
        runs = make_pending_runs(session, make_app_stack(session), PENDING_RUNS)
    per_claim: list[int] = []

    def claim_three(session: Session) -> uuid.UUID | None:
        now = utcnow()
        taken = queue.claim_runs(
            session,
            runner_id=uuid.uuid4(),
            account_id=None,
            environment=None,
            now=now,
            lease_until=now + timedelta(seconds=30),
            reserved_since=now,
            limit=3,
        )
        per_claim.append(len(taken))
        claimed_here.extend(taken)
        return taken[0] if taken else None

    claimed_here: list[uuid.UUID] = []
    _claim_all_concurrently(session_factory, claim_three)

    assert sorted(claimed_here) == sorted(run.id for run in runs)  # all claimed, none twice
    assert max(per_claim) == 3 and all(0 <= n <= 3 for n in per_claim)
    with db.transaction(session_factory) as session:
        attempts = session.scalars(select(models.Run.num_attempts)).all()
    assert attempts == [1] * PENDING_RUNS
