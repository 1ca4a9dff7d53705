"""Teams: shared accounts with members, roles and invitations.

A team is an account of type `team` (its own apps, environments, secrets, runs) whose
`name` is the team's slug; the `teams` row adds the descriptive name. Every use case
that names a team finds it among the caller's teams and asks `access.authorize_in`
with the caller's role there, so an outsider gets 404 and a developer gets 403 for what
only admins may do (`tower.core.roles`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tower.core import errors, roles
from tower.server.services import access, accounts, audit
from tower.server.services.context import Principal, ServerContext, read_session
from tower.server.store import models
from tower.server.store.types import utcnow

SLUG_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUG_LENGTH = 64
MAX_NAME_LENGTH = 128
TEAM_TYPE = "team"
PERSONAL_TYPE = "personal"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EMAIL_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass(frozen=True)
class TeamView:
    """A team (or personal account) as the API shows it, with the caller's role there."""

    account: models.Account
    display_name: str
    role: str | None = None


@dataclass(frozen=True)
class MemberView:
    user: models.User
    role: str


@dataclass(frozen=True)
class InvitationView:
    invitation: models.TeamInvitation
    team: TeamView


@dataclass(frozen=True)
class TeamDetails:
    team: TeamView
    members: list[MemberView] = field(default_factory=list)
    invitations: list[InvitationView] = field(default_factory=list)


# -- names ----------------------------------------------------------------------------


def _audit(
    session: Session, principal: Principal, account: models.Account, action: str, **details: str
) -> None:
    """Record a change of a team in the team's own log."""
    audit.record(
        session, principal, action, f"teams/{account.name}", account_id=account.id, **details
    )


def validate_slug(slug: str, *, location: str = "body.slug") -> str:
    """A slug is lowercase letters, digits and single hyphens between them."""
    if len(slug) > MAX_SLUG_LENGTH or not SLUG_PATTERN.match(slug):
        raise errors.InvalidInput(
            f"{slug!r} is not a valid team slug: use 1 to {MAX_SLUG_LENGTH} lowercase letters, "
            "digits and hyphens (not at the start or end), e.g. 'data-team'.",
            location=location,
            value=slug,
        )
    return slug


def slug_from_name(name: str) -> str:
    """'Data Team #1' → 'data-team-1': the slug a team gets when none is given."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:MAX_SLUG_LENGTH].strip("-")


def _valid_display_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise errors.InvalidInput(
            f"A team needs a name of 1 to {MAX_NAME_LENGTH} characters.",
            location="body.name",
            value=name,
        )
    return name


def _require_person(principal: Principal, what: str) -> uuid.UUID:
    if principal.user_id is None or principal.kind == "run":
        raise errors.Forbidden(
            f"Only a person can {what}: use a session or a personal API key, not a service "
            "account's key or a run's token."
        )
    return principal.user_id


# -- lookups --------------------------------------------------------------------------


def _view(session: Session, account: models.Account, role: str | None) -> TeamView:
    team = session.get(models.Team, account.id)
    return TeamView(account, team.display_name if team else account.name, role)


def _team_for(
    session: Session, principal: Principal, name: str, scope: str, *, lock: bool = False
) -> TeamView:
    """The team (or personal account) `name` the caller belongs to, authorized for `scope`."""
    stmt = select(models.Account).where(models.Account.name == name)
    if lock:
        stmt = stmt.with_for_update()
    account = session.scalar(stmt)
    role = access.role_in(session, principal, account.id) if account else None
    access.authorize_in(principal, name, role, scope)
    assert account is not None  # authorize_in raised NotFound otherwise
    return _view(session, account, role)


def _require_team_type(team: TeamView, what: str) -> None:
    if team.account.type != TEAM_TYPE:
        raise errors.Conflict(
            f"{team.account.name!r} is a personal account, not a team: you cannot {what} it."
        )


def _members(session: Session, account_id: uuid.UUID) -> list[MemberView]:
    rows = session.execute(
        select(models.User, models.Membership.role)
        .join(models.Membership, models.Membership.user_id == models.User.id)
        .where(models.Membership.account_id == account_id)
        .order_by(models.Membership.created_at, models.User.email)
    ).all()
    return [MemberView(user, role) for user, role in rows]


def _invitations(session: Session, team: TeamView) -> list[InvitationView]:
    rows = session.scalars(
        select(models.TeamInvitation)
        .where(models.TeamInvitation.account_id == team.account.id)
        .order_by(models.TeamInvitation.created_at, models.TeamInvitation.email)
    ).all()
    return [InvitationView(row, team) for row in rows]


def _admins(session: Session, account_id: uuid.UUID) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(models.Membership)
            .where(
                models.Membership.account_id == account_id,
                models.Membership.role == roles.ADMIN,
            )
        )
        or 0
    )


def _member_by_email(
    session: Session, team: TeamView, email: str
) -> tuple[models.User, models.Membership]:
    row = session.execute(
        select(models.User, models.Membership)
        .join(models.Membership, models.Membership.user_id == models.User.id)
        .where(
            models.Membership.account_id == team.account.id,
            func.lower(models.User.email) == email.strip().lower(),
        )
    ).first()
    if row is None:
        raise errors.NotFound(
            f"{email!r} is not a member of team {team.account.name!r}. "
            f"`GET /v1/teams/{team.account.name}/members` lists the members.",
            location="body.email",
            value=email,
        )
    return row[0], row[1]


# -- teams ----------------------------------------------------------------------------


def create_team(
    ctx: ServerContext, principal: Principal, *, name: str, slug: str | None = None
) -> TeamView:
    """A new team account (with its `default` environment) whose only member, the
    creator, is its admin."""
    user_id = _require_person(principal, "create a team")
    display_name = _valid_display_name(name)
    if slug is None or not slug.strip():
        slug = slug_from_name(display_name)
        if not slug:
            raise errors.InvalidInput(
                f"Cannot make a slug from the name {name!r}: give `slug` (lowercase letters, "
                "digits and hyphens).",
                location="body.slug",
                value=slug,
            )
    slug = validate_slug(slug.strip())
    with ctx.sessions.begin() as session:
        _check_slug_free(session, slug)
        account = accounts.create_account(ctx, session, name=slug, type_=TEAM_TYPE)
        session.add(
            models.Team(account_id=account.id, display_name=display_name, created_by_id=user_id)
        )
        session.add(models.Membership(account_id=account.id, user_id=user_id, role=roles.ADMIN))
        session.flush()
        _audit(session, principal, account, "team.create", name=display_name)
        return TeamView(account, display_name, roles.ADMIN)


def _check_slug_free(session: Session, slug: str) -> None:
    if session.scalar(select(models.Account.id).where(models.Account.name == slug)):
        raise errors.AlreadyExists(
            f"The slug {slug!r} is taken (by a team or a personal account). Choose another.",
            location="body.slug",
            value=slug,
        )


def list_teams(ctx: ServerContext, principal: Principal) -> list[TeamView]:
    """The accounts the caller belongs to: personal first, then teams by age. A service
    account's key (or a run) belongs to its own account only."""
    with read_session(ctx) as session:
        if principal.user_id is None or principal.kind == "run":
            account = session.get(models.Account, principal.account_id)
            return [_view(session, account, principal.role)] if account else []
        rows = session.execute(
            select(models.Account, models.Membership.role)
            .join(models.Membership, models.Membership.account_id == models.Account.id)
            .where(models.Membership.user_id == principal.user_id)
            .order_by(models.Account.type != PERSONAL_TYPE, models.Account.created_at)
        ).all()
        return [_view(session, account, role) for account, role in rows]


def describe_team(ctx: ServerContext, principal: Principal, name: str) -> TeamDetails:
    with read_session(ctx) as session:
        team = _team_for(session, principal, name, "teams:read")
        return TeamDetails(team, _members(session, team.account.id), _invitations(session, team))


def list_members(
    ctx: ServerContext, principal: Principal, name: str
) -> tuple[TeamView, list[MemberView]]:
    with read_session(ctx) as session:
        team = _team_for(session, principal, name, "teams:read")
        return team, _members(session, team.account.id)


def update_team(
    ctx: ServerContext,
    principal: Principal,
    name: str,
    *,
    new_name: str | None = None,
    new_slug: str | None = None,
) -> TeamView:
    """Rename a team (its descriptive name) and/or change its slug (its URLs change)."""
    with ctx.sessions.begin() as session:
        team = _team_for(session, principal, name, "teams:update", lock=True)
        _require_team_type(team, "rename")
        row = session.get(models.Team, team.account.id)
        assert row is not None
        if new_name is not None:
            row.display_name = _valid_display_name(new_name)
        if new_slug is not None and new_slug != team.account.name:
            slug = validate_slug(new_slug.strip())
            _check_slug_free(session, slug)
            team.account.name = slug
        session.flush()
        _audit(session, principal, team.account, "team.update", name=row.display_name)
        return TeamView(team.account, row.display_name, team.role)


def delete_team(ctx: ServerContext, principal: Principal, name: str) -> TeamView:
    """Delete a team with everything it owns (apps, runs, secrets, keys, members)."""
    with ctx.sessions.begin() as session:
        team = _team_for(session, principal, name, "teams:delete", lock=True)
        _require_team_type(team, "delete")
        # The team's own log goes with it; the event stays in the caller's account.
        audit.record(session, principal, "team.delete", f"teams/{team.account.name}")
        session.delete(team.account)
        return team


# -- members --------------------------------------------------------------------------


def remove_member(ctx: ServerContext, principal: Principal, name: str, email: str) -> MemberView:
    with ctx.sessions.begin() as session:
        team = _team_for(session, principal, name, "teams:update", lock=True)
        _require_team_type(team, "remove members of")
        user, membership = _member_by_email(session, team, email)
        _keep_an_admin(session, team, membership, "remove")
        view = MemberView(user, membership.role)
        session.delete(membership)
        _audit(session, principal, team.account, "member.remove", email=user.email)
        return view


def update_member(
    ctx: ServerContext, principal: Principal, name: str, email: str, role: str
) -> tuple[TeamView, MemberView]:
    role = roles.parse_role(role)
    with ctx.sessions.begin() as session:
        team = _team_for(session, principal, name, "teams:update", lock=True)
        _require_team_type(team, "change roles in")
        user, membership = _member_by_email(session, team, email)
        if role != roles.ADMIN:
            _keep_an_admin(session, team, membership, "demote")
        membership.role = role
        _audit(session, principal, team.account, "member.role", email=user.email, role=role)
        return team, MemberView(user, role)


def leave_team(ctx: ServerContext, principal: Principal, name: str) -> TeamView:
    """Leave a team. The last member must delete the team instead; the last admin must
    first make someone else admin, so a team is never left without one."""
    user_id = _require_person(principal, "leave a team")
    with ctx.sessions.begin() as session:
        team = _team_for(session, principal, name, "teams:read", lock=True)
        _require_team_type(team, "leave")
        membership = session.get(models.Membership, (team.account.id, user_id))
        assert membership is not None
        members = len(_members(session, team.account.id))
        if members <= 1:
            raise errors.Conflict(
                f"You are the last member of team {name!r}, so you cannot leave it. "
                f'Delete the team instead (`DELETE /v1/teams` with {{"name": "{name}"}}).'
            )
        _keep_an_admin(session, team, membership, "leave")
        session.delete(membership)
        _audit(session, principal, team.account, "member.leave")
        return team


def _keep_an_admin(
    session: Session, team: TeamView, membership: models.Membership, action: str
) -> None:
    if membership.role == roles.ADMIN and _admins(session, team.account.id) <= 1:
        raise errors.Conflict(
            f"That would {action} the last admin of team {team.account.name!r}. "
            "Make another member admin first (`PUT /v1/teams/{name}/members` with "
            '{"email": …, "role": "admin"}), or delete the team.'
        )


# -- invitations ----------------------------------------------------------------------


def parse_emails(text: str) -> list[str]:
    """Addresses separated by commas, semicolons, spaces or newlines; lowercased, unique."""
    found: list[str] = []
    for part in _EMAIL_SEPARATORS.split(text or ""):
        email = part.strip().lower()
        if not email:
            continue
        if not _EMAIL.match(email):
            raise errors.InvalidInput(
                f"{part!r} is not an email address. Separate addresses with commas or newlines.",
                location="body.emails",
                value=part,
            )
        if email not in found:
            found.append(email)
    if not found:
        raise errors.InvalidInput(
            "Give at least one email address to invite in `emails`.", location="body.emails"
        )
    return found


def invite(
    ctx: ServerContext,
    principal: Principal,
    name: str,
    *,
    emails: str,
    role: str = roles.DEVELOPER,
    message: str = "",
) -> list[InvitationView]:
    """Invite addresses (people with or without an account yet) with `role`. Inviting an
    address again updates the role and sends it again."""
    addresses = parse_emails(emails)
    role = roles.parse_role(role)
    with ctx.sessions.begin() as session:
        team = _team_for(session, principal, name, "teams:update", lock=True)
        _require_team_type(team, "invite people to")
        members = {member.user.email.lower() for member in _members(session, team.account.id)}
        already = [email for email in addresses if email in members]
        if already:
            raise errors.Conflict(
                f"Already a member of team {name!r}: {', '.join(already)}. "
                "Change a member's role with `PUT /v1/teams/{name}/members` instead.",
                location="body.emails",
                value=", ".join(already),
            )
        now = utcnow()
        views = []
        for email in addresses:
            row = session.scalar(
                select(models.TeamInvitation).where(
                    models.TeamInvitation.account_id == team.account.id,
                    models.TeamInvitation.email == email,
                )
            )
            if row is None:
                row = models.TeamInvitation(account_id=team.account.id, email=email)
                session.add(row)
            row.role, row.message, row.sent_at = role, message, now
            row.invited_by_id = principal.user_id
            session.flush()
            views.append(InvitationView(row, team))
            _audit(session, principal, team.account, "member.invite", email=email, role=role)
        return views


def list_invitations(ctx: ServerContext, principal: Principal, name: str) -> list[InvitationView]:
    with read_session(ctx) as session:
        team = _team_for(session, principal, name, "teams:read")
        return _invitations(session, team)


def _invitation(session: Session, team: TeamView, email: str) -> models.TeamInvitation:
    row = session.scalar(
        select(models.TeamInvitation).where(
            models.TeamInvitation.account_id == team.account.id,
            models.TeamInvitation.email == email.strip().lower(),
        )
    )
    if row is None:
        raise errors.NotFound(
            f"No pending invitation for {email!r} in team {team.account.name!r}. "
            f"`GET /v1/teams/{team.account.name}/invites` lists them.",
            location="body.email",
            value=email,
        )
    return row


def resend_invitation(
    ctx: ServerContext, principal: Principal, name: str, email: str, message: str | None = None
) -> InvitationView:
    with ctx.sessions.begin() as session:
        team = _team_for(session, principal, name, "teams:update")
        row = _invitation(session, team, email)
        row.sent_at = utcnow()
        if message is not None:
            row.message = message
        session.flush()
        return InvitationView(row, team)


def delete_invitation(
    ctx: ServerContext, principal: Principal, name: str, email: str
) -> InvitationView:
    with ctx.sessions.begin() as session:
        team = _team_for(session, principal, name, "teams:update")
        row = _invitation(session, team, email)
        session.delete(row)
        _audit(session, principal, team.account, "member.uninvite", email=row.email)
        return InvitationView(row, team)


def my_invitations(ctx: ServerContext, principal: Principal) -> list[InvitationView]:
    """The invitations addressed to the caller's email, across all teams."""
    if principal.user_id is None or principal.kind == "run":
        return []
    with read_session(ctx) as session:
        user = session.get(models.User, principal.user_id)
        if user is None:
            return []
        rows = session.execute(
            select(models.TeamInvitation, models.Account)
            .join(models.Account, models.Account.id == models.TeamInvitation.account_id)
            .where(models.TeamInvitation.email == user.email.lower())
            .order_by(models.TeamInvitation.created_at)
        ).all()
        return [InvitationView(row, _view(session, account, None)) for row, account in rows]


def respond_to_invitation(
    ctx: ServerContext, principal: Principal, name: str, *, accepted: bool
) -> TeamView:
    """Accept (become a member with the invited role) or decline; the invitation is gone
    either way."""
    user_id = _require_person(principal, "answer a team invitation")
    with ctx.sessions.begin() as session:
        user = session.get(models.User, user_id)
        assert user is not None
        row = session.execute(
            select(models.TeamInvitation, models.Account)
            .join(models.Account, models.Account.id == models.TeamInvitation.account_id)
            .where(
                models.Account.name == name,
                models.TeamInvitation.email == user.email.lower(),
            )
        ).first()
        if row is None:
            raise errors.NotFound(
                f"You have no pending invitation to team {name!r}. "
                "`GET /v1/team-invites` lists yours.",
                location="body.name",
                value=name,
            )
        invitation, account = row
        if accepted and session.get(models.Membership, (account.id, user_id)) is None:
            session.add(
                models.Membership(account_id=account.id, user_id=user_id, role=invitation.role)
            )
        session.delete(invitation)
        action = "member.join" if accepted else "member.decline"
        _audit(session, principal, account, action, email=user.email, role=invitation.role)
        return _view(session, account, invitation.role if accepted else None)
