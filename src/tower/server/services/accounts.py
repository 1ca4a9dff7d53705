"""Accounts, users, API keys and sessions: just what the first start and the CLI need.

The full identity model (teams, invitations, scopes, device login) builds on these tables.
"""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tower.core import crypto, errors
from tower.server.services import api_keys, auth
from tower.server.services.context import Principal, ServerContext
from tower.server.store import models
from tower.server.store.types import utcnow

DEFAULT_ENVIRONMENT = "default"
ADMIN_API_KEY_FILE = "admin-api-key"
ADMIN_PASSWORD_FILE = "admin-password"
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Bootstrap:
    """What the first start created (or found), for `tower up` to print."""

    created: bool
    admin_email: str
    account_name: str
    api_key: str | None  # known only when we created or were given it
    api_key_file: Path
    password_file: Path


def _write_secret_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")


def _account_name_for(email: str) -> str:
    local = email.split("@", 1)[0].lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in local) or "admin"


def create_account(
    ctx: ServerContext, session: Session, *, name: str, type_: str
) -> models.Account:
    account_id = uuid.uuid4()
    account = models.Account(
        id=account_id,
        name=name,
        type=type_,
        wrapped_key=ctx.keys.new_wrapped_account_key(account_id),
    )
    session.add(account)
    session.add(models.Environment(account_id=account_id, name=DEFAULT_ENVIRONMENT))
    session.flush()
    return account


def create_user(
    ctx: ServerContext, session: Session, *, email: str, password: str, is_admin: bool = False
) -> models.User:
    account = create_account(ctx, session, name=_account_name_for(email), type_="personal")
    user = models.User(
        email=email,
        password_hash=_hasher.hash(password),
        is_admin=is_admin,
        personal_account_id=account.id,
    )
    session.add(user)
    session.flush()
    session.add(models.Membership(account_id=account.id, user_id=user.id, role="admin"))
    return user


def create_api_key(
    session: Session, *, user: models.User, name: str, key: str | None = None
) -> str:
    key = key or crypto.new_token(auth.API_KEY_PREFIX)
    if not key.startswith(auth.API_KEY_PREFIX) or len(key) < 20:
        raise errors.InvalidInput(
            "TOWER_ADMIN_API_KEY must start with 'sk-' and be at least 20 characters long."
        )
    session.add(
        models.ApiKey(
            account_id=user.personal_account_id,
            user_id=user.id,
            name=name,
            identifier=api_keys.masked_identifier(key),
            key_hash=crypto.hash_token(key),
        )
    )
    return key


def bootstrap(ctx: ServerContext) -> Bootstrap:
    """Create the admin, their personal account, `default` and an API key on the first start."""
    home = ctx.settings.home_dir
    key_file, password_file = home / ADMIN_API_KEY_FILE, home / ADMIN_PASSWORD_FILE
    with ctx.sessions.begin() as session:
        if session.scalar(select(func.count()).select_from(models.User)):
            admin = session.scalar(select(models.User).order_by(models.User.created_at).limit(1))
            account = session.get(models.Account, admin.personal_account_id) if admin else None
            known = key_file.read_text().strip() if key_file.exists() else None
            return Bootstrap(
                False,
                admin.email if admin else "",
                account.name if account else "",
                known,
                key_file,
                password_file,
            )
        password = secrets.token_urlsafe(18)
        user = create_user(
            ctx, session, email=ctx.settings.admin_email, password=password, is_admin=True
        )
        key = create_api_key(session, user=user, name="admin", key=ctx.settings.admin_api_key)
        account = session.get(models.Account, user.personal_account_id)
    _write_secret_file(password_file, password)
    if not ctx.settings.admin_api_key:
        _write_secret_file(key_file, key)
    return Bootstrap(True, user.email, account.name, key, key_file, password_file)


def open_cli_session(ctx: ServerContext, email: str) -> str:
    """A session JWT for the given user, as `tower up` hands to the local CLI."""
    ttl = timedelta(days=ctx.settings.session_ttl_days)
    with ctx.sessions.begin() as session:
        user = session.scalar(select(models.User).where(models.User.email == email))
        if user is None:
            raise errors.NotFound(f"No user {email!r}.")
        row = models.Session(
            account_id=user.personal_account_id, user_id=user.id, expires_at=utcnow() + ttl
        )
        session.add(row)
        session.flush()
        return auth.issue_jwt(
            ctx, account_id=row.account_id, user_id=user.id, ttl=ttl, session_id=row.id
        )


def describe_session(ctx: ServerContext, principal: Principal, token: str) -> dict:
    """The contract's Session object for the caller (user, token, teams)."""
    if principal.user_id is None:
        raise errors.Unauthenticated("This credential has no user session.")
    with ctx.sessions.begin() as session:
        user = session.get(models.User, principal.user_id)
        rows = session.execute(
            select(models.Account)
            .join(models.Membership, models.Membership.account_id == models.Account.id)
            .where(models.Membership.user_id == principal.user_id)
            .order_by(models.Account.created_at)
        ).scalars()
        ttl = timedelta(days=ctx.settings.session_ttl_days)
        teams = []
        for account in rows:
            team_token = (
                token
                if account.id == principal.account_id
                else auth.issue_jwt(ctx, account_id=account.id, user_id=user.id, ttl=ttl)
            )
            teams.append({"account": account, "jwt": team_token})
        return {"user": user, "token": token, "teams": teams}
