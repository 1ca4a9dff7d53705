"""The signed-in user's profile and email choices; accounts, their plan and organization name.

Accounts are the caller's memberships: another account's name answers 404 whether
or not it exists. Renames need the account's `admin` role.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DatabaseIntegrityError
from sqlalchemy.orm import Session

from tower.core import errors
from tower.server.services import sessions
from tower.server.services.context import Principal, ServerContext, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

ACCOUNT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
SELF_HOSTED_REGION = "self-hosted"
SELF_HOSTED_PLAN = "self-hosted"
#: EmailSubscriptions key → profile column
SUBSCRIPTIONS = {
    "feature_updates": "is_subscribed_to_changelog",
    "marketing_emails": "is_subscribed_to_marketing_emails",
    "tower_newsletter": "is_subscribed_to_newsletter",
}
PROFILE_TEXT_FIELDS = ("company", "country", "promo_code")
PROFILE_FLAGS = (
    "is_alerts_enabled",
    "is_subscribed_to_changelog",
    "is_subscribed_to_marketing_emails",
    "is_subscribed_to_newsletter",
)


@dataclass(frozen=True)
class UserView:
    user: models.User
    profile: models.UserProfile


@dataclass(frozen=True)
class AccountView:
    account: models.Account
    organization: str
    owner: UserView | None


@dataclass(frozen=True)
class PlanView:
    account: models.Account


# ------------------------------------------------------------------ the user


def describe_user(ctx: ServerContext, principal: Principal) -> UserView:
    with read_session(ctx) as session:
        user = session.get(models.User, _user_id(principal))
        return UserView(user, sessions.load_profile(session, user.id))


def update_user(ctx: ServerContext, principal: Principal, changes: dict[str, Any]) -> UserView:
    """Apply the given fields (None = leave as is). A new password ends every other session."""
    password = changes.pop("password", None)
    if password is not None:
        if principal.session_id is None:
            raise errors.Forbidden(
                "Changing the password needs a signed-in session, not an API key. "
                "Log in (POST /v1/session or `tower login`) and try again."
            )
        sessions.check_password_rules(password)
    with ctx.sessions.begin() as session:
        user = session.get(models.User, _user_id(principal))
        profile = _stored_profile(session, user.id)
        for name in ("first_name", "last_name"):
            if changes.get(name) is not None:
                setattr(user, name, _text(changes[name], name, 128))
        for name in PROFILE_TEXT_FIELDS:
            if changes.get(name) is not None:
                setattr(profile, name, _text(changes[name], name, 128))
        for name in PROFILE_FLAGS:
            if changes.get(name) is not None:
                setattr(profile, name, bool(changes[name]))
        if password is not None:
            user.password_hash = sessions.hash_password(password)
            sessions.revoke_other_sessions(session, user.id, keep=principal.session_id)
        profile.updated_at = utcnow()
        return UserView(user, profile)


def email_preferences(ctx: ServerContext, principal: Principal) -> dict[str, bool]:
    with read_session(ctx) as session:
        profile = sessions.load_profile(session, _user_id(principal))
        return {key: getattr(profile, column) for key, column in SUBSCRIPTIONS.items()}


def update_email_preferences(
    ctx: ServerContext, principal: Principal, subscriptions: dict[str, bool | None]
) -> dict[str, bool]:
    """Change the lists named; the others stay as they were."""
    with ctx.sessions.begin() as session:
        profile = _stored_profile(session, _user_id(principal))
        for key, value in subscriptions.items():
            if value is not None:
                setattr(profile, SUBSCRIPTIONS[key], value)
        profile.updated_at = utcnow()
        return {key: getattr(profile, column) for key, column in SUBSCRIPTIONS.items()}


# ------------------------------------------------------------------ accounts


def describe_account(ctx: ServerContext, principal: Principal, name: str) -> AccountView:
    with read_session(ctx) as session:
        account = _member_account(session, principal, name)
        return _account_view(session, account)


def update_account(
    ctx: ServerContext,
    principal: Principal,
    name: str,
    *,
    new_name: str | None,
    execution_region: str | None,
    is_self_hosted_only: bool | None,
) -> AccountView:
    if execution_region is not None and execution_region != SELF_HOSTED_REGION:
        raise errors.InvalidInput(
            f"This server runs every app on its own runners: the execution region is "
            f"{SELF_HOSTED_REGION!r} and cannot be changed.",
            location="body.execution_region",
            value=execution_region,
        )
    if is_self_hosted_only is False:
        raise errors.InvalidInput(
            "Every account on this server is self-hosted; `is_self_hosted_only` stays true.",
            location="body.is_self_hosted_only",
            value=False,
        )
    try:
        with ctx.sessions.begin() as session:
            account = _member_account(session, principal, name, role="admin")
            if new_name is not None and new_name != account.name:
                account.name = _valid_account_name(new_name)
            session.flush()
            return _account_view(session, account)
    except DatabaseIntegrityError:
        raise errors.AlreadyExists(
            f"An account named {new_name!r} already exists. Pick another name."
        ) from None


def update_organization(
    ctx: ServerContext, principal: Principal, name: str, new_name: str | None
) -> AccountView:
    """Rename the organization an account shows; only its owner may."""
    with ctx.sessions.begin() as session:
        account = _organization_account(session, principal, name)
        view = _account_view(session, account)
        if view.owner is None or view.owner.user.id != principal.user_id:
            raise errors.Forbidden(
                f"Only the owner of the organization {name!r} can rename it"
                + (f" ({view.owner.user.email})." if view.owner else ".")
            )
        if new_name is not None:
            new_name = _text(new_name, "name", 128).strip()
            if not new_name:
                raise errors.InvalidInput(
                    "An organization needs a name.", location="body.name", value=new_name
                )
            row = session.get(models.Organization, account.id)
            if row is None:
                session.add(models.Organization(account_id=account.id, name=new_name))
            else:
                row.name, row.updated_at = new_name, utcnow()
            session.flush()
        return _account_view(session, account)


def describe_plan(ctx: ServerContext, principal: Principal) -> PlanView:
    with read_session(ctx) as session:
        return PlanView(session.get(models.Account, principal.account_id))


def update_plan(ctx: ServerContext, principal: Principal, base_plan_name: str) -> PlanView:
    if base_plan_name != SELF_HOSTED_PLAN:
        raise errors.InvalidInput(
            f"This server has one plan, {SELF_HOSTED_PLAN!r}, without limits; "
            f"{base_plan_name!r} is not available.",
            location="body.base_plan_name",
            value=base_plan_name,
        )
    with read_session(ctx) as session:
        _member_account_by_id(session, principal, role="admin")
        return PlanView(session.get(models.Account, principal.account_id))


def feature_flag(ctx: ServerContext, key: str) -> tuple[bool, Any]:
    """A flag's value from TOWER_FEATURE_FLAGS; unknown flags are off (False)."""
    flags = ctx.settings.feature_flags
    if key not in flags:
        return False, False
    value = flags[key]
    return value is not False and value is not None, value


# ------------------------------------------------------------------ helpers


def _user_id(principal: Principal) -> uuid.UUID:
    if principal.user_id is None:
        raise errors.Forbidden("This credential does not belong to a user.")
    return principal.user_id


def _stored_profile(session: Session, user_id: uuid.UUID) -> models.UserProfile:
    profile = sessions.load_profile(session, user_id)
    if profile not in session:
        session.add(profile)
    return profile


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise errors.InvalidInput(
            f"`{name}` must be text of at most {limit} characters.",
            location=f"body.{name}",
            value=value,
        )
    return value


def _valid_account_name(name: str) -> str:
    if not ACCOUNT_NAME.match(name):
        raise errors.InvalidInput(
            "An account name is 1 to 64 lowercase letters, digits and hyphens, starting and "
            "ending with a letter or digit.",
            location="body.name",
            value=name,
        )
    return name


def _not_found(name: str) -> errors.NotFound:
    return errors.NotFound(f"No account {name!r} among yours. GET /v1/session lists your teams.")


def _member_account(
    session: Session, principal: Principal, name: str, role: str | None = None
) -> models.Account:
    row = session.execute(
        select(models.Account, models.Membership.role)
        .join(models.Membership, models.Membership.account_id == models.Account.id)
        .where(models.Account.name == name, models.Membership.user_id == principal.user_id)
    ).first()
    if row is None or principal.user_id is None:
        raise _not_found(name)
    account, held = row
    _check_role(held, role, account.name)
    return account


def _member_account_by_id(
    session: Session, principal: Principal, role: str | None = None
) -> models.Account:
    account = session.get(models.Account, principal.account_id)
    membership = (
        session.get(models.Membership, (account.id, principal.user_id))
        if principal.user_id
        else None
    )
    _check_role(membership.role if membership else None, role, account.name)
    return account


def _check_role(held: str | None, required: str | None, account: str) -> None:
    if required is not None and held != required:
        raise errors.Forbidden(
            f"Only an {required} of {account!r} can do this (your role: {held or 'none'})."
        )


def _organization_account(session: Session, principal: Principal, name: str) -> models.Account:
    """The caller's account whose organization (or account) is called `name`."""
    for account in session.scalars(
        select(models.Account)
        .join(models.Membership, models.Membership.account_id == models.Account.id)
        .where(models.Membership.user_id == principal.user_id)
    ):
        if name in (account.name, sessions.organization_name(session, account)):
            return account
    raise errors.NotFound(f"No organization {name!r} among yours.")


def _account_view(session: Session, account: models.Account) -> AccountView:
    return AccountView(
        account, sessions.organization_name(session, account), _owner(session, account)
    )


def _owner(session: Session, account: models.Account) -> UserView | None:
    """A personal account's user; for a team, its longest-standing admin."""
    user = session.scalar(select(models.User).where(models.User.personal_account_id == account.id))
    if user is None:
        user = session.scalar(
            select(models.User)
            .join(models.Membership, models.Membership.user_id == models.User.id)
            .where(models.Membership.account_id == account.id, models.Membership.role == "admin")
            .order_by(models.Membership.created_at)
            .limit(1)
        )
    return UserView(user, sessions.load_profile(session, user.id)) if user else None
