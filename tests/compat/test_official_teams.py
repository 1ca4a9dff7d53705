"""The official `tower teams list` with an API key (`GET /v1/teams`) against our server.

The session path of `tower teams list|switch` calls `POST /v1/session/refresh` first,
which is built elsewhere; its compatibility test belongs with that endpoint.
"""

from __future__ import annotations

import httpx
import pytest

from tests.compat.official import OfficialCli, strip_ansi
from tests.live import LiveTower

pytestmark = [
    pytest.mark.compat,
    pytest.mark.xdist_group("compat-teams"),
    pytest.mark.timeout(600),
]


def test_teams_list_with_an_api_key_shows_my_teams(
    official_cli: OfficialCli, compat_tower: LiveTower
) -> None:
    created = httpx.post(
        f"{compat_tower.url}/v1/teams",
        json={"name": "Compat Team"},
        headers={"X-API-Key": compat_tower.api_key},
    )
    assert created.status_code == 200, created.text

    listed = official_cli("teams", "list")

    assert listed.returncode == 0, listed.describe()
    assert "compat-team" in strip_ansi(listed.stdout)
