"""Runs, the runner protocol and log streaming through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package, sha256
from tower.core import errors
from tower.core.package import extract_package
from tower.server.services import auth
from tower.server.services import runs as runs_service


@pytest.fixture
def deployed(api_server: ApiServer, tmp_path: Path) -> ApiServer:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        assert deploy(api, "hello", make_package(tmp_path / "pkg")).status_code == 201
    return api_server


def test_run_applies_defaults_masks_hidden_and_rejects_unknown(deployed: ApiServer) -> None:
    with deployed.client() as api:
        unknown = api.post(
            "/apps/hello/runs", json={"environment": "default", "parameters": {"nope": "1"}}
        )
        assert unknown.status_code == 422
        assert (
            "nope" in unknown.json()["detail"]
            and unknown.json()["errors"][0]["location"] == "body.parameters"
        )
        created = api.post("/apps/hello/runs", json={"parameters": {"token": "s3cr3t-value"}})
        assert created.status_code == 201
        run = created.json()["run"]
        assert run["number"] == 1 and run["status"] == "pending" and run["app_version"] == "v1"
        params = {p["name"]: p for p in run["parameters"]}
        assert params["friend"]["value"] == "Steve" and params["friend"]["is_override"] is False
        assert params["token"]["value"] != "s3cr3t-value" and params["token"]["hidden"] is True
        described = api.get("/apps/hello/runs/1").json()
        assert described["$links"]["self"].endswith("/apps/hello/runs/1")
        assert "s3cr3t-value" not in json.dumps(described)
        assert api.get("/apps/hello/runs/2").status_code == 404


def test_a_submission_names_what_is_missing(deployed: ApiServer) -> None:
    """App, environment and pinned version come from one query: each missing one is
    still told apart, in the order a user fixes them."""
    with deployed.client() as api:
        no_app = api.post("/apps/nope/runs", json={"parameters": {}})
        assert no_app.status_code == 404 and "App 'nope' was not found" in no_app.json()["detail"]
        no_env = api.post("/apps/hello/runs", json={"environment": "staging", "parameters": {}})
        assert no_env.status_code == 404
        assert "Environment 'staging' does not exist" in no_env.json()["detail"]
        assert api.post("/environments", json={"name": "staging"}).status_code == 201
        nothing_there = api.post(
            "/apps/hello/runs", json={"environment": "staging", "parameters": {}}
        )
        assert nothing_there.status_code == 404
        assert "tower deploy --environment=staging" in nothing_there.json()["detail"]
        assert api.patch("/apps/hello", json={"status": "disabled"}).status_code == 200
        disabled = api.post("/apps/hello/runs", json={"environment": "staging", "parameters": {}})
        assert disabled.status_code == 409 and "disabled" in disabled.json()["detail"]
        assert api.get("/apps/hello/runs").json()["runs"] == []


def test_submissions_written_together_each_get_their_own_answer(deployed: ApiServer) -> None:
    """Runs submitted at the same moment share one transaction: a refused one, or one
    the database rejects, takes nothing from the others."""
    principal = auth.authenticate(deployed.ctx, api_key=deployed.api_key, bearer=None)

    def submission(app: str = "hello", **fields: Any) -> runs_service.Submission:
        return runs_service.Submission(
            principal, app, "default", fields.pop("params", {}), **fields
        )

    unstorable = {"type": "airflow", "details": {"dag": object()}}  # not JSON
    outcomes = runs_service.create_runs(
        deployed.ctx,
        [
            submission(params={"friend": "Ada"}),
            submission("nope"),
            submission(params={"colour": "red"}),
            submission(),
        ],
    )
    first, no_app, unknown, last = outcomes
    assert isinstance(no_app, errors.AppNotFound) and isinstance(unknown, errors.UnknownParameter)
    assert [first.run.number, last.run.number] == [1, 2]  # type: ignore[union-attr]
    one_rejected = runs_service.create_runs(
        deployed.ctx, [submission(), submission(initiator=unstorable), submission()]
    )
    assert isinstance(one_rejected[1], Exception)
    assert [view.run.number for view in (one_rejected[0], one_rejected[2])] == [3, 4]  # type: ignore[union-attr]
    with deployed.client() as api:
        listed = api.get("/apps/hello/runs").json()["runs"]
        assert sorted(run["number"] for run in listed) == [1, 2, 3, 4]
        created = api.get("/audit-events", params={"action": "run.create"}).json()
        assert len(created["audit_events"]) == 4
        first_run = api.get("/apps/hello/runs/1").json()["run"]
        assert {"name": "friend", "value": "Ada"}.items() <= first_run["parameters"][0].items()


def test_concurrent_submissions_get_consecutive_numbers(deployed: ApiServer) -> None:
    def submit(_: int) -> int:
        with deployed.client() as api:
            answer = api.post("/apps/hello/runs", json={"parameters": {}})
            assert answer.status_code == 201, answer.text
            return answer.json()["run"]["number"]

    with ThreadPoolExecutor(8) as pool:
        numbers = list(pool.map(submit, range(40)))
    assert sorted(numbers) == list(range(1, 41))


def test_a_client_cannot_pass_a_run_off_as_scheduled(deployed: ApiServer) -> None:
    with deployed.client() as api:
        spoofed = {"type": "tower_scheduler", "details": {"schedule_id": "x"}}
        answer = api.post("/apps/hello/runs", json={"parameters": {}, "initiator": spoofed})
        assert answer.status_code == 422 and "/v1/schedules" in answer.json()["detail"]
        own = {"type": "airflow", "details": {"dag": "nightly"}}
        created = api.post("/apps/hello/runs", json={"parameters": {}, "initiator": own})
        assert created.status_code == 201
        assert created.json()["run"]["is_scheduled"] is False


def test_runner_protocol_full_run(deployed: ApiServer, tmp_path: Path) -> None:
    runner = FakeRunner(deployed)
    assert runner.claim() is None
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {"friend": "Ada", "token": "t0ken-value"}})
    a = runner.claim()
    assert a is not None and a["run_number"] == 1 and a["attempt_seq"] == 1
    assert a["parameters"] == {"friend": "Ada", "token": "t0ken-value"}
    blob = runner.http.get(f"/runs/{a['run_id']}/package").content
    assert base64.b64decode(a["package_inline"]) == blob  # small packages ride along
    archive = runner.keys.open_package(a, blob)
    assert sha256(archive) == a["package_sha256"]
    manifest = extract_package(archive, tmp_path / "unpacked")
    assert manifest.checksum == a["content_checksum"]
    with deployed.client() as api:
        assert api.get("/apps/hello/runs/1").json()["run"]["status"] == "starting"
        official = api.get("/apps/hello/runs/1", headers={"User-Agent": "Tower CLI"}).json()
        assert official["run"]["status"] == "pending"  # the documented compatibility shim
        assert runner.logs(a, (1, "setup", "installing"), (2, "program", "hi")).status_code == 200
        assert runner.status(a, "running").status_code == 200
        assert runner.logs(a, (2, "program", "hi"), (3, "program", "bye")).status_code == 200
        assert runner.status(a, "crashed", exit_code=3).status_code == 200
        run = api.get("/apps/hello/runs/1").json()["run"]
        assert (run["status"], run["exit_code"], run["status_group"]) == ("crashed", 3, "failed")
        for key in ("starting_at", "started_at", "ended_at"):
            assert run[key] is not None
        assert run["attempts"] == [
            {
                "seq": 1,
                "status": "crashed",
                "starting_at": run["starting_at"],
                "started_at": run["started_at"],
                "ended_at": run["ended_at"],
                "exit_code": 3,
            }
        ]
        lines = api.get("/apps/hello/runs/1/logs").json()["log_lines"]
        assert [(x["line_num"], x["channel"], x["content"]) for x in lines] == [
            (1, "setup", "installing"),
            (2, "program", "hi"),
            (3, "program", "bye"),
        ]
        assert lines[0]["reported_at"].endswith("Z")


def test_stale_attempt_reports_are_rejected(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {}})
    a = runner.claim()
    assert runner.status({**a, "attempt_seq": 2}, "running").status_code == 409
    assert runner.logs(a, (1, "program", "x"), seq=5).status_code == 409
    assert (
        runner.status(a, "exited", exit_code=0).status_code == 409
    )  # starting → exited is not allowed
    assert runner.status(a, "running").status_code == 200
    assert runner.status(a, "exited", exit_code=0).status_code == 200
    assert runner.status(a, "running").status_code == 409  # nothing follows a terminal status


def test_long_poll_claim_wakes_when_a_run_is_enqueued(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    result: dict = {}

    def wait_for_work() -> None:
        started = time.monotonic()
        result["assignment"] = runner.claim(wait=20)
        result["waited"] = time.monotonic() - started

    waiter = threading.Thread(target=wait_for_work)
    waiter.start()
    time.sleep(0.5)
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {}})
    waiter.join(30)
    assert result["assignment"] is not None
    # Woken by the enqueue, not by the 20 s timeout.
    assert result["waited"] < 10


def test_each_run_is_claimed_once(deployed: ApiServer) -> None:
    runners = [FakeRunner(deployed) for _ in range(3)]
    with deployed.client() as api:
        for _ in range(6):
            api.post("/apps/hello/runs", json={"parameters": {}})
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(r: FakeRunner) -> None:
        while (a := r.claim()) is not None:
            with lock:
                claimed.append(a["run_id"])

    threads = [threading.Thread(target=drain, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(claimed) == 6 and len(set(claimed)) == 6


def test_lost_runner_ends_the_run_errored(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {}})
        a = runner.claim()
        runner.status(a, "running")
        deadline = time.monotonic() + 20  # lease is 2 s in tests; the sweep runs every 2 s
        while time.monotonic() < deadline:
            run = api.get("/apps/hello/runs/1").json()["run"]
            if run["status"] == "errored":
                break
            time.sleep(0.2)
        assert run["status"] == "errored" and "runner lost" in run["status_message"]
        assert runner.status(a, "exited", exit_code=0).status_code == 409


def _read_sse(client: httpx.Client, path: str) -> tuple[list[dict], str]:
    events = []
    with client.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
        content_type = response.headers["content-type"]
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "log":
                events.append(json.loads(line[6:]))
    return events, content_type


def test_log_stream_sends_history_then_live_then_closes(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {}})
        a = runner.claim()
        runner.status(a, "running")
        runner.logs(a, (1, "program", "before the stream"))
        received: dict = {}
        stream_path = "/apps/hello/runs/1/logs/stream"
        reader = threading.Thread(
            target=lambda: received.update(
                zip(("events", "type"), _read_sse(api, stream_path), strict=True)
            )
        )
        reader.start()
        time.sleep(0.5)
        runner.logs(a, (2, "program", "while streaming"))
        runner.status(a, "exited", exit_code=0)
        reader.join(30)
        assert not reader.is_alive(), "the stream must close after the run ends"
    assert received["type"].startswith("text/event-stream")
    assert [e["content"] for e in received["events"]] == ["before the stream", "while streaming"]
    assert {e["channel"] for e in received["events"]} == {"program"}


def test_cancel_active_runs_and_tell_the_runner(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {}})
        api.post("/apps/hello/runs", json={"parameters": {}})
        a = runner.claim()
        runner.status(a, "running")
        cancelled = api.post(f"/apps/hello/runs/{a['run_number']}")
        assert cancelled.status_code == 200
        body = cancelled.json()
        assert body["cancelled_child_runs"] == 0
        assert body["run"]["status"] == "cancelled" and body["run"]["cancelled_at"] is not None
        beat = runner.http.post(
            "/heartbeat", json={"runner_id": runner.runner_id, "run_ids": [a["run_id"]]}
        )
        assert beat.json()["cancel"] == [a["run_id"]]
        assert runner.status(a, "exited", exit_code=0).status_code == 409
        pending = api.post("/apps/hello/runs/2").json()["run"]
        assert pending["status"] == "cancelled"
        assert runner.claim() is None  # a cancelled run is never handed out
        again = api.post("/apps/hello/runs/2")
        assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


def test_a_final_report_can_carry_the_start_and_the_last_lines(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {}})
        a = runner.claim()
        time.sleep(0.3)
        line = {"channel": "program", "content": "done", "reported_at": "2026-01-01T00:00:00Z"}
        report = runner.status(
            a,
            "exited",
            exit_code=0,
            started_seconds_ago=0.2,
            lines=[{**line, "line_num": 1}, {**line, "line_num": 2, "content": "bye"}],
        )
        assert report.status_code == 200, report.text
        run = api.get("/apps/hello/runs/1").json()["run"]
        logs = api.get("/apps/hello/runs/1/logs").json()["log_lines"]
    assert run["status"] == "exited"
    starting, started, ended = (
        datetime.fromisoformat(run[key].replace("Z", "+00:00"))
        for key in ("starting_at", "started_at", "ended_at")
    )
    # started_at = receipt - started_seconds_ago: after the claim, 0.2 s before the end.
    assert starting < started < ended
    assert abs((ended - started).total_seconds() - 0.2) < 0.1
    assert run["attempts"][0]["status"] == "exited"
    assert [(x["line_num"], x["content"]) for x in logs] == [(1, "done"), (2, "bye")]


def test_a_start_long_before_the_claim_is_clamped_to_the_claim(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {}})
        a = runner.claim()
        assert runner.status(a, "running", started_seconds_ago=3600).status_code == 200
        run = api.get("/apps/hello/runs/1").json()["run"]
    assert run["started_at"] == run["starting_at"]


def test_a_cancelled_runs_last_lines_are_kept_though_its_status_is_refused(
    deployed: ApiServer,
) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.post("/apps/hello/runs", json={"parameters": {}})
        a = runner.claim()
        assert runner.status(a, "running").status_code == 200
        assert api.post("/apps/hello/runs/1").status_code == 200  # cancel
        line = {"line_num": 1, "channel": "program", "content": "last words"}
        late = runner.status(
            a, "exited", exit_code=0, lines=[{**line, "reported_at": "2026-01-01T00:00:00Z"}]
        )
        assert late.status_code == 409
        logs = api.get("/apps/hello/runs/1/logs").json()["log_lines"]
        assert api.get("/apps/hello/runs/1").json()["run"]["status"] == "cancelled"
    assert [x["content"] for x in logs] == ["last words"]


def test_one_claim_takes_a_backlog_up_to_max_runs(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        for _ in range(3):
            api.post("/apps/hello/runs", json={"parameters": {}})
        first = runner.claim_many(max_runs=2)
        rest = runner.claim_many(max_runs=5)
        statuses = [run["status"] for run in api.get("/apps/hello/runs").json()["runs"]]
    assert [a["run_number"] for a in first] == [1, 2]
    assert [a["run_number"] for a in rest] == [3]
    assert len({a["fencing_token"] for a in first + rest}) == 3
    assert statuses == ["starting"] * 3
    assert runner.claim_many(max_runs=2) == []
