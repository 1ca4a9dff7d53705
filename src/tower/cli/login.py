"""`tower login`: sign this machine in, through the browser or with an API key.

The browser way is the device flow the official CLI uses (contract §1.5): ask the
server for a ticket, open (or print) its login page, poll until someone signed in
there approves the code, then write the session file `tower up` writes too.
"""

from __future__ import annotations

import os
import time
import webbrowser
from collections.abc import Callable
from typing import Any

import click

from tower.cli import config, output
from tower.cli import session as cli_session
from tower.client import ApiError
from tower.client.api import TowerApi
from tower.core.errors import TowerError

#: never poll faster than this, whatever the server says
MIN_POLL_SECONDS = 0.5


class LoginFailed(TowerError):
    """The login did not complete."""


@click.command("login")
@click.option(
    "--no-browser", "-n", is_flag=True, help="Print the login URL instead of opening a browser."
)
@click.option(
    "--api-key",
    metavar="sk-…",
    default=None,
    help="Log in with an API key instead (headless machines); it is checked, then stored.",
)
def login_command(no_browser: bool, api_key: str | None) -> None:
    """Log in to a Tower server (TOWER_URL, default the local one) and save the session."""
    url = _server_url()
    if api_key is not None:
        session = _session_for_api_key(url, api_key.strip())
    else:
        session = device_login(url, open_browser=not no_browser)
    path = cli_session.session_path()
    saved = cli_session.save_session(path, url, session)
    team = (saved.get("active_team") or {}).get("name", "")
    output.info(f"Logged in to {url} as {saved['user']['email']} (team {team}).")
    output.info(f"Session saved to {path}.")


def _server_url() -> str:
    # Like the official CLI, log in to TOWER_URL, not to a saved session's server.
    return (os.environ.get("TOWER_URL") or config.DEFAULT_URL).rstrip("/")


def _session_for_api_key(url: str, key: str) -> dict[str, Any]:
    if not key.startswith("sk-"):
        raise LoginFailed(
            "An API key starts with `sk-` (create one with POST /v1/api-keys), or log in "
            "through the browser with `tower login`."
        )
    with TowerApi(url, api_key=key) as api:
        # The server checks the key and describes it as a one-team session.
        try:
            return api.describe_session()["session"]
        except ApiError as exc:
            if exc.status != 401:
                raise
            raise LoginFailed(f"{url} rejected this API key: {exc.describe()}") from exc


def device_login(
    url: str,
    *,
    open_browser: bool,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Run the device flow against `url`; the approved session."""
    with TowerApi(url) as api:
        ticket = api.create_device_login()
        _announce(ticket, open_browser)
        interval = max(float(ticket.get("interval") or 2), MIN_POLL_SECONDS)
        deadline = clock() + float(ticket.get("expires_in") or 600)
        while clock() < deadline:
            sleep(interval)
            answer = api.describe_device_login(ticket["device_code"])
            if answer is not None:
                return answer["session"]
    raise LoginFailed("The login request expired before it was approved. Run `tower login` again.")


def _announce(ticket: dict[str, Any], open_browser: bool) -> None:
    login_url = ticket["login_url"]
    opened = open_browser and _open(login_url)
    if opened:
        output.info(f"Opened {login_url} in your browser.")
    else:
        output.info(f"Open this URL in a browser to log in:\n  {login_url}")
    output.info(f"Check that it shows the code {ticket['user_code']}. Waiting for approval…")


def _open(url: str) -> bool:
    try:
        return webbrowser.open(url)
    except webbrowser.Error:
        return False
