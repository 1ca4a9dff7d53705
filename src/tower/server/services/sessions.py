"""Signed-in sessions: sign up, log in, describe, refresh (rotating the refresh token), sign out.

A session is a row of `sessions`. Its access tokens are JWTs carrying the row's id
(`sid`) and the account they act in (`https://tower.dev/aid`), so revoking the row
revokes every token of the session at once. The refresh token is returned when it is
minted and stored only hashed; each refresh replaces it, so a stolen refresh token
stops working as soon as its owner refreshes.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tower.core import crypto, errors
from tower.server.services import accounts, auth
from tower.server.services.context import Principal, ServerContext
from tower.server.store import models
from tower.server.store.types import utcnow

REFRESH_TOKEN_PREFIX = "rf-"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
WRONG_CREDENTIALS = "Wrong email or password."
_hasher = accounts.password_hasher
#: verified against when the email is unknown, so both failures take as long
_DUMMY_HASH = _hasher.hash("not a password anyone has")


@dataclass(frozen=True)
class TeamToken:
    """One account the user may act in, with the session's token for it."""

    account: models.Account
    organization: str
    jwt: str


@dataclass(frozen=True)
class SessionView:
    """Everything the contract's Session object shows. `refresh_token` only when minted."""

    user: models.User
    profile: models.UserProfile
    session_id: uuid.UUID | None
    access_token: str
    refresh_token: str | None
    teams: list[TeamToken]
    refreshed_at: datetime | None = None


def session_ttl(ctx: ServerContext) -> timedelta:
    return timedelta(days=ctx.settings.session_ttl_days)


# ------------------------------------------------------------------ passwords


def check_password_rules(password: str, location: str = "body.password") -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        # The value is never echoed back: it is a password.
        raise errors.InvalidInput(
            f"A password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
            location=location,
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _verified_user(session: Session, email: str, password: str) -> models.User:
    if len(password) > MAX_PASSWORD_LENGTH:
        raise errors.Unauthenticated(WRONG_CREDENTIALS)  # and no hashing of a megabyte
    user = session.scalar(
        select(models.User).where(func.lower(models.User.email) == email.strip().lower())
    )
    try:
        _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        raise errors.Unauthenticated(WRONG_CREDENTIALS) from None
    if user is None:
        raise errors.Unauthenticated(WRONG_CREDENTIALS)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


# ------------------------------------------------------------------ use cases


def sign_up(
    ctx: ServerContext, principal: Principal | None, email: str, password: str
) -> SessionView:
    """Create a user with their personal account and sign them in.

    Open to anyone when TOWER_ALLOW_SIGNUP is set; otherwise only a server admin may
    create users (a self-hosted server is not open to the internet by default).
    """
    email = _valid_email(email)
    check_password_rules(password)
    with ctx.sessions.begin() as session:
        if not ctx.settings.allow_signup and not _is_admin(session, principal):
            raise errors.Forbidden(
                "Sign-up is closed on this server: a server admin creates users (POST "
                "/v1/accounts with an admin's credentials), or set TOWER_ALLOW_SIGNUP=true."
            )
        if session.scalar(select(models.User.id).where(models.User.email == email)):
            raise errors.AlreadyExists(
                f"A user with the email {email!r} already exists. Log in instead."
            )
        user = accounts.create_user(ctx, session, email=email, password=password)
        return _open(ctx, session, user)


def log_in(ctx: ServerContext, email: str, password: str) -> SessionView:
    with ctx.sessions.begin() as session:
        user = _verified_user(session, email, password)
        return _open(ctx, session, user)


def open_for_user(ctx: ServerContext, session: Session, user: models.User) -> SessionView:
    """A new session for a user already identified (device login, `tower up`)."""
    return _open(ctx, session, user)


def open_cli_session(ctx: ServerContext, email: str) -> str:
    """A session JWT for the given user, as `tower up` hands to the local CLI."""
    with ctx.sessions.begin() as session:
        user = session.scalar(select(models.User).where(models.User.email == email))
        if user is None:
            raise errors.NotFound(f"No user {email!r}.")
        return _open(ctx, session, user).access_token


def describe(ctx: ServerContext, principal: Principal, bearer: str) -> SessionView:
    """The caller's session. An API key describes itself as a session of one team."""
    user_id = _require_user(principal)
    with ctx.sessions.begin() as session:
        user = session.get(models.User, user_id)
        if principal.session_id is None:
            account = session.get(models.Account, principal.account_id)
            team = TeamToken(account, _organization_name(session, account), bearer)
            return SessionView(user, load_profile(session, user.id), None, bearer, None, [team])
        row = session.get(models.Session, principal.session_id)
        return _view(ctx, session, user, row, (principal.account_id, bearer), None)


def refresh(
    ctx: ServerContext, *, refresh_token: str | None, principal: Principal | None
) -> SessionView:
    """New access tokens and a new refresh token for a live session.

    The session is named by `refresh_token` when given (the access token may already
    have expired), else by the caller's session token (what the official CLI sends).
    """
    now = utcnow()
    with ctx.sessions.begin() as session:
        row = _session_to_refresh(session, refresh_token, principal)
        _check_live(row, now)
        token = crypto.new_token(REFRESH_TOKEN_PREFIX)
        row.refresh_token_hash = crypto.hash_token(token)
        row.expires_at = now + session_ttl(ctx)  # a session in use stays alive
        user = session.get(models.User, row.user_id)
        view = _view(ctx, session, user, row, _personal(ctx, row), token)
    return dataclasses.replace(view, refreshed_at=now)


def sign_out(
    ctx: ServerContext, principal: Principal, bearer: str, session_id: str | None
) -> SessionView:
    """Revoke the caller's session (or another of the same user's, by id) and its tokens.

    The answer shows the revoked session with the caller's own (now dead) token.
    """
    user_id = _require_user(principal)
    if principal.session_id is None:
        raise errors.BadRequest(
            "DELETE /v1/session signs out a session, but this request used an API key. "
            "Delete the key with DELETE /v1/api-keys instead."
        )
    target = principal.session_id
    if session_id:
        try:
            target = uuid.UUID(session_id)
        except ValueError:
            raise errors.InvalidInput(
                "`session_id` is not a session id.", location="body.session_id", value=session_id
            ) from None
    with ctx.sessions.begin() as session:
        row = session.get(models.Session, target)
        if row is None or row.user_id != user_id:
            raise errors.NotFound(f"No session {session_id!r} of yours.")
        row.revoked_at = row.revoked_at or utcnow()
        row.refresh_token_hash = None  # nothing can bring it back
        user = session.get(models.User, user_id)
        return _view(ctx, session, user, row, (principal.account_id, bearer), None)


def revoke_other_sessions(session: Session, user_id: uuid.UUID, keep: uuid.UUID | None) -> None:
    """After a password change: every other session of the user ends."""
    stmt = update(models.Session).where(
        models.Session.user_id == user_id, models.Session.revoked_at.is_(None)
    )
    if keep is not None:
        stmt = stmt.where(models.Session.id != keep)
    session.execute(stmt.values(revoked_at=utcnow(), refresh_token_hash=None))


def user_for_refresh_token(session: Session, refresh_token: str) -> models.User:
    """The user of a live session named by its refresh token (the web UI's credential)."""
    row = session.scalar(
        select(models.Session).where(
            models.Session.refresh_token_hash == crypto.hash_token(refresh_token)
        )
    )
    if row is None:
        raise errors.Unauthenticated(
            "The refresh token is not valid: it was rotated, revoked or never issued. Log in again."
        )
    _check_live(row, utcnow())
    return session.get(models.User, row.user_id)


def load_profile(session: Session, user_id: uuid.UUID) -> models.UserProfile:
    """The user's profile row; an unsaved one with the defaults when they never changed it."""
    profile = session.get(models.UserProfile, user_id)
    if profile is None:
        profile = models.UserProfile(
            user_id=user_id,
            company="",
            country="",
            promo_code="",
            is_alerts_enabled=True,
            is_subscribed_to_changelog=False,
            is_subscribed_to_marketing_emails=False,
            is_subscribed_to_newsletter=False,
            updated_at=utcnow(),
        )
    return profile


def organization_name(session: Session, account: models.Account) -> str:
    return _organization_name(session, account)


# ------------------------------------------------------------------ helpers


def _open(ctx: ServerContext, session: Session, user: models.User) -> SessionView:
    token = crypto.new_token(REFRESH_TOKEN_PREFIX)
    row = models.Session(
        account_id=user.personal_account_id,
        user_id=user.id,
        refresh_token_hash=crypto.hash_token(token),
        expires_at=utcnow() + session_ttl(ctx),
    )
    session.add(row)
    session.flush()
    return _view(ctx, session, user, row, _personal(ctx, row), token)


def _access_token(ctx: ServerContext, row: models.Session, account_id: uuid.UUID) -> str:
    ttl = max(row.expires_at - utcnow(), timedelta(seconds=1))
    return auth.issue_jwt(
        ctx, account_id=account_id, user_id=row.user_id, ttl=ttl, session_id=row.id
    )


def _personal(ctx: ServerContext, row: models.Session) -> tuple[uuid.UUID, str]:
    """The session's own access token: acting in the account it was opened for."""
    return row.account_id, _access_token(ctx, row, row.account_id)


def _view(
    ctx: ServerContext,
    session: Session,
    user: models.User,
    row: models.Session,
    access: tuple[uuid.UUID, str],
    refresh_token: str | None,
) -> SessionView:
    """Every account the user belongs to, each with a token of this session acting in it.

    `access` is the account the session's token acts in and that token; that account's
    team carries the very same token, which is how the official CLI recognises the
    active team (contract §1.5).
    """
    active_account, access_token = access
    teams = []
    for account in _member_accounts(session, user.id):
        jwt = access_token if account.id == active_account else _access_token(ctx, row, account.id)
        teams.append(TeamToken(account, _organization_name(session, account), jwt))
    return SessionView(
        user, load_profile(session, user.id), row.id, access_token, refresh_token, teams
    )


def _member_accounts(session: Session, user_id: uuid.UUID) -> list[models.Account]:
    # The personal account first, then teams in the order the user joined them.
    return list(
        session.scalars(
            select(models.Account)
            .join(models.Membership, models.Membership.account_id == models.Account.id)
            .where(models.Membership.user_id == user_id)
            .order_by(models.Account.type != "personal", models.Membership.created_at)
        )
    )


def _organization_name(session: Session, account: models.Account) -> str:
    organization = session.get(models.Organization, account.id)
    return organization.name if organization else account.name


def _session_to_refresh(
    session: Session, refresh_token: str | None, principal: Principal | None
) -> models.Session:
    if refresh_token:
        row = session.scalar(
            select(models.Session).where(
                models.Session.refresh_token_hash == crypto.hash_token(refresh_token)
            )
        )
        if row is None:
            raise errors.Unauthenticated(
                "The refresh token is not valid: it was already used (each refresh returns a "
                "new one), revoked by signing out, or never issued. Log in again."
            )
        return row
    if principal is None or principal.session_id is None:
        raise errors.Unauthenticated(
            "Refreshing needs a session: send `refresh_token` in the body, or the session's "
            "token as `Authorization: Bearer`. API keys have no session to refresh."
        )
    return session.get(models.Session, principal.session_id)


def _check_live(row: models.Session, now: datetime) -> None:
    if row.revoked_at is not None:
        raise errors.Unauthenticated("This session was signed out. Log in again.")
    if row.expires_at <= now:
        raise errors.Unauthenticated("This session expired. Log in again.")


def _require_user(principal: Principal) -> uuid.UUID:
    if principal.user_id is None:
        raise errors.Forbidden("This credential does not belong to a user, so it has no session.")
    return principal.user_id


def _is_admin(session: Session, principal: Principal | None) -> bool:
    if principal is None or principal.user_id is None:
        return False
    user = session.get(models.User, principal.user_id)
    return bool(user and user.is_admin)


def _valid_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or not domain or " " in email or len(email) > 320:
        raise errors.InvalidInput(
            "Give a valid email address, like ada@example.com.", location="body.email", value=email
        )
    return email
