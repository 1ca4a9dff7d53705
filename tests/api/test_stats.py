"""GET /v1/stats/runs, GET /v1/stats/apps and the health of the App model, over real HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import ApiServer
from tests.api.run_seeds import add_environment, add_runs, count_queries, create_app

SERIES_KEYS = {
    "period",
    "cancelled",
    "crashed",
    "errored",
    "exited",
    "pending",
    "retrying",
    "running",
    "scheduled",
    "starting",
}


def _stats(server: ApiServer, **params: Any) -> dict[str, Any]:
    with server.client() as api:
        response = api.get("/stats/runs", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _counts(point: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in point.items() if k != "period" and v}


# -- run statistics ------------------------------------------------------------------------


@pytest.fixture
def etl(api_server: ApiServer) -> ApiServer:
    with api_server.client() as api:
        create_app(api, "etl")
    return api_server


def test_hourly_buckets_include_empty_ones(etl: ApiServer) -> None:
    add_runs(
        etl,
        "etl",
        [
            ("exited", "2024-12-31T23:59:59Z"),  # before the window
            ("exited", "2025-01-01T00:00:00Z"),  # start is inclusive
            ("crashed", "2025-01-01T00:20:00Z"),
            ("running", "2025-01-01T02:30:00Z"),
            ("pending", "2025-01-01T02:31:00Z"),
            ("errored", "2025-01-01T05:59:59Z"),
            ("exited", "2025-01-01T06:00:00Z"),  # end is exclusive
        ],
    )
    body = _stats(etl, start_at="2025-01-01T00:00:00Z", end_at="2025-01-01T06:00:00Z")

    assert body["settings"] == {
        "start_at": "2025-01-01T00:00:00.000Z",
        "end_at": "2025-01-01T06:00:00.000Z",
        "environment": "",
        "interval": "hourly",
        "timezone": "UTC",
    }
    assert [p["period"] for p in body["series"]] == [
        f"2025-01-01T0{h}:00:00.000Z" for h in range(6)
    ]
    assert all(set(p) == SERIES_KEYS for p in body["series"])
    assert [_counts(p) for p in body["series"]] == [
        {"exited": 1, "crashed": 1},
        {},
        {"running": 1, "pending": 1},
        {},
        {},
        {"errored": 1},
    ]
    assert body["stats"] == {
        "cancelled_runs": 0,
        "crashed_runs": 1,
        "errored_runs": 1,
        "exited_runs": 1,
        "running_runs": 2,  # every active status: running and pending here
        "total_runs": 5,
    }


def test_daily_beyond_48_hours_and_status_filter(etl: ApiServer) -> None:
    add_runs(
        etl,
        "etl",
        [
            ("exited", "2025-01-01T08:00:00Z"),
            ("crashed", "2025-01-01T09:00:00Z"),
            ("errored", "2025-01-03T23:00:00Z"),
            ("cancelled", "2025-01-04T01:00:00Z"),
        ],
    )
    exactly_48h = _stats(etl, start_at="2025-01-01T00:00:00Z", end_at="2025-01-03T00:00:00Z")
    body = _stats(
        etl,
        start_at="2025-01-01T00:00:00Z",
        end_at="2025-01-05T00:00:00Z",
        status=["crashed", "errored"],
    )

    assert exactly_48h["settings"]["interval"] == "hourly" and len(exactly_48h["series"]) == 48
    assert body["settings"]["interval"] == "daily"
    assert [p["period"][:10] for p in body["series"]] == [
        "2025-01-01",
        "2025-01-02",
        "2025-01-03",
        "2025-01-04",
    ]
    assert [_counts(p) for p in body["series"]] == [{"crashed": 1}, {}, {"errored": 1}, {}]
    assert body["stats"]["total_runs"] == 2 and body["stats"]["exited_runs"] == 0


def test_daily_buckets_follow_the_time_zone_across_dst(etl: ApiServer) -> None:
    # Paris moved from +01:00 to +02:00 on 2025-03-30: that local day lasts 23 hours.
    add_runs(
        etl,
        "etl",
        [
            ("exited", "2025-03-28T23:30:00Z"),  # 03-29 00:30 in Paris (03-28 in UTC)
            ("crashed", "2025-03-29T22:59:00Z"),  # 03-29 23:59 +01:00
            ("crashed", "2025-03-29T23:00:00Z"),  # 03-30 00:00 +01:00
            ("errored", "2025-03-30T21:59:00Z"),  # 03-30 23:59 +02:00
            ("exited", "2025-03-30T22:00:00Z"),  # 03-31 00:00 +02:00
        ],
    )
    window = {"start_at": "2025-03-28T23:00:00Z", "end_at": "2025-04-01T00:00:00Z"}
    paris = _stats(etl, **window, timezone="Europe/Paris")
    utc = _stats(etl, **window)

    assert paris["settings"]["timezone"] == "Europe/Paris"
    assert [p["period"] for p in paris["series"]] == [
        "2025-03-28T23:00:00.000Z",
        "2025-03-29T23:00:00.000Z",
        "2025-03-30T22:00:00.000Z",
        "2025-03-31T22:00:00.000Z",
    ]
    assert [_counts(p) for p in paris["series"]] == [
        {"exited": 1, "crashed": 1},
        {"crashed": 1, "errored": 1},
        {"exited": 1},
        {},
    ]
    assert [_counts(p) for p in utc["series"]] == [
        {"exited": 1},
        {"crashed": 2},
        {"errored": 1, "exited": 1},
        {},
    ]


def test_hourly_buckets_in_a_half_hour_zone(etl: ApiServer) -> None:
    # India is +05:30: its hours start at :30 UTC.
    add_runs(
        etl,
        "etl",
        [("exited", "2025-01-01T00:29:00Z"), ("crashed", "2025-01-01T00:31:00Z")],
    )
    body = _stats(
        etl,
        start_at="2025-01-01T00:00:00Z",
        end_at="2025-01-01T02:00:00Z",
        timezone="Asia/Kolkata",
    )

    assert [p["period"] for p in body["series"]] == [
        "2024-12-31T23:30:00.000Z",
        "2025-01-01T00:30:00.000Z",
        "2025-01-01T01:30:00.000Z",
    ]
    assert [_counts(p) for p in body["series"]] == [{"exited": 1}, {"crashed": 1}, {}]


def test_environment_filter_and_tenancy(etl: ApiServer) -> None:
    add_environment(etl, "etl", "prod")
    add_runs(etl, "etl", [("exited", "2025-01-01T01:00:00Z")])
    add_runs(etl, "etl", [("crashed", "2025-01-01T02:00:00Z")], environment="prod")
    bob_key = etl.new_user_key("bob@example.com")
    with etl.client(bob_key) as bob:
        create_app(bob, "bob-app")
    add_runs(etl, "bob-app", [("errored", "2025-01-01T03:00:00Z")])
    window = {"start_at": "2025-01-01T00:00:00Z", "end_at": "2025-01-02T00:00:00Z"}

    mine = _stats(etl, **window)
    prod = _stats(etl, **window, environment="prod")
    with etl.client(bob_key) as bob:
        bobs = bob.get("/stats/runs", params=window).json()
        unknown = bob.get("/stats/runs", params={**window, "environment": "prod"})

    assert mine["stats"]["total_runs"] == 2 and mine["stats"]["errored_runs"] == 0
    assert prod["stats"]["total_runs"] == 1 and prod["stats"]["crashed_runs"] == 1
    assert prod["settings"]["environment"] == "prod"
    assert bobs["stats"]["total_runs"] == 1 and bobs["stats"]["errored_runs"] == 1
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"end_at": "2025-01-02T00:00:00Z"}, "start_at is required"),
        ({"start_at": "2025-01-02T00:00:00Z"}, "end_at is required"),
        ({"start_at": "2025-01-02T00:00:00Z", "end_at": "2025-01-02T00:00:00Z"}, "after"),
        ({"start_at": "soon", "end_at": "2025-01-02T00:00:00Z"}, "soon"),
        ({"start_at": "2020-01-01T00:00:00Z", "end_at": "2025-01-02T00:00:00Z"}, "at most"),
        (
            {
                "start_at": "2025-01-01T00:00:00Z",
                "end_at": "2025-01-02T00:00:00Z",
                "timezone": "Mars/Base",
            },
            "Mars/Base",
        ),
        (
            {"start_at": "2025-01-01T00:00:00Z", "end_at": "2025-01-02T00:00:00Z", "status": "ok"},
            "'ok'",
        ),
    ],
)
def test_bad_statistics_queries_are_422(etl: ApiServer, params: dict, needle: str) -> None:
    with etl.client() as api:
        response = api.get("/stats/runs", params=params)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]


# -- app health ----------------------------------------------------------------------------

T0 = "2025-01-01T00:00:{:02d}Z"


def _history(*statuses: str) -> list[tuple[str, str]]:
    """Runs one second apart, oldest first."""
    return [(status, T0.format(i)) for i, status in enumerate(statuses)]


@pytest.fixture
def fleet(api_server: ApiServer) -> ApiServer:
    """One app per health state, plus an app with issues whose last run succeeded."""
    histories = {
        "ok": _history("crashed", "exited"),
        "broken": _history("exited", "errored"),
        "busy": _history("crashed", "crashed", "running"),
        "off": _history("crashed", "errored"),
        "fresh": [],
        "cancel-hides-nothing": _history("crashed", "cancelled"),
        "flaky": _history("errored", *["exited"] * 4, "crashed", *["exited"] * 4),
        # Two failures, but more than ten runs ago: no issues now.
        "recovered": _history("crashed", "crashed", *["exited"] * 10),
    }
    with api_server.client() as api:
        for name, history in histories.items():
            create_app(api, name)
            if history:
                add_runs(api_server, name, history)
        assert api.patch("/apps/off", json={"status": "disabled"}).status_code == 200
    return api_server


def _health(app: dict[str, Any]) -> tuple[str, str, int]:
    return app["health_status"], app["health"]["state"], app["health"]["recent_failures"]


def test_app_health_states_in_the_app_model(fleet: ApiServer) -> None:
    with fleet.client() as api:
        listed = {
            item["app"]["name"]: _health(item["app"])
            for item in api.get("/apps", params={"page": 0}).json()["apps"]
        }
        described = _health(api.get("/apps/flaky").json()["app"])

    assert listed == {
        "ok": ("healthy", "successful", 1),
        "broken": ("warning", "failed", 1),
        "busy": ("warning", "running", 2),  # running, but 2 of its last runs crashed
        "off": ("healthy", "disabled", 2),  # disabled on purpose: no warning
        "fresh": ("healthy", "successful", 0),
        "cancel-hides-nothing": ("warning", "failed", 1),  # cancelled runs are skipped
        "flaky": ("warning", "successful", 2),
        "recovered": ("healthy", "successful", 0),
    }
    assert described == ("warning", "successful", 2)


def test_app_statistics_and_apps_with_issues(fleet: ApiServer) -> None:
    with fleet.client() as api:
        body = api.get("/stats/apps").json()

    assert body["statistics"] == {
        "all_apps": 8,
        "disabled_apps": 1,
        "healthy_apps": 4,  # ok, fresh, flaky, recovered
        "running_apps": 1,
        "failed_apps": 2,
        "apps_with_issues": 2,
    }
    assert body["apps_with_issues"] == [
        {"name": "busy", "failed_runs": 2, "last_runs": 3},
        {"name": "flaky", "failed_runs": 2, "last_runs": 10},
    ]


def test_app_statistics_per_environment_and_tenancy(fleet: ApiServer) -> None:
    add_environment(fleet, "ok", "prod")
    add_runs(fleet, "ok", _history("crashed", "crashed", "errored"), environment="prod")
    bob_key = fleet.new_user_key("bob@example.com")
    with fleet.client() as api, fleet.client(bob_key) as bob:
        prod = api.get("/stats/apps", params={"environment": "prod"}).json()
        bobs = bob.get("/stats/apps").json()
        unknown = api.get("/stats/apps", params={"environment": "staging"})

    # In prod only `ok` has runs (all failed); the others have none there.
    assert prod["statistics"]["failed_apps"] == 1
    assert prod["statistics"]["running_apps"] == 0
    assert prod["apps_with_issues"] == [{"name": "ok", "failed_runs": 3, "last_runs": 3}]
    assert bobs["statistics"]["all_apps"] == 0 and bobs["apps_with_issues"] == []
    assert unknown.status_code == 404 and "staging" in unknown.json()["detail"]


def test_health_costs_the_same_queries_for_many_apps(api_server: ApiServer) -> None:
    with api_server.client() as api:
        create_app(api, "a0")
        add_runs(api_server, "a0", _history("crashed", "errored"))
        api.get("/stats/apps")  # a key's first use may write (last_used_at)
        with count_queries(api_server) as few:
            api.get("/stats/apps")
        for i in range(1, 8):
            create_app(api, f"a{i}")
            add_runs(api_server, f"a{i}", _history("crashed", "running"))
        with count_queries(api_server) as many:
            body = api.get("/stats/apps").json()

    assert body["statistics"]["running_apps"] == 7
    assert len(many) == len(few), many
