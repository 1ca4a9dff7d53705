"""/v1/teams and /v1/team-invites: teams, members, roles and invitations.

A team is addressed by its slug, which the wire calls `name` (the official models use
`name` as the team's identifier and mark `slug` deprecated); the descriptive name is
`display_name`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from tower.core import roles
from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.api.sessions import team_fields, user_json
from tower.server.services import teams as teams_service
from tower.server.services.teams import InvitationView, MemberView, TeamView

router = APIRouter(prefix="/v1", tags=["teams"])


class CreateTeamParams(BaseModel):
    #: the descriptive name, e.g. "Data Team"
    name: str = Field(min_length=1, max_length=teams_service.MAX_NAME_LENGTH)
    #: lowercase letters, digits and hyphens; derived from `name` when left out
    slug: str | None = Field(default=None, max_length=200)


class UpdateTeamParams(BaseModel):
    #: a new descriptive name (null: unchanged)
    name: str | None = Field(default=None, max_length=teams_service.MAX_NAME_LENGTH)
    #: a new slug: the team's URLs and CLI name change (null: unchanged)
    slug: str | None = Field(default=None, max_length=200)


class TeamNameParams(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class EmailParams(BaseModel):
    email: str = Field(min_length=1, max_length=320)


class UpdateMemberParams(EmailParams):
    role: str = Field(min_length=1, max_length=32)


class InviteParams(BaseModel):
    #: one or more addresses, separated by commas, spaces or newlines
    emails: str = Field(min_length=1, max_length=20_000)
    role: str = roles.DEVELOPER
    message: str = Field(default="", max_length=4000)


class ResendParams(EmailParams):
    message: str | None = Field(default=None, max_length=4000)


class AnswerInvitationParams(BaseModel):
    #: the team's name (slug)
    name: str = Field(min_length=1, max_length=200)
    accepted: bool


def team_json(view: TeamView) -> dict[str, Any]:
    """The contract's Team model (plus `display_name` and the caller's `role`)."""
    return {
        **team_fields(view.account, view.account.name),
        "display_name": view.display_name,
        "role": view.role,
    }


def member_json(team: TeamView, member: MemberView) -> dict[str, Any]:
    """The official TeamMembership: {role, team, user}."""
    return {"role": member.role, "team": team_json(team), "user": user_json(member.user)}


def invitation_json(view: InvitationView) -> dict[str, Any]:
    row = view.invitation
    return {
        "email": row.email,
        "role": row.role,
        "invitation_sent_at": serializers.ts(row.sent_at),
        "team": team_json(view.team),
    }


@router.get("/teams", **scoped("teams:read"))
def list_teams(
    ctx: ContextDep,
    principal: PrincipalDep,
    page: int = Query(0, ge=0),
    page_size: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    views = teams_service.list_teams(ctx, principal)
    selected = serializers.paginate(views, page, page_size)
    return {
        "teams": [team_json(view) for view in selected],
        "pages": serializers.pages(page, page_size, len(views)),
    }


@router.post("/teams", **scoped("teams:create"))
def create_team(ctx: ContextDep, principal: PrincipalDep, body: CreateTeamParams) -> dict[str, Any]:
    view = teams_service.create_team(ctx, principal, name=body.name, slug=body.slug)
    return {"team": team_json(view)}


@router.get("/teams/{name}", **scoped("teams:read"))
def describe_team(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    details = teams_service.describe_team(ctx, principal, name)
    return {
        "team": team_json(details.team),
        "members": [{**user_json(member.user), "role": member.role} for member in details.members],
        "invitations": [invitation_json(view) for view in details.invitations],
    }


@router.put("/teams/{name}", **scoped("teams:update"))
def update_team(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateTeamParams
) -> dict[str, Any]:
    view = teams_service.update_team(ctx, principal, name, new_name=body.name, new_slug=body.slug)
    return {"team": team_json(view)}


@router.delete("/teams", **scoped("teams:delete"))
def delete_team(ctx: ContextDep, principal: PrincipalDep, body: TeamNameParams) -> dict[str, Any]:
    view = teams_service.delete_team(ctx, principal, body.name)
    return {"team": team_json(view)}


@router.get("/teams/{name}/members", **scoped("teams:read"))
def list_members(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    team, members = teams_service.list_members(ctx, principal, name)
    return {"team_members": [member_json(team, member) for member in members]}


@router.put("/teams/{name}/members", **scoped("teams:update"))
def update_member(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateMemberParams
) -> dict[str, Any]:
    team, member = teams_service.update_member(ctx, principal, name, body.email, body.role)
    return {"team_member": member_json(team, member)}


@router.delete("/teams/{name}/members", **scoped("teams:update"))
def remove_member(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: EmailParams
) -> dict[str, Any]:
    member = teams_service.remove_member(ctx, principal, name, body.email)
    return {"team_member": user_json(member.user)}


@router.post("/teams/{name}/leave", **scoped("teams:read"))
def leave_team(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    view = teams_service.leave_team(ctx, principal, name)
    return {"team": team_json(view)}


@router.get("/teams/{name}/invites", **scoped("teams:read"))
def list_invitations(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    views = teams_service.list_invitations(ctx, principal, name)
    return {"team_invitations": [invitation_json(view) for view in views]}


@router.post("/teams/{name}/invites", **scoped("teams:update"))
def invite(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: InviteParams
) -> dict[str, Any]:
    views = teams_service.invite(
        ctx, principal, name, emails=body.emails, role=body.role, message=body.message
    )
    return {"team_invitations": [invitation_json(view) for view in views]}


@router.delete("/teams/{name}/invites", **scoped("teams:update"))
def delete_invitation(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: EmailParams
) -> dict[str, Any]:
    view = teams_service.delete_invitation(ctx, principal, name, body.email)
    return {"invitation": invitation_json(view)}


@router.post("/teams/{name}/invites/resend", **scoped("teams:update"))
def resend_invitation(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: ResendParams
) -> dict[str, Any]:
    view = teams_service.resend_invitation(ctx, principal, name, body.email, body.message)
    return {"team_invitation": invitation_json(view)}


@router.get("/team-invites", **scoped("teams:read"))
def my_invitations(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    views = teams_service.my_invitations(ctx, principal)
    return {"team_invitations": [invitation_json(view) for view in views]}


@router.put("/team-invites", **scoped("teams:read"))
def answer_invitation(
    ctx: ContextDep, principal: PrincipalDep, body: AnswerInvitationParams
) -> dict[str, Any]:
    view = teams_service.respond_to_invitation(ctx, principal, body.name, accepted=body.accepted)
    return {"team": team_json(view), "accepted": body.accepted}
