"""The secret part of an assignment: secrets and catalog properties, sealed to this runner.

The control plane hybrid-encrypts one JSON document to the public key the runner
registered (`sealed_runtime` in the assignment). It is opened here, in memory, right
before the app starts; nothing of it is written to disk. Its values reach the app as
environment variables, and every secret value is masked in the run's log lines.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from tower.core.crypto import hybrid_decrypt
from tower.core.errors import IntegrityError
from tower.runner.masking import SecretMasker

SEALED_KEY = "sealed_runtime"
#: RSA decryptions a runner remembers (see `OpenedKeys`)
MAX_OPENED_KEYS = 256


class OpenedKeys(MutableMapping[bytes, bytes]):
    """The RSA-OAEP decryptions this runner made, by ciphertext, the most recent
    `MAX_OPENED_KEYS` (thread-safe). The control plane reuses a runner's session key
    and a version's package-key wrap (`tower.core.crypto.SessionKey`), so a run after
    the first skips the private-key operations. In memory only, like the private key."""

    def __init__(self, most: int = MAX_OPENED_KEYS) -> None:
        self._most = most
        self._lock = threading.Lock()
        self._opened: OrderedDict[bytes, bytes] = OrderedDict()

    def __getitem__(self, wrapped: bytes) -> bytes:
        with self._lock:
            self._opened.move_to_end(wrapped)
            return self._opened[wrapped]

    def __setitem__(self, wrapped: bytes, key: bytes) -> None:
        with self._lock:
            self._opened[wrapped] = key
            self._opened.move_to_end(wrapped)
            while len(self._opened) > self._most:
                self._opened.popitem(last=False)

    def __delitem__(self, wrapped: bytes) -> None:
        with self._lock:
            del self._opened[wrapped]

    def __iter__(self) -> Iterator[bytes]:
        with self._lock:
            return iter(list(self._opened))

    def __len__(self) -> int:
        return len(self._opened)


@dataclass(frozen=True)
class RuntimeValues:
    secrets: dict[str, str] = field(default_factory=dict)
    catalog_variables: dict[str, str] = field(default_factory=dict)
    #: further values to mask in logs (sensitive catalog properties)
    masked: tuple[str, ...] = ()

    def masker(self) -> SecretMasker:
        return SecretMasker([*self.secrets.values(), *self.masked])


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise IntegrityError(f"The run's sealed {what} are not a map of strings.")
    return dict(value)


def open_runtime_values(
    private_key: RSAPrivateKey, assignment: dict[str, Any], opened: OpenedKeys | None = None
) -> RuntimeValues:
    """Decrypt the assignment's sealed values; raises IntegrityError or InvalidInput."""
    sealed = assignment.get(SEALED_KEY)
    if not sealed:
        return RuntimeValues()
    try:
        document = json.loads(hybrid_decrypt(private_key, str(sealed), opened))
    except json.JSONDecodeError as exc:
        raise IntegrityError("The run's sealed values are not JSON.") from exc
    if not isinstance(document, dict):
        raise IntegrityError("The run's sealed values are not a JSON object.")
    masked = document.get("masked", [])
    if not isinstance(masked, list) or not all(isinstance(v, str) for v in masked):
        raise IntegrityError("The run's sealed masked values are not a list of strings.")
    return RuntimeValues(
        secrets=_string_map(document.get("secrets", {}), "secrets"),
        catalog_variables=_string_map(document.get("catalog_variables", {}), "catalog variables"),
        masked=tuple(masked),
    )
