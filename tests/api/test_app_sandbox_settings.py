"""An app's sandbox settings (resource limits, network isolation) through HTTP: set on
create and update, validated, shown on describe, and sent in the claim assignment."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package
from tower.core.sandbox_settings import LIMIT_BOUNDS

DEFAULTS = {
    "memory_mb": None,
    "cpu_seconds": None,
    "file_size_mb": None,
    "processes": None,
    "isolate_network": False,
}


def _sandbox(app: dict) -> dict:
    return {key: app[key] for key in DEFAULTS}


def _claim_one(api_server: ApiServer, api: httpx.Client) -> dict:
    assert api.post("/apps/hello/runs", json={"parameters": {}}).status_code == 201
    assignment = FakeRunner(api_server).claim(wait=2)
    assert assignment is not None
    return assignment


@pytest.fixture
def api(api_server: ApiServer, tmp_path: Path) -> httpx.Client:
    with api_server.client() as client:
        yield client


def test_an_app_has_no_sandbox_settings_until_set(api: httpx.Client) -> None:
    created = api.post("/apps", json={"name": "hello"})
    assert created.status_code == 201
    assert _sandbox(created.json()["app"]) == DEFAULTS
    assert _sandbox(api.get("/apps/hello").json()["app"]) == DEFAULTS


def test_settings_set_on_create_and_update_show_on_describe_and_list(api: httpx.Client) -> None:
    body = {"name": "hello", "memory_mb": 256, "isolate_network": True}
    assert api.post("/apps", json=body).status_code == 201
    assert _sandbox(api.get("/apps/hello").json()["app"]) == {
        **DEFAULTS,
        "memory_mb": 256,
        "isolate_network": True,
    }
    changes = {"cpu_seconds": 60, "file_size_mb": 10, "processes": 32}
    updated = api.put("/apps/hello", json=changes)
    assert updated.status_code == 200, updated.text
    expected = {**DEFAULTS, "memory_mb": 256, "isolate_network": True, **changes}
    assert _sandbox(updated.json()["app"]) == expected
    [listed] = api.get("/apps").json()["apps"]
    assert _sandbox(listed["app"]) == expected
    # Only what is sent changes; 0 goes back to the runner's default.
    reset = api.put("/apps/hello", json={"memory_mb": 0, "isolate_network": False})
    assert _sandbox(reset.json()["app"]) == {
        **expected,
        "memory_mb": None,
        "isolate_network": False,
    }


@pytest.mark.parametrize("name", sorted(LIMIT_BOUNDS))
def test_an_out_of_range_limit_is_a_422_naming_the_field_and_range(
    api: httpx.Client, name: str
) -> None:
    api.post("/apps", json={"name": "hello", "memory_mb": 512})
    maximum, _unit = LIMIT_BOUNDS[name]
    for bad in (-1, maximum + 1):
        answer = api.put("/apps/hello", json={name: bad})
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        assert name in detail and f"from 1 to {maximum}" in detail, detail
        assert answer.json()["errors"][0]["location"] == f"body.{name}"
    refused = api.post("/apps", json={"name": "other", name: maximum + 1})
    assert refused.status_code == 422 and name in refused.json()["detail"]
    assert api.get("/apps/other").status_code == 404  # nothing half-created
    # The bad request lost nothing: the earlier setting stands.
    assert api.get("/apps/hello").json()["app"]["memory_mb"] == 512


def test_a_limit_must_be_a_number_and_isolation_a_boolean(api: httpx.Client) -> None:
    api.post("/apps", json={"name": "hello"})
    for body in ({"memory_mb": "lots"}, {"processes": True}, {"isolate_network": "yes"}):
        answer = api.put("/apps/hello", json=body)
        assert answer.status_code == 422, (body, answer.text)
        [field] = body
        assert field in answer.json()["detail"]


def test_the_claim_assignment_carries_the_app_sandbox_settings(
    api_server: ApiServer, api: httpx.Client, tmp_path: Path
) -> None:
    api.post("/apps", json={"name": "hello"})
    deploy(api, "hello", make_package(tmp_path, "hello")).raise_for_status()
    plain = _claim_one(api_server, api)
    assert plain["limits"] == {} and plain["isolate_network"] is False

    api.put("/apps/hello", json={"memory_mb": 128, "processes": 16, "isolate_network": True})
    limited = _claim_one(api_server, api)
    assert limited["limits"] == {"memory_mb": 128, "processes": 16}
    assert limited["isolate_network"] is True


def test_sandbox_changes_are_audited(api: httpx.Client) -> None:
    api.post("/apps", json={"name": "hello"})
    api.put("/apps/hello", json={"memory_mb": 64, "isolate_network": True})
    events = api.get("/audit-events", params={"page_size": 1000}).json()["audit_events"]
    [update] = [e for e in events if e["action"] == "app.update"]
    assert update["details"]["changes"] == {"sandbox": {"memory_mb": 64, "isolate_network": True}}
