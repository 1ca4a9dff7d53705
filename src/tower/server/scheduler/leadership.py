"""Which control plane runs the scheduler: on PostgreSQL, the holder of an advisory lock.

The lock is a session-level `pg_try_advisory_lock` on a connection kept for as long as
the process leads; if the process dies, PostgreSQL drops the connection and the lock
with it, and another control plane takes over at its next try. SQLite has one writer
at a time anyway, so every process may fire (the compare-and-set in `firing` still
keeps each tick to one run).
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, text

logger = logging.getLogger(__name__)

#: an arbitrary constant naming "the scheduler" among advisory locks (fits a bigint)
SCHEDULER_LOCK_KEY = 0x7045_5343_4845_4400


class Leadership:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.uses_lock = engine.dialect.name == "postgresql"
        self._connection: Connection | None = None

    def holds(self) -> bool:
        """Whether this process should fire now; tries to become leader if it is not."""
        if not self.uses_lock:
            return True
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                self._connection.commit()
                return True
            except Exception:
                logger.warning("lost the scheduler lock's connection; trying to lead again")
                self.release()
        connection = self.engine.connect()
        try:
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": SCHEDULER_LOCK_KEY}
            ).scalar()
            connection.commit()
        except Exception:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        logger.info("this control plane now runs the scheduler")
        self._connection = connection
        return True

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEDULER_LOCK_KEY})
            connection.commit()
        except Exception:
            pass  # the connection is gone: so is the lock
        finally:
            connection.invalidate()
