"""GET /v1/apps/{name}/runs and GET /v1/runs over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.api.conftest import ApiServer
from tests.api.run_seeds import add_environment, add_runs, count_queries, create_app

# Every key the official clients require in a Run (contract §5).
RUN_KEYS = {
    "$link",
    "app_name",
    "app_version",
    "cancelled_at",
    "created_at",
    "ended_at",
    "environment",
    "exit_code",
    "initiator",
    "is_scheduled",
    "num_attempts",
    "number",
    "parameters",
    "run_id",
    "scheduled_at",
    "started_at",
    "starting_at",
    "status",
    "status_group",
}


@pytest.fixture
def seeded(api_server: ApiServer) -> ApiServer:
    """App `etl` with seven runs whose numbers are NOT in created_at order, app `web`
    with two, and a `prod` environment holding one run of each app."""
    with api_server.client() as api:
        create_app(api, "etl")
        create_app(api, "web")
    add_environment(api_server, "etl", "prod")
    add_runs(
        api_server,
        "etl",
        [
            ("exited", "2025-01-01T10:00:00Z"),  # 1
            ("crashed", "2025-01-01T12:00:00Z"),  # 2
            ("exited", "2025-01-01T11:00:00Z"),  # 3
            ("errored", "2025-01-02T09:00:00Z"),  # 4
            ("running", "2025-01-03T00:00:00Z"),  # 5
            ("cancelled", "2025-01-03T00:00:00Z"),  # 6: same instant as 5, higher number
        ],
    )
    add_runs(api_server, "etl", [("pending", "2025-01-04T00:00:00Z")], environment="prod")  # 7
    add_runs(api_server, "web", [("exited", "2025-01-01T11:30:00Z")])  # web 1
    add_runs(api_server, "web", [("crashed", "2025-01-02T23:00:00Z")], environment="prod")
    return api_server


ETL_NEWEST_FIRST = [7, 6, 5, 4, 2, 3, 1]


def _numbers(body: dict) -> list[int]:
    return [run["number"] for run in body["runs"]]


def test_app_runs_newest_first_in_pages(seeded: ApiServer) -> None:
    with seeded.client() as api:
        pages = [
            api.get("/apps/etl/runs", params={"page": n, "page_size": 3}).json()
            for n in (1, 2, 3, 4)
        ]
        everything = api.get("/apps/etl/runs", params={"page": 0, "page_size": 3}).json()
        default = api.get("/apps/etl/runs").json()

    assert [_numbers(p) for p in pages] == [[7, 6, 5], [4, 2, 3], [1], []]
    assert pages[0]["pages"] == {"page": 1, "page_size": 3, "num_pages": 3, "total": 7}
    assert pages[3]["pages"]["num_pages"] == 3 and pages[3]["pages"]["total"] == 7
    # page=0 is "everything, one page" for the official CLI, whatever page_size says.
    assert _numbers(everything) == ETL_NEWEST_FIRST
    assert everything["pages"]["num_pages"] == 1 and everything["pages"]["total"] == 7
    # The official API spec's defaults: page 1 of 20.
    assert default["pages"] == {"page": 1, "page_size": 20, "num_pages": 1, "total": 7}


def test_runs_carry_every_required_key_and_their_names(seeded: ApiServer) -> None:
    with seeded.client() as api:
        runs = api.get("/apps/etl/runs", params={"page": 0}).json()["runs"]

    for run in runs:
        assert set(run) >= RUN_KEYS, RUN_KEYS - set(run)
        assert "attempts" not in run  # only describe carries attempts
        assert (run["app_name"], run["app_version"]) == ("etl", "v1")
    envs = {run["number"]: run["environment"] for run in runs}
    assert envs[7] == "prod" and envs[1] == "default"
    assert runs[0]["created_at"] == "2025-01-04T00:00:00.000Z"


def test_status_filter_is_repeatable_and_validated(seeded: ApiServer) -> None:
    with seeded.client() as api:
        failed = api.get("/apps/etl/runs", params={"status": ["crashed", "errored"]}).json()
        comma = api.get("/apps/etl/runs?status=crashed,errored").json()
        one = api.get("/apps/etl/runs", params={"status": "exited"}).json()
        done = {"status": ["exited", "crashed", "errored"], "page_size": 2}
        done_pages = [
            api.get("/apps/etl/runs", params={**done, "page": n}).json() for n in (1, 2, 3)
        ]
        bad = api.get("/apps/etl/runs", params={"status": ["exited", "exploded"]})

    assert _numbers(failed) == [4, 2] and failed["pages"]["total"] == 2
    assert _numbers(comma) == [4, 2]
    assert _numbers(one) == [3, 1]
    # Several statuses are read one status at a time and merged: pages still line up.
    assert [_numbers(p) for p in done_pages] == [[4, 2], [3, 1], []]
    assert [p["pages"]["total"] for p in done_pages] == [4, 4, 4]
    assert bad.status_code == 422
    assert "exploded" in bad.json()["detail"] and "crashed" in bad.json()["detail"]
    assert bad.json()["errors"][0]["value"] == "exploded"


def test_environment_filter_and_unknown_environment(seeded: ApiServer) -> None:
    with seeded.client() as api:
        prod = api.get("/apps/etl/runs", params={"environment": "prod"}).json()
        default = api.get("/apps/etl/runs", params={"environment": "default"}).json()
        unknown = api.get("/apps/etl/runs", params={"environment": "staging"})

    assert _numbers(prod) == [7]
    assert _numbers(default) == [6, 5, 4, 2, 3, 1]
    assert unknown.status_code == 404 and "staging" in unknown.json()["detail"]


def test_time_window_start_inclusive_end_exclusive(seeded: ApiServer) -> None:
    with seeded.client() as api:
        day_one = api.get(
            "/apps/etl/runs",
            params={"start_at": "2025-01-01T11:00:00Z", "end_at": "2025-01-02T09:00:00Z"},
        ).json()
        # The same window written in another offset (httpx encodes the '+').
        offset = api.get(
            "/apps/etl/runs",
            params={
                "start_at": "2025-01-01T12:00:00+01:00",
                "end_at": "2025-01-02T10:00:00+01:00",
            },
        ).json()
        # A '+' left unencoded in a hand-written URL arrives as a space.
        raw = api.get("/apps/etl/runs?start_at=2025-01-03T01:00:00+01:00").json()
        open_end = api.get("/apps/etl/runs", params={"end_at": "2025-01-01T11:00:00Z"}).json()

    assert _numbers(day_one) == [2, 3]
    assert _numbers(offset) == [2, 3]
    assert _numbers(raw) == [7, 6, 5]
    assert _numbers(open_end) == [1]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"start_at": "2025-01-02T00:00:00Z", "end_at": "2025-01-01T00:00:00Z"}, "before"),
        ({"start_at": "yesterday"}, "yesterday"),
        ({"end_at": "2025-13-01T00:00:00Z"}, "end_at"),
        ({"page": -1}, "page"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": 1001}, "page_size"),
    ],
)
def test_bad_queries_are_422_naming_the_problem(
    seeded: ApiServer, params: dict, needle: str
) -> None:
    with seeded.client() as api:
        for path in ("/apps/etl/runs", "/runs"):
            response = api.get(path, params=params)
            assert response.status_code == 422, (path, response.text)
            assert needle in response.json()["detail"], response.json()


def test_search_spans_the_accounts_apps_with_the_same_filters(seeded: ApiServer) -> None:
    with seeded.client() as api:
        everything = api.get("/runs", params={"page": 0}).json()
        page = api.get("/runs", params={"page": 2, "page_size": 4}).json()
        failed_prod = api.get(
            "/runs", params={"status": ["crashed", "errored"], "environment": "prod"}
        ).json()
        day_one = api.get(
            "/runs",
            params={"start_at": "2025-01-01T00:00:00Z", "end_at": "2025-01-02T00:00:00Z"},
        ).json()

    names = [(r["app_name"], r["number"]) for r in everything["runs"]]
    assert names == [
        ("etl", 7),
        ("etl", 6),
        ("etl", 5),
        ("web", 2),
        ("etl", 4),
        ("etl", 2),
        ("web", 1),
        ("etl", 3),
        ("etl", 1),
    ]
    assert page["pages"] == {"page": 2, "page_size": 4, "num_pages": 3, "total": 9}
    assert [(r["app_name"], r["number"]) for r in page["runs"]] == names[4:8]
    assert [(r["app_name"], r["number"]) for r in failed_prod["runs"]] == [("web", 2)]
    assert [r["number"] for r in day_one["runs"]] == [2, 1, 3, 1]


def test_another_accounts_runs_never_appear(seeded: ApiServer) -> None:
    bob_key = seeded.new_user_key("bob@example.com")
    with seeded.client(bob_key) as bob:
        create_app(bob, "bob-app")
    add_runs(seeded, "bob-app", [("crashed", "2025-01-05T00:00:00Z")])

    with seeded.client() as api, seeded.client(bob_key) as bob:
        mine = api.get("/runs", params={"page": 0}).json()
        bobs = bob.get("/runs", params={"page": 0}).json()
        peek = bob.get("/apps/etl/runs")
        bob_filtered = bob.get("/runs", params={"environment": "prod"})

    assert "bob-app" not in {r["app_name"] for r in mine["runs"]} and mine["pages"]["total"] == 9
    assert [(r["app_name"], r["number"]) for r in bobs["runs"]] == [("bob-app", 1)]
    assert bobs["pages"]["total"] == 1
    assert peek.status_code == 404  # another account's app does not exist for bob
    assert bob_filtered.status_code == 404  # nor does its environment


def test_a_page_costs_the_same_queries_whatever_its_size(seeded: ApiServer) -> None:
    # No query per run: a full page of 1 and a full page of 8 take as many statements,
    # and "everything" (no count needed) no more.
    with seeded.client() as api:
        api.get("/runs", params={"page_size": 1})  # a key's first use may write (last_used_at)
        with count_queries(seeded) as one:
            assert len(api.get("/runs", params={"page_size": 1}).json()["runs"]) == 1
        with count_queries(seeded) as eight:
            assert len(api.get("/runs", params={"page_size": 8}).json()["runs"]) == 8
        with count_queries(seeded) as everything:
            assert len(api.get("/runs", params={"page": 0}).json()["runs"]) == 9
        with count_queries(seeded) as app_page:
            assert len(api.get("/apps/etl/runs", params={"page_size": 5}).json()["runs"]) == 5

    assert len(eight) == len(one), eight
    assert len(everything) <= len(one)
    assert len(app_page) == len(one) + 1  # + finding the app by name
