"""A small fake of the control plane's runner protocol (docs/runner-protocol.md).

It speaks real HTTP on 127.0.0.1, encrypts each package to the registered
runner's public key exactly as the protocol describes, and records what the
runner reports, so agent tests can assert on the wire traffic.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tower.core.crypto import generate_data_key, load_public_key, rsa_wrap, seal
from tower.core.package import BuiltPackage

TERMINAL = {"exited", "crashed", "errored"}


@dataclass
class FakeRun:
    run_id: str
    package: BuiltPackage
    fields: dict[str, Any]
    blob: bytes = b""
    statuses: list[dict[str, Any]] = field(default_factory=list)
    lines: dict[int, dict[str, Any]] = field(default_factory=dict)
    cancelled: bool = False

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
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.to_cancel: set[str] = set()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FakeControlPlane:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def enqueue(self, package: BuiltPackage, **fields: Any) -> FakeRun:
        run = FakeRun(str(uuid.uuid4()), package, fields)
        with self.lock:
            self.runs[run.run_id] = run
            self.queue.append(run.run_id)
            self.lock.notify_all()
        return run

    def cancel(self, run_id: str) -> None:
        with self.lock:
            self.runs[run_id].cancelled = True
            self.to_cancel.add(run_id)

    def wait_for(self, condition: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("the fake control plane did not see it in time")
                self.lock.wait(min(remaining, 0.1))

    # ------------------------------------------------------------------ protocol

    def register(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.registrations.append(body)
        self.public_key_pem = body["public_key"]
        return 200, {"runner_id": "runner-1", "heartbeat_interval_seconds": 0.2}

    def claim(self, body: dict[str, Any]) -> tuple[int, Any]:
        deadline = time.monotonic() + float(body["wait_seconds"])
        while not self.queue:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 204, None
            self.lock.wait(remaining)
        return 200, {"assignment": self._assignment(self.runs[self.queue.pop(0)])}

    def _assignment(self, run: FakeRun) -> dict[str, Any]:
        assert self.public_key_pem is not None
        key = generate_data_key()
        aad = f"package:{run.run_id}"
        run.blob = seal(key, run.package.data, aad.encode())
        assignment = {
            "run_id": run.run_id,
            "attempt_seq": 1,
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
            "tower_url": self.url,
            "run_token": "ey.run.token",
            "is_scheduled": False,
            "schedule_id": None,
            "schedule_name": None,
        }
        assignment.update(run.fields)
        return assignment

    def status(self, run_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        run = self.runs[run_id]
        if run.cancelled or run.finished():
            return 409, {"message": "not the current attempt", "code": "stale_attempt"}
        run.statuses.append(body)
        return 200, {"status": body["status"]}

    def logs(self, run_id: str, body: dict[str, Any]) -> tuple[int, Any]:
        run = self.runs[run_id]
        for line in body["lines"]:
            run.lines[line["line_num"]] = line
        return 200, {"accepted": len(body["lines"])}

    def heartbeat(self, body: dict[str, Any]) -> tuple[int, Any]:
        self.heartbeats.append(body)
        cancel = sorted(self.to_cancel & set(body["run_ids"]))
        return 200, {"cancel": cancel}


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
            run_id = self.path.split("/")[4]
            with plane.lock:
                blob = plane.runs[run_id].blob
            self._send(200, blob, "application/octet-stream")

        def do_POST(self) -> None:
            if self.headers.get("Authorization") != "Bearer rt-test":
                self._send(401, {"message": "bad runner token"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
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
            if parts[5] == "status":
                return plane.status(parts[4], body)
            return plane.logs(parts[4], body)

    return Handler
