"""A runner that stops ends its claim long-poll at once instead of waiting it out."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner
from tower.runner.agent import Agent
from tower.runner.settings import RunnerSettings

LONG_POLL_S = 30.0


def test_stop_claims_ends_the_long_poll_and_every_later_claim(api_server: ApiServer) -> None:
    runner = FakeRunner(api_server)
    answers: list[dict | None] = []
    waiting = threading.Thread(target=lambda: answers.append(runner.claim(wait=LONG_POLL_S)))
    started = time.monotonic()
    waiting.start()
    time.sleep(0.3)  # the claim is in its long poll
    stopped = runner.http.post("/claims/stop", json={"runner_id": runner.runner_id})
    assert stopped.status_code == 204
    waiting.join(LONG_POLL_S)
    assert answers == [None]
    assert time.monotonic() - started < LONG_POLL_S / 2, "the long poll ended early"
    # Nothing is claimed for it afterwards, though a run is pending.
    with api_server.client() as api:
        api.post("/apps", json={"name": "quiet"})
    assert runner.claim(wait=LONG_POLL_S) is None


def test_stop_claims_of_another_runner_is_404(api_server: ApiServer) -> None:
    mine, other = FakeRunner(api_server), FakeRunner(api_server)
    refused = mine.http.post("/claims/stop", json={"runner_id": other.runner_id})
    assert refused.status_code == 404


def test_a_stopping_agent_does_not_wait_out_its_claim(
    api_server: ApiServer, tmp_path: Path
) -> None:
    settings = RunnerSettings(
        url=api_server.url, token=api_server.runner_token(), name="stopper", home=tmp_path
    )
    agent = Agent(settings, claim_wait_s=LONG_POLL_S)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(agent.run()), daemon=True)
    thread.start()
    assert agent.registered.wait(30)
    time.sleep(0.5)  # its first claim is in the long poll
    stopped_at = time.monotonic()
    agent.stop()
    thread.join(LONG_POLL_S)
    assert result == [0]
    assert time.monotonic() - stopped_at < LONG_POLL_S / 2, "the agent waited out its claim"
