"""Group commit (tower.server.services.batching): callers served together, each its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tower.server.services.batching import Batcher, Outcomes


class Recorder:
    """An `apply_all` that records its batches; the first one waits until let go."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.first_started = threading.Event()
        self.let_go = threading.Event()

    def __call__(self, items: list[int]) -> Outcomes:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.let_go.wait(5)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def _wait_until_waiting(batcher: Batcher[int, int], count: int) -> None:
    deadline = time.monotonic() + 5
    while len(batcher._waiting) < count:
        assert time.monotonic() < deadline, "callers never queued"
        time.sleep(0.001)


def test_a_lone_caller_is_applied_at_once() -> None:
    recorder = Recorder()
    recorder.let_go.set()
    batcher: Batcher[int, int] = Batcher(recorder, max_batch=8)
    assert batcher.submit(2) == 20
    assert batcher.submit(4) == 40
    assert recorder.batches == [[2], [4]]


def test_callers_arriving_during_a_batch_are_applied_together_each_with_its_answer() -> None:
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder, max_batch=8)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(batcher.submit, 0)
        assert recorder.first_started.wait(5)
        later = [pool.submit(batcher.submit, i) for i in range(1, 6)]
        _wait_until_waiting(batcher, 5)
        recorder.let_go.set()
        assert first.result(5) == 0
        answers = [_answer(future) for future in later]
    assert answers == ["odd 1", 20, "odd 3", 40, "odd 5"]
    assert recorder.batches[0] == [0]
    assert sorted(recorder.batches[1]) == [1, 2, 3, 4, 5]  # one batch, not five


def test_batches_hold_at_most_max_batch_items() -> None:
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder, max_batch=2)
    with ThreadPoolExecutor(6) as pool:
        pool.submit(batcher.submit, 0)
        assert recorder.first_started.wait(5)
        later = [pool.submit(batcher.submit, i) for i in (2, 4, 6, 8, 10)]
        _wait_until_waiting(batcher, 5)
        recorder.let_go.set()
        assert sorted(future.result(5) for future in later) == [20, 40, 60, 80, 100]
    assert [len(batch) for batch in recorder.batches] == [1, 2, 2, 1]


def test_a_failing_batch_fails_its_callers_only_and_the_next_batch_runs() -> None:
    calls: list[list[int]] = []

    def apply_all(items: list[int]) -> Outcomes:
        calls.append(items)
        if 13 in items:
            raise RuntimeError("database went away")
        return list(items)

    batcher: Batcher[int, int] = Batcher(apply_all, max_batch=8)
    with pytest.raises(RuntimeError, match="went away"):
        batcher.submit(13)
    assert batcher.submit(7) == 7


def test_a_wrong_number_of_outcomes_is_an_error_not_a_hang() -> None:
    batcher: Batcher[int, int] = Batcher(lambda items: [], max_batch=8)
    with pytest.raises(RuntimeError, match="0 outcomes for a batch of 1"):
        batcher.submit(1)
    with pytest.raises(RuntimeError):
        batcher.submit(2)  # the lead was passed on: no caller waits forever


def _answer(future: Future[int]) -> int | str:
    try:
        return future.result(5)
    except ValueError as error:
        return str(error)
