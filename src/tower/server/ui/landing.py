"""The landing page: what is running here and how to use it."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape

_env = Environment(
    loader=PackageLoader("tower.server.ui", "templates"), autoescape=select_autoescape()
)


def render(public_url: str, runners_online: int) -> str:
    return _env.get_template("landing.html").render(url=public_url, runners=runners_online)
