"""The runner's deferred calls: one thread, calls in due order, cancelled ones dropped."""

from __future__ import annotations

import threading
import time

from tower.runner.timers import Timers


def _recording() -> tuple[list[str], threading.Event, Timers]:
    return [], threading.Event(), Timers()


def test_calls_run_in_due_order_whatever_the_order_scheduled() -> None:
    calls, done, timers = _recording()
    timers.call_later(0.2, lambda: (calls.append("late"), done.set()))
    timers.call_later(0.05, lambda: calls.append("soon"))
    timers.call_later(0.0, lambda: calls.append("now"))
    assert done.wait(5)
    assert calls == ["now", "soon", "late"]
    timers.close()


def test_a_cancelled_call_never_runs() -> None:
    calls, done, timers = _recording()
    dropped = timers.call_later(0.05, lambda: calls.append("dropped"))
    timers.call_later(0.1, lambda: (calls.append("kept"), done.set()))
    dropped.cancel()
    assert done.wait(5)
    time.sleep(0.05)
    assert calls == ["kept"]
    timers.close()


def test_a_failing_call_does_not_stop_the_others() -> None:
    calls, done, timers = _recording()

    def fail() -> None:
        raise RuntimeError("boom")

    timers.call_later(0.0, fail)
    timers.call_later(0.05, lambda: (calls.append("after"), done.set()))
    assert done.wait(5)
    assert calls == ["after"]
    timers.close()


def test_closing_drops_what_is_not_due_and_refuses_more() -> None:
    calls, _, timers = _recording()
    timers.call_later(0.1, lambda: calls.append("pending"))
    timers.close()
    late = timers.call_later(0.0, lambda: calls.append("after close"))
    assert late.cancelled
    time.sleep(0.2)
    assert calls == []
