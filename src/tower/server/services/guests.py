"""Guests: people outside the account let into one app through a login URL.

Creating a guest (or regenerating its URL) mints a login token; only its hash is
stored, and the URL carrying it is shown once. Opening the URL before it expires starts
a guest session (a cookie) that lasts `expires_in` seconds. Regenerating the URL kills
the old URL and every session opened with it; deleting the guest kills its sessions too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tower.core import crypto, errors
from tower.server.services import apps as apps_service
from tower.server.services.context import Principal, ServerContext, owned, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

LOGIN_TOKEN_PREFIX = "gl-"
SESSION_TOKEN_PREFIX = "gs-"
DEFAULT_EXPIRES_IN = 72 * 3600
MAX_EXPIRES_IN = 90 * 24 * 3600
LOGIN_PATH = "/guest/login/"
SESSION_PATH = "/guest/session"


@dataclass(frozen=True)
class GuestView:
    row: models.Guest
    app_name: str
    #: set only right after the login URL was (re)generated
    login_url: str | None = None


@dataclass(frozen=True)
class GuestSessionView:
    guest: GuestView
    expires_at: datetime


def _valid_expires_in(expires_in: int | None) -> int:
    seconds = DEFAULT_EXPIRES_IN if expires_in is None else expires_in
    if not 60 <= seconds <= MAX_EXPIRES_IN:
        raise errors.InvalidInput(
            f"`expires_in` must be between 60 seconds and {MAX_EXPIRES_IN} (90 days); "
            f"the default is {DEFAULT_EXPIRES_IN} (72 hours).",
            location="body.expires_in",
            value=expires_in,
        )
    return seconds


def _valid_redirect(url: str | None) -> str:
    """Only a path on this server or an http(s) URL: a login link must not open
    anything else in the guest's browser."""
    if not url:
        return ""
    parts = urlsplit(url)
    if (parts.scheme in ("http", "https") and parts.netloc) or (
        not parts.scheme and not parts.netloc and url.startswith("/")
    ):
        return url
    raise errors.InvalidInput(
        f"`redirect_url` {url!r} must be an http(s) URL or a path starting with '/'.",
        location="body.redirect_url",
        value=url,
    )


def _new_login(ctx: ServerContext, row: models.Guest, expires_in: int) -> str:
    token = crypto.new_token(LOGIN_TOKEN_PREFIX)
    row.login_token_hash = crypto.hash_token(token)
    row.login_expires_at = utcnow() + timedelta(seconds=expires_in)
    row.session_seconds = expires_in
    return f"{ctx.settings.resolved_public_url}{LOGIN_PATH}{token}"


def _get(session: Session, principal: Principal, guest_id: str) -> models.Guest:
    try:
        wanted = uuid.UUID(guest_id)
    except ValueError:
        wanted = None
    row = (
        session.scalar(
            owned(select(models.Guest), models.Guest, principal).where(models.Guest.id == wanted)
        )
        if wanted
        else None
    )
    if row is None:
        raise errors.NotFound(
            f"No guest {guest_id!r} in this account. `GET /v1/guests` lists them."
        )
    return row


def _app_name(session: Session, row: models.Guest) -> str:
    app = session.get(models.App, row.app_id)
    return app.name if app else ""


def create(
    ctx: ServerContext,
    principal: Principal,
    *,
    app: str,
    name: str = "",
    expires_in: int | None = None,
    redirect_url: str | None = None,
) -> GuestView:
    seconds, redirect = _valid_expires_in(expires_in), _valid_redirect(redirect_url)
    with ctx.sessions.begin() as session:
        app_row = apps_service.get_app(session, principal, app)
        if not app_row.is_externally_accessible:
            raise errors.Conflict(
                f"App '{app_row.name}' is not externally accessible, so it takes no guests. "
                f"Make it so first: `PUT /v1/apps/{app_row.name}` with "
                '{"is_externally_accessible": true}.',
                location="body.app",
            )
        row = models.Guest(
            account_id=principal.account_id,
            app_id=app_row.id,
            name=name.strip(),
            redirect_url=redirect,
            created_by_id=principal.user_id,
        )
        login_url = _new_login(ctx, row, seconds)
        session.add(row)
        session.flush()
        return GuestView(row, app_row.name, login_url)


def list_guests(
    ctx: ServerContext, principal: Principal, app: str | None = None
) -> list[GuestView]:
    with read_session(ctx) as session:
        stmt = (
            owned(select(models.Guest, models.App.name), models.Guest, principal)
            .join(models.App, models.App.id == models.Guest.app_id)
            .order_by(models.Guest.created_at, models.Guest.id)
        )
        if app is not None:
            stmt = stmt.where(models.App.name == app)
        return [GuestView(row, app_name) for row, app_name in session.execute(stmt).all()]


def regenerate_login_url(
    ctx: ServerContext,
    principal: Principal,
    guest_id: str,
    *,
    expires_in: int | None = None,
    redirect_url: str | None = None,
) -> GuestView:
    """A new login URL; the old one and every session opened with it stop working."""
    seconds = _valid_expires_in(expires_in)
    with ctx.sessions.begin() as session:
        row = _get(session, principal, guest_id)
        if redirect_url is not None:
            row.redirect_url = _valid_redirect(redirect_url)
        login_url = _new_login(ctx, row, seconds)
        session.execute(delete(models.GuestSession).where(models.GuestSession.guest_id == row.id))
        session.flush()
        return GuestView(row, _app_name(session, row), login_url)


def delete_guest(ctx: ServerContext, principal: Principal, guest_id: str) -> None:
    """Delete the guest; its sessions go with it (cascade)."""
    with ctx.sessions.begin() as session:
        row = _get(session, principal, guest_id)
        session.execute(delete(models.GuestSession).where(models.GuestSession.guest_id == row.id))
        session.delete(row)


def log_in(ctx: ServerContext, login_token: str) -> tuple[str, GuestSessionView]:
    """Open a guest session with a login token: the session token (for the cookie)."""
    now = utcnow()
    with ctx.sessions.begin() as session:
        row = session.scalar(
            select(models.Guest).where(
                models.Guest.login_token_hash == crypto.hash_token(login_token)
            )
        )
        if row is None or row.login_expires_at <= now:
            raise errors.Unauthenticated(
                "This guest login link is not valid (expired, replaced or revoked). "
                "Ask the app's owner for a new one."
            )
        token = crypto.new_token(SESSION_TOKEN_PREFIX)
        expires_at = now + timedelta(seconds=row.session_seconds)
        session.add(
            models.GuestSession(
                guest_id=row.id, token_hash=crypto.hash_token(token), expires_at=expires_at
            )
        )
        return token, GuestSessionView(GuestView(row, _app_name(session, row)), expires_at)


def current_session(ctx: ServerContext, session_token: str | None) -> GuestSessionView:
    """The live guest session of a cookie, or Unauthenticated."""
    if session_token:
        with read_session(ctx) as session:
            found = session.execute(
                select(models.GuestSession, models.Guest)
                .join(models.Guest, models.Guest.id == models.GuestSession.guest_id)
                .where(models.GuestSession.token_hash == crypto.hash_token(session_token))
            ).first()
            if found and found[0].expires_at > utcnow():
                guest_session, guest = found
                return GuestSessionView(
                    GuestView(guest, _app_name(session, guest)), guest_session.expires_at
                )
    raise errors.Unauthenticated(
        "No valid guest session: open the login link you were given (again)."
    )
