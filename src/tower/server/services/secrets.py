"""Secrets: named values per environment, sealed at rest, never handed out in the clear.

A run in environment E gets every secret of `default` that E does not override, plus
E's own. Listing and exporting for E show exactly that set (each item names the
environment it comes from); `all` shows every secret of every environment.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tower.core import errors
from tower.server.services import audit, inherited, vault
from tower.server.services.accounts import DEFAULT_ENVIRONMENT
from tower.server.services.context import Principal, ServerContext, owned
from tower.server.store import models
from tower.server.store.types import utcnow

MAX_SECRET_NAME_LENGTH = 256
# A secret becomes an environment variable of the run (`dlt.x.y` becomes `X__Y`), so
# whitespace, '/', '=' and the like have no place in its name.
SECRET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True, slots=True)
class SecretView:
    """A secret as the API shows it: its name, where it lives, its masked preview."""

    name: str
    environment: str
    preview: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ExportedSecret:
    """A secret's value encrypted to the caller's public key (hybrid wire format)."""

    name: str
    environment: str
    created_at: datetime
    encrypted_value: str


#: which secrets a listing or export covers (what a run in one environment gets, or all)
SecretSelection = inherited.Selection


# ------------------------------------------------------------------------ names


def validate_secret_name(name: str) -> str:
    if not name or len(name) > MAX_SECRET_NAME_LENGTH or not SECRET_NAME_PATTERN.match(name):
        raise errors.InvalidInput(
            f"Secret name {name!r} is not valid: use 1-{MAX_SECRET_NAME_LENGTH} letters, "
            "digits, '_', '-' or '.' (e.g. 'SNOWFLAKE_URL' or 'dlt.destination.password'); "
            "it becomes an environment variable of your runs.",
            location="body.name",
            value=name,
        )
    return name


def split_qualified_name(name: str, environment: str | None) -> tuple[str, str]:
    """`ENV/NAME` → (NAME, ENV); a plain NAME keeps `environment` (default `default`).

    The official CLI accepts `tower secrets delete ENV/NAME` and splits it itself, but
    the SDK sends the whole string as the path segment; the prefix wins, as in the CLI.
    """
    prefix, sep, rest = name.partition("/")
    if sep and prefix:
        return rest, prefix
    return name, environment or DEFAULT_ENVIRONMENT


def _not_found(name: str, environment: str) -> errors.NotFound:
    return inherited.not_found("secret", name, environment)


def _already_exists(name: str, environment: str) -> str:
    return (
        f"Secret '{name}' already exists in environment '{environment}'. Delete it "
        f"first (`tower secrets delete {environment}/{name}`) or update it."
    )


# ------------------------------------------------------------------------ queries


def _find(
    session: Session, principal: Principal, name: str, environment: str, *, lock: bool = False
) -> models.Secret | None:
    return inherited.find(session, models.Secret, principal, name, environment, lock=lock)


def _view(secret: models.Secret, environment: str) -> SecretView:
    return SecretView(
        name=secret.name,
        environment=environment,
        preview=secret.preview,
        created_at=secret.created_at,
        updated_at=secret.updated_at,
    )


# ------------------------------------------------------------------------ use cases


def create_secret(
    ctx: ServerContext, principal: Principal, name: str, environment: str, encrypted_value: str
) -> SecretView:
    """Store a new secret, creating its environment on first use; 409 if it exists."""
    validate_secret_name(name)
    # Decrypt before touching the database: a value we cannot open stores nothing.
    plaintext = vault.decrypt_incoming(ctx, encrypted_value, f"secret '{name}'")
    return inherited.create_once_more(
        lambda: _insert(ctx, principal, name, environment, plaintext),
        f"Secret '{name}' in environment '{environment}'",
    )


def _insert(
    ctx: ServerContext, principal: Principal, name: str, environment: str, plaintext: str
) -> SecretView:
    with ctx.sessions.begin() as session:
        env = inherited.environment_for_new(
            session, models.Secret, principal, name, environment, _already_exists
        )
        secret = models.Secret(account_id=principal.account_id, environment_id=env.id, name=name)
        key = vault.account_key(ctx, session, principal.account_id)
        vault.store(secret, vault.seal(key, plaintext, _aad(principal.account_id, env.id, name)))
        session.add(secret)
        session.flush()
        audit.record(session, principal, "secret.create", f"secrets/{name}", environment=env.name)
        return _view(secret, env.name)


def update_secret(
    ctx: ServerContext, principal: Principal, name: str, environment: str, encrypted_value: str
) -> SecretView:
    """Replace the value of an existing secret (404 if there is none)."""
    plaintext = vault.decrypt_incoming(ctx, encrypted_value, f"secret '{name}'")
    with ctx.sessions.begin() as session:
        secret = _find(session, principal, name, environment, lock=True)
        if secret is None:
            raise _not_found(name, environment)
        key = vault.account_key(ctx, session, principal.account_id)
        aad = _aad(principal.account_id, secret.environment_id, name)
        vault.store(secret, vault.seal(key, plaintext, aad))
        secret.updated_at = utcnow()
        session.flush()
        audit.record(
            session, principal, "secret.update", f"secrets/{name}", environment=environment
        )
        return _view(secret, environment)


def delete_secret(
    ctx: ServerContext, principal: Principal, name: str, environment: str
) -> SecretView:
    """Delete one environment's secret; `default`'s of that name is then inherited."""
    with ctx.sessions.begin() as session:
        secret = _find(session, principal, name, environment, lock=True)
        if secret is None:
            raise _not_found(name, environment)
        view = _view(secret, environment)
        session.delete(secret)
        audit.record(
            session, principal, "secret.delete", f"secrets/{name}", environment=environment
        )
        return view


def list_secrets(
    ctx: ServerContext, principal: Principal, selection: SecretSelection
) -> list[SecretView]:
    with ctx.sessions.begin() as session:
        rows = inherited.visible(session, models.Secret, principal, selection)
        return [_view(secret, env) for secret, env in rows]


def export_secrets(
    ctx: ServerContext,
    principal: Principal,
    selection: SecretSelection,
    public_key_pem: str,
    *,
    page: int,
    page_size: int,
) -> tuple[list[ExportedSecret], int]:
    """One page of the selected secrets, each value encrypted to `public_key_pem`,
    and how many secrets the whole selection holds."""
    inherited.check_public_key(public_key_pem)
    with ctx.sessions.begin() as session:
        rows = inherited.visible(session, models.Secret, principal, selection)
        key = vault.account_key(ctx, session, principal.account_id)
        exported = [
            ExportedSecret(
                name=secret.name,
                environment=env,
                created_at=secret.created_at,
                encrypted_value=vault.encrypt_for(public_key_pem, _open(key, secret)),
            )
            for secret, env in inherited.page_of(rows, page, page_size)
        ]
        # Reading every value (re-encrypted for the caller) is worth a record too.
        audit.record(
            session,
            principal,
            "secret.export",
            "secrets",
            environment=None if selection.all_environments else selection.environment,
            all_environments=selection.all_environments or None,
            names=[secret.name for secret in exported],
        )
    return exported, len(rows)


def secret_environments(ctx: ServerContext, principal: Principal) -> list[str]:
    """Names of the caller's environments that hold at least one secret."""
    stmt = (
        owned(select(models.Environment.name), models.Environment, principal)
        .join(models.Secret, models.Secret.environment_id == models.Environment.id)
        .distinct()
        .order_by(models.Environment.name)
    )
    with ctx.sessions.begin() as session:
        return list(session.scalars(stmt))


# ------------------------------------------------------------------------ for runs


def effective_secrets(
    ctx: ServerContext, session: Session, account_id: uuid.UUID, environment_id: uuid.UUID
) -> dict[str, str]:
    """Plaintext name → value for a run in `environment_id`: `default`'s secrets,
    overridden by the environment's own. For the runner hand-out only, which seals
    the result to the runner's key; never put this in an API response."""
    rows = inherited.seen_by_run(session, models.Secret, account_id, environment_id)
    if not rows:
        return {}
    key = vault.account_key(ctx, session, account_id)
    return {secret.name: _open(key, secret) for secret, _env in rows}


def count_secrets(session: Session, environment_id: uuid.UUID) -> int:
    """How many secrets an environment holds itself (inherited ones not counted)."""
    return inherited.count_own(session, models.Secret, environment_id)


def _aad(account_id: uuid.UUID, environment_id: uuid.UUID, name: str) -> bytes:
    return vault.secret_aad(account_id, environment_id, name)


def _open(key: bytes, secret: models.Secret) -> str:
    return vault.open_value(
        key, secret, _aad(secret.account_id, secret.environment_id, secret.name)
    )
