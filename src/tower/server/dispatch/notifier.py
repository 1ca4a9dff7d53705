"""Wake-ups inside one control plane: long-poll claims and log streams wait here.

Producers run in worker threads (sync request handlers), consumers are
coroutines on the event loop, so `notify` hops onto the loop thread-safely.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class Notifier:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        #: topics that will never be waited on again: a listen on one is woken at once
        self._retired: set[str] = set()
        #: set when the process is shutting down: long polls and streams end early
        self.closing = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def notify(self, topic: str) -> None:
        """Wake everyone waiting on `topic`; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # Nobody listens: don't wake the loop for nothing (most runs have no follower).
        # A listener that registers after this look reads the database after it too,
        # so it sees the change the notify is about: it listens before it reads.
        if topic not in self._waiters:
            return
        loop.call_soon_threadsafe(self._wake, topic)

    def close(self) -> None:
        """Wake every waiter and make new waits end at once; safe from any thread."""
        self.closing = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_all)

    def retire(self, topic: str) -> None:
        """Wake `topic` now and every later listen on it at once; safe from any thread.
        (A runner that stops claiming retires its claim topic.)"""
        self._retired.add(topic)
        self.notify(topic)

    def retired(self, topic: str) -> bool:
        """Whether `topic` was retired (a runner that stopped claiming)."""
        return topic in self._retired

    def _wake_all(self) -> None:
        for topic in list(self._waiters):
            self._wake(topic)

    def _wake(self, topic: str) -> None:
        for event in self._waiters.pop(topic, set()):
            event.set()

    @contextmanager
    def listen(self, topic: str) -> Iterator[asyncio.Event]:
        """Register interest in `topic` before checking the database, so a
        notification that lands between the check and the wait is not lost.
        Must be entered on the event loop."""
        event = asyncio.Event()
        if self.closing or topic in self._retired:
            event.set()
        self._waiters[topic].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(topic)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    self._waiters.pop(topic, None)


async def wait_for(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event`; False when `timeout` seconds pass first."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except TimeoutError:
        return False


async def pause(notifier: Notifier, event: asyncio.Event, timeout: float) -> None:
    """A background loop's wait: until `event` or `timeout` seconds; while `notifier`
    is closing (every event set), the whole `timeout`, so the loop does not spin
    through the shutdown."""
    if notifier.closing:
        await asyncio.sleep(timeout)
    else:
        await wait_for(event, timeout)


async def wait_for_any(events: tuple[asyncio.Event, ...], timeout: float) -> bool:
    """Wait until one of `events` is set; False when `timeout` seconds pass first."""
    if any(event.is_set() for event in events):
        return True
    if timeout <= 0:
        return False
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


QUEUE_TOPIC = "queue"


def run_topic(run_id: object) -> str:
    return f"run:{run_id}"


def runner_topic(runner_id: object) -> str:
    """Woken when a runner must stop one of its runs (its heartbeat long-poll waits here)."""
    return f"runner:{runner_id}"


def claims_topic(runner_id: object) -> str:
    """Retired when a runner stops claiming: its claim long-poll ends at once."""
    return f"claims:{runner_id}"


#: woken when a schedule is created or changed: its tick may be the earliest now
SCHEDULER_TOPIC = "schedules"
