"""`tower audit list` against an in-memory fake of the Tower API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.unit.cli_fakes import error, isolate_config, serve, tower

EVENT = {
    "id": "0b5c",
    "created_at": "2026-01-31T08:00:00.000Z",
    "action": "secret.update",
    "target": "secrets/DB_PASSWORD",
    "actor": {
        "user_id": "5f0e",
        "email": "ada@example.com",
        "credential_kind": "api_key",
        "credential": "sk-abcd…wxyz",
    },
    "details": {"environment": "prod"},
}


class FakeTower:
    def __init__(self, events: list[dict], num_pages: int = 1) -> None:
        self.events = events
        self.num_pages = num_pages
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path != "/v1/audit-events":
            return error(404, "no such endpoint")
        if request.url.params.get("since") == "yesterday":
            return error(422, "'yesterday' is not an RFC 3339 timestamp for since")
        pages = {"page": 1, "page_size": 20, "num_pages": self.num_pages, "total": 1}
        return httpx.Response(200, json={"audit_events": self.events, "pages": pages})


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_config(tmp_path, monkeypatch)


def test_lists_events_with_who_and_which_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = serve(FakeTower([EVENT], num_pages=3), monkeypatch)
    result = tower("audit", "list", "--action", "secret", "--since", "2026-01-01T00:00:00Z")
    assert result.exit_code == 0, result.output
    for text in ("secret.update", "secrets/DB_PASSWORD", "ada@example.com", "sk-abcd…wxyz"):
        assert text in result.output
    assert "environment=prod" in result.output
    assert "--page 2" in result.output
    params = fake.requests[0].url.params
    assert params["action"] == "secret"
    assert params["since"] == "2026-01-01T00:00:00Z"
    assert "until" not in params


def test_json_prints_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(FakeTower([EVENT]), monkeypatch)
    result = tower("audit", "list", "--json")
    assert result.exit_code == 0, result.output
    assert '"audit_events"' in result.output


def test_nothing_found_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(FakeTower([]), monkeypatch)
    result = tower("audit", "list")
    assert result.exit_code == 0
    assert "No audit events match." in result.output


def test_a_bad_filter_is_the_servers_message(monkeypatch: pytest.MonkeyPatch) -> None:
    serve(FakeTower([]), monkeypatch)
    result = tower("audit", "list", "--since", "yesterday")
    assert result.exit_code == 1
    assert "RFC 3339" in result.output
