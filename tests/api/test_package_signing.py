"""The control plane signs every stored package; runners learn the key at registration
(or pin it from their credentials) and every assignment carries a valid signature."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.conftest import ApiServer
from tests.api.helpers import FakeRunner, deploy, make_package
from tower.core import crypto
from tower.core.errors import IntegrityError
from tower.server.app import build_context
from tower.server.services import runners
from tower.server.store import models


def _verify(key: str, assignment: dict) -> None:
    statement = crypto.package_statement(
        assignment["version_id"], assignment["package_sha256"], assignment["content_checksum"]
    )
    crypto.verify_signature(key, statement, assignment["package_signature"])


def _announced_key(runner: FakeRunner) -> str:
    answer = runner.http.post(
        "/register", json={"name": "again", "public_key": runner.keys.public_pem}
    )
    return answer.json()["package_signing_key"]


def test_assignments_carry_a_signature_of_the_stored_package(
    api_server: ApiServer, tmp_path: Path
) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        assert deploy(api, "hello", make_package(tmp_path / "v1")).status_code == 201
        minted = api.post("/runners/credentials", json={}).json()["credentials"]
        api.post("/apps/hello/runs", json={"parameters": {}})
    runner = FakeRunner(api_server)
    key = _announced_key(runner)
    assert minted["package_signing_key"] == key  # what a runner may pin
    assignment = runner.claim()
    _verify(key, assignment)

    # Another version's signature, or another key, does not verify this package.
    with pytest.raises(IntegrityError):
        _verify(key, {**assignment, "version_id": "some-other-version"})
    other = crypto.verify_key_b64(crypto.generate_signing_key())
    with pytest.raises(IntegrityError):
        _verify(other, assignment)


def test_versions_stored_before_signing_are_signed_when_dispatched(
    api_server: ApiServer, tmp_path: Path
) -> None:
    with api_server.client() as api:
        api.post("/apps", json={"name": "hello"})
        deploy(api, "hello", make_package(tmp_path / "v1"))
        with api_server.ctx.sessions.begin() as session:
            for version in session.query(models.AppVersion):
                version.package_signature = None
        api.post("/apps/hello/runs", json={"parameters": {}})
    runner = FakeRunner(api_server)
    assignment = runner.claim()
    _verify(_announced_key(runner), assignment)
    with api_server.ctx.sessions.begin() as session:
        [version] = session.query(models.AppVersion).all()
        assert version.package_signature == assignment["package_signature"]


def test_the_signing_key_is_the_same_for_every_replica(api_server: ApiServer) -> None:
    runner = FakeRunner(api_server)
    other_replica = build_context(api_server.ctx.settings)
    assert runners.package_verify_key(other_replica) == _announced_key(runner)
