"""The runner's reporter: reports of several runs go out in batches, two requests at
a time, each answered item by item."""

from __future__ import annotations

import threading
from typing import Any

from tower.runner.reporter import Delivery, Report, Reporter, Slots


class _HeldApi:
    """A control plane whose `/reports` answers only when the test lets it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.arrived = threading.Semaphore(0)
        self.release = threading.Event()

    def report_statuses(
        self, runner_id: str, reports: list[dict[str, Any]], *_claim: Any, **_logs: Any
    ) -> dict[str, Any]:  # no claims, no log batches: only the reports count here
        self.batches.append([report["run_id"] for report in reports])
        self.arrived.release()
        assert self.release.wait(10)
        results = [{"run_id": report["run_id"], "status": "exited"} for report in reports]
        return {"results": results, "log_results": [], "assignments": []}


def _slots() -> Slots:
    return Slots(
        take_free=lambda most: 0,
        release=lambda n: None,
        start=lambda a: None,
        claiming=lambda: False,
    )


def _sent(reporter: Reporter, run_id: str, outcomes: dict[str, str]) -> threading.Thread:
    report = Report(run_id, {"status": "exited", "attempt_seq": 1}, deadline=1e18)
    thread = threading.Thread(
        target=lambda: outcomes.__setitem__(run_id, reporter.send(report)), daemon=True
    )
    thread.start()
    return thread


def test_a_report_goes_out_while_another_request_is_still_unanswered() -> None:
    api = _HeldApi()
    reporter = Reporter(api, lambda: "runner-1", _slots()).start()  # type: ignore[arg-type]
    outcomes: dict[str, str] = {}
    try:
        first = _sent(reporter, "run-a", outcomes)
        assert api.arrived.acquire(timeout=10)
        second = _sent(reporter, "run-b", outcomes)
        # The first request is still held: the second report did not wait for it.
        assert api.arrived.acquire(timeout=10), "the second report waited for the first answer"
        assert api.batches == [["run-a"], ["run-b"]]
        api.release.set()
        first.join(10)
        second.join(10)
        assert outcomes == {"run-a": Delivery.DELIVERED, "run-b": Delivery.DELIVERED}
    finally:
        api.release.set()
        reporter.close()


def test_reports_that_pile_up_meanwhile_go_in_one_request() -> None:
    api = _HeldApi()
    reporter = Reporter(api, lambda: "runner-1", _slots()).start()  # type: ignore[arg-type]
    outcomes: dict[str, str] = {}
    try:
        senders = [_sent(reporter, "run-a", outcomes)]
        assert api.arrived.acquire(timeout=10)
        senders.append(_sent(reporter, "run-b", outcomes))
        assert api.arrived.acquire(timeout=10)
        # Both requests are out: what comes now waits, and goes together.
        senders += [_sent(reporter, f"run-{name}", outcomes) for name in "cde"]
        while len(reporter._queue) < 3:  # the three are queued (a peek inside)
            threading.Event().wait(0.01)
        api.release.set()
        for sender in senders:
            sender.join(10)
        assert sorted(api.batches[2]) == ["run-c", "run-d", "run-e"]
        assert len(api.batches) == 3
        assert set(outcomes.values()) == {Delivery.DELIVERED}
    finally:
        api.release.set()
        reporter.close()
