"""Following a remote run: stream its logs until it is over, surviving dropped streams.

The SSE stream is the fast path. When it ends before the run is terminal (server
restart, proxy timeout, flaky network) we ask for the run's status and reconnect
with a growing pause (0.5 s → 5 s). Once the run is terminal we fetch the full log
once, so lines missed between two connections are still printed. Lines are
de-duplicated by `line_num`, which the server keeps unique per run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tower.client import ApiError, ConnectionFailed
from tower.client.api import TowerApi
from tower.core.runs import TERMINAL

TERMINAL_STATUSES = frozenset(str(s) for s in TERMINAL)
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
#: How many status polls in a row may fail to connect before we give up following.
MAX_POLL_FAILURES = 8


def is_terminal(run: dict[str, Any]) -> bool:
    return str(run.get("status", "")).lower() in TERMINAL_STATUSES


class RunFollower:
    """Prints each log line of one run exactly once, then returns the final run."""

    def __init__(
        self,
        api: TowerApi,
        app: str,
        number: int,
        *,
        on_line: Callable[[dict[str, Any]], None],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.app = app
        self.number = number
        self.on_line = on_line
        self.sleep = sleep
        self.seen: set[int] = set()

    def follow(self) -> dict[str, Any]:
        """Stream until the run is terminal; return its final `Run` object."""
        backoff = FIRST_BACKOFF_S
        while True:
            if self._stream_once():
                backoff = FIRST_BACKOFF_S  # the server was healthy: reconnect quickly
            run = self._poll()
            if run is not None and is_terminal(run):
                break
            self.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        self._fill_gaps()
        return run

    def _stream_once(self) -> bool:
        """Print lines from one stream connection; True if any new line arrived."""
        got_any = False
        try:
            for line in self.api.stream_run_logs(self.app, self.number):
                got_any = self._emit(line) or got_any
        except ConnectionFailed:
            pass  # a dropped stream is expected; the status poll decides what next
        except ApiError as exc:
            # A client error will not fix itself by retrying (bad name, no access);
            # throttling and server errors might.
            if 400 <= exc.status < 500 and exc.status != 429:
                raise
        return got_any

    def _poll(self) -> dict[str, Any] | None:
        """The run now, or None if the server could not be reached (up to a limit)."""
        failures = 0
        while True:
            try:
                return self.api.describe_run(self.app, self.number)["run"]
            except ConnectionFailed:
                failures += 1
                if failures >= MAX_POLL_FAILURES:
                    raise
                self.sleep(min(FIRST_BACKOFF_S * 2**failures, MAX_BACKOFF_S))

    def _fill_gaps(self) -> None:
        lines = [
            line for line in self.api.run_logs(self.app, self.number) if _num(line) is not None
        ]
        for line in sorted(lines, key=lambda item: _num(item) or 0):
            self._emit(line)

    def _emit(self, line: dict[str, Any]) -> bool:
        num = _num(line)
        if num is not None:
            if num in self.seen:
                return False
            self.seen.add(num)
        self.on_line(line)
        return True


def _num(line: dict[str, Any]) -> int | None:
    value = line.get("line_num")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
