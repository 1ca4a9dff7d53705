"""Runner credentials: a token (stored hashed) plus a client certificate from the
control plane's CA (never stored: only its serial, which binds it to the token).

A runner rotates its credential before it expires (`rotate`): the new one inherits the
old one's lifetime and its runners, and the old one keeps working for
`TOWER_RUNNER_CREDENTIAL_OVERLAP_SECONDS` so requests already in flight still land.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from tower.core import certificates, crypto, errors
from tower.server.services import audit, vault
from tower.server.services.context import (
    Principal,
    RunnerPrincipal,
    ServerContext,
    read_session,
)
from tower.server.store import models
from tower.server.store.types import utcnow

RUNNER_TOKEN_PREFIX = "rt-"


@dataclass(frozen=True)
class IssuedCredential:
    id: uuid.UUID
    name: str
    #: shown once: only its hash is stored
    token: str
    expires_at: datetime | None
    #: the client certificate and its private key (shown once, never stored)
    certificate: certificates.IssuedCertificate
    root_ca: str


def issue(
    ctx: ServerContext,
    session: Session,
    *,
    name: str,
    account_id: uuid.UUID | None,
    expires_at: datetime | None,
    rotated_from_id: uuid.UUID | None = None,
) -> IssuedCredential:
    """Add a credential to the caller's transaction.

    The CA must be loaded already (`vault.runner_ca`, done at start-up) so this never
    opens a second write transaction.
    """
    ca_key, ca_cert = vault.runner_ca(ctx)
    cert = certificates.issue_client_certificate(ca_key, ca_cert, name, not_after=expires_at)
    token = crypto.new_token(RUNNER_TOKEN_PREFIX)
    row = models.RunnerCredential(
        name=name,
        account_id=account_id,
        token_hash=crypto.hash_token(token),
        expires_at=expires_at,
        certificate_serial=cert.serial,
        rotated_from_id=rotated_from_id,
    )
    session.add(row)
    session.flush()
    return IssuedCredential(row.id, name, token, expires_at, cert, ca_cert)


def mint(
    ctx: ServerContext,
    *,
    name: str,
    account_id: uuid.UUID | None,
    ttl: timedelta | None = None,
    principal: Principal | None = None,
) -> IssuedCredential:
    """A new credential; `principal` (a person or key minting it) is audited."""
    vault.runner_ca(ctx)
    with ctx.sessions.begin() as session:
        issued = issue(
            ctx,
            session,
            name=name,
            account_id=account_id,
            expires_at=utcnow() + ttl if ttl else None,
        )
        if principal is not None:
            audit.record(
                session,
                principal,
                "runner_credential.create",
                name,
                expires_at=_iso(issued.expires_at),
                certificate_serial=issued.certificate.serial,
            )
    return issued


def rotate(ctx: ServerContext, who: RunnerPrincipal) -> IssuedCredential:
    """Replace the caller's credential with a new one of the same lifetime; the old one
    stops working after the overlap."""
    vault.runner_ca(ctx)
    now = utcnow()
    overlap_end = now + timedelta(seconds=ctx.settings.runner_credential_overlap_seconds)
    with ctx.sessions.begin() as session:
        old = session.get(models.RunnerCredential, who.credential_id, with_for_update=True)
        if old is None or old.revoked_at is not None or expired(old, now):
            raise errors.Unauthenticated(
                "This runner credential can no longer be rotated (it was revoked or expired): "
                "mint new credentials with `tower runners credentials`."
            )
        lifetime = old.expires_at - old.created_at if old.expires_at else None
        issued = issue(
            ctx,
            session,
            name=old.name,
            account_id=old.account_id,
            expires_at=now + lifetime if lifetime else None,
            rotated_from_id=old.id,
        )
        old.expires_at = min(old.expires_at, overlap_end) if old.expires_at else overlap_end
        # The runners keep their ids (and runs) under the new credential.
        session.execute(
            update(models.Runner)
            .where(models.Runner.credential_id == old.id)
            .values(credential_id=issued.id)
        )
        if old.account_id is not None:
            audit.record(
                session,
                _runner_actor(old),
                "runner_credential.rotate",
                old.name,
                expires_at=_iso(issued.expires_at),
                old_credential_valid_until=_iso(old.expires_at),
                certificate_serial=issued.certificate.serial,
            )
    return issued


def same_runner_identity(
    session: Session, runner_credential_id: uuid.UUID, who: RunnerPrincipal
) -> bool:
    """Whether a runner registered under `runner_credential_id` may act with `who`: the
    same credential, or one side replaced the other by rotation (the overlap)."""
    if runner_credential_id == who.credential_id:
        return True
    if who.rotated_from_id == runner_credential_id:
        return True
    current = session.get(models.RunnerCredential, runner_credential_id)
    return current is not None and current.rotated_from_id == who.credential_id


def expired(row: models.RunnerCredential, now: datetime) -> bool:
    return row.expires_at is not None and row.expires_at <= now


def _runner_actor(row: models.RunnerCredential) -> Principal:
    assert row.account_id is not None
    return Principal(
        account_id=row.account_id,
        account_name="",
        user_id=None,
        kind="runner",
        credential=f"runner credential {row.name}",
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


#: a runner rotates its credential once this much of its lifetime has passed
ROTATE_AFTER_FRACTION = 2 / 3


def rotation_schedule(ctx: ServerContext, who: RunnerPrincipal) -> dict[str, str | None]:
    """When the caller's credential expires and when its runner should rotate it
    (both None for a credential without expiry)."""
    with read_session(ctx) as session:
        row = session.get(models.RunnerCredential, who.credential_id)
    if row is None or row.expires_at is None:
        return {"credential_expires_at": None, "credential_rotate_after": None}
    rotate_after = row.created_at + (row.expires_at - row.created_at) * ROTATE_AFTER_FRACTION
    return {
        "credential_expires_at": _iso(row.expires_at),
        "credential_rotate_after": _iso(rotate_after),
    }
