"""The device-login page at `login_url`: approve a `tower login` in the browser.

A browser that signed in here before carries the session's token in an HttpOnly
cookie and approves with one click (the form carries a token tied to that session,
so another site cannot submit it); otherwise the page asks for email and password.
"""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tower.core import errors
from tower.server.api.deps import ContextDep
from tower.server.services import auth, device_login, sessions
from tower.server.services.context import Principal, ServerContext
from tower.server.store import models
from tower.server.ui import device_login as page

router = APIRouter(include_in_schema=False)
COOKIE = "tower_session"
MAX_FORM_BYTES = 16 * 1024


def _cookie_principal(ctx: ServerContext, request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        principal = auth.authenticate(ctx, api_key=None, bearer=token)
    except errors.Unauthenticated:
        return None
    return principal if principal.session_id and principal.user_id else None


def _csrf(ctx: ServerContext, principal: Principal) -> str:
    key = ctx.keys.derive("login-page-csrf")
    return hmac.new(key, str(principal.session_id).encode(), "sha256").hexdigest()


def _email(ctx: ServerContext, principal: Principal) -> str:
    with ctx.sessions() as session:
        user = session.get(models.User, principal.user_id)
        return user.email if user else ""


def _render(
    ctx: ServerContext, principal: Principal | None, status: int = 200, **kw: object
) -> HTMLResponse:
    signed_in = _email(ctx, principal) if principal else None
    html = page.render(
        url=ctx.settings.resolved_public_url,
        action=device_login.LOGIN_PAGE_PATH,
        signed_in_as=signed_in,
        csrf=_csrf(ctx, principal) if principal else "",
        **kw,  # type: ignore[arg-type]
    )
    return HTMLResponse(html, status_code=status)


@router.get(device_login.LOGIN_PAGE_PATH, response_class=HTMLResponse)
def login_page(ctx: ContextDep, request: Request, user_code: str = "") -> HTMLResponse:
    return _render(ctx, _cookie_principal(ctx, request), user_code=user_code[:32])


@router.post(device_login.LOGIN_PAGE_PATH, response_class=HTMLResponse)
async def approve(ctx: ContextDep, request: Request) -> HTMLResponse:
    body = await request.body()
    form = {k: v[0] for k, v in parse_qs(body[:MAX_FORM_BYTES].decode(errors="replace")).items()}
    user_code = form.get("user_code", "")[:32]
    email = form.get("email", "")[:320]
    principal = _cookie_principal(ctx, request)
    try:
        if principal and hmac.compare_digest(form.get("csrf", ""), _csrf(ctx, principal)):
            with ctx.sessions.begin() as session:
                device_login.claim_as(session, principal.user_id, user_code)  # type: ignore[arg-type]
            return _render(ctx, principal, approved=True, email=_email(ctx, principal))
        if not email or not form.get("password"):
            raise errors.Unauthenticated("Sign in with your email and password to approve.")
        view = sessions.log_in(ctx, email, form["password"])
        with ctx.sessions.begin() as session:
            device_login.claim_as(session, view.user.id, user_code)
    except errors.TowerError as exc:
        return _render(
            ctx, principal, exc.status, user_code=user_code, email=email, error=exc.message
        )
    response = _render(ctx, None, approved=True, email=view.user.email)
    response.set_cookie(
        COOKIE,
        view.access_token,
        max_age=int(sessions.session_ttl(ctx).total_seconds()),
        path=device_login.LOGIN_PAGE_PATH,
        httponly=True,
        samesite="lax",
        secure=ctx.settings.resolved_public_url.startswith("https://"),
    )
    return response
