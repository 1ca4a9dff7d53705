"""`tower schedules ...` against an in-memory fake of the Tower API (the requests it sends
and what it prints)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.cli_fakes import error, isolate_config, serve, tower

SCHEDULE_ID = "529fa2f2-6568-4fed-842c-a765f7e94228"


def _schedule(**overrides: Any) -> dict[str, Any]:
    return {
        "id": SCHEDULE_ID,
        "name": "hello-529fa2f2",
        "app_name": "hello",
        "environment": "default",
        "cron": "*/15 * * * *",
        "status": "active",
        "timezone": "UTC",
        "overlap_policy": "allow",
        "parameters": [{"name": "friend", "value": "Brad"}],
        "next_fire_at": "2026-01-01T00:15:00Z",
        "next_fire_times": ["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"],
        "skipped_ticks": 2,
        "last_skip_reason": "overlap policy skip: run #3 is still running",
        **overrides,
    }


@dataclass
class FakeTower:
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=lambda: [_schedule()])

    def handle(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        body = json.loads(content) if content else {}
        path = request.url.path.removeprefix("/v1")
        self.requests.append((request.method, str(request.url), body))
        if path == "/schedules" and request.method == "GET":
            return httpx.Response(200, json={"schedules": self.schedules, "pages": {}})
        if path == "/schedules" and request.method == "POST":
            if "blue moon" in body["cron"]:
                return error(422, "Could not understand the schedule 'every blue moon'")
            return httpx.Response(201, json={"schedule": _schedule(cron="0 * * * *")})
        if path == "/schedules" and request.method == "DELETE":
            return httpx.Response(200, json={"schedules": [_schedule()]})
        if re.fullmatch(r"/schedules/(de)?activate", path):
            status = "active" if path.endswith("/activate") else "disabled"
            return httpx.Response(200, json={"schedules": [_schedule(status=status)]})
        if path.startswith("/schedules/"):
            return httpx.Response(200, json={"schedule": _schedule()})
        return error(404, "no such endpoint")


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTower:
    isolate_config(tmp_path, monkeypatch)
    return serve(FakeTower(), monkeypatch)


def test_list_shows_the_contract_columns_and_filters(fake: FakeTower) -> None:
    result = tower("schedules", "list", "-a", "hello", "-e", "prod")
    assert result.exit_code == 0, result.output
    for text in ("ID", "App", "Environment", "Cron", "Status", SCHEDULE_ID, "*/15 * * * *"):
        assert text in result.output
    url = fake.requests[0][1]
    assert "app=hello" in url and "environment=prod" in url and "page=0" in url


def test_list_says_when_there_are_none(fake: FakeTower) -> None:
    fake.schedules = []
    result = tower("schedules", "list")
    assert result.exit_code == 0 and "No schedules found." in result.output


def test_create_sends_parameters_as_a_name_value_list(fake: FakeTower) -> None:
    result = tower(
        "schedules", "create", "-a", "hello", "-c", "every hour", "-p", "friend=Brad",
        "--timezone", "Europe/Amsterdam", "--overlap", "skip",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    method, _, body = fake.requests[0]
    assert method == "POST"
    assert body == {
        "app_name": "hello",
        "cron": "every hour",
        "environment": "default",
        "parameters": [{"name": "friend", "value": "Brad"}],
        "timezone": "Europe/Amsterdam",
        "overlap_policy": "skip",
    }
    assert SCHEDULE_ID in result.output and "0 * * * *" in result.output


def test_a_rejected_cron_prints_the_servers_reason(fake: FakeTower) -> None:
    result = tower("schedules", "create", "-a", "hello", "-c", "every blue moon")
    assert result.exit_code == 1
    assert "Could not understand the schedule" in result.output


def test_update_sends_only_what_was_given(fake: FakeTower) -> None:
    result = tower("schedules", "update", SCHEDULE_ID, "-c", "0 9 * * 1")
    assert result.exit_code == 0, result.output
    method, url, body = fake.requests[0]
    assert (method, body) == ("PUT", {"cron": "0 9 * * 1"})
    assert url.endswith(f"/schedules/{SCHEDULE_ID}")
    assert tower("schedules", "update", SCHEDULE_ID).exit_code == 2  # nothing to update


def test_show_lists_the_next_runs_and_skips(fake: FakeTower) -> None:
    result = tower("schedules", "show", SCHEDULE_ID)
    assert result.exit_code == 0, result.output
    assert "Next runs:" in result.output and "2026-01-01" in result.output
    assert "friend=Brad" in result.output and "still running" in result.output


def test_delete_activate_and_deactivate_send_ids(fake: FakeTower) -> None:
    assert tower("schedules", "delete", SCHEDULE_ID).exit_code == 0
    assert tower("schedules", "deactivate", SCHEDULE_ID).exit_code == 0
    assert tower("schedules", "activate", SCHEDULE_ID).exit_code == 0
    sent = [(method, url.rsplit("/v1", 1)[1], body) for method, url, body in fake.requests]
    assert sent == [
        ("DELETE", "/schedules", {"ids": [SCHEDULE_ID]}),
        ("PATCH", "/schedules/deactivate", {"ids": [SCHEDULE_ID]}),
        ("PATCH", "/schedules/activate", {"ids": [SCHEDULE_ID]}),
    ]
