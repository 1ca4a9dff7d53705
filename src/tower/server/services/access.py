"""The one place that decides whether a caller may do something.

Every route declares the scope it needs (`tower.server.api.deps.scoped`); this module
answers for every use case, so no route repeats the rule. A request is allowed when the
caller's role in the account (`tower.core.roles`, the permission table) allows the scope
AND the credential's own scope list does: role ∩ key scopes. Tenancy (an object of
another account answers 404) is applied by the queries themselves (`context.owned`).

Team routes (`/teams/{name}/…`, scopes under `teams`) name the team they act on, which
need not be the account the credential acts in: for those the role that counts is the
caller's role in the named team, checked by :func:`authorize_in` once the service has
found the team (a team the caller is not a member of answers 404, like any foreign object).
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from tower.core import errors, roles, scopes
from tower.server.services.context import Principal
from tower.server.store import models

#: scopes whose routes name the team they act on (see the module docstring)
TEAM_SCOPE_ROOT = "teams"


def authorize(principal: Principal, scope: str | None) -> None:
    """Raise Forbidden, naming what is missing, unless `principal` may use `scope`.

    `scope` None means any authenticated caller (e.g. the server's public key).
    """
    if scope is None:
        return
    if not _names_its_team(scope):
        _check_role(principal.account_name, principal.role, scope)
    _check_key_scopes(principal, scope)


def authorize_in(principal: Principal, account_name: str, role: str | None, scope: str) -> None:
    """`principal` acts on account `account_name`, where its role is `role` (None = not a
    member: 404, so a team's existence never leaks to outsiders)."""
    if role is None:
        raise errors.NotFound(
            f"No team {account_name!r} among yours. `GET /v1/teams` lists the teams you belong to."
        )
    _check_role(account_name, role, scope)
    _check_key_scopes(principal, scope)


def role_in(session: Session, principal: Principal, account_id: uuid.UUID) -> str | None:
    """The caller's role in `account_id`, or None when it is not a member there.

    In its own account a credential has the role it authenticated with. Elsewhere only a
    person has one (their membership); a service account's key and a run's token act in
    their own account only.
    """
    if account_id == principal.account_id:
        return principal.role
    if principal.user_id is None or principal.kind == "run":
        return None
    membership = session.get(models.Membership, (account_id, principal.user_id))
    return membership.role if membership else None


def manages_everyones_keys(principal: Principal) -> bool:
    """Admins list and delete every API key of their account; others only their own."""
    return principal.role == roles.ADMIN


def _names_its_team(scope: str) -> bool:
    return scope == TEAM_SCOPE_ROOT or scope.startswith(TEAM_SCOPE_ROOT + ":")


def _check_role(account_name: str, role: str | None, scope: str) -> None:
    if roles.role_allows(role, scope):
        return
    raise errors.Forbidden(
        f"Your role in {account_name!r} is `{role or 'none'}`, which does not allow "
        f"`{scope}` ({_who_may(scope)} may). Ask an admin of {account_name!r} to do it or "
        "to change your role."
    )


def _who_may(scope: str) -> str:
    allowed = [role for role in roles.ROLES if roles.role_allows(role, scope)]
    return " and ".join(f"`{role}`" for role in allowed) or "no role"


def _check_key_scopes(principal: Principal, scope: str) -> None:
    if scopes.allows(principal.scopes, scope):
        return
    held = scopes.format_scopes(principal.scopes) or "none"
    raise errors.Forbidden(
        f"This API key lacks the `{scope}` scope needed here (it has: {held}). "
        f"Create a key with `{scope}` (or `{scope.split(':')[0]}`), or use one without "
        "a scope list."
    )
