"""Where secret values cross the control plane: in from clients, at rest, out to runners.

* In: clients encrypt each value to the server's long-term RSA key (`GET /v1/secrets/key`)
  in the hybrid wire format; `decrypt_incoming` opens it once.
* At rest: `seal` puts each value under its own data key (AES-256-GCM), wrapped by the
  account key, wrapped by the master key. The AAD names the owner by ids (account,
  environment, object), so a stored value cannot be moved to another row.
* Out: values leave only hybrid-encrypted again, to a runner's key or to a key the caller
  supplies (export). Nothing here returns plaintext to an API response.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm import Session

from tower.core import certificates, crypto, errors
from tower.server.services.context import ServerContext, read_session
from tower.server.store import models

SERVER_KEY_NAME = "secrets"
_SERVER_KEY_PURPOSE = "server-rsa-key"
_key_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Sealed:
    wrapped_key: bytes
    ciphertext: bytes
    preview: str


def secret_aad(account_id: uuid.UUID, environment_id: uuid.UUID, name: str) -> bytes:
    return f"secret:{account_id}:{environment_id}:{name}".encode()


def catalog_property_aad(account_id: uuid.UUID, catalog_id: uuid.UUID, name: str) -> bytes:
    return f"catalog-property:{account_id}:{catalog_id}:{name}".encode()


# ------------------------------------------------------------------ the server key


@dataclass(frozen=True)
class _KeyKind:
    """How one kind of server key is made, stored and published."""

    generate: Callable[[], Any]
    private_bytes: Callable[[Any], bytes]
    load: Callable[[bytes], Any]
    public_text: Callable[[Any], str]


_RSA = _KeyKind(
    crypto.generate_rsa_private_key,
    crypto.private_key_to_pem,
    crypto.load_private_key,
    crypto.public_key_pem_pkcs1,
)
_ED25519 = _KeyKind(
    crypto.generate_signing_key,
    crypto.signing_key_to_bytes,
    crypto.signing_key_from_bytes,
    crypto.verify_key_b64,
)
PACKAGE_SIGNING_KEY_NAME = "package-signing"
#: the CA of runner client certificates; its "public text" is the CA certificate itself
_RUNNER_CA = _KeyKind(
    certificates.generate_key,
    certificates.key_to_pem,
    certificates.load_key,
    certificates.ca_certificate_pem,
)
RUNNER_CA_KEY_NAME = "runner-ca"
_RUNNER_CA_CERT = "runner-ca-certificate"


def server_private_key(ctx: ServerContext, name: str = SERVER_KEY_NAME) -> RSAPrivateKey:
    """One of the server's RSA-2048 keys (`secrets`: what clients encrypt to; others, e.g.
    the identity-token signing key, by name), created on first use and shared by every
    replica through the database."""
    return _server_key(ctx, name, _RSA)


def package_signing_key(ctx: ServerContext) -> Ed25519PrivateKey:
    """The Ed25519 key packages are signed with; runners verify with its public half."""
    return _server_key(ctx, PACKAGE_SIGNING_KEY_NAME, _ED25519)


def runner_ca(ctx: ServerContext) -> tuple[EllipticCurvePrivateKey, str]:
    """The control plane's own CA (key, PEM certificate): it issues runners' client
    certificates, and the mutual-TLS listener trusts nothing else."""
    key = _server_key(ctx, RUNNER_CA_KEY_NAME, _RUNNER_CA)
    cert = ctx.loaded_keys.get(_RUNNER_CA_CERT)
    if cert is None:
        # Read back, not rebuilt: every replica must serve the certificate stored first.
        with read_session(ctx) as session:
            cert = session.get(models.ServerKey, RUNNER_CA_KEY_NAME).public_key_pem
        ctx.loaded_keys[_RUNNER_CA_CERT] = cert
    return key, cert


def _server_key(ctx: ServerContext, name: str, kind: _KeyKind) -> Any:
    cached = ctx.loaded_keys.get(name)
    if cached is not None:
        return cached
    with _key_lock:
        cached = ctx.loaded_keys.get(name)
        if cached is None:
            cached = _load_or_create_server_key(ctx, name, kind)
            ctx.loaded_keys[name] = cached
    return cached


def server_public_key_pem(ctx: ServerContext) -> str:
    """PKCS#1 PEM, the form the official CLI parses (contract §0.4)."""
    return crypto.public_key_pem_pkcs1(server_private_key(ctx))


def _server_key_aad(name: str) -> bytes:
    # The AAD names the key, so one sealed key cannot be passed off as another.
    return f"server-key:{name}".encode()


def _open_server_key(kek: bytes, row: models.ServerKey, kind: _KeyKind) -> Any:
    return kind.load(crypto.open_sealed(kek, row.sealed_private_key, _server_key_aad(row.name)))


def _load_or_create_server_key(ctx: ServerContext, name: str, kind: _KeyKind) -> Any:
    kek = ctx.keys.derive(_SERVER_KEY_PURPOSE)
    with read_session(ctx) as session:
        row = session.get(models.ServerKey, name)
        if row is not None:
            return _open_server_key(kek, row, kind)
    key = kind.generate()
    try:
        with ctx.sessions.begin() as session:
            session.add(
                models.ServerKey(
                    name=name,
                    sealed_private_key=crypto.seal(
                        kek, kind.private_bytes(key), _server_key_aad(name)
                    ),
                    public_key_pem=kind.public_text(key),
                )
            )
    except DatabaseIntegrityError:
        # Another replica created it first: everyone must use the same key.
        with read_session(ctx) as session:
            return _open_server_key(kek, session.get(models.ServerKey, name), kind)
    return key


def decrypt_incoming(ctx: ServerContext, encrypted_value: str, what: str) -> str:
    """Open a value a client encrypted to the server key; a clear 400 when it can't be."""
    try:
        return crypto.hybrid_decrypt(server_private_key(ctx), encrypted_value)
    except errors.IntegrityError as exc:
        raise errors.IntegrityError(
            f"The encrypted value of {what} could not be decrypted: it was tampered with or "
            "encrypted to another key. Fetch the current key from GET /v1/secrets/key and "
            "encrypt again."
        ) from exc
    except errors.InvalidInput as exc:
        raise errors.InvalidInput(
            f"The encrypted value of {what} is malformed: {exc.message}",
            location="body.encrypted_value",
        ) from exc


# ------------------------------------------------------------------------ at rest


def account_key(ctx: ServerContext, session: Session, account_id: uuid.UUID) -> bytes:
    account = session.get(models.Account, account_id)
    return ctx.keys.account_key(account.id, account.wrapped_key)


def seal(account_key_: bytes, plaintext: str, aad: bytes) -> Sealed:
    envelope = crypto.envelope_encrypt(account_key_, plaintext.encode("utf-8"), aad)
    return Sealed(envelope.wrapped_key, envelope.ciphertext, crypto.preview(plaintext))


def open_value(account_key_: bytes, row: models.EncryptedValue, aad: bytes) -> str:
    envelope = crypto.Envelope(wrapped_key=row.wrapped_key, ciphertext=row.ciphertext)
    return crypto.envelope_decrypt(account_key_, envelope, aad).decode("utf-8")


def store(row: models.EncryptedValue, sealed: Sealed) -> None:
    row.wrapped_key = sealed.wrapped_key
    row.ciphertext = sealed.ciphertext
    row.preview = sealed.preview


# ------------------------------------------------------------------------ out


def encrypt_for(public_key_pem: str, plaintext: str) -> str:
    """Re-encrypt a value to a caller's or runner's RSA key (hybrid wire format)."""
    return crypto.hybrid_encrypt(crypto.load_public_key(public_key_pem), plaintext)


# ------------------------------------------------------------------------ to runners

#: a session key sealing values to one runner is replaced after this many uses or seconds
SESSION_KEY_MAX_USES = 10_000
SESSION_KEY_MAX_AGE_S = 3600.0
#: runner keys (and their wraps) remembered at most; beyond that all are forgotten
MAX_REMEMBERED_RUNNER_KEYS = 1024


class RunnerSeals:
    """Encryption to runners' RSA keys that reuses what it can: per runner key, one
    AES session key for the runs' sealed values (`crypto.SessionKey`, replaced after
    `SESSION_KEY_MAX_USES` uses or `SESSION_KEY_MAX_AGE_S`), and one wrap per data
    key (a version's package key). A runner remembers the wraps it opened, so from the
    second run on it skips the RSA private-key operations (~0.7 ms each). Nothing new
    is revealed: a repeated wrap only says "the same key", which the version id in the
    assignment says anyway. Process memory only, like the master key.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, RSAPublicKey] = {}
        self._sessions: dict[str, tuple[crypto.SessionKey, int, float]] = {}
        self._wraps: dict[tuple[str, bytes], str] = {}

    def seal(self, public_key_pem: str, plaintext: str) -> str:
        """`plaintext` in the hybrid wire format, for the holder of the key."""
        return crypto.hybrid_encrypt(
            self._public_key(public_key_pem), plaintext, self._session(public_key_pem)
        )

    def wrap(self, public_key_pem: str, data_key: bytes) -> str:
        """`crypto.rsa_wrap` of `data_key`, the same for the same runner key and data key."""
        slot = (public_key_pem, hashlib.sha256(data_key).digest())
        with self._lock:
            known = self._wraps.get(slot)
        if known is None:
            known = crypto.rsa_wrap(self._public_key(public_key_pem), data_key)
            with self._lock:
                self._remember(self._wraps, slot, known)
        return known

    def _public_key(self, pem: str) -> RSAPublicKey:
        with self._lock:
            key = self._keys.get(pem)
        if key is None:
            key = crypto.load_public_key(pem)
            with self._lock:
                self._remember(self._keys, pem, key)
        return key

    def _session(self, pem: str) -> crypto.SessionKey:
        now = time.monotonic()
        with self._lock:
            session, uses, created = self._sessions.get(pem, (None, 0, now))
            fresh = session is not None and uses < SESSION_KEY_MAX_USES
            if fresh and now - created < SESSION_KEY_MAX_AGE_S:
                self._sessions[pem] = (session, uses + 1, created)
                return session
        session = crypto.new_session_key(self._public_key(pem))
        with self._lock:
            self._remember(self._sessions, pem, (session, 1, now))
        return session

    @staticmethod
    def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
        if len(table) >= MAX_REMEMBERED_RUNNER_KEYS and key not in table:
            table.clear()
        table[key] = value


runner_seals = RunnerSeals()
