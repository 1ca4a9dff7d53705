"""The page a `tower login` opens: sign in (or be signed in) and approve the code."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape

_env = Environment(
    loader=PackageLoader("tower.server.ui", "templates"), autoescape=select_autoescape()
)


def render(
    *,
    url: str,
    action: str,
    user_code: str = "",
    signed_in_as: str | None = None,
    csrf: str = "",
    email: str = "",
    error: str | None = None,
    approved: bool = False,
) -> str:
    return _env.get_template("device_login.html").render(
        url=url,
        action=action,
        user_code=user_code,
        signed_in_as=signed_in_as,
        csrf=csrf,
        email=email,
        error=error,
        approved=approved,
    )
