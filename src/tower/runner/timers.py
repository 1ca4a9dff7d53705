"""One thread that runs every deferred call of the runner when it is due.

Most runs a busy runner takes end within a tenth of a second. What such a run may
need later (its `running` report, a thread to ship its log lines) used to get a
thread of its own at once, created, handed the GIL and torn down for nothing when
the run ended first. A call scheduled here costs a heap entry instead, and is
dropped when cancelled before it is due.

Calls run on the timer thread, one after the other: they must be quick (set a flag,
start a thread), never block.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Timer:
    """A call scheduled on `Timers`; `cancel()` drops it if it has not run yet."""

    __slots__ = ("call", "cancelled", "due", "owner")

    def __init__(self, owner: Timers, due: float, call: Callable[[], None]) -> None:
        self.owner = owner
        self.due = due
        self.call = call
        self.cancelled = False

    def cancel(self) -> None:
        """Drop the call: the thread does not even wake up for it."""
        if not self.cancelled:
            self.cancelled = True
            self.owner.drop(self)


class Timers:
    """Deferred calls on one daemon thread, started with the first call scheduled."""

    def __init__(self, name: str = "timers") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # equal due times run in the order scheduled
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_later(self, delay_s: float, call: Callable[[], None]) -> Timer:
        """Run `call` on the timer thread `delay_s` seconds from now (monotonic); once
        the timers are closed, never (what a call would start is not wanted then)."""
        timer = Timer(self, time.monotonic() + max(0.0, delay_s), call)
        with self._cond:
            if self._closed:
                timer.cancelled = True
                return timer
            heapq.heappush(self._heap, (timer.due, next(self._order), timer))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is timer:  # sooner than what the thread waits for
                self._cond.notify()
        return timer

    def drop(self, timer: Timer) -> None:
        """Take `timer` out of the schedule (a handful of entries: a rebuild is cheap)."""
        with self._cond:
            kept = [entry for entry in self._heap if entry[2] is not timer]
            if len(kept) != len(self._heap):
                heapq.heapify(kept)
                self._heap = kept

    def close(self) -> None:
        """Drop every call not yet run and end the thread."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _loop(self) -> None:
        while (timer := self._next_due()) is not None:
            try:
                timer.call()
            except Exception:  # one bad call must not stop the others
                logger.exception("a deferred call of the runner failed")

    def _next_due(self) -> Timer | None:
        with self._cond:
            while not self._closed:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, timer = self._heap[0]  # a cancelled call is out of the heap
                wait = due - time.monotonic()
                if wait <= 0:
                    heapq.heappop(self._heap)
                    return timer
                self._cond.wait(wait)
            return None
