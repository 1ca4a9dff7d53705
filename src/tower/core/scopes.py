"""API key scopes: the table, its hierarchy, and who may do what.

A scope is `resource` or `resource:action[:detail]`. Holding a scope grants every
scope below it: `apps` grants `apps:run`, `runners` grants `runners:credentials:create`.
A credential without a scope list (a session, a run token, an API key created without
`scopes`) holds every scope of its account; what its role allows is decided elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from tower.core.errors import InvalidInput

#: every scope a key may carry, with what it allows (the seed's "Available scopes")
SCOPES: dict[str, str] = {
    "api_keys": "Access to all API key operations.",
    "api_keys:read": "Read access for API keys.",
    "api_keys:create": "Create access for API keys.",
    "api_keys:delete": "Delete access for API keys.",
    "apps": "Access to all apps operations.",
    "apps:read": "Read access for apps.",
    "apps:run": "Allows the API to run apps.",
    "apps:deploy": "Allows the API key to be used to deploy a new app version.",
    "apps:create": "Create access for apps.",
    "apps:update": "Update access for apps (e.g. renaming app).",
    "apps:delete": "Delete access for apps.",
    "catalogs": "Access to all Tower catalog operations.",
    "catalogs:read": "Read access for catalogs.",
    "catalogs:create": "Create access for catalogs.",
    "catalogs:update": "Update access for catalogs.",
    "catalogs:delete": "Delete access for catalogs.",
    "catalogs:export": "Export access for catalogs.",
    "envs": "Access to all environment operations.",
    "envs:create": "Create access for environments.",
    "envs:read": "Read access for environments.",
    "envs:update": "Update access for environments.",
    "notifications": "Access to all notification operations.",
    "notifications:read": "Read access for notifications.",
    "notifications:delete": "Delete access for notifications.",
    "runs": "Access to all run operations.",
    "runs:read": "Read access for runs.",
    "runs:cancel": "Allows for canceling an active run.",
    "runs:logs": "Read access for run logs, including the stream of logs.",
    "runners": "Access to all self-hosted runner operations.",
    "runners:read": "Read access to runners.",
    "runners:credentials:create": "Allows for creating credentials for self-hosted runners.",
    "sandbox": "Access to all Tower sandbox operations.",
    "sandbox:secrets:create": "Allows for creating a new secret in a sandbox.",
    "schedules": "Access to all schedules operations.",
    "schedules:create": "Create access for schedules.",
    "schedules:read": "Read access for schedules.",
    "schedules:update": "Update access for schedules.",
    "schedules:delete": "Delete access for schedules.",
    "secrets": "Access to all secrets operations.",
    "secrets:read": "Read access for secrets.",
    "secrets:create": "Create access for secrets.",
    "secrets:update": "Update access for secrets.",
    "secrets:delete": "Delete access for secrets.",
    "teams": "Access to all team operations.",
    "teams:create": "Create access for teams.",
    "teams:read": "Read access for teams.",
    "teams:update": "Update access for teams.",
    "teams:delete": "Delete access for teams.",
    "webhooks": "Access to all webhooks operations.",
    "webhooks:read": "Read access for webhooks.",
    "webhooks:create": "Create access for webhooks.",
    "webhooks:update": "Update access for webhooks.",
    "webhooks:delete": "Delete access for webhooks.",
}


def grants(held: str, required: str) -> bool:
    """Whether holding `held` allows what `required` allows (itself or anything below it)."""
    return required == held or required.startswith(held + ":")


def allows(held: Iterable[str] | None, required: str) -> bool:
    """Whether a credential holding `held` (None = every scope) may use `required`."""
    return held is None or any(grants(scope, required) for scope in held)


def parse_scopes(text: str | None) -> frozenset[str] | None:
    """`"apps:run secrets:read"` (spaces or commas) → the scopes; None/blank → None (all).

    An unknown scope is refused with the list of valid ones, so a typo never silently
    yields a key that can do less (or more) than intended.
    """
    if text is None or not text.strip():
        return None
    scopes = frozenset(part for part in text.replace(",", " ").split() if part)
    unknown = sorted(scopes - SCOPES.keys())
    if unknown:
        raise InvalidInput(
            f"Unknown scope(s): {', '.join(unknown)}. Valid scopes: {', '.join(SCOPES)}.",
            location="body.scopes",
            value=text,
        )
    return scopes


def format_scopes(scopes: Iterable[str] | None) -> str | None:
    """The stored and wire form: space-separated, sorted; None for an unrestricted key."""
    return None if scopes is None else " ".join(sorted(scopes))


def within(requested: frozenset[str] | None, held: frozenset[str] | None) -> bool:
    """Whether a key with `requested` scopes would exceed a creator holding `held`."""
    if held is None:
        return True
    if requested is None:
        return False
    return all(allows(held, scope) for scope in requested)
