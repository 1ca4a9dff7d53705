"""The runner's reporter: reports of several runs go out in batches, one request at a
time, each answered item by item."""

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


def test_an_idle_runners_report_goes_at_once() -> None:
    api = _HeldApi()
    api.release.set()  # the control plane answers at once
    reporter = Reporter(api, lambda: "runner-1", _slots()).start()  # type: ignore[arg-type]
    outcomes: dict[str, str] = {}
    try:
        _sent(reporter, "run-a", outcomes).join(10)
        assert api.batches == [["run-a"]]
        assert outcomes == {"run-a": Delivery.DELIVERED}
    finally:
        reporter.close()


def test_reports_that_pile_up_meanwhile_go_in_one_request() -> None:
    api = _HeldApi()
    reporter = Reporter(api, lambda: "runner-1", _slots()).start()  # type: ignore[arg-type]
    outcomes: dict[str, str] = {}
    try:
        senders = [_sent(reporter, "run-a", outcomes)]
        assert api.arrived.acquire(timeout=10)
        # The request is out: what comes now waits for its answer, and goes together.
        senders += [_sent(reporter, f"run-{name}", outcomes) for name in "bcd"]
        while len(reporter._queue) < 3:  # the three are queued (a peek inside)
            threading.Event().wait(0.01)
        assert api.batches == [["run-a"]], "one request at a time"
        api.release.set()
        for sender in senders:
            sender.join(10)
        assert sorted(api.batches[1]) == ["run-b", "run-c", "run-d"]
        assert len(api.batches) == 2
        assert set(outcomes.values()) == {Delivery.DELIVERED}
    finally:
        api.release.set()
        reporter.close()
