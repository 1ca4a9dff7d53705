"""Accounts, users, API keys and sessions: just what the first start and the CLI need.

The full identity model (teams, invitations, scopes, device login) builds on these tables.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tower.core import crypto, errors
from tower.files import write_private
from tower.server.services import api_keys, auth
from tower.server.services.context import ServerContext
from tower.server.store import models

DEFAULT_ENVIRONMENT = "default"
ADMIN_API_KEY_FILE = "admin-api-key"
ADMIN_PASSWORD_FILE = "admin-password"
#: the one argon2 hasher for passwords (services.sessions verifies with it)
password_hasher = PasswordHasher()


@dataclass(frozen=True)
class Bootstrap:
    """What the first start created (or found), for `tower up` to print."""

    created: bool
    admin_email: str
    account_name: str
    api_key: str | None  # known only when we created or were given it
    api_key_file: Path
    password_file: Path


def _account_name_for(email: str) -> str:
    local = email.split("@", 1)[0].lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in local) or "admin"


def _free_account_name(session: Session, base: str) -> str:
    """`base`, or `base-2`, `base-3`…: ada@one.com and ada@two.com both get an account."""
    taken = set(
        session.scalars(
            select(models.Account.name).where(
                (models.Account.name == base) | models.Account.name.like(f"{base}-%")
            )
        )
    )
    name, suffix = base, 2
    while name in taken:
        name, suffix = f"{base}-{suffix}", suffix + 1
    return name


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
    name = _free_account_name(session, _account_name_for(email))
    account = create_account(ctx, session, name=name, type_="personal")
    user = models.User(
        email=email,
        password_hash=password_hasher.hash(password),
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
    write_private(password_file, password + "\n")
    if not ctx.settings.admin_api_key:
        write_private(key_file, key + "\n")
    return Bootstrap(True, user.email, account.name, key, key_file, password_file)
