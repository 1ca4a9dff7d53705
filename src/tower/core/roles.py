"""Roles in an account and what each may do: the one permission table.

A member of an account (a person, or a service account) has one role there. A role is
expressed in the same vocabulary as API key scopes (`tower.core.scopes`), so a request
is allowed when the caller's role allows the route's scope AND the credential's scope
list (if any) does too: role ∩ key scopes.

| role        | may                                                                  |
|-------------|----------------------------------------------------------------------|
| `admin`     | everything: also members, invitations, service accounts, team        |
|             | settings (rename), deleting the team                                 |
| `developer` | deploy, run, read and manage apps, runs, secrets, environments,      |
|             | catalogs, schedules, webhooks, alerts; their own API keys; see the   |
|             | team and its members; create new teams; leave the team               |

The owner of a personal account is its `admin`.
"""

from __future__ import annotations

from tower.core import scopes
from tower.core.errors import InvalidInput

ADMIN = "admin"
DEVELOPER = "developer"

#: role → the scopes its holders may use (a parent scope grants its children); None = all
ROLE_SCOPES: dict[str, frozenset[str] | None] = {
    ADMIN: None,
    DEVELOPER: frozenset(
        {
            "api_keys",
            "apps",
            "catalogs",
            "envs",
            "notifications",
            "runs",
            "runners:read",
            "sandbox",
            "schedules",
            "secrets",
            "webhooks",
            "teams:read",
            "teams:create",
        }
    ),
}

ROLES: tuple[str, ...] = tuple(ROLE_SCOPES)

#: what code running in a run acts as: enough to run apps and read catalogs, never to
#: manage the team, whoever started the run
RUN_ROLE = DEVELOPER


def role_allows(role: str | None, scope: str) -> bool:
    """Whether a member with `role` may use `scope` (None = not a member: nothing)."""
    if role is None or role not in ROLE_SCOPES:
        return False
    return scopes.allows(ROLE_SCOPES[role], scope)


def role_scopes(role: str) -> frozenset[str] | None:
    """The scopes `role` may use (None = every scope)."""
    return ROLE_SCOPES[role]


def parse_role(value: str | None, *, location: str = "body.role") -> str:
    """A valid role name, or a 422 listing the valid ones."""
    role = (value or "").strip().lower()
    if role not in ROLE_SCOPES:
        raise InvalidInput(
            f"Unknown role {value!r}. A role is one of: {', '.join(ROLES)}.",
            location=location,
            value=value,
        )
    return role
