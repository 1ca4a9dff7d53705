"""Scheduler leadership: on PostgreSQL one process at a time holds the advisory lock,
and another takes over as soon as the holder lets go or its connection dies."""

from __future__ import annotations

from sqlalchemy import Engine, text

from tower.server.scheduler.leadership import SCHEDULER_LOCK_KEY, Leadership


def test_one_leader_at_a_time_and_a_successor_when_it_goes(engine: Engine) -> None:
    first, second = Leadership(engine), Leadership(engine)
    if engine.dialect.name == "sqlite":
        # One writer at a time anyway: every process may fire (the compare-and-set
        # keeps each tick to one run).
        assert first.holds() and second.holds()
        return
    try:
        assert first.holds()
        assert not second.holds()
        assert first.holds()  # still the leader on the next round
        first.release()
        assert second.holds()
        assert not first.holds()
    finally:
        first.release()
        second.release()


def test_a_leader_whose_connection_dies_is_replaced(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        return
    first, second = Leadership(engine), Leadership(engine)
    try:
        assert first.holds()
        # The leader's database session ends, as when its process is killed.
        with engine.connect() as admin:
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objid = (:key & 4294967295)::oid"
                ),
                {"key": SCHEDULER_LOCK_KEY},
            )
            admin.commit()
        assert second.holds()
        assert not first.holds()  # notices it lost the connection, and the lock
    finally:
        first.release()
        second.release()
