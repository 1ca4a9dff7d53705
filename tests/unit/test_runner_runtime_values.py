"""Opening the sealed secrets of an assignment: only with the runner's own key, only well-formed."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from tower.core import crypto
from tower.core.errors import IntegrityError
from tower.runner.runtime_values import (
    SEALED_KEY,
    OpenedKeys,
    RuntimeValues,
    open_runtime_values,
)

RUNNER_KEY = crypto.generate_rsa_private_key()


def sealed_for(document: object, key: RSAPrivateKey = RUNNER_KEY) -> dict[str, str]:
    return {SEALED_KEY: crypto.hybrid_encrypt(key.public_key(), json.dumps(document))}


def test_the_runner_opens_secrets_catalog_variables_and_masked_values() -> None:
    assignment = sealed_for(
        {
            "secrets": {"DB_URL": "postgres://db/app"},
            "catalog_variables": {"PYICEBERG_CATALOG__LAKE__TOKEN": "tok-123456"},
            "masked": ["tok-123456"],
        }
    )
    values = open_runtime_values(RUNNER_KEY, assignment)
    assert values.secrets == {"DB_URL": "postgres://db/app"}
    assert values.catalog_variables == {"PYICEBERG_CATALOG__LAKE__TOKEN": "tok-123456"}
    mask = values.masker()
    assert mask("db=postgres://db/app token=tok-123456") == "db=*** token=***"


def test_an_assignment_without_sealed_values_has_none() -> None:
    assert open_runtime_values(RUNNER_KEY, {}) == RuntimeValues()


def test_values_sealed_to_another_runner_are_refused() -> None:
    other = crypto.generate_rsa_private_key()
    with pytest.raises(IntegrityError):
        open_runtime_values(RUNNER_KEY, sealed_for({"secrets": {"A": "b"}}, other))


def test_a_tampered_document_is_refused() -> None:
    assignment = sealed_for({"secrets": {"A": "value"}})
    raw = bytearray(base64.b64decode(assignment[SEALED_KEY]))
    raw[-1] ^= 1
    assignment[SEALED_KEY] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(IntegrityError):
        open_runtime_values(RUNNER_KEY, assignment)


@pytest.mark.parametrize(
    "document",
    [["not", "an", "object"], {"secrets": {"A": 1}}, {"masked": "not-a-list"}],
)
def test_malformed_documents_are_refused(document: object) -> None:
    with pytest.raises(IntegrityError):
        open_runtime_values(RUNNER_KEY, sealed_for(document))


def test_opened_keys_keep_the_most_recent_ones() -> None:
    opened = OpenedKeys(most=2)
    opened[b"a"], opened[b"b"] = b"1", b"2"
    assert opened[b"a"] == b"1"  # now the most recent
    opened[b"c"] = b"3"
    assert sorted(opened) == [b"a", b"c"] and opened.get(b"b") is None
    assert len(opened) == 2


def test_a_runner_opens_reused_session_seals_from_memory() -> None:
    session = crypto.new_session_key(RUNNER_KEY.public_key())
    opened = OpenedKeys()
    for value in ("first", "second"):
        sealed = crypto.hybrid_encrypt(
            RUNNER_KEY.public_key(), json.dumps({"secrets": {"V": value}}), session
        )
        values = open_runtime_values(RUNNER_KEY, {SEALED_KEY: sealed}, opened)
        assert values.secrets == {"V": value}
    assert list(opened) == [session.wrapped]
