"""Where the CLI finds the server and the credential to use.

Credentials, first match wins:
  1. `TOWER_API_KEY` (sent as `X-API-Key`),
  2. `TOWER_JWT` (sent as `Authorization: Bearer`),
  3. the session file (:mod:`tower.cli.session`): the active team's JWT, else the
     session's own.

Server URL: `TOWER_URL` if set, else the session file's `tower_url`, else the local
server `tower up` starts (http://127.0.0.1:8000).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tower.cli.session import default_session_path, load_session, session_token
from tower.client.api import TowerApi
from tower.core.errors import Unauthenticated

DEFAULT_URL = "http://127.0.0.1:8000"
NOT_LOGGED_IN = "Not logged in: run `tower up` (local server) or set TOWER_URL and TOWER_API_KEY."


@dataclass(frozen=True, slots=True)
class Config:
    """The resolved server and credential. `source` says where the credential came from."""

    url: str
    api_key: str | None = None
    jwt: str | None = None
    #: "api_key", "jwt", "session" or "" (nothing configured)
    source: str = ""

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key or self.jwt)


def load_config(env: Mapping[str, str] | None = None, session_path: Path | None = None) -> Config:
    """Resolve the config from the environment and the session file."""
    env = os.environ if env is None else env
    env_url = env.get("TOWER_URL") or None
    api_key = env.get("TOWER_API_KEY") or None
    if api_key:
        # Like the official CLI, an API key means "ignore the session file entirely".
        return Config(url=env_url or DEFAULT_URL, api_key=api_key, source="api_key")
    jwt = env.get("TOWER_JWT") or None
    if jwt:
        return Config(url=env_url or DEFAULT_URL, jwt=jwt, source="jwt")
    session = load_session(session_path or _session_path(env))
    if session is None:
        return Config(url=env_url or DEFAULT_URL)
    url = env_url or _str(session.get("tower_url")) or DEFAULT_URL
    token = session_token(session)
    return Config(url=url, jwt=token, source="session" if token else "")


def make_api(config: Config | None = None) -> TowerApi:
    """The API client commands use; tests monkeypatch this to inject a mock transport.

    Raises:
        Unauthenticated: no credential is configured anywhere.
    """
    config = config or load_config()
    if not config.has_credentials:
        raise Unauthenticated(NOT_LOGGED_IN)
    # TOWER_CA_BUNDLE: the CA of a control plane whose certificate is not publicly trusted.
    ca_bundle = os.environ.get("TOWER_CA_BUNDLE") or None
    return TowerApi(config.url, api_key=config.api_key, jwt=config.jwt, ca_bundle=ca_bundle)


def _session_path(env: Mapping[str, str]) -> Path:
    configured = env.get("TOWER_CONFIG_DIR")
    if configured:
        return Path(configured).expanduser() / "session.json"
    return default_session_path()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
