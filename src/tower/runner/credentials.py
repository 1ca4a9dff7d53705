"""The runner's own credentials: minted with an API key when it was given none, and
kept across restarts after it rotated them.

A self-hosted runner normally gets `TOWER_RUNNER_TOKEN` (and, under mutual TLS, a
client certificate) from `tower runners credentials`. Given only `TOWER_API_KEY` (what
the product documentation asks a runner host to have), it mints a credential of its
own account once and keeps it in `$TOWER_HOME/runner/credential.json`, its certificate
and key next to it (all mode 0600), so restarts reuse it instead of minting a new one
each time. The API key itself is never stored.

A runner rotates its credential before it expires (`Agent`); the new one is saved the
same way. When the rotated credential replaced a configured TOWER_RUNNER_TOKEN, the
file remembers that token's hash, so a restart with the same (now retired) configuration
continues with the rotated credential.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tower.client import ApiError, ConnectionFailed
from tower.client.api import TowerApi
from tower.core.errors import TowerError
from tower.files import write_private
from tower.runner.settings import RunnerSettings, SettingsError

logger = logging.getLogger(__name__)

CREDENTIAL_FILE = "credential.json"
CERTIFICATE_FILE = "credential.crt"
KEY_FILE = "credential.key"


def credential_path(settings: RunnerSettings) -> Path:
    return settings.runner_dir / CREDENTIAL_FILE


@dataclass(frozen=True)
class Origin:
    """What a saved credential was made from: the control plane URL the runner was
    configured with and, for a rotated configured token, that token's digest."""

    url: str
    replaces: str | None = None


@dataclass(frozen=True)
class Resolved:
    settings: RunnerSettings
    #: the credential came from the saved file (the control plane may have dropped it)
    from_saved: bool
    #: what a rotated credential is saved under
    origin: Origin


def resolve(settings: RunnerSettings) -> Resolved:
    """Settings with a runner token, and where it came from.

    An explicit TOWER_RUNNER_TOKEN wins (or the credential it was rotated into); without
    one and without TOWER_API_KEY the settings' own error explains what to set.
    """
    saved = _load(settings)
    if settings.token:
        replaces = token_digest(settings.token)
        origin = Origin(settings.url, replaces)
        if saved and saved.get("replaces") == replaces:
            return Resolved(_with_saved(settings, saved), True, origin)
        return Resolved(settings, False, origin)
    if not settings.api_key:
        settings.require_token()
    origin = Origin(settings.url)
    if saved and not saved.get("replaces"):
        return Resolved(_with_saved(settings, saved), True, origin)
    return Resolved(_mint(settings, origin), False, origin)


def forget(settings: RunnerSettings) -> None:
    """Drop the saved credential (the control plane rejected it)."""
    for name in (CREDENTIAL_FILE, CERTIFICATE_FILE, KEY_FILE):
        (settings.runner_dir / name).unlink(missing_ok=True)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def save_rotated(
    settings: RunnerSettings, origin: Origin, credentials: dict[str, Any]
) -> RunnerSettings:
    """Keep a rotated credential (under the origin `resolve` gave); the settings to go on
    with."""
    return _save(settings, origin, credentials)


def _with_saved(settings: RunnerSettings, saved: dict[str, Any]) -> RunnerSettings:
    cert, key = saved.get("certificate_file"), saved.get("key_file")
    return dataclasses.replace(
        settings,
        token=saved["token"],
        url=saved.get("runner_url") or settings.url,
        cert_file=Path(cert) if cert else settings.cert_file,
        key_file=Path(key) if key else settings.key_file,
    )


def _load(settings: RunnerSettings) -> dict[str, Any] | None:
    try:
        saved = json.loads(credential_path(settings).read_text())
    except (OSError, ValueError):
        return None
    # A credential is only good for the control plane that minted it.
    if not isinstance(saved, dict) or saved.get("url") != settings.url:
        return None
    token = saved.get("token")
    return saved if isinstance(token, str) and token else None


def _mint(settings: RunnerSettings, origin: Origin) -> RunnerSettings:
    try:
        with TowerApi(settings.url, api_key=settings.api_key, ca_bundle=_ca(settings)) as api:
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
    resolved = _save(settings, origin, minted)
    logger.info("minted runner credentials %r with TOWER_API_KEY", minted.get("name"))
    return resolved


def _ca(settings: RunnerSettings) -> str | None:
    return str(settings.ca_bundle) if settings.ca_bundle else None


def _save(settings: RunnerSettings, origin: Origin, credentials: dict[str, Any]) -> RunnerSettings:
    """Write the credential (and its certificate and key) 0600; the settings using it."""
    token = str(credentials["token"])
    runner_url = str(credentials.get("runner_service_url") or settings.url).rstrip("/")
    record: dict[str, Any] = {
        "url": origin.url,
        "replaces": origin.replaces,
        "token": token,
        "runner_url": runner_url,
    }
    cert_file = key_file = None
    if credentials.get("certificate") and credentials.get("private_key"):
        cert_file = write_private(
            settings.runner_dir / CERTIFICATE_FILE, credentials["certificate"]
        )
        key_file = write_private(settings.runner_dir / KEY_FILE, credentials["private_key"])
        record.update(certificate_file=str(cert_file), key_file=str(key_file))
    write_private(credential_path(settings), json.dumps(record))
    return dataclasses.replace(
        settings,
        token=token,
        url=runner_url,
        cert_file=cert_file or settings.cert_file,
        key_file=key_file or settings.key_file,
    )
