"""Cryptographic primitives of Tower: sealing, envelope encryption, RSA and tokens.

Everything here is pure (no I/O) and built on `cryptography` only. Three layers:

* **Sealing** (`seal` / `open_sealed`): AES-256-GCM with a random 12-byte nonce
  prepended to the ciphertext. The AAD binds a blob to its owner (tenant + name)
  so a stored ciphertext cannot be swapped onto another row.
* **Envelope encryption** (`envelope_encrypt` / `envelope_decrypt`): a fresh data
  key per object, sealed by a key-encryption key. Rotating the KEK only rewraps
  the small data keys, never the payloads.
* **Hybrid RSA** (`hybrid_encrypt` / `hybrid_decrypt`): the wire format the Tower
  CLI uses for secrets and catalog properties:
  ``base64(RSA-OAEP-SHA256(pub, k) || iv(12) || AES-256-GCM(k, iv, utf8) || tag)``.

Failures to decrypt raise `IntegrityError`; structurally bad input (bad base64,
wrong key type or size, malformed PEM) raises `InvalidInput`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tower.core.errors import IntegrityError, InvalidInput

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "RSA_KEY_BITS",
    "TAG_SIZE",
    "Envelope",
    "SessionKey",
    "envelope_decrypt",
    "envelope_encrypt",
    "generate_data_key",
    "generate_rsa_private_key",
    "hash_token",
    "hybrid_decrypt",
    "hybrid_encrypt",
    "load_private_key",
    "load_public_key",
    "new_session_key",
    "new_token",
    "open_sealed",
    "preview",
    "private_key_to_pem",
    "public_key_pem_pkcs1",
    "public_key_pem_spki",
    "rsa_unwrap",
    "rsa_wrap",
    "seal",
    "tokens_equal",
    "unwrap_key",
    "wrap_key",
]

KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12  # the GCM standard nonce size; also the hybrid format's IV size
TAG_SIZE = 16
RSA_KEY_BITS = 2048
RSA_PUBLIC_EXPONENT = 65537
# Keys smaller than this are refused when loaded: they are breakable, and no Tower
# client generates them.
MIN_RSA_KEY_BITS = 2048
TOKEN_RANDOM_BYTES = 32  # 43 url-safe characters after the prefix
PREVIEW_MASK = "XXXXXXXXXX"
PREVIEW_PREFIX = "XXXXXX"

_UNDECRYPTABLE = "could not be decrypted (wrong key or tampered data)"


# --------------------------------------------------------------------------- AEAD


def generate_data_key() -> bytes:
    """Return a fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def _aesgcm(key: bytes) -> AESGCM:
    # AESGCM also accepts 128/192-bit keys; Tower promises AES-256, so refuse the rest.
    if len(key) != KEY_SIZE:
        raise InvalidInput(f"Encryption key must be {KEY_SIZE} bytes, got {len(key)}.")
    return AESGCM(key)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt `plaintext` with AES-256-GCM; return ``nonce(12) || ciphertext || tag``."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + _aesgcm(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a blob made by `seal` with the same key and AAD.

    Raises `IntegrityError` if the key or AAD differ, or the blob was altered or truncated.
    """
    aesgcm = _aesgcm(key)
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise IntegrityError(f"Sealed data is too short and {_UNDECRYPTABLE}.")
    try:
        return aesgcm.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag:
        raise IntegrityError(f"Sealed data {_UNDECRYPTABLE}.") from None


# ----------------------------------------------------------------------- Envelope


@dataclass(frozen=True, slots=True)
class Envelope:
    """An object encrypted under its own data key, plus that key sealed by a KEK."""

    wrapped_key: bytes
    ciphertext: bytes


def wrap_key(kek: bytes, dek: bytes, aad: bytes) -> bytes:
    """Seal data key `dek` with key-encryption key `kek`."""
    if len(dek) != KEY_SIZE:
        raise InvalidInput(f"Data key must be {KEY_SIZE} bytes, got {len(dek)}.")
    return seal(kek, dek, aad)


def unwrap_key(kek: bytes, wrapped: bytes, aad: bytes) -> bytes:
    """Open a data key sealed by `wrap_key`."""
    dek = open_sealed(kek, wrapped, aad)
    # Authenticated, so a wrong length means it was never a data key of ours.
    if len(dek) != KEY_SIZE:
        raise IntegrityError(f"Wrapped key {_UNDECRYPTABLE}.")
    return dek


def envelope_encrypt(kek: bytes, plaintext: bytes, aad: bytes) -> Envelope:
    """Encrypt `plaintext` under a fresh data key and wrap that key with `kek`.

    The same AAD (tenant + name, chosen by the caller) binds both the wrapped key and
    the payload, so neither can be moved to another object.
    """
    dek = generate_data_key()
    return Envelope(wrapped_key=wrap_key(kek, dek, aad), ciphertext=seal(dek, plaintext, aad))


def envelope_decrypt(kek: bytes, envelope: Envelope, aad: bytes) -> bytes:
    """Decrypt an `Envelope` made by `envelope_encrypt` with the same KEK and AAD."""
    dek = unwrap_key(kek, envelope.wrapped_key, aad)
    return open_sealed(dek, envelope.ciphertext, aad)


# ---------------------------------------------------------------------------- RSA


def _oaep() -> padding.OAEP:
    # The Tower wire format: OAEP with SHA-256 for both the hash and MGF1, no label.
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


def generate_rsa_private_key() -> RSAPrivateKey:
    """Return a new RSA-2048 private key (public exponent 65537)."""
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=RSA_KEY_BITS)


def _public_of(key: RSAPrivateKey | RSAPublicKey) -> RSAPublicKey:
    return key.public_key() if isinstance(key, RSAPrivateKey) else key


def public_key_pem_pkcs1(key: RSAPrivateKey | RSAPublicKey) -> str:
    """PKCS#1 PEM (``-----BEGIN RSA PUBLIC KEY-----``), as `GET /secrets/key` returns it."""
    pem = _public_of(key).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    return pem.decode("ascii")


def public_key_pem_spki(key: RSAPrivateKey | RSAPublicKey) -> str:
    """SPKI PEM (``-----BEGIN PUBLIC KEY-----``), as clients send it for export."""
    pem = _public_of(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def _as_pem_bytes(pem: str | bytes, what: str) -> bytes:
    data = pem.encode("ascii", errors="replace") if isinstance(pem, str) else pem
    # Clients may send CRLF line endings or surrounding whitespace; neither changes the key.
    data = data.replace(b"\r\n", b"\n").strip()
    if not data:
        raise InvalidInput(f"The {what} is empty; send a PEM-encoded RSA key.")
    return data


def _check_rsa_size(key: RSAPublicKey | RSAPrivateKey, what: str) -> None:
    if key.key_size < MIN_RSA_KEY_BITS:
        raise InvalidInput(
            f"The {what} is RSA-{key.key_size}; use an RSA key of at least {MIN_RSA_KEY_BITS} bits."
        )


def load_public_key(pem: str | bytes) -> RSAPublicKey:
    """Load an RSA public key from PKCS#1 (``RSA PUBLIC KEY``) or SPKI (``PUBLIC KEY``) PEM."""
    data = _as_pem_bytes(pem, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            "The public key is not a valid PEM; expected '-----BEGIN PUBLIC KEY-----' (SPKI) "
            "or '-----BEGIN RSA PUBLIC KEY-----' (PKCS#1)."
        ) from exc
    if not isinstance(key, RSAPublicKey):
        raise InvalidInput("The public key is not an RSA key; Tower needs an RSA-2048 public key.")
    _check_rsa_size(key, "public key")
    return key


def private_key_to_pem(key: RSAPrivateKey) -> bytes:
    """Serialize `key` as unencrypted PKCS#8 PEM (the caller protects it at rest)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes) -> RSAPrivateKey:
    """Load an unencrypted RSA private key from PEM (PKCS#8 or PKCS#1)."""
    data = _as_pem_bytes(pem, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            "The private key is not a valid unencrypted PEM; expected "
            "'-----BEGIN PRIVATE KEY-----' or '-----BEGIN RSA PRIVATE KEY-----'."
        ) from exc
    if not isinstance(key, RSAPrivateKey):
        raise InvalidInput("The private key is not an RSA key.")
    _check_rsa_size(key, "private key")
    return key


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"The {what} is not valid standard base64.") from exc


def _modulus_bytes(key: RSAPrivateKey | RSAPublicKey) -> int:
    return (key.key_size + 7) // 8


#: RSA-OAEP decryptions already made with one private key, by ciphertext (see
#: `SessionKey`); the holder of the key bounds its size
UnwrapMemo = MutableMapping[bytes, bytes]


def _rsa_decrypt(
    private_key: RSAPrivateKey, data: bytes, what: str, memo: UnwrapMemo | None = None
) -> bytes:
    if memo is not None and (known := memo.get(data)) is not None:
        return known
    try:
        plain = private_key.decrypt(data, _oaep())
    except ValueError:
        raise IntegrityError(f"The {what} {_UNDECRYPTABLE}.") from None
    if memo is not None:
        memo[data] = plain
    return plain


def rsa_wrap(public_key: RSAPublicKey, data: bytes) -> str:
    """Encrypt a short `data` (e.g. a key) with RSA-OAEP-SHA256; return standard base64."""
    return base64.b64encode(public_key.encrypt(data, _oaep())).decode("ascii")


def rsa_unwrap(private_key: RSAPrivateKey, b64: str, memo: UnwrapMemo | None = None) -> bytes:
    """Decrypt a value made by `rsa_wrap` with the matching private key (`memo`: the
    decryptions made before with this key, consulted and completed)."""
    data = _b64decode(b64, "RSA-wrapped value")
    if len(data) != _modulus_bytes(private_key):
        raise IntegrityError(
            f"The RSA-wrapped value is {len(data)} bytes, expected "
            f"{_modulus_bytes(private_key)}; it {_UNDECRYPTABLE}."
        )
    return _rsa_decrypt(private_key, data, "RSA-wrapped value", memo)


# ------------------------------------------------------------------------- Hybrid


@dataclass(frozen=True)
class SessionKey:
    """An AES-256 key and its RSA-OAEP encryption to one public key.

    `hybrid_encrypt` normally makes one per message. A sender of many messages to the
    same key holder (the control plane sealing each run's values to a runner) may
    reuse one for a while: each message still gets its own random nonce, and the
    holder, remembering the wrap it opened (`hybrid_decrypt`'s memo), skips the
    private-key operation. The wire format is unchanged.
    """

    key: bytes
    wrapped: bytes


def new_session_key(public_key: RSAPublicKey) -> SessionKey:
    key = os.urandom(KEY_SIZE)
    return SessionKey(key, public_key.encrypt(key, _oaep()))


def hybrid_encrypt(
    public_key: RSAPublicKey, plaintext: str, session: SessionKey | None = None
) -> str:
    """Encrypt `plaintext` in the Tower secrets wire format (see the module docstring),
    under a fresh key unless a `session` key made for `public_key` is given."""
    session = session or new_session_key(public_key)
    iv = os.urandom(NONCE_SIZE)
    ct = AESGCM(session.key).encrypt(iv, plaintext.encode("utf-8"), None)
    return base64.b64encode(session.wrapped + iv + ct).decode("ascii")


def hybrid_decrypt(private_key: RSAPrivateKey, value: str, memo: UnwrapMemo | None = None) -> str:
    """Decrypt a value in the Tower secrets wire format with the matching private key
    (`memo`: as for `rsa_unwrap`)."""
    data = _b64decode(value, "encrypted value")
    ek_len = _modulus_bytes(private_key)
    if len(data) < ek_len + NONCE_SIZE + TAG_SIZE:
        raise IntegrityError(
            f"The encrypted value is {len(data)} bytes, shorter than the minimum "
            f"{ek_len + NONCE_SIZE + TAG_SIZE} for this key; it {_UNDECRYPTABLE}."
        )
    ek, iv, ct = data[:ek_len], data[ek_len : ek_len + NONCE_SIZE], data[ek_len + NONCE_SIZE :]
    key = _rsa_decrypt(private_key, ek, "encrypted value's key", memo)
    if len(key) != KEY_SIZE:
        raise IntegrityError(f"The encrypted value's key is not AES-256 and {_UNDECRYPTABLE}.")
    try:
        raw = AESGCM(key).decrypt(iv, ct, None)
    except InvalidTag:
        raise IntegrityError(f"The encrypted value {_UNDECRYPTABLE}.") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("The decrypted value is not valid UTF-8 text.") from exc


# ------------------------------------------------------------------------- Tokens


def new_token(prefix: str) -> str:
    """Return `prefix` followed by 43 url-safe characters (256 bits) from `secrets`."""
    return prefix + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)


def hash_token(token: str) -> str:
    """Hex SHA-256 of `token`, for storing API keys and refresh tokens.

    A fast hash is right here, unlike for passwords: tokens carry 256 random bits, so
    there is nothing to brute-force and a slow KDF would only cost every request.
    It is also deterministic, so the hash can be looked up by index.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Compare two tokens (or token hashes) in constant time."""
    # compare_digest only takes ASCII str; bytes avoid a TypeError on odd input.
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# ------------------------------------------------------------------------ Preview


def preview(value: str) -> str:
    """Masked preview of a secret: all X up to 10 characters, else the last 4 shown."""
    if len(value) <= len(PREVIEW_MASK):
        return PREVIEW_MASK
    return PREVIEW_PREFIX + value[-4:]


# ------------------------------------------------------------------ package signatures
#
# The control plane signs what it knows about each package (its sha256, its MANIFEST
# checksum, the version it belongs to) with an Ed25519 key; runners verify before
# they execute anything. Public keys travel as base64 of their 32 raw bytes, which fits
# on one line of a runner's `.env` file.

PACKAGE_SIGNATURE_CONTEXT = "tower-package-v1"


def package_statement(version_id: str, package_sha256: str, content_checksum: str) -> bytes:
    """The bytes a package signature covers; one field per line, so none can bleed
    into another."""
    fields = (PACKAGE_SIGNATURE_CONTEXT, version_id, package_sha256.lower(), content_checksum)
    return "\n".join(fields).encode()


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signing_key_to_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def signing_key_from_bytes(raw: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(raw)


def verify_key_b64(key: Ed25519PrivateKey) -> str:
    """The public half, as base64 of its 32 raw bytes."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def sign_b64(key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message)).decode()


def verify_signature(public_key_b64: str, message: bytes, signature_b64: str) -> None:
    """Raise IntegrityError unless `signature_b64` is the key's signature of `message`."""
    try:
        public = Ed25519PublicKey.from_public_bytes(_b64decode(public_key_b64, "signing key"))
    except ValueError as exc:
        raise IntegrityError(f"the package signing key is malformed: {exc}") from exc
    try:
        public.verify(_b64decode(signature_b64, "signature"), message)
    except InvalidSignature as exc:
        raise IntegrityError("the package signature does not match") from exc
