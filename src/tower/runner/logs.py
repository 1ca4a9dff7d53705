"""Log lines: numbering, timestamps, batching and reliable shipping to the control plane.

A :class:`LogShipper` is the line sink of one run attempt. Every line it receives
(setup and program alike) gets the next `line_num` and a `reported_at` stamped when
the line was read. Numbering starts at the assignment's `first_line_num`: line
numbers are per run, so a retried attempt continues after the earlier attempts'
lines instead of colliding with them (the server would drop the duplicates).

A background thread sends batches every `FLUSH_INTERVAL_S` or `BATCH_MAX_LINES`
lines, whichever comes first. Started with `timers` (the runner's), a shipper starts
that thread only once a line has waited `FLUSH_INTERVAL_S`: a run that ends sooner
hands its lines to its final report (`hand_over`) without a thread ever starting.
Lines that could not be delivered (server unreachable, 5xx, 429) stay queued and are
re-sent with a backoff capped at `RETRY_BACKOFF_MAX_S`, so delivery resumes within
seconds of the control plane coming back; the server de-duplicates by `line_num`, so
re-sending is safe. Only when deliveries have failed for `deadline_s` without a
break are the queued lines given up. A 409 means the attempt is stale (superseded):
shipping stops. `close()` returns once everything queued is delivered (or given up),
so the caller can report the final status after the last line; `hand_over()` instead
returns the lines still queued, for the final status report to carry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tower.client import ApiError
from tower.client.runner_api import RunnerApi
from tower.runner.settings import DEFAULT_REPORT_DEADLINE_S
from tower.runner.timers import Timer, Timers

logger = logging.getLogger(__name__)

#: longest time a line waits before its batch is sent (s)
FLUSH_INTERVAL_S = 0.1
#: a batch is sent as soon as it holds this many lines
BATCH_MAX_LINES = 200
#: first and longest pause between delivery retries; the cap bounds how long after the
#: control plane comes back the backlog starts flowing again (s)
RETRY_BACKOFF_START_S = 0.2
RETRY_BACKOFF_MAX_S = 2.0
#: extra time `close()` allows the shipping thread beyond the deadline (one HTTP timeout) (s)
CLOSE_JOIN_MARGIN_S = 60.0
#: HTTP statuses worth retrying
RETRYABLE_STATUSES = frozenset({408, 425, 429})
#: the server's answer when the attempt is no longer current
STALE_STATUS = 409

LineSink = Callable[[str, str], None]


def utc_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC with a `Z`, e.g. `2024-11-20T08:00:00.123456Z`."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def format_log_line(reported_at: datetime, content: str) -> str:
    """How the CLI prints a log line: `YYYY-MM-DD HH:MM:SS | <content>` in UTC."""
    if reported_at.tzinfo is None:
        reported_at = reported_at.replace(tzinfo=UTC)
    return f"{reported_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} | {content}"


def printing_sink(
    out: Callable[[str], None], redact: Callable[[str], str] | None = None
) -> LineSink:
    """A line sink that prints each line with `format_log_line`, one caller at a time."""
    lock = threading.Lock()

    def sink(channel: str, content: str) -> None:
        text = redact(content) if redact is not None else content
        line = format_log_line(datetime.now(UTC), text)
        with lock:
            out(line)

    return sink


def is_retryable(exc: Exception) -> bool:
    """Whether a failed delivery should be tried again later."""
    if isinstance(exc, ApiError):
        return exc.status >= 500 or exc.status in RETRYABLE_STATUSES
    return True


class LogShipper:
    """The log sink of one run attempt; call it as `shipper(channel, content)`."""

    def __init__(
        self,
        api: RunnerApi,
        run_id: str,
        attempt_seq: int,
        *,
        fencing_token: str = "",
        first_line_num: int = 1,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        batch_max_lines: int = BATCH_MAX_LINES,
        deadline_s: float = DEFAULT_REPORT_DEADLINE_S,
        on_stale: Callable[[], None] | None = None,
        redact: Callable[[str], str] | None = None,
        send: Callable[[list[dict[str, Any]]], object] | None = None,
    ) -> None:
        self.api = api
        #: delivers one batch once, raising as `RunnerApi.send_logs` does (default:
        #: a request of its own; the runner's reporter shares one with other runs)
        self._send = send or self._send_alone
        #: applied to every line before it is queued (masks secret values)
        self.redact = redact
        self.on_stale = on_stale
        self.run_id = run_id
        self.attempt_seq = attempt_seq
        self.fencing_token = fencing_token
        self.flush_interval_s = flush_interval_s
        self.batch_max_lines = batch_max_lines
        self.deadline_s = deadline_s
        self.stale = False
        self.delivered = 0
        self.lost = 0
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._oldest_at = 0.0
        self._next_line = max(1, first_line_num)
        self._closing = False
        #: the queued lines go with the final report instead (see `hand_over`)
        self._handing_over = False
        #: when the current run of failed deliveries began (None while deliveries succeed)
        self._failing_since: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"logs-{run_id}", daemon=True)
        self._started = False
        #: where the thread's start is deferred to (None: it starts with the shipper)
        self._timers: Timers | None = None
        self._start_timer: Timer | None = None

    def start(self, timers: Timers | None = None) -> LogShipper:
        """Start shipping: at once, or with `timers` only once a line is due."""
        self._timers = timers
        if timers is None:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        """Start the shipping thread unless it runs already or has nothing left to do."""
        with self._cond:
            if self._started or self.stale or self._handing_over:
                return
            if self._closing and not self._pending:
                return
            self._started = True
            self._thread.start()

    def __call__(self, channel: str, content: str) -> None:
        self.emit(channel, content)

    def emit(self, channel: str, content: str) -> None:
        """Queue one line, numbered and stamped now."""
        reported_at = utc_timestamp()
        if self.redact is not None:
            content = self.redact(content)
        with self._cond:
            if self._closing or self.stale:
                return
            line = {"line_num": self._next_line, "channel": channel, "content": content}
            line["reported_at"] = reported_at
            self._next_line += 1
            if not self._pending:
                self._oldest_at = time.monotonic()
                self._cond.notify_all()
                if not self._started and self._timers is not None and self._start_timer is None:
                    self._start_timer = self._timers.call_later(
                        self.flush_interval_s, self._start_thread
                    )
            self._pending.append(line)
            if len(self._pending) >= self.batch_max_lines:
                self._cond.notify_all()
                self._start_thread()  # a full batch goes now (the lock is reentrant)

    def close(self) -> bool:
        """Deliver what is queued (retrying up to `deadline_s`); True if nothing was lost."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._start_thread()  # what is queued goes now, if no thread took it yet
        self._join()
        return self.lost == 0 and not self._pending

    def hand_over(self, max_lines: int = BATCH_MAX_LINES) -> list[dict[str, Any]]:
        """Stop shipping and return the lines still queued, for the attempt's final
        status report to carry (one request instead of two). A batch in flight is
        finished first. More than `max_lines` queued: deliver them all, as `close`
        does, and return none."""
        with self._cond:
            self._handing_over = len(self._pending) <= max_lines
            self._closing = True
            self._cond.notify_all()
        self._start_thread()  # too many lines to hand over: they go now, as `close` sends
        self._join()
        with self._cond:
            if not self._handing_over or self.stale:
                return []
            lines, self._pending = self._pending, []
            return lines

    def _join(self) -> None:
        if self._start_timer is not None:
            self._start_timer.cancel()
        if self._thread.is_alive():
            self._thread.join(self.deadline_s + CLOSE_JOIN_MARGIN_S)

    def _run(self) -> None:
        backoff = RETRY_BACKOFF_START_S
        while (batch := self._next_batch()) is not None:
            if self._deliver(batch):
                self._failing_since = None
                backoff = RETRY_BACKOFF_START_S
            elif self._past_deadline():
                # The outage goes on: later lines are tried once each and dropped until
                # a delivery succeeds again, so memory stays bounded.
                self._abandon(f"the control plane has not accepted logs for {self.deadline_s:.0f}s")
            else:
                time.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)

    def _past_deadline(self) -> bool:
        """After a failed delivery: have deliveries been failing for `deadline_s`?"""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        return now - self._failing_since >= self.deadline_s

    def _next_batch(self) -> list[dict[str, Any]] | None:
        with self._cond:
            while True:
                if self.stale or self._handing_over:
                    return None
                if self._pending:
                    due = self._oldest_at + self.flush_interval_s - time.monotonic()
                    full = len(self._pending) >= self.batch_max_lines
                    if full or self._closing or due <= 0:
                        return self._pending[: self.batch_max_lines]
                    self._cond.wait(due)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()

    def _send_alone(self, batch: list[dict[str, Any]]) -> None:
        self.api.send_logs(self.run_id, self.attempt_seq, batch, fencing_token=self.fencing_token)

    def _deliver(self, batch: list[dict[str, Any]]) -> bool:
        """Send one batch; True when it need not be sent again."""
        try:
            self._send(batch)
        except Exception as exc:  # ApiError, ConnectionFailed, or a surprise
            return self._handle_failure(batch, exc)
        self._drop_front(len(batch), delivered=True)
        return True

    def _handle_failure(self, batch: list[dict[str, Any]], exc: Exception) -> bool:
        if isinstance(exc, ApiError) and exc.status == STALE_STATUS:
            logger.info(
                "run %s attempt %s is stale; stop shipping logs", self.run_id, self.attempt_seq
            )
            with self._cond:
                self.stale = True
                self._pending.clear()
            if self.on_stale is not None:
                self.on_stale()
            return True
        if is_retryable(exc):
            logger.warning("log batch for run %s not delivered, will retry: %s", self.run_id, exc)
            return False
        logger.error(
            "log batch for run %s rejected (%s); dropping %d lines", self.run_id, exc, len(batch)
        )
        self._drop_front(len(batch), delivered=False)
        return True

    def _drop_front(self, count: int, *, delivered: bool) -> None:
        with self._cond:
            del self._pending[:count]
            if self._pending:
                self._oldest_at = time.monotonic() - self.flush_interval_s
            if delivered:
                self.delivered += count
            else:
                self.lost += count

    def _abandon(self, reason: str) -> None:
        with self._cond:
            self.lost += len(self._pending)
            logger.error(
                "dropping %d log lines of run %s: %s", len(self._pending), self.run_id, reason
            )
            self._pending.clear()
