"""`tower teams ...`: list your teams, switch the team later commands act in, and manage
teams, members and invitations.

The active team lives in the session file (`active_team`, as the official CLI keeps it):
every later command sends that team's token, so it acts in the team's account. With
TOWER_API_KEY there is no session: a key acts in the account it was created in (create
one in a team with `POST /v1/api-keys {"team": SLUG}`).
"""

from __future__ import annotations

from typing import Any

import click

from tower.cli import config, output
from tower.cli import session as session_file
from tower.cli.common import api, confirm, new_table, yes_option
from tower.client.api import TowerApi

ROLES = ("admin", "developer")
NO_SESSION = (
    "`tower teams switch` needs a session (log in with `tower login`, or `tower up` for a "
    "local server). With TOWER_API_KEY, use a key created in the team instead."
)


@click.group("teams")
def teams_group() -> None:
    """List and switch teams; manage members and invitations."""


def _refreshed_session(client: TowerApi) -> dict[str, Any] | None:
    """Re-read the caller's teams from the server into the session file (None: no file)."""
    path = session_file.session_path()
    old = session_file.load_session(path)
    if old is None:
        return None
    content = session_file.refresh_session_file(old, client.describe_session()["session"])
    session_file.write_session_file(path, content)
    return content


@teams_group.command("list")
def list_command() -> None:
    """List your teams and personal account; `*` marks the active one."""
    client = api()
    with output.spinner("Listing teams..."):
        teams = client.list_teams()
        content = _refreshed_session(client) if config.load_config().source == "session" else None
    active = session_file.active_team_name(content)
    table = new_table("", "Slug", "Team Name", "Role")
    for team in teams:
        slug = str(team.get("name", ""))
        marker = "*" if slug == active else ""
        table.add_row(
            marker, slug, str(team.get("display_name") or slug), str(team.get("role") or "")
        )
    output.print_table(table)
    if active:
        output.note("* indicates currently active team")


@teams_group.command("switch")
@click.argument("slug")
def switch_command(slug: str) -> None:
    """Make team SLUG the one every later command acts in."""
    if config.load_config().source != "session":
        raise click.UsageError(NO_SESSION)
    client = api()
    with output.spinner("Refreshing your teams..."):
        content = _refreshed_session(client)
    if content is None:
        raise click.UsageError(NO_SESSION)
    content = session_file.switch_active_team(content, slug)
    session_file.write_session_file(session_file.session_path(), content)
    team = next((t for t in client.list_teams() if t.get("name") == slug), {})
    output.success(f"Switched to team: {team.get('display_name') or slug}")


@teams_group.command("create")
@click.option("-n", "--name", required=True, help="The team's name, e.g. 'Data Team'.")
@click.option(
    "--slug", help="Lowercase letters, digits and hyphens; made from the name if left out."
)
def create_command(name: str, slug: str | None) -> None:
    """Create a team; you are its admin."""
    client = api()
    with output.spinner("Creating team..."):
        team = client.create_team(name, slug)["team"]
        if config.load_config().source == "session":
            _refreshed_session(client)
    output.success(f"Created team {team['display_name']!r} ({team['name']})")
    output.info(f"Work in it with `tower teams switch {team['name']}`.")


@teams_group.command("show")
@click.argument("slug")
def show_command(slug: str) -> None:
    """Show a team's members and pending invitations."""
    body = api().describe_team(slug)
    team = body.get("team") or {}
    output.print_details(
        [("Team", str(team.get("display_name", ""))), ("Slug", str(team.get("name", "")))]
    )
    members = new_table("Member", "Role")
    for member in body.get("members") or []:
        members.add_row(str(member.get("email", "")), str(member.get("role", "")))
    output.print_table(members)
    invitations = body.get("invitations") or []
    if invitations:
        table = new_table("Invited", "Role", "Sent")
        for invitation in invitations:
            table.add_row(
                str(invitation.get("email", "")),
                str(invitation.get("role", "")),
                output.format_timestamp(invitation.get("invitation_sent_at")),
            )
        output.print_table(table)


@teams_group.command("rename")
@click.argument("slug")
@click.option("-n", "--name", required=True, help="The team's new name.")
def rename_command(slug: str, name: str) -> None:
    """Give a team a new name (its slug stays)."""
    api().update_team(slug, name=name)
    output.success(f"Team {slug} is now called {name!r}")


@teams_group.command("delete")
@click.argument("slug")
@yes_option
def delete_command(slug: str, yes: bool) -> None:
    """Delete a team with its apps, runs, secrets and keys (admins only)."""
    confirm(
        f"Delete team '{slug}' and everything in it? This cannot be undone.",
        yes=yes,
        unanswered=(
            f"Deleting team '{slug}' needs confirmation: run it at a terminal or pass --yes."
        ),
    )
    api().delete_team(slug)
    output.success(f"Team {slug} was deleted")


@teams_group.command("invite")
@click.argument("slug")
@click.argument("emails", nargs=-1, required=True)
@click.option("--role", type=click.Choice(ROLES), default="developer", show_default=True)
def invite_command(slug: str, emails: tuple[str, ...], role: str) -> None:
    """Invite people (by email) to a team."""
    invitations = api().invite_team_members(slug, emails, role)
    for invitation in invitations:
        output.success(f"Invited {invitation['email']} to {slug} as {invitation['role']}")


@teams_group.command("invitations")
def invitations_command() -> None:
    """List the team invitations addressed to you."""
    invitations = api().list_my_team_invitations()
    if not invitations:
        output.info("No pending invitations.")
        return
    table = new_table("Team", "Role", "Sent")
    for invitation in invitations:
        table.add_row(
            str((invitation.get("team") or {}).get("name", "")),
            str(invitation.get("role", "")),
            output.format_timestamp(invitation.get("invitation_sent_at")),
        )
    output.print_table(table)


@teams_group.command("accept")
@click.argument("slug")
def accept_command(slug: str) -> None:
    """Accept your invitation to team SLUG."""
    client = api()
    client.answer_team_invitation(slug, accepted=True)
    if config.load_config().source == "session":
        _refreshed_session(client)
    output.success(f"You joined team {slug}. Work in it with `tower teams switch {slug}`.")


@teams_group.command("decline")
@click.argument("slug")
def decline_command(slug: str) -> None:
    """Decline your invitation to team SLUG."""
    api().answer_team_invitation(slug, accepted=False)
    output.success(f"Declined the invitation to team {slug}")


@teams_group.command("leave")
@click.argument("slug")
@yes_option
def leave_command(slug: str, yes: bool) -> None:
    """Leave team SLUG."""
    confirm(f"Leave team '{slug}'?", yes=yes)
    client = api()
    client.leave_team(slug)
    content = session_file.load_session(session_file.session_path())
    if content is not None and session_file.active_team_name(content) == slug:
        _fall_back_to_personal(content)
    output.success(f"You left team {slug}")


def _fall_back_to_personal(content: dict[str, Any]) -> None:
    personal = next(
        (t for t in content.get("teams") or [] if t.get("team_type") == "personal"), None
    )
    remaining = [
        t
        for t in content.get("teams") or []
        if t.get("name") != session_file.active_team_name(content)
    ]
    session_file.write_session_file(
        session_file.session_path(), {**content, "active_team": personal, "teams": remaining}
    )


@teams_group.command("set-role")
@click.argument("slug")
@click.argument("email")
@click.argument("role", type=click.Choice(ROLES))
def set_role_command(slug: str, email: str, role: str) -> None:
    """Change a member's role in a team (admins only)."""
    api().update_team_member(slug, email, role)
    output.success(f"{email} is now {role} in {slug}")


@teams_group.command("remove-member")
@click.argument("slug")
@click.argument("email")
@yes_option
def remove_member_command(slug: str, email: str, yes: bool) -> None:
    """Remove a member from a team (admins only)."""
    confirm(f"Remove {email} from team '{slug}'?", yes=yes)
    api().remove_team_member(slug, email)
    output.success(f"Removed {email} from {slug}")
