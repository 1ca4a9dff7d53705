"""Device login (`tower login`): the CLI gets a ticket, a person approves it in a browser.

1. The CLI asks for a ticket: a secret device code (kept by the CLI, stored here only
   hashed) and a short user code (shown in the browser).
2. A signed-in person approves the user code on the login page.
3. The CLI, polling with the device code, receives a fresh session once; afterwards
   the ticket is spent. Pending answers 404 and a spent or expired ticket 410, which
   is what the official CLI expects (contract §1.5).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tower.core import crypto, errors
from tower.server.services import sessions
from tower.server.services.context import ServerContext
from tower.server.store import models
from tower.server.store.types import utcnow

#: no 0/O, 1/I/L: the code is read off a terminal and typed into a browser
USER_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
USER_CODE_LENGTH = 8
POLL_INTERVAL_SECONDS = 2
STALE_AFTER = timedelta(days=1)
LOGIN_PAGE_PATH = "/login/device"
#: ErrorModel location the official CLI also reads as "keep polling"
PENDING_LOCATION = "incomplete_device_login"


class LoginPending(errors.NotFound):
    """Nobody approved this login yet."""

    code = "incomplete_device_login"


class LoginGone(errors.TowerError):
    """The login ticket expired or was used already."""

    status = 410
    code = "device_login_gone"


@dataclass(frozen=True)
class Ticket:
    device_code: str
    user_code: str
    login_url: str
    verification_url: str
    generated_at: datetime
    interval: int
    expires_in: int


def create_ticket(ctx: ServerContext) -> Ticket:
    ttl = ctx.settings.device_login_ttl_seconds
    device_code = secrets.token_urlsafe(32)
    user_code = _new_user_code()
    now = utcnow()
    with ctx.sessions.begin() as session:
        # Tickets are worthless once expired; keep a day of them for diagnosis, no more.
        session.execute(
            delete(models.DeviceLogin).where(models.DeviceLogin.expires_at < now - STALE_AFTER)
        )
        session.add(
            models.DeviceLogin(
                device_code_hash=crypto.hash_token(device_code),
                user_code=user_code,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
        )
    page = ctx.settings.resolved_public_url + LOGIN_PAGE_PATH
    return Ticket(
        device_code=device_code,
        user_code=user_code,
        login_url=f"{page}?user_code={user_code}",
        verification_url=page,
        generated_at=now,
        interval=POLL_INTERVAL_SECONDS,
        expires_in=ttl,
    )


def collect(ctx: ServerContext, device_code: str) -> sessions.SessionView:
    """The CLI's poll: the new session once approved (exactly once), else an error."""
    now = utcnow()
    with ctx.sessions.begin() as session:
        ticket = session.scalar(
            select(models.DeviceLogin).where(
                models.DeviceLogin.device_code_hash == crypto.hash_token(device_code)
            )
        )
        if ticket is None:
            raise errors.NotFound("No such device login. Run `tower login` again.")
        if ticket.collected_at is not None:
            raise LoginGone("This login was already completed. Run `tower login` again.")
        if ticket.claimed_at is None:
            if ticket.expires_at <= now:
                raise LoginGone(
                    "This login request expired before it was approved. Run `tower login` again."
                )
            raise LoginPending(
                "Waiting for the login to be approved in the browser.", location=PENDING_LOCATION
            )
        ticket.collected_at = now
        user = session.get(models.User, ticket.claimed_by_id)
        return sessions.open_for_user(ctx, session, user)


def claim(ctx: ServerContext, user_code: str, refresh_token: str) -> None:
    """Approve a ticket as the user whose live session `refresh_token` names."""
    with ctx.sessions.begin() as session:
        user = sessions.user_for_refresh_token(session, refresh_token)
        claim_as(session, user.id, user_code)


def claim_as(session: Session, user_id: uuid.UUID, user_code: str) -> None:
    ticket = session.scalar(
        select(models.DeviceLogin).where(models.DeviceLogin.user_code == normalize(user_code))
    )
    if ticket is None:
        raise errors.NotFound(
            f"No login request with the code {user_code!r}. Check the code your terminal shows.",
            location="body.user_code",
            value=user_code,
        )
    if ticket.claimed_at is not None:
        raise errors.Conflict("This login request was already approved.")
    if ticket.expires_at <= utcnow():
        raise LoginGone("This login request expired. Run `tower login` again.")
    ticket.claimed_by_id = user_id
    ticket.claimed_at = utcnow()


def normalize(user_code: str) -> str:
    """What people type: any case, with or without the dash, spaces around."""
    compact = "".join(c for c in user_code.upper() if c.isalnum())
    half = USER_CODE_LENGTH // 2
    return f"{compact[:half]}-{compact[half:]}" if len(compact) == USER_CODE_LENGTH else compact


def _new_user_code() -> str:
    raw = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
    return normalize(raw)
