"""A small fake of the control plane's runner protocol (docs/runner-protocol.md).

It speaks real HTTP on 127.0.0.1, encrypts each package to the registered
runner's public key exactly as the protocol describes, fences reports by the
attempt's `fencing_token`, long-polls heartbeats, and records what the runner
reports (with the order things arrived in), so agent tests can assert on the wire
traffic. It can also fail like a real one: answer 503 to everything
(`unavailable`), or go away and come back on the same port (`go_down`,
`come_back`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tower.core.crypto import (
    generate_data_key,
    generate_signing_key,
    load_public_key,
    package_statement,
    rsa_wrap,
    seal,
    sign_b64,
    verify_key_b64,
)
from tower.core.package import BuiltPackage

TERMINAL = {"exited", "crashed", "errored"}
STALE = 409, {"message": "not the current attempt", "code": "stale_attempt"}


@dataclass
class FakeRun:
    run_id: str
    package: BuiltPackage
    fields: dict[str, Any]
    blob: bytes = b""
    attempt_seq: int = 1
    #: the current attempt's fencing token; `supersede` and `retry` replace it
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    lines: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: how many times each line_num was received (re-sends are allowed)
    deliveries: Counter[int] = field(default_factory=Counter)
    #: arrival order (the plane's event counter) of each line's first delivery
    line_order: dict[int, int] = field(default_factory=dict)
    #: arrival order of each accepted status
    status_order: list[int] = field(default_factory=list)
    cancelled: bool = False
    #: monotonic time of `cancel`
    cancelled_at: float | None = None

    @property
    def status_names(self) -> list[str]:
        return [s["status"] for s in self.statuses]

    def finished(self) -> bool:
        return bool(self.statuses) and self.statuses[-1]["status"] in TERMINAL


class FakeControlPlane:
    def __init__(self, port: int = 0) -> None:
        self.lock = threading.Condition()
        self.runs: dict[str, FakeRun] = {}
        self.queue: list[str] = []
        self.public_key_pem: str | None = None
        #: signs every package it hands out, like the real control plane
        self.signing_key = generate_signing_key()
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        #: monotonic time each heartbeat arrived
        self.heartbeat_times: list[float] = []
        self.to_cancel: set[str] = set()
        #: reports answered 409 (stale): ("status" | "logs", body)
        self.rejected: list[tuple[str, dict[str, Any]]] = []
        #: how many runs each answered claim handed out
        self.claims: list[int] = []
        #: False: no `/reports` (404), like an older control plane
        self.batch_reports = True
        #: per `/reports` request: (status reports it carried, runs it asked to claim,
        #: runs claimed); log batches it carried are counted in `batched_logs`
        self.report_batches: list[tuple[int, int, int]] = []
        self.batched_logs = 0
        #: the run of each package download, in order
        self.downloads: list[str] = []
        self.heartbeat_interval_s = 0.2
        #: False: answer heartbeats at once, like a server without long-poll
        self.long_poll = True
        #: True: answer every request 503
        self.unavailable = False
        self.events = 0
        self.httpd = self._serve(port)
        self.thread = self._thread()

    def _serve(self, port: int) -> ThreadingHTTPServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        httpd.daemon_threads = True
        return httpd

    def _thread(self) -> threading.Thread:
        return threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> FakeControlPlane:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def go_down(self) -> None:
        """Stop listening (connections are refused); the state survives."""
        self.stop()

    def come_back(self) -> None:
        """Listen again on the same port, with the state from before."""
        self.httpd = self._serve(self.port)
        self.thread = self._thread()
        self.start()

    def enqueue(self, package: BuiltPackage, **fields: Any) -> FakeRun:
        run = FakeRun(str(uuid.uuid4()), package, fields)
        with self.lock:
            self.runs[run.run_id] = run
            self.queue.append(run.run_id)
            self.lock.notify_all()
        return run

    def cancel(self, run_id: str) -> None:
        with self.lock:
            run = self.runs[run_id]
            run.cancelled = True
            run.cancelled_at = time.monotonic()
            self.to_cancel.add(run_id)
            self.lock.notify_all()  # wakes the runner's heartbeat long-poll

    def supersede(self, run_id: str) -> None:
        """The attempt loses its lease and the run is retried elsewhere: new token.

        Unlike the real server, heartbeats do not name the run, so tests see the
        runner react to the 409 alone."""
        with self.lock:
            self.runs[run_id].token = uuid.uuid4().hex

    def retry(self, run_id: str) -> None:
        """The attempt's lease expired: queue the run's next attempt (new token)."""
        with self.lock:
            run = self.runs[run_id]
            run.attempt_seq += 1
            run.token = uuid.uuid4().hex
            self.queue.append(run_id)
            self.lock.notify_all()

    def wait_for(self, condition: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("the fake control plane did not see it in time")
                self.lock.wait(min(remaining, 0.1))

    def _next_event(self) -> int:
        self.events += 1
        return self.events

    # ------------------------------------------------------------------ protocol

    def register(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.registrations.append(body)
        self.public_key_pem = body["public_key"]
        interval = self.heartbeat_interval_s
        return 200, {
            "runner_id": "runner-1",
            "heartbeat_interval_seconds": interval,
            "package_signing_key": verify_key_b64(self.signing_key),
        }

    def claim(self, body: dict[str, Any]) -> tuple[int, Any]:
        deadline = time.monotonic() + float(body["wait_seconds"])
        while not self.queue:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 204, None
            self.lock.wait(remaining)
        wanted = min(int(body.get("max_runs") or 1), len(self.queue))
        taken = [self._assignment(self.runs[self.queue.pop(0)]) for _ in range(wanted)]
        self.claims.append(len(taken))
        return 200, {"assignment": taken[0], "assignments": taken}

    def reports(self, body: dict[str, Any]) -> tuple[int, Any]:
        """Each report as `status` answers it, then a claim without waiting."""
        if not self.batch_reports:
            return 404, {"message": "Not Found"}
        self.batched_logs += len(body.get("logs") or [])
        log_results = [
            _result(batch["run_id"], *self.logs(batch["run_id"], batch))
            for batch in body.get("logs") or []
        ]
        results = [
            _result(report["run_id"], *self.status(report["run_id"], report))
            for report in body["reports"]
        ]
        wanted = min(int(body.get("claim_max_runs") or 0), len(self.queue))
        taken = [self._assignment(self.runs[self.queue.pop(0)]) for _ in range(wanted)]
        asked = int(body.get("claim_max_runs") or 0)
        self.report_batches.append((len(body["reports"]), asked, len(taken)))
        return 200, {"results": results, "log_results": log_results, "assignments": taken}

    def _assignment(self, run: FakeRun) -> dict[str, Any]:
        assert self.public_key_pem is not None
        key = generate_data_key()
        aad = f"package:{run.run_id}"
        run.blob = seal(key, run.package.data, aad.encode())
        assignment = {
            "run_id": run.run_id,
            "attempt_seq": run.attempt_seq,
            "fencing_token": run.token,
            "first_line_num": max(run.lines, default=0) + 1,
            "run_number": 7,
            "app_name": "demo",
            "app_version": "v1",
            "account_name": "admin",
            "environment": "default",
            "parameters": {},
            "secrets": {},
            "invoke": run.package.manifest.invoke,
            "package_url": f"/v1/runner/runs/{run.run_id}/package",
            "package_sha256": run.package.sha256,
            "package_key": rsa_wrap(load_public_key(self.public_key_pem), key),
            "package_aad": aad,
            "content_checksum": run.package.manifest.checksum,
            "version_id": f"version-of-{run.run_id}",
            "package_signature": self.sign(
                f"version-of-{run.run_id}", run.package.sha256, run.package.manifest.checksum
            ),
            "tower_url": self.url,
            "run_token": "ey.run.token",
            "is_scheduled": False,
            "schedule_id": None,
            "schedule_name": None,
        }
        assignment.update(run.fields)
        return assignment

    def sign(self, version_id: str, sha256: str, checksum: str) -> str:
        return sign_b64(self.signing_key, package_statement(version_id, sha256, checksum))

    def _fenced(self, run: FakeRun, body: dict[str, Any]) -> tuple[int, Any] | None:
        """The error answer for a report that is not about the current attempt."""
        if not isinstance(body.get("fencing_token"), str):
            return 422, {"message": "fencing_token is required", "code": "invalid_input"}
        return STALE if body["fencing_token"] != run.token else None

    def status(self, run_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        run = self.runs[run_id]
        rejected = self._fenced(run, body)
        if rejected is None:
            # Like the real control plane: the lines count even when the status is late.
            self._store_lines(run, body.get("lines") or [])
            if run.cancelled or run.finished():
                rejected = STALE  # the control plane ended the attempt first
        if rejected is not None:
            self.rejected.append(("status", body))
            return rejected
        if self._folds_running(run, body):
            run.statuses.append({"status": "running", "folded": True})
            run.status_order.append(self._next_event())
        run.statuses.append(body)
        run.status_order.append(self._next_event())
        return 200, {"status": body["status"]}

    @staticmethod
    def _folds_running(run: FakeRun, body: dict[str, Any]) -> bool:
        """A final report of an app that ran, with no `running` before it, records
        `running` first, as the real control plane does."""
        return (
            body["status"] in ("exited", "crashed")
            and body.get("started_seconds_ago") is not None
            and "running" not in run.status_names
        )

    def logs(self, run_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        run = self.runs[run_id]
        rejected = self._fenced(run, body)
        if rejected is not None:
            self.rejected.append(("logs", body))
            return rejected
        self._store_lines(run, body["lines"])
        return 200, {"accepted": len(body["lines"])}

    def _store_lines(self, run: FakeRun, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            num = line["line_num"]
            run.deliveries[num] += 1
            if num not in run.lines:
                run.lines[num] = line
                run.line_order[num] = self._next_event()

    def heartbeat(self, body: dict[str, Any]) -> tuple[int, Any]:
        if "wait_seconds" not in body:
            return 422, {"message": "wait_seconds is required", "code": "invalid_input"}
        self.heartbeats.append(body)
        self.heartbeat_times.append(time.monotonic())
        run_ids = set(body["run_ids"])
        wait = float(body["wait_seconds"]) if self.long_poll and run_ids else 0.0
        deadline = time.monotonic() + wait
        while True:  # like the real server: answer at once when a run must stop
            cancel = sorted(self.to_cancel & run_ids)
            remaining = deadline - time.monotonic()
            if cancel or remaining <= 0:
                return 200, {"cancel": cancel}
            self.lock.wait(remaining)


def _result(run_id: str, status: int, answer: dict[str, Any]) -> dict[str, Any]:
    """One item of a `/reports` answer: the single call's answer, or its error."""
    if status == 200:
        return {"run_id": run_id, **answer}
    return {"run_id": run_id, "error": {**answer, "status": status}}


def _handler(plane: FakeControlPlane) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body else b"")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if plane.unavailable:
                self._send(503, {"message": "down for maintenance"})
                return
            run_id = self.path.split("/")[4]
            with plane.lock:
                blob = plane.runs[run_id].blob
                plane.downloads.append(run_id)
            self._send(200, blob, "application/octet-stream")

        def do_POST(self) -> None:
            if self.headers.get("Authorization") != "Bearer rt-test":
                self._send(401, {"message": "bad runner token"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            if plane.unavailable:
                self._send(503, {"message": "down for maintenance"})
                return
            parts = self.path.split("/")
            with plane.lock:
                status, answer = self._route(parts, body)
                plane.lock.notify_all()
            self._send(status, answer)

        def _route(self, parts: list[str], body: dict[str, Any]) -> tuple[int, Any]:
            if parts[3] == "register":
                return plane.register(body)
            if parts[3] == "claim":
                return plane.claim(body)
            if parts[3] == "heartbeat":
                return plane.heartbeat(body)
            if parts[3] == "reports":
                return plane.reports(body)
            if parts[3] == "claims":  # claims/stop: a runner shutting down takes no more
                return 204, None
            if parts[5] == "status":
                return plane.status(parts[4], body)
            return plane.logs(parts[4], body)

    return Handler
