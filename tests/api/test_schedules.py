"""Schedules over HTTP, and the scheduler firing them with an injected clock, on SQLite
and PostgreSQL.

The scheduler loop is switched off here (TOWER_SCHEDULER_ENABLED=false): each test
fires ticks itself with `fire_due(ctx, now=...)`, so "ten minutes later" takes no
time. The real loop and the real clock are tested in tests/e2e/test_schedules.py.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests.api.conftest import ApiServer
from tests.api.helpers import deploy, make_package
from tower.server.app import build_context
from tower.server.scheduler.firing import fire_due
from tower.server.services.context import ServerContext
from tower.server.settings import ServerSettings
from tower.server.store import models

APP = "hello"


@pytest.fixture
def server(
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database_url: str,  # parametrizes over both databases; api_server uses it
) -> ApiServer:
    monkeypatch.setenv("TOWER_SCHEDULER_ENABLED", "false")
    api_server: ApiServer = request.getfixturevalue("api_server")
    with api_server.client() as api:
        assert api.post("/apps", json={"name": APP}).status_code == 201
        assert deploy(api, APP, make_package(tmp_path / "v1", APP)).status_code == 201
    return api_server


def _create(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    response = api.post("/schedules", json={"app_name": APP, **fields})
    assert response.status_code == 201, response.text
    return response.json()["schedule"]


def _scheduled_runs(server: ApiServer) -> list[models.Run]:
    with server.ctx.sessions.begin() as session:
        runs = session.scalars(select(models.Run).order_by(models.Run.number))
        return [run for run in runs if run.initiator.get("type") == "tower_scheduler"]


def _due(server: ApiServer, schedule_id: str) -> datetime:
    with server.ctx.sessions.begin() as session:
        schedule = session.get(models.Schedule, uuid.UUID(schedule_id))
        assert schedule is not None and schedule.next_fire_at is not None
        return schedule.next_fire_at


# ----------------------------------------------------------------------- CRUD


def test_create_list_show_update_delete(server: ApiServer) -> None:
    with server.client() as api:
        created = _create(
            api,
            cron="every 15 minutes",
            parameters=[{"name": "friend", "value": "Brad"}],
            timezone="Europe/Amsterdam",
        )
        assert created["cron"] == "*/15 * * * *"  # the stored form, not the phrase
        assert created["app_name"] == APP and created["environment"] == "default"
        assert created["status"] == "active" and created["overlap_policy"] == "allow"
        assert created["app_status"] == "active" and created["app_version"] == "v1"
        assert created["parameters"][0]["name"] == "friend"
        assert created["parameters"][0]["value"] == "Brad"
        assert created["skipped_ticks"] == 0
        assert len(created["next_fire_times"]) == 5
        for key in ("id", "name", "created_at", "updated_at", "timezone", "owner"):
            assert created[key]

        listed = api.get("/schedules", params={"page": 0, "page_size": 100}).json()
        assert [s["id"] for s in listed["schedules"]] == [created["id"]]
        assert listed["pages"]["total"] == 1
        assert api.get("/schedules", params={"app": "other"}).json()["schedules"] == []
        assert api.get("/schedules", params={"environment": "prod"}).json()["schedules"] == []

        shown = api.get(f"/schedules/{created['name']}").json()["schedule"]
        ticks = [datetime.fromisoformat(t) for t in shown["next_fire_times"]]
        assert all(t.minute % 15 == 0 for t in ticks) and ticks == sorted(ticks)

        updated = api.put(f"/schedules/{created['id']}", json={"cron": "0 9 * * 1"})
        assert updated.status_code == 200, updated.text
        body = updated.json()["schedule"]
        assert body["cron"] == "0 9 * * 1"
        assert body["parameters"] == created["parameters"]  # untouched fields stay
        assert datetime.fromisoformat(body["next_fire_at"]).weekday() == 0

        off = api.patch("/schedules/deactivate", json={"ids": [created["id"]]}).json()
        assert off["schedules"][0]["status"] == "disabled"
        assert off["schedules"][0]["next_fire_at"] is None
        on = api.patch("/schedules/activate", json={"ids": [created["id"]]}).json()
        assert on["schedules"][0]["status"] == "active"

        env = api.get("/environments/default").json()
        assert env["number_schedules"] == 1

        deleted = api.request("DELETE", "/schedules", json={"ids": [created["id"]]})
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["schedules"][0]["id"] == created["id"]
        assert api.get("/schedules").json()["schedules"] == []
        assert api.get(f"/schedules/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "location", "fragment"),
    [
        ({"cron": "every blue moon"}, "body.cron", "every 15 minutes"),
        ({"cron": "61 * * * *"}, "body.cron", "minute field"),
        ({"cron": "every 30 seconds"}, "body.cron", "minimum interval is 1 minute"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "body.timezone", "IANA"),
        ({"cron": "* * * * *", "overlap_policy": "queue"}, "body.overlap_policy", "allow"),
        ({"cron": "* * * * *", "app_version": "v1"}, "body.app_version", "promote"),
        (
            {"cron": "* * * * *", "parameters": [{"name": "nope", "value": "1"}]},
            "body.parameters",
            "Unknown parameter",
        ),
    ],
)
def test_bad_input_is_a_422_naming_the_problem_and_nothing_is_created(
    server: ApiServer, fields: dict[str, Any], location: str, fragment: str
) -> None:
    with server.client() as api:
        response = api.post("/schedules", json={"app_name": APP, **fields})
        assert response.status_code == 422, response.text
        body = response.json()
        assert fragment in body["detail"]
        assert body["errors"][0]["location"] == location
        assert api.get("/schedules").json()["schedules"] == []


def test_unknown_app_environment_or_schedule_is_404(server: ApiServer) -> None:
    with server.client() as api:
        missing_app = api.post("/schedules", json={"app_name": "ghost", "cron": "* * * * *"})
        assert missing_app.status_code == 404 and missing_app.json()["status"] == 404
        missing_env = api.post(
            "/schedules", json={"app_name": APP, "cron": "* * * * *", "environment": "nope"}
        )
        assert missing_env.status_code == 404
        keep = _create(api, cron="* * * * *")
        # All or nothing: one unknown id and the known one stays.
        gone = api.request("DELETE", "/schedules", json={"ids": [keep["id"], "ghost"]})
        assert gone.status_code == 404
        assert len(api.get("/schedules").json()["schedules"]) == 1


# ----------------------------------------------------------------------- firing


def test_a_tick_fires_one_run_with_the_schedule_and_its_parameters(server: ApiServer) -> None:
    with server.client() as api:
        schedule = _create(api, cron="* * * * *", parameters=[{"name": "friend", "value": "Brad"}])
    due = _due(server, schedule["id"])
    assert fire_due(server.ctx, due - timedelta(seconds=1)).fired == 0  # not yet
    assert fire_due(server.ctx, due).fired == 1
    assert fire_due(server.ctx, due + timedelta(seconds=1)).fired == 0  # never twice
    [run] = _scheduled_runs(server)
    assert run.initiator["details"]["schedule_id"] == schedule["id"]
    assert run.initiator["details"]["schedule_name"] == schedule["name"]
    assert {p["name"]: p["value"] for p in run.parameters}["friend"] == "Brad"
    with server.client() as api:
        shown = api.get(f"/apps/{APP}/runs/{run.number}").json()["run"]
        assert shown["is_scheduled"] is True
        assert shown["initiator"]["type"] == "tower_scheduler"
        after = api.get(f"/schedules/{schedule['id']}").json()["schedule"]
    assert datetime.fromisoformat(after["next_fire_at"]) == due + timedelta(minutes=1)
    assert after["last_fired_at"] is not None and after["skipped_ticks"] == 0


def test_a_promotion_between_ticks_is_run_at_the_next_tick(
    server: ApiServer, tmp_path: Path
) -> None:
    with server.client() as api:
        schedule = _create(api, cron="* * * * *")
        due = _due(server, schedule["id"])
        fire_due(server.ctx, due)
        assert deploy(api, APP, make_package(tmp_path / "v2", APP, "print(2)\n")).status_code == 201
        fire_due(server.ctx, due + timedelta(minutes=1))
        versions = [
            api.get(f"/apps/{APP}/runs/{run.number}").json()["run"]["app_version"]
            for run in _scheduled_runs(server)
        ]
    assert versions == ["v1", "v2"]


def test_skip_policy_skips_while_the_previous_run_is_active(server: ApiServer) -> None:
    with server.client() as api:
        schedule = _create(api, cron="* * * * *", overlap_policy="skip")
        allow = _create(api, cron="* * * * *", name="allow-overlap")
    due = _due(server, schedule["id"])
    fire_due(server.ctx, due)
    report = fire_due(server.ctx, due + timedelta(minutes=1))  # the first run is still pending
    assert report.fired == 1 and report.skipped == 1  # `allow` fired, `skip` did not
    with server.client() as api:
        skipped = api.get(f"/schedules/{schedule['id']}").json()["schedule"]
        assert skipped["skipped_ticks"] == 1
        assert "still pending" in skipped["last_skip_reason"]
        first = next(
            run
            for run in _scheduled_runs(server)
            if run.initiator["details"]["schedule_id"] == schedule["id"]
        )
        assert api.post(f"/apps/{APP}/runs/{first.number}").status_code == 200  # cancel
    fire_due(server.ctx, due + timedelta(minutes=2))  # no longer active: fires again
    by_schedule = [run.initiator["details"]["schedule_id"] for run in _scheduled_runs(server)]
    assert by_schedule.count(schedule["id"]) == 2 and by_schedule.count(allow["id"]) == 3


def test_after_downtime_one_run_for_the_missed_period_and_the_misses_are_counted(
    server: ApiServer,
) -> None:
    with server.client() as api:
        schedule = _create(api, cron="*/5 * * * *")
    due = _due(server, schedule["id"])
    # Down for an hour: twelve ticks passed; the latest runs, eleven are counted missed.
    report = fire_due(server.ctx, due + timedelta(minutes=57))
    assert (report.fired, report.skipped) == (1, 11)
    [run] = _scheduled_runs(server)
    assert run.initiator["details"]["tick"].startswith(
        (due + timedelta(minutes=55)).strftime("%Y-%m-%dT%H:%M")
    )
    with server.client() as api:
        after = api.get(f"/schedules/{schedule['id']}").json()["schedule"]
    assert after["skipped_ticks"] == 11
    assert datetime.fromisoformat(after["next_fire_at"]) == due + timedelta(minutes=60)


def test_a_tick_later_than_the_maximum_lateness_is_skipped(server: ApiServer) -> None:
    server.ctx.settings.schedule_max_lateness_seconds = 30
    with server.client() as api:
        schedule = _create(api, cron="*/5 * * * *")
    due = _due(server, schedule["id"])
    report = fire_due(server.ctx, due + timedelta(seconds=90))
    assert (report.fired, report.skipped) == (0, 1)
    assert _scheduled_runs(server) == []
    assert fire_due(server.ctx, due + timedelta(minutes=5, seconds=10)).fired == 1


def test_disabled_apps_are_not_fired_and_deleted_apps_lose_their_schedules(
    server: ApiServer,
) -> None:
    with server.client() as api:
        schedule = _create(api, cron="* * * * *")
        assert api.put(f"/apps/{APP}", json={"status": "disabled"}).status_code == 200
        due = _due(server, schedule["id"])
        assert fire_due(server.ctx, due).fired == 0
        reason = api.get(f"/schedules/{schedule['id']}").json()["schedule"]["last_skip_reason"]
        assert "disabled" in reason
        assert api.delete(f"/apps/{APP}").status_code == 200
        assert api.get("/schedules").json()["schedules"] == []


def test_a_tick_that_cannot_run_is_skipped_without_stopping_the_others(
    server: ApiServer,
) -> None:
    with server.client() as api:
        assert api.post("/environments", json={"name": "empty"}).status_code == 201
        broken = _create(api, cron="* * * * *", environment="empty")  # nothing deployed there
        fine = _create(api, cron="* * * * *", name="fine")
    report = fire_due(server.ctx, _due(server, fine["id"]))
    assert (report.fired, report.skipped) == (1, 1)
    with server.client() as api:
        reason = api.get(f"/schedules/{broken['id']}").json()["schedule"]["last_skip_reason"]
    assert "no version deployed" in reason


def _second_control_plane(server: ApiServer, home: Path) -> ServerContext:
    settings = ServerSettings(
        home=server.ctx.settings.home_dir,
        database_url=server.ctx.settings.database_url,
        scheduler_enabled=False,
    )
    return build_context(settings)


def test_two_control_planes_firing_at_once_start_one_run_per_tick(
    server: ApiServer, tmp_path: Path
) -> None:
    with server.client() as api:
        schedules = [_create(api, cron="* * * * *", name=f"s{i}") for i in range(5)]
    due = _due(server, schedules[0]["id"])
    planes = [server.ctx, _second_control_plane(server, tmp_path)]
    for minute in range(3):
        now = due + timedelta(minutes=minute, milliseconds=5)
        barrier = threading.Barrier(len(planes))
        fired: list[int] = []

        def fire(
            ctx: ServerContext,
            now: datetime = now,
            barrier: Any = barrier,
            fired: list[int] = fired,
        ) -> None:
            barrier.wait()
            fired.append(fire_due(ctx, now).fired)

        threads = [threading.Thread(target=fire, args=(ctx,)) for ctx in planes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sum(fired) == len(schedules)
    ticks = [
        (run.initiator["details"]["schedule_id"], run.initiator["details"]["tick"])
        for run in _scheduled_runs(server)
    ]
    assert len(ticks) == len(set(ticks)) == 3 * len(schedules)


def test_ticks_are_stored_in_utc_for_the_schedules_timezone(server: ApiServer) -> None:
    with server.client() as api:
        schedule = _create(api, cron="every day at 8am", timezone="America/New_York")
    assert schedule["cron"] == "0 8 * * *"
    first = datetime.fromisoformat(schedule["next_fire_at"]).astimezone(UTC)
    assert first.hour in (12, 13)  # 08:00 in New York is 12:00 or 13:00 UTC
