"""Opening what the API exports: secret and catalog values, encrypted to a key of ours.

The API never returns a plaintext value. A command that needs values sends the public
half of a key pair made for it alone; the server encrypts every value to that key, and
only this process, which holds the private half in memory, can open them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tower.core import crypto


class ExportKey:
    """A throwaway RSA-2048 key pair for one command; it is never written anywhere."""

    def __init__(self) -> None:
        self._private_key = crypto.generate_rsa_private_key()
        #: what the export endpoints take as `public_key` (SPKI PEM)
        self.public_pem = crypto.public_key_pem_spki(self._private_key)

    def open(self, item: Mapping[str, Any]) -> str:
        """The plaintext of an exported secret's or catalog property's `encrypted_value`."""
        return crypto.hybrid_decrypt(self._private_key, str(item.get("encrypted_value", "")))
