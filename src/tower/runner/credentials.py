"""The runner's own credentials, minted with an API key when it was given none.

A self-hosted runner normally gets `TOWER_RUNNER_TOKEN` from `tower runners
credentials`. Given only `TOWER_API_KEY` (what the product documentation asks a
runner host to have), it mints a token of its own account once and keeps it in
`$TOWER_HOME/runner/credential.json` (mode 0600), so restarts reuse it instead of
minting a new credential each time. The API key itself is never stored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

from tower.client import ApiError, ConnectionFailed
from tower.client.api import TowerApi
from tower.core.errors import TowerError
from tower.runner.settings import RunnerSettings, SettingsError

logger = logging.getLogger(__name__)

CREDENTIAL_FILE = "credential.json"


def credential_path(settings: RunnerSettings) -> Path:
    return settings.runner_dir / CREDENTIAL_FILE


def resolve(settings: RunnerSettings) -> tuple[RunnerSettings, bool]:
    """Settings with a runner token, and whether it came from the saved credential.

    An explicit TOWER_RUNNER_TOKEN wins; without one and without TOWER_API_KEY the
    settings' own error explains what to set.
    """
    if settings.token or not settings.api_key:
        settings.require_token()
        return settings, False
    saved = _load(settings)
    if saved:
        return dataclasses.replace(settings, token=saved), True
    return dataclasses.replace(settings, token=_mint(settings)), False


def forget(settings: RunnerSettings) -> None:
    """Drop the saved credential (the control plane rejected it)."""
    credential_path(settings).unlink(missing_ok=True)


def _load(settings: RunnerSettings) -> str | None:
    try:
        saved = json.loads(credential_path(settings).read_text())
    except (OSError, ValueError):
        return None
    # A credential is only good for the control plane that minted it.
    if not isinstance(saved, dict) or saved.get("url") != settings.url:
        return None
    token = saved.get("token")
    return token if isinstance(token, str) and token else None


def _mint(settings: RunnerSettings) -> str:
    try:
        with TowerApi(settings.url, api_key=settings.api_key) as api:
            minted = api.create_runner_credentials(name=settings.name)
    except ApiError as exc:
        if exc.status in (401, 403):
            raise SettingsError(
                f"The control plane refused to mint runner credentials with TOWER_API_KEY "
                f"({exc.status}: {exc.detail}). Use a key with the "
                "`runners:credentials:create` scope, or set TOWER_RUNNER_TOKEN."
            ) from exc
        raise TowerError(f"Could not mint runner credentials: {exc}") from exc
    except ConnectionFailed as exc:
        raise TowerError(f"Could not reach the control plane at {settings.url}: {exc}") from exc
    token = str(minted["token"])
    _save(settings, token)
    logger.info("minted runner credentials %r with TOWER_API_KEY", minted.get("name"))
    return token


def _save(settings: RunnerSettings, token: str) -> None:
    path = credential_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": settings.url, "token": token}, handle)
