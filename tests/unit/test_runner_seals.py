"""The control plane's sealing to runners' keys: wraps reused per runner key, session
keys replaced after their uses, every seal still opened with the runner's key alone."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from tower.core import crypto
from tower.core.errors import IntegrityError
from tower.server.services import vault


@pytest.fixture(scope="module")
def runner_key() -> RSAPrivateKey:
    return crypto.generate_rsa_private_key()


def _pem(key: RSAPrivateKey) -> str:
    return crypto.public_key_pem_spki(key)


def _wrap_of(sealed: str, key: RSAPrivateKey) -> bytes:
    return base64.b64decode(sealed)[: key.key_size // 8]


def test_seals_to_one_runner_share_a_session_key_and_open_with_its_key(
    runner_key: RSAPrivateKey,
) -> None:
    seals = vault.RunnerSeals()
    first, second = (seals.seal(_pem(runner_key), text) for text in ("a", "b"))
    assert _wrap_of(first, runner_key) == _wrap_of(second, runner_key)
    assert [crypto.hybrid_decrypt(runner_key, s) for s in (first, second)] == ["a", "b"]
    other = crypto.generate_rsa_private_key()
    theirs = seals.seal(_pem(other), "c")
    assert crypto.hybrid_decrypt(other, theirs) == "c"
    with pytest.raises(IntegrityError):
        crypto.hybrid_decrypt(runner_key, theirs)


def test_a_session_key_is_replaced_after_its_uses(
    runner_key: RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vault, "SESSION_KEY_MAX_USES", 2)
    seals = vault.RunnerSeals()
    wraps = [_wrap_of(seals.seal(_pem(runner_key), "x"), runner_key) for _ in range(3)]
    assert wraps[0] == wraps[1] != wraps[2]


def test_a_data_key_is_wrapped_once_per_runner_key(runner_key: RSAPrivateKey) -> None:
    seals = vault.RunnerSeals()
    one, two = b"1" * 32, b"2" * 32
    assert seals.wrap(_pem(runner_key), one) == seals.wrap(_pem(runner_key), one)
    assert seals.wrap(_pem(runner_key), one) != seals.wrap(_pem(runner_key), two)
    assert crypto.rsa_unwrap(runner_key, seals.wrap(_pem(runner_key), two)) == two
