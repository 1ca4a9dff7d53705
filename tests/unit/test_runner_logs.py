"""LogShipper and RunnerApi against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tower.client.runner_api import RunnerApi, status_report_body
from tower.runner.logs import (
    RETRY_BACKOFF_MAX_S,
    LogShipper,
    format_log_line,
    printing_sink,
    utc_timestamp,
)
from tower.runner.timers import Timers

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class Recorder:
    """What the fake control plane saw, and how it should answer."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        self.fail_first = 0
        self.status_override: int | None = None
        self.claim_answer: dict[str, Any] | None = None
        self.lock = threading.Lock()


def make_handler(rec: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def _send(self, status: int, body: Any = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self._body()
            with rec.lock:
                rec.requests.append(("POST", self.path, body, dict(self.headers)))
                if rec.fail_first > 0:
                    rec.fail_first -= 1
                    self._send(503, {"message": "busy"})
                    return
                if rec.status_override:
                    self._send(rec.status_override, {"message": "nope"})
                    return
                if self.path.endswith("/logs"):
                    assert body is not None
                    rec.batches.append(body)
                    self._send(200, {"accepted": len(body["lines"])})
                elif self.path.endswith("/claim"):
                    if rec.claim_answer is None:
                        self._send(204)
                    else:
                        self._send(200, rec.claim_answer)
                elif self.path.endswith("/heartbeat"):
                    self._send(200, {"cancel": ["r-9"]})
                else:
                    self._send(200, {"status": "running"})

        def do_GET(self) -> None:
            with rec.lock:
                rec.requests.append(("GET", self.path, None, dict(self.headers)))
            data = b"\x00encrypted"
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Recorder, str]]:
    rec = Recorder()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(rec))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def all_lines(rec: Recorder) -> list[dict[str, Any]]:
    return [line for batch in rec.batches for line in batch["lines"]]


def test_lines_numbered_stamped_and_flushed_on_close(server: tuple[Recorder, str]) -> None:
    rec, url = server
    shipper = LogShipper(RunnerApi(url, "rt-x"), "r-1", 2).start()
    shipper("setup", "installing")
    for i in range(450):
        shipper("program", f"line {i}")
    assert shipper.close()
    lines = all_lines(rec)
    assert [line["line_num"] for line in lines] == list(range(1, 452))
    assert lines[0] == {**lines[0], "channel": "setup", "content": "installing"}
    assert lines[-1]["content"] == "line 449"
    assert all(RFC3339_Z.match(line["reported_at"]) for line in lines)
    assert all(len(batch["lines"]) <= 200 for batch in rec.batches)
    assert {batch["attempt_seq"] for batch in rec.batches} == {2}
    assert all(path == "/v1/runner/runs/r-1/logs" for _, path, _, _ in rec.requests)
    assert rec.requests[0][3]["Authorization"] == "Bearer rt-x"


def test_lines_ship_within_the_flush_interval(server: tuple[Recorder, str]) -> None:
    rec, url = server
    shipper = LogShipper(RunnerApi(url, "rt-x"), "r-1", 1).start()
    shipper("program", "hello")
    deadline = time.monotonic() + 5
    while not rec.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all_lines(rec)[0]["content"] == "hello"
    shipper.close()


def test_retries_503_without_loss_or_duplicates(server: tuple[Recorder, str]) -> None:
    rec, url = server
    rec.fail_first = 3
    shipper = LogShipper(RunnerApi(url, "rt-x"), "r-1", 1).start()
    for i in range(300):
        shipper("program", f"line {i}")
        if i % 50 == 0:
            time.sleep(0.05)
    assert shipper.close()
    nums = [line["line_num"] for line in all_lines(rec)]
    assert nums == list(range(1, 301))
    assert len(rec.requests) >= len(rec.batches) + 3


def test_numbers_from_first_line_num_and_carries_the_fencing_token(
    server: tuple[Recorder, str],
) -> None:
    rec, url = server
    api = RunnerApi(url, "rt-x")
    shipper = LogShipper(api, "r-1", 2, fencing_token="f-2", first_line_num=101).start()
    for i in range(5):
        shipper("program", f"line {i}")
    assert shipper.close()
    assert [line["line_num"] for line in all_lines(rec)] == list(range(101, 106))
    assert {(batch["attempt_seq"], batch["fencing_token"]) for batch in rec.batches} == {(2, "f-2")}


def test_close_waits_out_an_outage_and_delivers_soon_after(server: tuple[Recorder, str]) -> None:
    rec, url = server
    rec.status_override = 503
    shipper = LogShipper(RunnerApi(url, "rt-x"), "r-1", 1, deadline_s=60).start()
    for i in range(300):
        shipper("program", f"line {i}")
    time.sleep(3.0)  # long enough for the backoff to reach its cap
    closed: list[bool] = []
    closing = threading.Thread(target=lambda: closed.append(shipper.close()))
    closing.start()
    closing.join(0.5)
    assert closing.is_alive(), "close() waits for the backlog"
    with rec.lock:
        rec.status_override = None
    back = time.monotonic()
    closing.join(30)
    assert closed == [True]
    assert time.monotonic() - back < RETRY_BACKOFF_MAX_S + 1.0
    assert [line["line_num"] for line in all_lines(rec)] == list(range(1, 301))


def test_retries_while_server_unreachable() -> None:
    api = RunnerApi("http://127.0.0.1:9", "rt-x")  # discard port: connection refused
    shipper = LogShipper(api, "r-1", 1, deadline_s=0.5).start()
    shipper("program", "lost in the void")
    started = time.monotonic()
    assert not shipper.close()
    assert time.monotonic() - started < 5
    assert shipper.lost == 1


def test_409_stops_shipping(server: tuple[Recorder, str]) -> None:
    rec, url = server
    rec.status_override = 409
    shipper = LogShipper(RunnerApi(url, "rt-x"), "r-1", 1).start()
    shipper("program", "a")
    deadline = time.monotonic() + 5
    while not shipper.stale and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shipper.stale
    shipper("program", "b")
    shipper.close()
    assert len(rec.requests) == 1


def test_runner_api_calls(server: tuple[Recorder, str]) -> None:
    rec, url = server
    api = RunnerApi(url, "rt-x")
    assert api.claim("runner-1", 0.1) == []
    rec.claim_answer = {"assignment": {"run_id": "r-1"}}
    assert api.claim("runner-1", 0.1) == [{"run_id": "r-1"}], "a one-run control plane"
    rec.claim_answer = {"assignment": {"run_id": "r-2"}, "assignments": [{"run_id": "r-2"}]}
    assert api.claim("runner-1", 0.1, max_runs=4) == [{"run_id": "r-2"}]
    assert api.heartbeat("runner-1", ["r-1"], wait_seconds=90) == ["r-9"]
    assert api.download_package("r-1") == b"\x00encrypted"
    status = api.report_status(
        "r-1", status_report_body(1, "exited", exit_code=0, fencing_token="f-1")
    )
    assert status == {"status": "running"}
    assert api.send_logs("r-1", 1, [{"line_num": 1}], fencing_token="f-1") == 1
    posted = {path: body for method, path, body, _ in rec.requests if method == "POST"}
    assert posted["/v1/runner/claim"] == {
        "runner_id": "runner-1",
        "wait_seconds": 0.1,
        "max_runs": 4,
    }
    assert posted["/v1/runner/heartbeat"] == {
        "runner_id": "runner-1",
        "run_ids": ["r-1"],
        "wait_seconds": 60.0,  # the protocol's longest long poll
    }
    assert posted["/v1/runner/runs/r-1/status"] == {
        "attempt_seq": 1,
        "fencing_token": "f-1",
        "status": "exited",
        "exit_code": 0,
    }
    assert posted["/v1/runner/runs/r-1/logs"] == {
        "attempt_seq": 1,
        "fencing_token": "f-1",
        "lines": [{"line_num": 1}],
    }


def test_formatting() -> None:
    moment = datetime(2024, 11, 20, 8, 0, 5, 123456, tzinfo=UTC)
    assert format_log_line(moment, "hi") == "2024-11-20 08:00:05 | hi"
    assert utc_timestamp(moment) == "2024-11-20T08:00:05.123456Z"
    printed: list[str] = []
    printing_sink(printed.append)("program", "hello")
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \| hello$", printed[0])


def test_hand_over_returns_the_queued_lines_instead_of_sending_them(
    server: tuple[Recorder, str],
) -> None:
    rec, url = server
    shipper = LogShipper(RunnerApi(url, "rt-x"), "r-1", 1, flush_interval_s=60).start()
    shipper("program", "a")
    shipper("program", "b")
    lines = shipper.hand_over()
    assert [(line["line_num"], line["content"]) for line in lines] == [(1, "a"), (2, "b")]
    assert rec.requests == [], "the final report carries them"
    shipper("program", "too late")
    assert shipper.hand_over() == []


def test_hand_over_ships_a_long_backlog_itself(server: tuple[Recorder, str]) -> None:
    rec, url = server
    shipper = LogShipper(
        RunnerApi(url, "rt-x"), "r-1", 1, flush_interval_s=60, batch_max_lines=1000
    ).start()
    for n in range(5):
        shipper("program", str(n))
    assert shipper.hand_over(max_lines=3) == []
    assert [line["content"] for line in all_lines(rec)] == ["0", "1", "2", "3", "4"]


def test_on_the_runners_timers_a_short_run_hands_over_without_a_thread(
    server: tuple[Recorder, str],
) -> None:
    rec, url = server
    timers = Timers()
    shipper = LogShipper(RunnerApi(url, "rt-x"), "r-1", 1, flush_interval_s=0.5).start(timers)
    shipper("program", "a")
    lines = shipper.hand_over()
    assert [line["content"] for line in lines] == ["a"]
    time.sleep(0.7)  # past the moment the thread would have started
    assert shipper._thread.ident is None, "no thread was started for the run"
    assert rec.requests == []
    timers.close()


def test_on_the_runners_timers_lines_ship_once_due(server: tuple[Recorder, str]) -> None:
    rec, url = server
    timers = Timers()
    shipper = LogShipper(RunnerApi(url, "rt-x"), "r-1", 1, flush_interval_s=0.05).start(timers)
    shipper("program", "hello")
    deadline = time.monotonic() + 5
    while not rec.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [line["content"] for line in all_lines(rec)] == ["hello"]
    shipper("program", "later")
    assert shipper.close()
    assert [line["content"] for line in all_lines(rec)] == ["hello", "later"]
    timers.close()


def test_on_the_runners_timers_a_full_batch_ships_at_once(server: tuple[Recorder, str]) -> None:
    rec, url = server
    timers = Timers()
    shipper = LogShipper(
        RunnerApi(url, "rt-x"), "r-1", 1, flush_interval_s=60, batch_max_lines=3
    ).start(timers)
    for n in range(3):
        shipper("program", str(n))
    deadline = time.monotonic() + 5
    while not rec.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [line["content"] for line in all_lines(rec)] == ["0", "1", "2"]
    assert shipper.close()
    timers.close()
