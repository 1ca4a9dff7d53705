"""The official `tower schedules create/list/update/delete` against our server."""

from __future__ import annotations

import re

import pytest

from tests.compat.official import CliResult, OfficialCli, strip_ansi
from tests.live import LiveTower

pytestmark = [
    pytest.mark.compat,
    pytest.mark.xdist_group("compat-schedules"),
    pytest.mark.timeout(600),
]

APP = "compat-schedules"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def ok(result: CliResult) -> CliResult:
    assert result.returncode == 0, result.describe()
    return result


def _row(listing: str, schedule_id: str) -> str:
    return next(line for line in strip_ansi(listing).splitlines() if schedule_id in line)


def test_schedules_create_list_update_delete(
    official_cli: OfficialCli, compat_tower: LiveTower
) -> None:
    ok(official_cli("apps", "create", "--name", APP))
    created = ok(
        official_cli(
            "schedules", "create", "--app", APP, "--cron", "every 15 minutes",
            "--parameter", "friend=Brad",
        )
    )  # fmt: skip
    match = UUID.search(strip_ansi(created.output))
    assert match, created.describe()
    schedule_id = match.group(0)

    row = _row(ok(official_cli("schedules", "list")).stdout, schedule_id)
    assert APP in row and "default" in row and "*/15 * * * *" in row and "active" in row
    by_app = ok(official_cli("schedules", "list", "--app", APP)).stdout
    assert schedule_id in by_app
    other_env = ok(official_cli("schedules", "list", "--environment", "nowhere")).stdout
    assert schedule_id not in other_env

    ok(official_cli("schedules", "update", schedule_id, "--cron", "0 9 * * 1"))
    assert "0 9 * * 1" in _row(ok(official_cli("schedules", "list")).stdout, schedule_id)

    bad = official_cli("schedules", "create", "--app", APP, "--cron", "every blue moon")
    assert bad.returncode != 0 and "every 15 minutes" in bad.output, bad.describe()

    ok(official_cli("schedules", "delete", schedule_id))
    assert "No schedules found" in ok(official_cli("schedules", "list")).output
