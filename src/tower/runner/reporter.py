"""Status reports and log batches of every run of this runner, sent together
(docs/runner-protocol.md).

A run's worker hands its report to the `Reporter` and waits for the outcome (so do
the runs' log shippers with their batches). `SENDERS` threads (one) each send what
piled up while the request before was in flight in a single `POST
/v1/runner/reports`: an idle runner's report goes at once, a busy runner's waits at
most one round trip, and a busy runner spends about one request per batch of runs
instead of several per run. A second request in flight would take a report that
arrives just after one left without that wait, but halves the batches: under load
the control plane then spends more CPU per run (about 1.5 ms more, measured with
bench/throughput.py) than the wait saves. A final report also hands over its run's
slot: the same request claims a run for it (and for any other free slot), so the
next run needs no claim round trip of its own.

Delivery is as for single reports: failures that may pass (the control plane is
down, overloaded or restarting) are retried with a backoff capped at
`REPORT_BACKOFF_MAX_S` until the report's deadline; the order of the reports of a
run is kept because its worker waits for each outcome before sending the next.
A log batch is tried once: its shipper (tower.runner.logs) keeps its own retries,
and gets the error a `/logs` request would have raised. A control plane without
`/reports` (older) is sent one request per report or log batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tower.client import ApiError, ConnectionFailed, TlsFailed
from tower.client.runner_api import RunnerApi

logger = logging.getLogger(__name__)

#: the most reports one request carries (the control plane's limit)
MAX_REPORTS_PER_REQUEST = 64
#: the most runs one request claims (the control plane's limit)
MAX_CLAIMED_PER_REQUEST = 64
#: requests in flight at once (see the module doc; a run's reports go one at a time in
#: any case: its worker waits for each outcome before sending the next)
SENDERS = 1
#: first and longest pause between retries: a report gets through within about the
#: longest pause after the control plane is back (s)
REPORT_BACKOFF_START_S = 0.5
REPORT_BACKOFF_MAX_S = 2.0
#: the answer of a control plane that has no `/reports`
NO_SUCH_ROUTE_STATUSES = frozenset({404, 405})


class Delivery:
    """How a report ended."""

    DELIVERED = "delivered"
    #: refused with 409: the attempt is superseded or already ended by the control plane
    STALE = "stale"
    FAILED = "failed"


def is_transient(exc: Exception) -> bool:
    """A failure worth retrying: the server is unreachable, overloaded or failing."""
    if isinstance(exc, ApiError):
        return exc.status >= 500 or exc.status in (408, 429)
    # A TLS failure (untrusted certificate, client certificate refused) needs a fix.
    return isinstance(exc, ConnectionFailed) and not isinstance(exc, TlsFailed)


@dataclass
class Report:
    """One status report waiting to be sent, and, once sent, how it went."""

    run_id: str
    #: `tower.client.runner_api.status_report_body(...)`
    body: dict[str, Any]
    #: monotonic time after which a failing report is given up
    deadline: float
    #: the run's slot goes with the report: it is free once the report is settled
    frees_slot: bool = False
    delivery: str | None = None
    #: the control plane's message when the report was refused or failed
    detail: str = ""
    settled: threading.Event = field(default_factory=threading.Event)
    #: a log batch (`{attempt_seq, fencing_token, lines}`), tried once
    logs: bool = False
    #: why a log batch failed, for its shipper
    error: Exception | None = None
    #: when (time.monotonic) the app started, for a report that says so: counted into
    #: `started_seconds_ago` each time it is sent, so one retried while the control
    #: plane was away still places the start right
    app_started: float | None = None

    def payload(self) -> dict[str, Any]:
        """The body as it goes out now."""
        if self.app_started is None:
            return self.body
        ago = time.monotonic() - self.app_started
        return {**self.body, "started_seconds_ago": round(max(0.0, ago), 6)}

    @property
    def what(self) -> str:
        return "log lines" if self.logs else str(self.body.get("status"))

    def settle(self, delivery: str, detail: str = "") -> None:
        self.delivery, self.detail = delivery, detail
        self.settled.set()


@dataclass
class Slots:
    """What the reporter needs of the runner's run slots."""

    #: takes up to N free slots without waiting; answers how many it took
    take_free: Callable[[int], int]
    release: Callable[[int], None]
    #: starts the run of an assignment on a slot the reporter holds
    start: Callable[[dict[str, Any]], None]
    #: whether to claim runs now (False while the runner is stopping)
    claiming: Callable[[], bool]


class Reporter:
    """Sends the runs' status reports in batches; see the module docstring."""

    def __init__(self, api: RunnerApi, runner_id: Callable[[], str | None], slots: Slots) -> None:
        self._api = api
        self._runner_id = runner_id
        self._slots = slots
        self._queue: deque[Report] = deque()
        self._lock = threading.Condition()
        self._closed = False
        #: the control plane has no `/reports`: one request per report
        self._singly = False
        #: no more claims (the runner is stopping), and how many claiming requests
        #: are in flight (their runs may still start)
        self._no_claims = False
        self._claims_in_flight = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"reporter-{n}", daemon=True)
            for n in range(SENDERS)
        ]

    def start(self) -> Reporter:
        for thread in self._threads:
            thread.start()
        return self

    def send(self, report: Report) -> str:
        """Queue `report` and wait until it is delivered, refused or given up."""
        with self._lock:
            if self._closed:
                self._give_up(report, "the runner is stopping")
            else:
                self._queue.append(report)
                self._lock.notify()
        report.settled.wait()
        return str(report.delivery)

    def ship_logs(
        self, run_id: str, attempt_seq: int, fencing_token: str, lines: list[dict[str, Any]]
    ) -> None:
        """Deliver one log batch, once; raises what `RunnerApi.send_logs` would."""
        body = {"attempt_seq": attempt_seq, "fencing_token": fencing_token, "lines": lines}
        batch = Report(run_id, body, deadline=0.0, logs=True)
        self.send(batch)
        if batch.error is not None:
            raise batch.error

    def stop_claiming(self) -> None:
        """Claim nothing more; returns once the runs of a claim in flight are started,
        so the runner knows every run it must wait for."""
        with self._lock:
            self._no_claims = True
            while self._claims_in_flight:
                self._lock.wait()

    def close(self) -> None:
        """Give up what is still queued and stop the threads (the runner is done)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        backoff = REPORT_BACKOFF_START_S
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if self._deliver(batch):
                backoff = REPORT_BACKOFF_START_S
                continue
            # Nothing got through: pause before the next try (reports past their
            # deadline were given up, the rest are back at the head of the queue).
            time.sleep(backoff)
            backoff = min(backoff * 2, REPORT_BACKOFF_MAX_S)

    def _next_batch(self) -> list[Report] | None:
        with self._lock:
            while not self._queue and not self._closed:
                self._lock.wait()
            if self._closed:
                left = list(self._queue)
                self._queue.clear()
            else:
                count = min(MAX_REPORTS_PER_REQUEST, len(self._queue))
                return [self._queue.popleft() for _ in range(count)]
        for report in left:
            self._give_up(report, "the runner stopped before it got through")
        return None

    def _deliver(self, batch: list[Report]) -> bool:
        """Send `batch`; False when it must be retried after a pause."""
        runner_id = self._runner_id()
        if self._singly or runner_id is None:
            return self._deliver_singly(batch)
        with self._lock:
            claiming = not self._no_claims and self._slots.claiming()
            self._claims_in_flight += claiming
        try:
            return self._deliver_batch(runner_id, batch, claiming=claiming)
        finally:
            with self._lock:
                self._claims_in_flight -= claiming
                self._lock.notify_all()

    def _deliver_batch(self, runner_id: str, batch: list[Report], *, claiming: bool) -> bool:
        held = sum(report.frees_slot for report in batch)
        extra = self._slots.take_free(MAX_CLAIMED_PER_REQUEST - held) if claiming else 0
        claim = held + extra if claiming else 0
        statuses = [report for report in batch if not report.logs]
        logs = [report for report in batch if report.logs]
        try:
            answer = self._api.report_statuses(
                runner_id,
                [{"run_id": r.run_id, **r.payload()} for r in statuses],
                claim,
                logs=[{"run_id": r.run_id, **r.body} for r in logs],
            )
        except (ApiError, ConnectionFailed) as exc:
            self._slots.release(extra)
            if isinstance(exc, ApiError) and exc.status in NO_SUCH_ROUTE_STATUSES:
                logger.info("the control plane takes one status report per request")
                self._singly = True
                return self._deliver_singly(batch)
            return self._retry(batch, exc)
        self._settle(statuses, answer.get("results"))
        self._settle(logs, answer.get("log_results"))
        assignments = [a for a in answer.get("assignments") or [] if isinstance(a, dict)]
        self._use_slots(held + extra, assignments[:claim])
        return True

    def _deliver_singly(self, batch: list[Report]) -> bool:
        for index, report in enumerate(batch):
            try:
                self._send_alone(report)
            except (ApiError, ConnectionFailed) as exc:
                if isinstance(exc, ApiError) and not is_transient(exc):
                    self._refused(report, exc.status, exc.detail, code=exc.code)
                    continue
                return self._retry(batch[index:], exc)
            self._settled(report, Delivery.DELIVERED)
        return True

    def _send_alone(self, report: Report) -> None:
        if not report.logs:
            self._api.report_status(report.run_id, report.payload())
            return
        body = report.body
        self._api.send_logs(
            report.run_id, body["attempt_seq"], body["lines"], fencing_token=body["fencing_token"]
        )

    def _settle(self, batch: list[Report], results: object) -> None:
        """Settle the reports of an answered batch; their slots stay with the reporter
        (see `_use_slots`)."""
        answers = results if isinstance(results, list) else []
        for index, report in enumerate(batch):
            result = answers[index] if index < len(answers) else None
            error = result.get("error") if isinstance(result, dict) else None
            if not isinstance(result, dict):
                # An answer without it: a log batch is sent again by its shipper.
                report.error = ApiError(502, "The control plane did not answer this item.")
                self._settled(report, Delivery.FAILED, "not answered", keep_slot=True)
            elif isinstance(error, dict):
                status, message = int(error.get("status") or 0), str(error.get("message"))
                code = str(error.get("code") or "")
                self._refused(report, status, message, code=code, keep_slot=True)
            else:
                self._settled(report, Delivery.DELIVERED, keep_slot=True)

    def _refused(
        self, report: Report, status: int, message: str, *, code: str = "", keep_slot: bool = False
    ) -> None:
        if report.logs:  # the shipper decides, as if its own request had been answered so
            report.error = ApiError(status, message, code=code)
            self._settled(report, Delivery.FAILED, message)
        elif status == 409:
            self._settled(report, Delivery.STALE, message, keep_slot=keep_slot)
        else:
            logger.error("run %s: %s refused (%s %s)", report.run_id, report.what, status, message)
            self._settled(report, Delivery.FAILED, message, keep_slot=keep_slot)

    def _retry(self, batch: list[Report], exc: Exception) -> bool:
        """Put `batch` back at the head of the queue, except what must be given up;
        False: pause before the next try."""
        now = time.monotonic()
        keep: list[Report] = []
        for report in batch:
            if report.logs:
                report.error = exc  # its shipper retries
                self._settled(report, Delivery.FAILED, str(exc))
            elif not is_transient(exc) or now >= report.deadline:
                self._give_up(report, str(exc))
            else:
                logger.warning("run %s: %s not reported yet (%s)", report.run_id, report.what, exc)
                keep.append(report)
        with self._lock:
            self._queue.extendleft(reversed(keep))
        return False

    def _give_up(self, report: Report, why: str) -> None:
        if report.logs:
            report.error = ConnectionFailed(why)
            self._settled(report, Delivery.FAILED, why)
            return
        logger.error("run %s: could not report %s: %s", report.run_id, report.what, why)
        self._settled(report, Delivery.FAILED, why)

    def _settled(
        self, report: Report, delivery: str, detail: str = "", *, keep_slot: bool = False
    ) -> None:
        if report.frees_slot and not keep_slot:
            self._slots.release(1)
        report.settle(delivery, detail)

    def _use_slots(self, slots: int, assignments: list[dict[str, Any]]) -> None:
        """Start the runs claimed for the `slots` an answered batch freed or took; the
        slots left over go back to the runner."""
        for assignment in assignments:
            self._slots.start(assignment)
        self._slots.release(slots - len(assignments))
