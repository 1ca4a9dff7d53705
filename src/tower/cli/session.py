"""The CLI session file, `$TOWER_CONFIG_DIR/session.json` (default `~/.config/tower`).

The file has the same JSON shape as the official Tower CLI's (contract §1.4), so a
person can switch between the two CLIs without logging in again:

    {"tower_url": str,
     "user": {"email", "first_name", "last_name", "created_at"},
     "token": {"jwt"},
     "active_team": {"name", "token": {"jwt"}, "team_type"} | null,
     "teams": [{"name", "token": {"jwt"}, "team_type"}, ...]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tower.core.errors import TowerError
from tower.files import write_private

SESSION_FILE_NAME = "session.json"
USER_KEYS = ("email", "first_name", "last_name", "created_at")


class SessionFileError(TowerError):
    """The session file cannot be used."""


def default_config_dir() -> Path:
    """`$TOWER_CONFIG_DIR`, else `~/.config/tower` (where the official CLI keeps it too)."""
    configured = os.environ.get("TOWER_CONFIG_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".config" / "tower"


def session_path() -> Path:
    """Where the session file lives: `<config dir>/session.json`."""
    return default_config_dir() / SESSION_FILE_NAME


#: The same, under the name the config module uses.
default_session_path = session_path


def load_session(path: Path | None = None) -> dict[str, Any] | None:
    """The session file's content, or None when there is no file."""
    path = path or default_session_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SessionFileError(f"Cannot read the session file {path}: {exc.strerror}.") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SessionFileError(
            f"The session file {path} is not valid JSON ({exc}). "
            "Delete it and log in again (`tower up` for a local server)."
        ) from exc
    if not isinstance(data, dict):
        raise SessionFileError(
            f"The session file {path} does not hold a JSON object. Delete it and log in again."
        )
    return data


def session_token(session_file: dict[str, Any]) -> str | None:
    """The JWT requests should carry: the active team's, else the session's own."""
    active = session_file.get("active_team")
    if isinstance(active, dict):
        jwt = _jwt(active.get("token"))
        if jwt:
            return jwt
    return _jwt(session_file.get("token"))


def build_session_file(tower_url: str, session: dict[str, Any]) -> dict[str, Any]:
    """Turn the `session` object of a `GET /v1/session` answer into the file's content.

    The active team is the team holding the session's own JWT (that is how the
    server says which team the login is for), falling back to the personal team.
    """
    user = session.get("user") or {}
    token_jwt = _jwt(session.get("token")) or ""
    teams = [_team(t) for t in session.get("teams") or [] if isinstance(t, dict)]
    active = next((t for t in teams if t["token"]["jwt"] == token_jwt and token_jwt), None)
    if active is None:
        active = next((t for t in teams if t["team_type"] == "personal"), None)
    return {
        "tower_url": tower_url,
        "user": {key: user.get(key, "") for key in USER_KEYS},
        "token": {"jwt": token_jwt},
        "active_team": active,
        "teams": teams,
    }


def save_session(path: Path | None, tower_url: str, session: dict[str, Any]) -> dict[str, Any]:
    """Write the session file for `session` (see :func:`build_session_file`); return it.

    The file holds bearer tokens, so it is created 0600 and replaced atomically: a
    crash never leaves a half-written file that locks the user out.
    """
    path = path or default_session_path()
    content = build_session_file(tower_url, session)
    write_session_file(path, content)
    return content


def write_session_file(path: Path, content: dict[str, Any]) -> None:
    write_private(path, json.dumps(content, indent=2) + "\n")


def _team(team: dict[str, Any]) -> dict[str, Any]:
    # The API calls it `type`; the file (like the official CLI's) calls it `team_type`.
    return {
        "name": team.get("name", ""),
        "token": {"jwt": _jwt(team.get("token")) or ""},
        "team_type": team.get("type") or team.get("team_type") or "",
    }


def _jwt(token: Any) -> str | None:
    if isinstance(token, dict) and isinstance(token.get("jwt"), str) and token["jwt"]:
        return token["jwt"]
    return None


def refresh_session_file(old: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    """The file after a fresh `session` from the server: new team tokens, the same server,
    the same user token and, when it still exists, the same active team."""
    content = build_session_file(str(old.get("tower_url") or ""), session)
    if _jwt(old.get("token")):
        content["token"] = {"jwt": _jwt(old.get("token"))}
    previous = old.get("active_team")
    if isinstance(previous, dict):
        same = next((t for t in content["teams"] if t["name"] == previous.get("name")), None)
        content["active_team"] = same or content["active_team"]
    return content


def switch_active_team(content: dict[str, Any], name: str) -> dict[str, Any]:
    """The file with team `name` (its slug) active; SessionFileError if there is no such team."""
    team = next((t for t in content.get("teams") or [] if t.get("name") == name), None)
    if team is None:
        known = ", ".join(str(t.get("name")) for t in content.get("teams") or []) or "none"
        raise SessionFileError(
            f"You are not a member of a team {name!r} (yours: {known}). "
            "`tower teams list` shows them."
        )
    return {**content, "active_team": team}


def active_team_name(content: dict[str, Any] | None) -> str | None:
    active = (content or {}).get("active_team")
    return active.get("name") if isinstance(active, dict) else None
