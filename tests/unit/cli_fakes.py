"""What the CLI unit tests share: `tower` run through click's CliRunner against an
in-memory fake of the Tower API.

A fake is any object with `handle(request) -> response`; it is served through
httpx.MockTransport, so the real TowerApi, its error mapping and everything the
commands do on this machine are exercised, and only the server is replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar

import httpx
import pytest
from click.testing import CliRunner, Result

from tower.cli import config
from tower.cli.main import cli
from tower.client.api import TowerApi

URL = "http://tower.test"


class Handler(Protocol):
    def handle(self, request: httpx.Request) -> httpx.Response: ...


H = TypeVar("H", bound=Handler)


def error(status: int, detail: str) -> httpx.Response:
    """An API error in the problem-details shape the server answers with."""
    return httpx.Response(status, json={"status": status, "title": "Error", "detail": detail})


def isolate_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials or server from the environment, and a config dir of the test's own."""
    for name in ("TOWER_API_KEY", "TOWER_JWT", "TOWER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOWER_CONFIG_DIR", str(tmp_path / "config"))


def serve(server: H, monkeypatch: pytest.MonkeyPatch) -> H:
    """Make every `tower` command of this test talk to `server`; returns it."""

    def make_api(cfg: object = None) -> TowerApi:
        return TowerApi(URL, api_key="sk-test", transport=httpx.MockTransport(server.handle))

    monkeypatch.setattr(config, "make_api", make_api)
    return server


def tower(*args: str, input: str | None = None) -> Result:
    """Run `tower ARGS...` in-process, with `input` on its stdin."""
    return CliRunner().invoke(cli, list(args), input=input)
