"""Retries, timeouts, fencing, cancel (incl. children) and the run graph, through HTTP."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package
from tower.server.services import lifecycle
from tower.server.store import models
from tower.server.store.types import utcnow


@pytest.fixture
def deployed(api_server: ApiServer, tmp_path: Path) -> ApiServer:
    with api_server.client() as api:
        for name in ("hello", "child"):
            api.post("/apps", json={"name": name})
            assert deploy(api, name, make_package(tmp_path / name, name)).status_code == 201
    return api_server


def _policy(max_retries: int, delay: int = 0, backoff: bool = False) -> dict[str, Any]:
    return {
        "max_retries": max_retries,
        "retry_delay_seconds": delay,
        "use_exponential_backoff": backoff,
    }


def _run(api: httpx.Client, app: str = "hello", **body: Any) -> dict[str, Any]:
    response = api.post(f"/apps/{app}/runs", json={"parameters": {}, **body})
    assert response.status_code == 201, response.text
    return response.json()["run"]


def _describe(api: httpx.Client, number: int, app: str = "hello") -> dict[str, Any]:
    return api.get(f"/apps/{app}/runs/{number}").json()["run"]


def _wait_status(
    api: httpx.Client, number: int, status: str, timeout: float = 10, app: str = "hello"
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = _describe(api, number, app)
        if run["status"] == status or time.monotonic() > deadline:
            return run
        time.sleep(0.05)


def _attempt(runner: FakeRunner, exit_code: int, line: str) -> dict[str, Any]:
    a = runner.claim(wait=5)
    assert a is not None
    assert runner.status(a, "running").status_code == 200
    n = a["first_line_num"]
    assert runner.logs(a, (n, "program", line)).status_code == 200
    final = "exited" if exit_code == 0 else "crashed"
    assert runner.status(a, final, exit_code=exit_code).status_code == 200
    return a


def test_app_retry_policy_gives_three_attempts_with_their_own_lines(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        updated = api.put("/apps/hello", json={"retry_policy": _policy(2)})
        assert updated.status_code == 200
        assert updated.json()["app"]["retry_policy"] == _policy(2)
        run = _run(api)
        assert run["retry_policy"] == _policy(2)
        seqs = [_attempt(runner, 1, f"attempt {i}")["attempt_seq"] for i in (1, 2, 3)]
        assert seqs == [1, 2, 3]
        assert runner.claim() is None  # retries used up: nothing left in the queue
        final = _describe(api, run["number"])
        assert final["status"] == "crashed" and final["num_attempts"] == 3
        assert final["exit_code"] == 1 and final["status_group"] == "failed"
        assert [(a["seq"], a["status"], a["exit_code"]) for a in final["attempts"]] == [
            (1, "crashed", 1),
            (2, "crashed", 1),
            (3, "crashed", 1),
        ]
        assert all(a["started_at"] and a["ended_at"] for a in final["attempts"])
        lines = api.get(f"/apps/hello/runs/{run['number']}/logs").json()["log_lines"]
        assert [(line["attempt_seq"], line["content"]) for line in lines] == [
            (1, "attempt 1"),
            (2, "attempt 2"),
            (3, "attempt 3"),
        ]
        listed = api.get("/apps/hello").json()["runs"][0]
        assert listed["num_attempts"] == 3 and "attempts" not in listed


def test_a_retry_that_succeeds_ends_exited(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        run = _run(api, retry_policy=_policy(3))
        _attempt(runner, 1, "first")
        _attempt(runner, 0, "second")
        final = _describe(api, run["number"])
        assert final["status"] == "exited" and final["exit_code"] == 0
        assert final["num_attempts"] == 2 and runner.claim() is None
        # The override was for that run only.
        assert api.get("/apps/hello").json()["app"]["retry_policy"] == _policy(0)


def test_backoff_delays_are_respected(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        run = _run(api, retry_policy=_policy(2, delay=1, backoff=True))
        _attempt(runner, 1, "first")
        retrying = _describe(api, run["number"])
        assert retrying["status"] == "retrying" and retrying["ended_at"] is None
        waits = []
        for _retry in (1, 2):
            crashed_at = time.monotonic()
            assert _describe(api, run["number"])["status"] == "retrying"
            a = runner.claim(wait=10)
            assert a is not None
            waits.append(time.monotonic() - crashed_at)
            runner.status(a, "running")
            runner.status(a, "crashed", exit_code=3)
        # 1 s before the first retry, 2 s before the second (the clock acts on time).
        assert 0.8 <= waits[0] < 2.0, waits
        assert 1.8 <= waits[1] < 3.0, waits
        assert _describe(api, run["number"])["status"] == "crashed"


def test_exited_and_cancelled_runs_are_not_retried(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        ok = _run(api, retry_policy=_policy(3))
        _attempt(runner, 0, "fine")
        assert _describe(api, ok["number"])["num_attempts"] == 1
        cancelled = _run(api, retry_policy=_policy(3))
        a = runner.claim()
        runner.status(a, "running")
        assert api.post(f"/apps/hello/runs/{cancelled['number']}").status_code == 200
        assert runner.claim() is None
        assert _describe(api, cancelled["number"])["status"] == "cancelled"


def test_a_retrying_run_can_be_cancelled(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        run = _run(api, retry_policy=_policy(2, delay=60))
        _attempt(runner, 1, "first")
        assert _describe(api, run["number"])["status"] == "retrying"
        answer = api.post(f"/apps/hello/runs/{run['number']}")
        assert answer.json()["run"]["status"] == "cancelled"
        assert runner.claim() is None


def test_a_disabled_app_is_not_retried(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        run = _run(api, retry_policy=_policy(2, delay=1))
        a = runner.claim()
        runner.status(a, "running")
        assert api.patch("/apps/hello", json={"status": "disabled"}).status_code == 200
        runner.status(a, "crashed", exit_code=1)
        final = _wait_status(api, run["number"], "crashed", timeout=3)
        assert final["status"] == "crashed" and final["num_attempts"] == 1


def test_retry_policy_ranges_are_enforced(deployed: ApiServer) -> None:
    with deployed.client() as api:
        for bad in (_policy(11), _policy(1, delay=3601), _policy(-1)):
            answer = api.put("/apps/hello", json={"retry_policy": bad})
            assert answer.status_code == 422, bad
        too_many = api.post("/apps/hello/runs", json={"retry_policy": _policy(99)})
        assert too_many.status_code == 422
        assert api.put("/apps/nope", json={"status": "disabled"}).status_code == 404


def test_pending_timeout_errors_a_run_no_runner_takes(deployed: ApiServer) -> None:
    with deployed.client() as api:
        assert (
            api.put("/apps/hello", json={"pending_timeout": 1}).json()["app"]["pending_timeout"]
            == 1
        )
        run = _run(api, retry_policy=_policy(3))
        final = _wait_status(api, run["number"], "errored", timeout=5)
        assert final["status"] == "errored" and "pending timeout" in final["status_message"]
        assert final["num_attempts"] == 0  # never attempted, so never retried


def test_running_timeout_stops_the_run_through_the_heartbeat(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.put("/apps/hello", json={"running_timeout": 1})
        run = _run(api)
        a = runner.claim()
        runner.status(a, "running")
        started = time.monotonic()
        beat = runner.http.post(
            "/heartbeat",
            json={"runner_id": runner.runner_id, "run_ids": [a["run_id"]], "wait_seconds": 10},
        )
        assert beat.json()["cancel"] == [a["run_id"]]
        assert time.monotonic() - started < 3
        final = _describe(api, run["number"])
        assert final["status"] == "errored" and "running timeout" in final["status_message"]


def test_heartbeat_long_poll_answers_the_moment_a_run_is_cancelled(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        run = _run(api)
        a = runner.claim()
        runner.status(a, "running")
        quiet = time.monotonic()
        beat = runner.http.post(
            "/heartbeat",
            json={"runner_id": runner.runner_id, "run_ids": [a["run_id"]], "wait_seconds": 0.5},
        )
        assert beat.json()["cancel"] == [] and time.monotonic() - quiet >= 0.45
        timer = threading.Timer(0.5, lambda: api.post(f"/apps/hello/runs/{run['number']}"))
        timer.start()
        started = time.monotonic()
        beat = runner.http.post(
            "/heartbeat",
            json={"runner_id": runner.runner_id, "run_ids": [a["run_id"]], "wait_seconds": 30},
        )
        elapsed = time.monotonic() - started
        timer.join()
        assert beat.json()["cancel"] == [a["run_id"]]
        assert elapsed < 1.5, elapsed


def test_heartbeat_long_poll_answers_a_run_claimed_while_it_waits(deployed: ApiServer) -> None:
    """A long poll names the runs held when it began; a run the runner claims while it
    waits, then cancelled, is answered at once all the same, not at the next beat."""
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        _run(api)
        held = runner.claim()
        runner.status(held, "running")
        answers: list[httpx.Response] = []
        beat = {"runner_id": runner.runner_id, "run_ids": [held["run_id"]], "wait_seconds": 20}
        polling = threading.Thread(
            target=lambda: answers.append(runner.http.post("/heartbeat", json=beat))
        )
        started = time.monotonic()
        polling.start()
        time.sleep(0.3)  # the poll is waiting
        late = _run(api)
        claimed = runner.claim()
        assert claimed["run_number"] == late["number"]
        api.post(f"/apps/hello/runs/{late['number']}").raise_for_status()
        polling.join(10)
        elapsed = time.monotonic() - started
        assert answers and answers[0].json()["cancel"] == [claimed["run_id"]]
        assert elapsed < 2, elapsed
        # Runs ended before a poll began are not answered again.
        quiet = runner.http.post("/heartbeat", json={**beat, "wait_seconds": 0.5})
        assert quiet.json()["cancel"] == []


def test_heartbeat_does_not_tell_a_runner_to_stop_runs_it_ended_itself(
    deployed: ApiServer,
) -> None:
    """A busy runner beats while its final reports are on their way: the runs they
    ended are not answered as runs to stop (its long poll would end at once, beat
    after beat); a run the control plane cancelled still is."""
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        exited = _run(api)
        crashed = _run(api, retry_policy=_policy(1, delay=60))
        cancelled = _run(api)
        a, b, c = runner.claim(), runner.claim(), runner.claim()
        assert [x["run_number"] for x in (a, b, c)] == [
            exited["number"],
            crashed["number"],
            cancelled["number"],
        ]
        for held in (a, b, c):
            runner.status(held, "running").raise_for_status()
        runner.status(a, "exited", exit_code=0).raise_for_status()
        runner.status(b, "crashed", exit_code=3).raise_for_status()
        assert _describe(api, crashed["number"])["status"] == "retrying"
        ended = [a["run_id"], b["run_id"]]
        started = time.monotonic()
        beat = runner.http.post(
            "/heartbeat",
            json={"runner_id": runner.runner_id, "run_ids": ended, "wait_seconds": 0.5},
        )
        assert beat.json()["cancel"] == []
        assert time.monotonic() - started >= 0.45, "it long-polled"
        api.post(f"/apps/hello/runs/{cancelled['number']}").raise_for_status()
        beat = runner.http.post(
            "/heartbeat",
            json={"runner_id": runner.runner_id, "run_ids": [*ended, c["run_id"]]},
        )
        assert beat.json()["cancel"] == [c["run_id"]]


def test_fencing_rejects_superseded_attempts(deployed: ApiServer) -> None:
    first, second = FakeRunner(deployed), FakeRunner(deployed)
    with deployed.client() as api:
        run = _run(api, retry_policy=_policy(1))
        old = first.claim()
        first.status(old, "running")
        forged = {**old, "fencing_token": "not-the-token"}
        assert first.status(forged, "exited", exit_code=0).status_code == 409
        assert first.logs(forged, (1, "program", "x")).status_code == 409
        # The first runner goes silent: its lease (2 s in tests) expires, the run is retried.
        new = second.claim(wait=10)
        assert new is not None and new["attempt_seq"] == 2
        assert new["fencing_token"] != old["fencing_token"]
        late = first.status(old, "exited", exit_code=0)
        assert late.status_code == 409
        assert first.logs(old, (50, "program", "late line")).status_code == 409
        second.status(new, "running")
        second.logs(new, (new["first_line_num"], "program", "second attempt"))
        second.status(new, "exited", exit_code=0)
        final = _describe(api, run["number"])
        assert final["status"] == "exited"
        assert [a["status"] for a in final["attempts"]] == ["errored", "exited"]
        contents = [
            line["content"]
            for line in api.get(f"/apps/hello/runs/{run['number']}/logs").json()["log_lines"]
        ]
        assert contents == ["second attempt"]


def test_cancel_from_each_active_status(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        _run(api)
        _run(api)
        a_starting = runner.claim()
        a_running = runner.claim()
        runner.status(a_running, "running")
        retrying = _run(api, retry_policy=_policy(1, delay=60))
        a_retry = runner.claim()
        runner.status(a_retry, "running")
        runner.status(a_retry, "crashed", exit_code=1)
        queued = _run(api)
        expectations = {
            a_starting["run_number"]: "starting",
            a_running["run_number"]: "running",
            retrying["number"]: "retrying",
            queued["number"]: "pending",
        }
        for number, before in expectations.items():
            assert _describe(api, number)["status"] == before
            answer = api.post(f"/apps/hello/runs/{number}")
            assert answer.status_code == 200 and answer.json()["run"]["status"] == "cancelled"


def test_scheduled_runs_can_be_cancelled(deployed: ApiServer) -> None:
    with deployed.client() as api:
        run = _run(api)
    with deployed.ctx.sessions.begin() as session:
        row = session.get(models.Run, uuid.UUID(run["run_id"]))
        row.status = "scheduled"  # a schedule's future run (issue 6 creates these)
    with deployed.client() as api:
        assert api.post(f"/apps/hello/runs/{run['number']}").json()["run"]["status"] == "cancelled"


def test_cancelling_a_parent_cancels_its_active_children(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        parent = _run(api)
        children = [_run(api, "child", parent_run_id=parent["run_id"]) for _ in range(3)]
        grandchild = _run(api, "child", parent_run_id=children[0]["run_id"])
        assert grandchild["initiator"] == {
            "type": "tower_run",
            "details": {"run_app_name": "child", "run_number": children[0]["number"]},
        }
        claimed = [runner.claim() for _ in range(2)]  # oldest first: parent, first child
        for a in claimed:
            runner.status(a, "running")
        finished = children[1]
        a = runner.claim()
        assert a["run_number"] == finished["number"]
        runner.status(a, "running")
        runner.status(a, "exited", exit_code=0)
        answer = api.post(f"/apps/hello/runs/{parent['number']}").json()
        assert answer["run"]["status"] == "cancelled"
        # children[0] (running), children[2] (pending) and the grandchild (pending)
        statuses = {c["number"]: _describe(api, c["number"], "child")["status"] for c in children}
        assert answer["cancelled_child_runs"] == 3, statuses
        assert _describe(api, grandchild["number"], "child")["status"] == "cancelled"
        assert list(statuses.values()).count("cancelled") == 2
        assert _describe(api, finished["number"], "child")["status"] == "exited"


def test_run_graph_lists_the_family(deployed: ApiServer) -> None:
    with deployed.client() as api:
        root = _run(api)
        child = _run(api, "child", parent_run_id=root["run_id"])
        grandchild = _run(api, "child", parent_run_id=child["run_id"])
        alone = _run(api)
        graph = api.get(f"/apps/child/runs/{grandchild['number']}/graph").json()["runs"]
        assert graph == [
            {
                "id": {"app_name": "child", "number": child["number"]},
                "parent_id": {"app_name": "hello", "number": root["number"]},
            },
            {
                "id": {"app_name": "child", "number": grandchild["number"]},
                "parent_id": {"app_name": "child", "number": child["number"]},
            },
        ]
        assert api.get(f"/apps/hello/runs/{alone['number']}/graph").json() == {"runs": []}
        bad_parent = api.post(
            "/apps/hello/runs", json={"parent_run_id": "00000000-0000-0000-0000-000000000000"}
        )
        assert bad_parent.status_code == 422 and "parent_run_id" in bad_parent.json()["detail"]


def test_leases_survive_a_control_plane_restart(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        run = _run(api)
        a = runner.claim()
        runner.status(a, "running")
    # As if the control plane had been down past the lease: the next start renews it.
    with deployed.ctx.sessions.begin() as session:
        row = session.get(models.Run, uuid.UUID(a["run_id"]))
        row.lease_expires_at = datetime(2000, 1, 1, tzinfo=utcnow().tzinfo)
        renewed = lifecycle.extend_leases_after_restart(session, 30)
    assert renewed == 1
    with deployed.client() as api:
        time.sleep(1.5)
        assert _describe(api, run["number"])["status"] == "running"


def test_describe_app_returns_as_many_recent_runs_as_asked(deployed: ApiServer) -> None:
    with deployed.client() as api:
        for _ in range(3):
            _run(api)
        assert [r["number"] for r in api.get("/apps/hello", params={"runs": 2}).json()["runs"]] == [
            3,
            2,
        ]
        assert api.get("/apps/hello", params={"runs": 0}).json()["runs"] == []
        assert len(api.get("/apps/hello").json()["runs"]) == 3


# ---------------------------------------------------------------- batched reports


NOON = "2026-01-01T12:00:00Z"


def _batch(runner: FakeRunner, reports: list[dict[str, Any]], claim: int = 0) -> httpx.Response:
    body = {"runner_id": runner.runner_id, "reports": reports, "claim_max_runs": claim}
    return runner.http.post("/reports", json=body)


def _report(a: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": a["run_id"],
        "attempt_seq": a["attempt_seq"],
        "fencing_token": a["fencing_token"],
        "status": status,
        **extra,
    }


def test_batched_reports_apply_each_on_its_own_and_claim_the_next_runs(
    deployed: ApiServer,
) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        first, second, third, fourth = (_run(api) for _ in range(4))
        a, b = runner.claim_many(2)
        line = {"line_num": 1, "channel": "program", "content": "bye", "reported_at": NOON}
        reports = [
            _report(a, "exited", exit_code=0, started_seconds_ago=0.01, lines=[line]),
            {**_report(b, "crashed", exit_code=3), "fencing_token": "forged"},
            _report(a, "running"),  # a is over: its late report is refused alone
            {**_report(b, "exited"), "run_id": str(uuid.uuid4())},  # no such run
        ]
        answer = _batch(runner, reports, claim=2)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert results[0] == {"run_id": a["run_id"], "status": "exited"}
        assert [r.get("error", {}).get("status") for r in results[1:]] == [409, 409, 404]
        assert "fencing token" in results[1]["error"]["message"]
        # The claim for the slots the reports freed took the next two runs.
        claimed = [x["run_id"] for x in answer.json()["assignments"]]
        assert claimed == [third["run_id"], fourth["run_id"]]

        done = _describe(api, first["number"])
        assert done["status"] == "exited" and done["exit_code"] == 0
        assert [s["content"] for s in api.get("/apps/hello/runs/1/logs").json()["log_lines"]] == [
            "bye"
        ]
        assert _describe(api, second["number"])["status"] == "starting", "the forged one failed"


def test_a_batched_report_refused_halfway_leaves_nothing_and_the_rest_stands(
    deployed: ApiServer,
) -> None:
    """The batch is one transaction; a report refused after its lines were written (an
    `exited` for an attempt that never ran) is undone alone, as its own request would be."""
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        first, second = _run(api), _run(api)
        a, b = runner.claim_many(2)

        def line(content: str) -> dict[str, Any]:
            return {"line_num": 1, "channel": "program", "content": content, "reported_at": NOON}

        reports = [
            _report(a, "exited", exit_code=0, lines=[line("undone")]),  # starting → exited
            _report(b, "exited", exit_code=0, started_seconds_ago=0.01, lines=[line("kept")]),
        ]
        answer = _batch(runner, reports)
        assert answer.status_code == 200, answer.text
        refused, applied = answer.json()["results"]
        assert refused["error"]["code"] == "invalid_transition"
        assert applied == {"run_id": b["run_id"], "status": "exited"}

        def contents(number: int) -> list[str]:
            lines = api.get(f"/apps/hello/runs/{number}/logs").json()["log_lines"]
            return [entry["content"] for entry in lines]

        assert _describe(api, first["number"])["status"] == "starting"
        assert contents(first["number"]) == []
        assert _describe(api, second["number"])["status"] == "exited"
        assert contents(second["number"]) == ["kept"]


def test_a_batch_whose_reports_all_stand_claims_a_run_one_of_them_put_back(
    deployed: ApiServer,
) -> None:
    """A batch applied in one go (nothing refused): two reports of the same run in
    order, a crash retried at once, and the claim of the same batch takes that retry."""
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        done, retried = _run(api), _run(api, retry_policy=_policy(1))
        a, b = runner.claim_many(2)
        reports = [
            _report(a, "running"),
            _report(a, "exited", exit_code=0),
            _report(b, "crashed", exit_code=3, started_seconds_ago=0.01),
        ]
        answer = _batch(runner, reports, claim=2)
        assert answer.status_code == 200, answer.text
        assert [r["status"] for r in answer.json()["results"]] == ["running", "exited", "pending"]
        (again,) = answer.json()["assignments"]
        assert (again["run_id"], again["attempt_seq"]) == (b["run_id"], 2)
        assert _describe(api, done["number"])["status"] == "exited"
        attempts = _describe(api, retried["number"])["attempts"]
        assert [(x["status"], x["exit_code"]) for x in attempts] == [
            ("crashed", 3),
            ("starting", None),
        ]


def test_batched_log_lines_are_stored_before_the_reports_and_fenced_alone(
    deployed: ApiServer,
) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        _run(api)
        (a,) = runner.claim_many(1)
        line = {"line_num": 1, "channel": "program", "content": "hi", "reported_at": NOON}
        fenced = {k: a[k] for k in ("run_id", "attempt_seq", "fencing_token")}
        body = {
            "runner_id": runner.runner_id,
            "logs": [
                {**fenced, "lines": [line]},
                {**fenced, "fencing_token": "forged", "lines": [{**line, "line_num": 2}]},
            ],
            "reports": [_report(a, "exited", exit_code=0, started_seconds_ago=0)],
        }
        answer = runner.http.post("/reports", json=body)
        assert answer.status_code == 200, answer.text
        first, forged = answer.json()["log_results"]
        assert first == {"run_id": a["run_id"], "accepted": 1}
        assert forged["error"]["status"] == 409
        assert answer.json()["results"] == [{"run_id": a["run_id"], "status": "exited"}]
        lines = api.get("/apps/hello/runs/1/logs").json()["log_lines"]
        assert [line["content"] for line in lines] == ["hi"]


def test_a_stopping_runner_claims_nothing_with_its_reports(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        _run(api)
        stop = runner.http.post("/claims/stop", json={"runner_id": runner.runner_id})
        assert stop.status_code == 204
        answer = _batch(runner, [], claim=3)
        assert answer.status_code == 200
        assert answer.json() == {"results": [], "log_results": [], "assignments": []}
        assert _describe(api, 1)["status"] == "pending"


def test_a_malformed_batch_is_refused_whole(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    too_many = [{"run_id": str(uuid.uuid4())}] * 65
    for body in (
        {"runner_id": runner.runner_id, "reports": too_many},
        {"runner_id": runner.runner_id, "reports": [], "claim_max_runs": 65},
        {"reports": []},
    ):
        answer = runner.http.post("/reports", json=body)
        assert answer.status_code == 422, answer.text


def test_a_claim_for_an_unknown_runner_keeps_the_reports(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        run = _run(api)
        (a,) = runner.claim_many(1)
        body = {
            "runner_id": str(uuid.uuid4()),
            "reports": [_report(a, "exited", exit_code=0, started_seconds_ago=0)],
            "claim_max_runs": 1,
        }
        answer = runner.http.post("/reports", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"] == [{"run_id": a["run_id"], "status": "exited"}]
        assert answer.json()["claim_error"]["status"] == 404
        assert _describe(api, run["number"])["status"] == "exited"
