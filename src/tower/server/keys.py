"""The key hierarchy: master key → account keys → data keys (see DESIGN.md, Security).

The master key comes from TOWER_MASTER_KEY or a 0600 key file created on first
start. This is the single place a KMS would plug in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from pathlib import Path

from tower.core import crypto, errors

MASTER_KEY_FILE = "master.key"
KEY_BYTES = 32


def _decode_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise errors.InvalidInput(f"{origin} is not valid base64.") from exc
    if len(key) != KEY_BYTES:
        raise errors.InvalidInput(f"{origin} must decode to {KEY_BYTES} bytes, not {len(key)}.")
    return key


def load_or_create_master_key(configured: str | None, home: Path) -> bytes:
    if configured:
        return _decode_key(configured, "TOWER_MASTER_KEY")
    path = home / MASTER_KEY_FILE
    if path.exists():
        return _decode_key(path.read_text(), str(path))
    home.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode())
    return key


class KeyRing:
    """Wraps and unwraps account keys; derives purpose keys from the master key."""

    def __init__(self, master_key: bytes) -> None:
        self._master = master_key
        self._account_keys: dict[uuid.UUID, bytes] = {}

    def derive(self, purpose: str) -> bytes:
        """A key for one purpose (e.g. signing session JWTs), stable across restarts."""
        return hmac.new(self._master, f"tower:{purpose}".encode(), hashlib.sha256).digest()

    def new_wrapped_account_key(self, account_id: uuid.UUID) -> bytes:
        return crypto.wrap_key(self._master, crypto.generate_data_key(), _account_aad(account_id))

    def account_key(self, account_id: uuid.UUID, wrapped: bytes) -> bytes:
        key = self._account_keys.get(account_id)
        if key is None:
            key = crypto.unwrap_key(self._master, wrapped, _account_aad(account_id))
            self._account_keys[account_id] = key
        return key


def _account_aad(account_id: uuid.UUID) -> bytes:
    return f"account:{account_id}".encode()
