"""Secrets: named values per environment, sealed at rest, never handed out in the clear.

A run in environment E gets every secret of `default` that E does not override, plus
E's own. Listing and exporting for E show exactly that set (each item names the
environment it comes from); `all` shows every secret of every environment.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm import Session

from tower.core import crypto, errors
from tower.server.services import vault
from tower.server.services.accounts import DEFAULT_ENVIRONMENT
from tower.server.services.apps import get_or_create_environment
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


@dataclass(frozen=True, slots=True)
class SecretSelection:
    """Which secrets a listing or export covers: what a run in `environment` gets,
    or every secret of every environment when `all_environments` is set."""

    environment: str = DEFAULT_ENVIRONMENT
    all_environments: bool = False


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
    return errors.NotFound(
        f"Secret '{name}' was not found in environment '{environment}'. "
        f"See the secrets there with `tower secrets list --environment={environment}`."
    )


# ------------------------------------------------------------------------ queries


def _with_environment(principal: Principal) -> Select[tuple[models.Secret, str]]:
    """The caller's secrets, each with the name of its environment."""
    stmt = select(models.Secret, models.Environment.name).join(
        models.Environment, models.Environment.id == models.Secret.environment_id
    )
    return owned(stmt, models.Secret, principal)


def _find(
    session: Session, principal: Principal, name: str, environment: str, *, lock: bool = False
) -> models.Secret | None:
    stmt = owned(select(models.Secret), models.Secret, principal).join(
        models.Environment, models.Environment.id == models.Secret.environment_id
    )
    stmt = stmt.where(models.Secret.name == name, models.Environment.name == environment)
    if lock:
        stmt = stmt.with_for_update(of=models.Secret)
    return session.scalar(stmt)


def _inherited(rows: Iterable[tuple[models.Secret, str]]) -> list[tuple[models.Secret, str]]:
    """Rows of `default` and of one other environment → what a run there gets: the
    other environment's secret wins over `default`'s of the same name."""
    chosen: dict[str, tuple[models.Secret, str]] = {}
    for secret, environment in rows:
        if secret.name not in chosen or environment != DEFAULT_ENVIRONMENT:
            chosen[secret.name] = (secret, environment)
    return list(chosen.values())


def _visible(
    session: Session, principal: Principal, selection: SecretSelection
) -> list[tuple[models.Secret, str]]:
    """The secrets `selection` covers, sorted by name then environment."""
    stmt = _with_environment(principal)
    if selection.all_environments:
        rows = [(secret, env) for secret, env in session.execute(stmt)]
    else:
        names = {DEFAULT_ENVIRONMENT, selection.environment}
        rows = _inherited(session.execute(stmt.where(models.Environment.name.in_(names))))
    return sorted(rows, key=lambda row: (row[0].name, row[1]))


def _view(secret: models.Secret, environment: str) -> SecretView:
    return SecretView(
        name=secret.name,
        environment=environment,
        preview=secret.preview,
        created_at=secret.created_at,
        updated_at=secret.updated_at,
    )


def _page_of(items: list[Any], page: int, page_size: int) -> list[Any]:
    """`page=0` is every item (as in every listing); pages count from 1."""
    if page <= 0:
        return items
    start = (page - 1) * page_size
    return items[start : start + page_size]


# ------------------------------------------------------------------------ use cases


def create_secret(
    ctx: ServerContext, principal: Principal, name: str, environment: str, encrypted_value: str
) -> SecretView:
    """Store a new secret, creating its environment on first use; 409 if it exists."""
    validate_secret_name(name)
    # Decrypt before touching the database: a value we cannot open stores nothing.
    plaintext = vault.decrypt_incoming(ctx, encrypted_value, f"secret '{name}'")
    try:
        return _insert(ctx, principal, name, environment, plaintext)
    except DatabaseIntegrityError:
        pass
    # A concurrent request created the environment or this very secret first. Once
    # more: the existence check now sees what that request committed (a clean 409).
    try:
        return _insert(ctx, principal, name, environment, plaintext)
    except DatabaseIntegrityError as exc:
        raise errors.Conflict(
            f"Secret '{name}' in environment '{environment}' was being changed by another "
            "request at the same time. Try again."
        ) from exc


def _insert(
    ctx: ServerContext, principal: Principal, name: str, environment: str, plaintext: str
) -> SecretView:
    with ctx.sessions.begin() as session:
        env = get_or_create_environment(session, principal, environment)
        if _find(session, principal, name, environment) is not None:
            raise errors.AlreadyExists(
                f"Secret '{name}' already exists in environment '{environment}'. Delete it "
                f"first (`tower secrets delete {environment}/{name}`) or update it.",
                location="body.name",
                value=name,
            )
        secret = models.Secret(account_id=principal.account_id, environment_id=env.id, name=name)
        key = vault.account_key(ctx, session, principal.account_id)
        vault.store(secret, vault.seal(key, plaintext, _aad(principal.account_id, env.id, name)))
        session.add(secret)
        session.flush()
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
        return view


def list_secrets(
    ctx: ServerContext, principal: Principal, selection: SecretSelection
) -> list[SecretView]:
    with ctx.sessions.begin() as session:
        return [_view(secret, env) for secret, env in _visible(session, principal, selection)]


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
    _check_public_key(public_key_pem)
    with ctx.sessions.begin() as session:
        rows = _visible(session, principal, selection)
        key = vault.account_key(ctx, session, principal.account_id)
        exported = [
            ExportedSecret(
                name=secret.name,
                environment=env,
                created_at=secret.created_at,
                encrypted_value=vault.encrypt_for(public_key_pem, _open(key, secret)),
            )
            for secret, env in _page_of(rows, page, page_size)
        ]
    return exported, len(rows)


def _check_public_key(public_key_pem: str) -> None:
    try:
        crypto.load_public_key(public_key_pem)
    except errors.InvalidInput as exc:
        raise errors.InvalidInput(
            f"{exc.message} Send the RSA public key (2048 bits or more) to encrypt the "
            "exported values to.",
            location="body.public_key",
        ) from exc


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
    # No Principal on this path (the dispatcher acts for the run's account), so the
    # tenancy filter is written out: both the secret and its environment are the account's.
    stmt = (
        select(models.Secret, models.Environment.name)
        .join(models.Environment, models.Environment.id == models.Secret.environment_id)
        .where(
            models.Secret.account_id == account_id,
            models.Environment.account_id == account_id,
            or_(
                models.Secret.environment_id == environment_id,
                models.Environment.name == DEFAULT_ENVIRONMENT,
            ),
        )
    )
    rows = list(session.execute(stmt))
    if not rows:
        return {}
    key = vault.account_key(ctx, session, account_id)
    return {secret.name: _open(key, secret) for secret, _env in _inherited(rows)}


def count_secrets(session: Session, environment_id: uuid.UUID) -> int:
    """How many secrets an environment holds itself (inherited ones not counted)."""
    stmt = (
        select(func.count())
        .select_from(models.Secret)
        .where(models.Secret.environment_id == environment_id)
    )
    return int(session.scalar(stmt) or 0)


def _aad(account_id: uuid.UUID, environment_id: uuid.UUID, name: str) -> bytes:
    return vault.secret_aad(account_id, environment_id, name)


def _open(key: bytes, secret: models.Secret) -> str:
    return vault.open_value(
        key, secret, _aad(secret.account_id, secret.environment_id, secret.name)
    )
