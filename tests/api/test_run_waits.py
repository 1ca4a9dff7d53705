"""POST /v1/runs/await through HTTP, on SQLite and PostgreSQL: a long poll that answers
as soon as one of the listed runs ends."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package
from tower.server.store import models

# Wake-ups are in-process notifications, so an answer after a run ends is prompt;
# the bound is loose because CI hosts are slow, and far below the 2 s re-check.
PROMPT_S = 0.5


@pytest.fixture
def deployed(api_server: ApiServer, tmp_path: Path) -> ApiServer:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        assert deploy(api, "hello", make_package(tmp_path / "pkg")).status_code == 201
    return api_server


def start_run(api: httpx.Client) -> int:
    response = api.post("/apps/hello/runs", json={"parameters": {}})
    assert response.status_code == 201, response.text
    return response.json()["run"]["number"]


def await_runs(api: httpx.Client, numbers: list[int], timeout: float) -> httpx.Response:
    body = {
        "runs": [{"app_name": "hello", "number": n} for n in numbers],
        "timeout_seconds": timeout,
    }
    return api.post("/runs/await", json=body)


def statuses(response: httpx.Response) -> list[tuple[int, str]]:
    assert response.status_code == 200, response.text
    return [(run["number"], run["status"]) for run in response.json()["runs"]]


def test_answers_at_once_when_a_run_has_already_ended(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        start_run(api)
        a = runner.claim()
        runner.status(a, "running")
        runner.status(a, "exited", exit_code=0)
        started = time.monotonic()
        response = await_runs(api, [1], timeout=30)
        assert time.monotonic() - started < 2
    assert statuses(response) == [(1, "exited")]
    run = response.json()["runs"][0]
    assert run["exit_code"] == 0 and run["status_group"] == "successful"
    assert run["$link"].endswith("/apps/hello/runs/1") and run["app_name"] == "hello"


def test_blocks_while_active_and_answers_promptly_when_the_run_ends(
    deployed: ApiServer,
) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        start_run(api)
        a = runner.claim()
        runner.status(a, "running")
        finished: dict[str, float] = {}

        def finish_later() -> None:
            time.sleep(1.0)
            assert runner.status(a, "crashed", exit_code=7).status_code == 200
            finished["at"] = time.monotonic()

        finisher = threading.Thread(target=finish_later)
        started = time.monotonic()
        finisher.start()
        response = await_runs(api, [1], timeout=30)
        answered = time.monotonic()
        finisher.join(10)
    assert statuses(response) == [(1, "crashed")]
    assert response.json()["runs"][0]["exit_code"] == 7
    assert answered - started >= 0.9, "it must wait while the run is active"
    assert answered - finished["at"] < PROMPT_S, "woken by the status change, not a poll"


def test_answers_after_the_timeout_with_runs_still_active(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        start_run(api)
        start_run(api)
        runner.status(runner.claim(), "running")
        started = time.monotonic()
        response = await_runs(api, [2, 1], timeout=1)
        waited = time.monotonic() - started
        # timeout 0 is a plain read of the current states
        at_once = await_runs(api, [1], timeout=0)
    assert statuses(response) == [(2, "pending"), (1, "running")]
    assert 1.0 <= waited < 3.0
    assert statuses(at_once) == [(1, "running")]


def test_one_ended_run_answers_for_all_in_the_order_asked(deployed: ApiServer) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        for _ in range(3):
            start_run(api)
        first, second = runner.claim(), runner.claim()
        runner.status(first, "running")
        runner.status(second, "running")

        def cancel_later() -> None:
            time.sleep(0.5)
            api.post(f"/apps/hello/runs/{second['run_number']}")  # cancel it

        canceller = threading.Thread(target=cancel_later)
        canceller.start()
        response = await_runs(api, [3, 2, 1, 2], timeout=30)
        canceller.join(10)
    assert statuses(response) == [
        (3, "pending"),
        (2, "cancelled"),
        (1, "running"),
        (2, "cancelled"),
    ]


def test_notices_changes_made_without_a_wake_up(deployed: ApiServer) -> None:
    # Another control-plane process changes runs without notifying this one: the
    # waiter must still see it at its periodic re-check.
    with deployed.client() as api:
        start_run(api)
        run_id = api.get("/apps/hello/runs/1").json()["run"]["run_id"]

        def change_behind_its_back() -> None:
            time.sleep(0.5)
            with deployed.ctx.sessions.begin() as session:
                session.execute(
                    update(models.Run)
                    .where(models.Run.id == uuid.UUID(run_id))
                    .values(status="errored", status_message="changed elsewhere")
                )

        changer = threading.Thread(target=change_behind_its_back)
        started = time.monotonic()
        changer.start()
        response = await_runs(api, [1], timeout=30)
        changer.join(10)
    assert statuses(response) == [(1, "errored")]
    assert time.monotonic() - started < 5


def test_runs_of_several_apps_are_told_apart(deployed: ApiServer, tmp_path: Path) -> None:
    runner = FakeRunner(deployed)
    with deployed.client() as api:
        api.post("/apps", json={"name": "other"})
        assert deploy(api, "other", make_package(tmp_path / "other", "other")).status_code == 201
        start_run(api)
        start_run(api)
        api.post("/apps/other/runs", json={"parameters": {}})
        a = runner.claim()
        runner.status(a, "running")
        runner.status(a, "exited", exit_code=0)
        body = {"runs": [{"app_name": "other", "number": 1}, {"app_name": "hello", "number": 1}]}
        both = api.post("/runs/await", json=body)
        # hello has a run #2, other does not: the pair must match, not each half
        missing = api.post("/runs/await", json={"runs": [{"app_name": "other", "number": 2}]})
    runs = both.json()["runs"]
    assert [(r["app_name"], r["number"], r["status"]) for r in runs] == [
        ("other", 1, "pending"),
        ("hello", 1, "exited"),
    ]
    assert missing.status_code == 404 and "'other' has no run #2" in missing.json()["detail"]


def test_unknown_app_or_run_is_a_404_naming_it(deployed: ApiServer) -> None:
    with deployed.client() as api:
        start_run(api)
        missing_run = await_runs(api, [1, 9], timeout=5)
        missing_app = api.post(
            "/runs/await", json={"runs": [{"app_name": "nope", "number": 1}], "timeout_seconds": 5}
        )
    assert missing_run.status_code == 404
    assert "#9" in missing_run.json()["detail"] and missing_run.json()["code"] == "run_not_found"
    assert missing_app.status_code == 404 and "'nope'" in missing_app.json()["detail"]


def test_another_account_cannot_await_your_run(deployed: ApiServer) -> None:
    other_key = deployed.new_user_key("mallory@example.com")
    with deployed.client() as api:
        start_run(api)
    with deployed.client(api_key=other_key) as other:
        response = await_runs(other, [1], timeout=1)
    assert response.status_code == 404
    with deployed.client(api_key="") as anonymous:
        assert await_runs(anonymous, [1], timeout=1).status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"runs": []},
        {"runs": [{"app_name": "hello", "number": 1}] * 101},
        {"runs": [{"app_name": "hello", "number": 1}], "timeout_seconds": 61},
        {"runs": [{"app_name": "hello", "number": 1}], "timeout_seconds": -1},
        {"runs": [{"app_name": "hello", "number": 0}]},
    ],
)
def test_rejects_bad_requests(deployed: ApiServer, body: dict) -> None:
    with deployed.client() as api:
        start_run(api)
        response = api.post("/runs/await", json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("Invalid request")
