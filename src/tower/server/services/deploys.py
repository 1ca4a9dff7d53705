"""Deploying a package: verify, encrypt, store, record an immutable version, pin it."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from tower.core import crypto, errors, package
from tower.server.services import apps as apps_service
from tower.server.services import audit, vault
from tower.server.services.context import Principal, ServerContext, owned
from tower.server.store import models
from tower.server.store.types import utcnow


@dataclass(frozen=True)
class DeployRequest:
    app_name: str
    data: bytes
    checksum: str | None
    environment: str | None
    all_environments: bool
    idempotency_key: str | None


def verify_checksum(data: bytes, declared: str | None) -> str:
    actual = package.sha256_hex(data)
    if declared is not None and not hmac.compare_digest(actual, declared.strip().lower()):
        raise errors.IntegrityError(
            f"The upload's SHA-256 is {actual} but X-Tower-Checksum-SHA256 says {declared}: "
            "the package was corrupted in transit. Deploy again."
        )
    return actual


def package_aad(version_id: uuid.UUID) -> bytes:
    """Binds a package ciphertext to its version, so blobs cannot be swapped."""
    return f"package:{version_id}".encode()


def _existing_for_key(
    session: Session, app: models.App, key: str | None
) -> models.AppVersion | None:
    if not key:
        return None
    return session.scalar(
        select(models.AppVersion).where(
            models.AppVersion.app_id == app.id, models.AppVersion.idempotency_key == key
        )
    )


def _target_environments(
    session: Session, principal: Principal, request: DeployRequest
) -> list[models.Environment]:
    if request.all_environments and request.environment:
        raise errors.InvalidInput(
            "Use either environment or all_environments, not both.", location="query"
        )
    if request.all_environments:
        stmt = owned(select(models.Environment), models.Environment, principal)
        return list(session.scalars(stmt.order_by(models.Environment.name)))
    # Deploying to an environment that does not exist yet creates it: the documented
    # flow deploys to `test` without ever creating it first.
    name = request.environment or "default"
    return [apps_service.get_or_create_environment(session, principal, name)]


def pin(
    session: Session, app: models.App, env: models.Environment, version_id: uuid.UUID
) -> models.AppEnvironmentVersion:
    """Make `env` run that version of `app` from the next run on (runs keep theirs)."""
    row = session.get(models.AppEnvironmentVersion, (app.id, env.id))
    if row is None:
        row = models.AppEnvironmentVersion(
            account_id=app.account_id,
            app_id=app.id,
            environment_id=env.id,
            version_id=version_id,
            updated_at=utcnow(),
        )
        session.add(row)
    else:
        row.version_id = version_id
        row.updated_at = utcnow()
    return row


def sign_package(
    key: Ed25519PrivateKey, version_id: uuid.UUID, package_sha256: str, content_checksum: str
) -> str:
    """The control plane's signature of what it stored for a version; runners verify it
    before they run anything (see tower.core.crypto.package_statement)."""
    statement = crypto.package_statement(str(version_id), package_sha256, content_checksum)
    return crypto.sign_b64(key, statement)


def deploy(ctx: ServerContext, principal: Principal, request: DeployRequest) -> models.AppVersion:
    """Store a new immutable version, or return the one an idempotency key already made."""
    sha = verify_checksum(request.data, request.checksum)
    info = package.inspect_package(request.data, verify=True)
    signing_key = vault.package_signing_key(ctx)  # loaded outside the write transaction
    with ctx.sessions.begin() as session:
        app = apps_service.get_app(session, principal, request.app_name, lock=True)
        environments = _target_environments(session, principal, request)
        existing = _existing_for_key(session, app, request.idempotency_key)
        if existing is not None:
            # Same code as a version we already have: nothing to store, but the deploy
            # still lands where it was aimed (`tower deploy -e production` of a commit
            # already deployed to `default` must move production to it).
            for env in environments:
                pin(session, app, env, existing.id)
            _record_deploy(session, principal, app, existing, environments, reused=True)
            return existing
        account = session.get(models.Account, principal.account_id)
        account_key = ctx.keys.account_key(account.id, account.wrapped_key)
        version_id = uuid.uuid4()
        data_key = crypto.generate_data_key()
        blob_key = f"{apps_service.package_prefix(account.id, app.id)}/{version_id}.tar.gz.enc"
        ctx.blobs.put(blob_key, crypto.seal(data_key, request.data, package_aad(version_id)))
        app.last_version_number += 1
        version = models.AppVersion(
            id=version_id,
            account_id=account.id,
            app_id=app.id,
            number=app.last_version_number,
            towerfile=info.towerfile_text or "",
            parameters=[p.model_dump() for p in info.manifest.parameters],
            invoke=info.manifest.invoke,
            content_checksum=info.manifest.checksum,
            package_sha256=sha,
            package_signature=sign_package(signing_key, version_id, sha, info.manifest.checksum),
            package_size=len(request.data),
            blob_key=blob_key,
            wrapped_data_key=crypto.wrap_key(account_key, data_key, package_aad(version_id)),
            idempotency_key=request.idempotency_key or None,
        )
        session.add(version)
        session.flush()
        for env in environments:
            pin(session, app, env, version.id)
        _record_deploy(session, principal, app, version, environments)
        return version


def _record_deploy(
    session: Session,
    principal: Principal,
    app: models.App,
    version: models.AppVersion,
    environments: list[models.Environment],
    *,
    reused: bool = False,
) -> None:
    audit.record(
        session,
        principal,
        "app.deploy",
        f"apps/{app.name}",
        version=f"v{version.number}",
        environments=[env.name for env in environments],
        package_sha256=version.package_sha256,
        reused_existing_version=reused or None,
    )


def list_versions(
    ctx: ServerContext, principal: Principal, app_name: str
) -> list[models.AppVersion]:
    with ctx.sessions.begin() as session:
        app = apps_service.get_app(session, principal, app_name)
        stmt = select(models.AppVersion).where(models.AppVersion.app_id == app.id)
        return list(session.scalars(stmt.order_by(models.AppVersion.number.desc())))


def get_version(
    ctx: ServerContext, principal: Principal, app_name: str, version: str
) -> models.AppVersion:
    number = parse_version(version)
    with ctx.sessions.begin() as session:
        app = apps_service.get_app(session, principal, app_name)
        row = session.scalar(
            select(models.AppVersion).where(
                models.AppVersion.app_id == app.id, models.AppVersion.number == number
            )
        )
        if row is None:
            raise errors.VersionNotFound(f"App '{app_name}' has no version {version}.")
        return row


def parse_version(text: str) -> int:
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not digits.isdigit():
        raise errors.InvalidInput(f"Version {text!r} is not valid; use a form like 'v3'.")
    return int(digits)


def read_package(
    ctx: ServerContext, version: models.AppVersion, account_key: bytes
) -> tuple[bytes, bytes]:
    """The encrypted blob and the version's data key (for handing to a runner)."""
    data_key = crypto.unwrap_key(account_key, version.wrapped_data_key, package_aad(version.id))
    return ctx.blobs.get(version.blob_key), data_key
