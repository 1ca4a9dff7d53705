"""The one place that decides whether a caller may do something.

Every route declares the scope it needs (`tower.server.api.deps.scoped`); this module
answers for every use case, so no route repeats the rule. Tenancy (an object of
another account answers 404) is applied by the queries themselves (`context.owned`).
"""

from __future__ import annotations

from tower.core import errors, scopes
from tower.server.services.context import Principal


def authorize(principal: Principal, scope: str | None) -> None:
    """Raise Forbidden, naming the missing scope, unless `principal` may use `scope`.

    `scope` None means any authenticated caller (e.g. the server's public key).
    """
    if scope is None or scopes.allows(principal.scopes, scope):
        return
    held = scopes.format_scopes(principal.scopes) or "none"
    raise errors.Forbidden(
        f"This API key lacks the `{scope}` scope needed here (it has: {held}). "
        f"Create a key with `{scope}` (or `{scope.split(':')[0]}`), or use one without "
        "a scope list."
    )
