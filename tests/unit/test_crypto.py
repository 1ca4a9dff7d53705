"""Tests of tower.core.crypto: round trips, tamper detection and the pinned wire format."""

from __future__ import annotations

import base64
import hashlib
import os
import re

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tower.core import crypto
from tower.core.errors import IntegrityError, InvalidInput

AAD = b"tenant-1/secret/DATABASE_URL"


@pytest.fixture(scope="module")
def rsa_key() -> RSAPrivateKey:
    # RSA generation is slow-ish; one key serves the whole module.
    return crypto.generate_rsa_private_key()


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _oaep_sha256() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


# --------------------------------------------------------------------------- AEAD


def test_generate_data_key_is_32_random_bytes() -> None:
    keys = {crypto.generate_data_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(k) == 32 for k in keys)


def test_seal_round_trip_and_layout() -> None:
    key = crypto.generate_data_key()
    blob = crypto.seal(key, b"hello", AAD)
    assert len(blob) == 12 + len(b"hello") + 16
    assert crypto.open_sealed(key, blob, AAD) == b"hello"
    # A fresh nonce each time: the same plaintext never seals to the same bytes.
    assert crypto.seal(key, b"hello", AAD) != blob


def test_seal_is_plain_aes_gcm_with_prefixed_nonce() -> None:
    key = crypto.generate_data_key()
    blob = crypto.seal(key, b"payload", AAD)
    assert AESGCM(key).decrypt(blob[:12], blob[12:], AAD) == b"payload"


def test_seal_empty_plaintext() -> None:
    key = crypto.generate_data_key()
    assert crypto.open_sealed(key, crypto.seal(key, b"", AAD), AAD) == b""


@pytest.mark.parametrize("index", [0, 11, 12, -1])
def test_open_sealed_detects_tampering(index: int) -> None:
    key = crypto.generate_data_key()
    blob = crypto.seal(key, b"some secret bytes", AAD)
    with pytest.raises(IntegrityError, match="wrong key or tampered data"):
        crypto.open_sealed(key, _flip(blob, index), AAD)


def test_open_sealed_wrong_aad_fails() -> None:
    key = crypto.generate_data_key()
    blob = crypto.seal(key, b"x", AAD)
    with pytest.raises(IntegrityError):
        crypto.open_sealed(key, blob, b"tenant-2/secret/DATABASE_URL")


def test_open_sealed_wrong_key_fails() -> None:
    blob = crypto.seal(crypto.generate_data_key(), b"x", AAD)
    with pytest.raises(IntegrityError):
        crypto.open_sealed(crypto.generate_data_key(), blob, AAD)


@pytest.mark.parametrize("length", [0, 1, 12, 27])
def test_open_sealed_short_input(length: int) -> None:
    with pytest.raises(IntegrityError, match="too short"):
        crypto.open_sealed(crypto.generate_data_key(), b"\0" * length, AAD)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_seal_refuses_non_256_bit_keys(size: int) -> None:
    with pytest.raises(InvalidInput, match="32 bytes"):
        crypto.seal(b"k" * size, b"x", AAD)


# ----------------------------------------------------------------------- Envelope


def test_wrap_unwrap_key() -> None:
    kek, dek = crypto.generate_data_key(), crypto.generate_data_key()
    wrapped = crypto.wrap_key(kek, dek, AAD)
    assert crypto.unwrap_key(kek, wrapped, AAD) == dek
    with pytest.raises(IntegrityError):
        crypto.unwrap_key(kek, wrapped, b"other")
    with pytest.raises(IntegrityError):
        crypto.unwrap_key(crypto.generate_data_key(), wrapped, AAD)


def test_wrap_key_refuses_bad_data_key() -> None:
    with pytest.raises(InvalidInput):
        crypto.wrap_key(crypto.generate_data_key(), b"short", AAD)


def test_unwrap_key_refuses_sealed_non_key() -> None:
    kek = crypto.generate_data_key()
    with pytest.raises(IntegrityError):
        crypto.unwrap_key(kek, crypto.seal(kek, b"not a key", AAD), AAD)


def test_envelope_round_trip_uses_fresh_data_key() -> None:
    kek = crypto.generate_data_key()
    one = crypto.envelope_encrypt(kek, b"package bytes", AAD)
    two = crypto.envelope_encrypt(kek, b"package bytes", AAD)
    assert crypto.envelope_decrypt(kek, one, AAD) == b"package bytes"
    assert crypto.unwrap_key(kek, one.wrapped_key, AAD) != crypto.unwrap_key(
        kek, two.wrapped_key, AAD
    )
    assert one.ciphertext != two.ciphertext


def test_envelope_tamper_and_aad_binding() -> None:
    kek = crypto.generate_data_key()
    env = crypto.envelope_encrypt(kek, b"payload", AAD)
    bad_ct = crypto.Envelope(env.wrapped_key, _flip(env.ciphertext, 20))
    bad_key = crypto.Envelope(_flip(env.wrapped_key, 20), env.ciphertext)
    for tampered in (bad_ct, bad_key):
        with pytest.raises(IntegrityError):
            crypto.envelope_decrypt(kek, tampered, AAD)
    with pytest.raises(IntegrityError):
        crypto.envelope_decrypt(kek, env, b"tenant-1/secret/OTHER")
    with pytest.raises(IntegrityError):
        crypto.envelope_decrypt(crypto.generate_data_key(), env, AAD)


def test_envelopes_cannot_swap_payloads() -> None:
    kek = crypto.generate_data_key()
    a = crypto.envelope_encrypt(kek, b"a", AAD)
    b = crypto.envelope_encrypt(kek, b"b", AAD)
    with pytest.raises(IntegrityError):
        crypto.envelope_decrypt(kek, crypto.Envelope(a.wrapped_key, b.ciphertext), AAD)


# ---------------------------------------------------------------------------- RSA


def test_rsa_key_parameters(rsa_key: RSAPrivateKey) -> None:
    assert rsa_key.key_size == 2048
    assert rsa_key.public_key().public_numbers().e == 65537


def test_pem_headers(rsa_key: RSAPrivateKey) -> None:
    pkcs1 = crypto.public_key_pem_pkcs1(rsa_key)
    spki = crypto.public_key_pem_spki(rsa_key.public_key())
    assert pkcs1.startswith("-----BEGIN RSA PUBLIC KEY-----\n")
    assert pkcs1.rstrip().endswith("-----END RSA PUBLIC KEY-----")
    assert spki.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert spki.rstrip().endswith("-----END PUBLIC KEY-----")
    assert "\r" not in pkcs1 + spki


@pytest.mark.parametrize("fmt", ["pkcs1", "spki"])
def test_load_public_key_accepts_both_formats(rsa_key: RSAPrivateKey, fmt: str) -> None:
    pem = (
        crypto.public_key_pem_pkcs1(rsa_key)
        if fmt == "pkcs1"
        else crypto.public_key_pem_spki(rsa_key)
    )
    for variant in (pem, pem.replace("\n", "\r\n"), "  " + pem + "\n\n", pem.encode()):
        loaded = crypto.load_public_key(variant)
        assert loaded.public_numbers() == rsa_key.public_key().public_numbers()


@pytest.mark.parametrize(
    "pem",
    ["", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"],
)
def test_load_public_key_rejects_garbage(pem: str) -> None:
    with pytest.raises(InvalidInput, match="PEM"):
        crypto.load_public_key(pem)


def test_load_public_key_rejects_non_rsa_and_small_keys() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(InvalidInput, match="not an RSA key"):
        crypto.load_public_key(ec_pem.decode())
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidInput, match="RSA-1024"):
        crypto.load_public_key(crypto.public_key_pem_spki(small))


def test_private_key_pem_round_trip(rsa_key: RSAPrivateKey) -> None:
    pem = crypto.private_key_to_pem(rsa_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = crypto.load_private_key(pem)
    assert loaded.private_numbers() == rsa_key.private_numbers()


def test_load_private_key_rejects_garbage() -> None:
    with pytest.raises(InvalidInput, match="private key"):
        crypto.load_private_key(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")


def test_rsa_wrap_round_trip_and_is_oaep_sha256(rsa_key: RSAPrivateKey) -> None:
    data = os.urandom(32)
    wrapped = crypto.rsa_wrap(rsa_key.public_key(), data)
    raw = base64.b64decode(wrapped, validate=True)
    assert len(raw) == 256
    assert rsa_key.decrypt(raw, _oaep_sha256()) == data
    assert crypto.rsa_unwrap(rsa_key, wrapped) == data


def test_rsa_unwrap_rejects_bad_input(rsa_key: RSAPrivateKey) -> None:
    wrapped = base64.b64decode(crypto.rsa_wrap(rsa_key.public_key(), b"k"))
    with pytest.raises(IntegrityError):
        crypto.rsa_unwrap(rsa_key, base64.b64encode(_flip(wrapped, 100)).decode())
    with pytest.raises(IntegrityError, match="expected 256"):
        crypto.rsa_unwrap(rsa_key, base64.b64encode(wrapped[:-1]).decode())
    with pytest.raises(InvalidInput, match="base64"):
        crypto.rsa_unwrap(rsa_key, "***")


# ------------------------------------------------------------------------- Hybrid


@pytest.mark.parametrize("plaintext", ["", "s3cr3t", "postgres://u:p@h/db?x=1", "ünïcødé ✓" * 50])
def test_hybrid_round_trip(rsa_key: RSAPrivateKey, plaintext: str) -> None:
    value = crypto.hybrid_encrypt(rsa_key.public_key(), plaintext)
    assert crypto.hybrid_decrypt(rsa_key, value) == plaintext


def test_hybrid_wire_structure(rsa_key: RSAPrivateKey) -> None:
    plaintext = "hello tower"
    value = crypto.hybrid_encrypt(rsa_key.public_key(), plaintext)
    # Standard alphabet with padding, no newlines.
    assert re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", value)
    assert len(value) % 4 == 0
    raw = base64.b64decode(value, validate=True)
    assert len(raw) == 256 + 12 + len(plaintext.encode()) + 16
    # Take it apart with raw primitives: ek || iv || ct+tag.
    ek, iv, ct = raw[:256], raw[256:268], raw[268:]
    key = rsa_key.decrypt(ek, _oaep_sha256())
    assert len(key) == 32
    assert AESGCM(key).decrypt(iv, ct, None) == plaintext.encode()


def test_hybrid_decrypts_independently_built_value(rsa_key: RSAPrivateKey) -> None:
    # Built the way the Tower CLI does it, without any of tower.core.crypto.
    key, iv = os.urandom(32), os.urandom(12)
    ct = AESGCM(key).encrypt(iv, "from-the-cli ✓".encode(), None)
    ek = rsa_key.public_key().encrypt(key, _oaep_sha256())
    value = base64.b64encode(ek + iv + ct).decode()
    assert crypto.hybrid_decrypt(rsa_key, value) == "from-the-cli ✓"


def test_hybrid_decrypt_through_loaded_pkcs1_key(rsa_key: RSAPrivateKey) -> None:
    # The create flow: client loads the server's PKCS#1 PEM and encrypts to it.
    public = crypto.load_public_key(crypto.public_key_pem_pkcs1(rsa_key))
    assert crypto.hybrid_decrypt(rsa_key, crypto.hybrid_encrypt(public, "v")) == "v"


@pytest.mark.parametrize("index", [0, 255, 256, 267, 268, -1])
def test_hybrid_detects_tampering(rsa_key: RSAPrivateKey, index: int) -> None:
    raw = base64.b64decode(crypto.hybrid_encrypt(rsa_key.public_key(), "secret value"))
    tampered = base64.b64encode(_flip(raw, index)).decode()
    with pytest.raises(IntegrityError, match="could not be decrypted"):
        crypto.hybrid_decrypt(rsa_key, tampered)


def test_hybrid_wrong_key_fails(rsa_key: RSAPrivateKey) -> None:
    value = crypto.hybrid_encrypt(crypto.generate_rsa_private_key().public_key(), "x")
    with pytest.raises(IntegrityError):
        crypto.hybrid_decrypt(rsa_key, value)


def test_hybrid_malformed_input(rsa_key: RSAPrivateKey) -> None:
    with pytest.raises(InvalidInput, match="base64"):
        crypto.hybrid_decrypt(rsa_key, "not base64!")
    with pytest.raises(IntegrityError, match="shorter than the minimum"):
        crypto.hybrid_decrypt(rsa_key, base64.b64encode(b"\0" * 283).decode())


def test_hybrid_rejects_non_utf8_payload(rsa_key: RSAPrivateKey) -> None:
    key, iv = os.urandom(32), os.urandom(12)
    ct = AESGCM(key).encrypt(iv, b"\xff\xfe", None)
    ek = rsa_key.public_key().encrypt(key, _oaep_sha256())
    with pytest.raises(InvalidInput, match="UTF-8"):
        crypto.hybrid_decrypt(rsa_key, base64.b64encode(ek + iv + ct).decode())


# ------------------------------------------------------------------------- Tokens


def test_new_token_prefix_length_and_uniqueness() -> None:
    tokens = {crypto.new_token("sk-") for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert token.startswith("sk-")
        assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", token.removeprefix("sk-"))


def test_hash_token_is_hex_sha256() -> None:
    token = crypto.new_token("rt-")
    digest = crypto.hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert crypto.hash_token(token) == digest
    assert crypto.hash_token(token + "x") != digest


def test_tokens_equal() -> None:
    assert crypto.tokens_equal("sk-abc", "sk-abc")
    assert not crypto.tokens_equal("sk-abc", "sk-abd")
    assert not crypto.tokens_equal("sk-abc", "sk-ab")
    assert not crypto.tokens_equal("ünï", "uni")  # non-ASCII must not raise


# ------------------------------------------------------------------------ Preview


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "XXXXXXXXXX"),
        ("abc", "XXXXXXXXXX"),
        ("0123456789", "XXXXXXXXXX"),
        ("0123456789A", "XXXXXX789A"),
        ("sk-live-1234567890abcd", "XXXXXXabcd"),
    ],
)
def test_preview(value: str, expected: str) -> None:
    assert crypto.preview(value) == expected


# --------------------------------------------------------------------------- session keys


def test_a_session_key_is_reused_with_fresh_nonces_and_the_wire_format_kept(
    rsa_key: RSAPrivateKey,
) -> None:
    session = crypto.new_session_key(rsa_key.public_key())
    first = crypto.hybrid_encrypt(rsa_key.public_key(), "one", session)
    second = crypto.hybrid_encrypt(rsa_key.public_key(), "one", session)
    size = rsa_key.key_size // 8
    raw_first, raw_second = base64.b64decode(first), base64.b64decode(second)
    assert raw_first[:size] == raw_second[:size] == session.wrapped
    assert raw_first[size : size + 12] != raw_second[size : size + 12], "a nonce per message"
    # Any holder of the key opens them, with or without remembering the wrap.
    assert crypto.hybrid_decrypt(rsa_key, first) == crypto.hybrid_decrypt(rsa_key, second)


def test_a_remembered_wrap_is_used_instead_of_the_private_key(rsa_key: RSAPrivateKey) -> None:
    session = crypto.new_session_key(rsa_key.public_key())
    sealed = crypto.hybrid_encrypt(rsa_key.public_key(), "payload", session)
    memo: dict[bytes, bytes] = {}
    assert crypto.hybrid_decrypt(rsa_key, sealed, memo) == "payload"
    assert memo == {session.wrapped: session.key}
    # The memo is what opens the wrap from now on: a wrong entry shows it is consulted.
    memo[session.wrapped] = os.urandom(crypto.KEY_SIZE)
    with pytest.raises(IntegrityError):
        crypto.hybrid_decrypt(rsa_key, sealed, memo)
    wrapped = crypto.rsa_wrap(rsa_key.public_key(), b"k" * 32)
    assert crypto.rsa_unwrap(rsa_key, wrapped, memo) == b"k" * 32
    assert memo[base64.b64decode(wrapped)] == b"k" * 32


def test_a_failed_unwrap_is_not_remembered(rsa_key: RSAPrivateKey) -> None:
    other = crypto.generate_rsa_private_key()
    wrapped = crypto.rsa_wrap(other.public_key(), b"k" * 32)
    memo: dict[bytes, bytes] = {}
    with pytest.raises(IntegrityError):
        crypto.rsa_unwrap(rsa_key, wrapped, memo)
    assert memo == {}
