"""Device login over HTTP: ticket, pending polls, approval by API and on the login page."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from tests.api.conftest import ApiServer
from tests.api.test_sessions import PASSWORD, sign_up
from tower.core import crypto
from tower.server.store import models
from tower.server.store.types import utcnow

TICKET_KEYS = {
    "device_code",
    "user_code",
    "login_url",
    "verification_url",
    "generated_at",
    "interval",
    "expires_in",
}


def anonymous(api_server: ApiServer) -> httpx.Client:
    return api_server.client(api_key="")


def new_ticket(api_server: ApiServer) -> dict[str, Any]:
    with anonymous(api_server) as client:
        answer = client.get("/login/device")
    assert answer.status_code == 200, answer.text
    return answer.json()


def poll(api_server: ApiServer, ticket: dict[str, Any]) -> httpx.Response:
    with anonymous(api_server) as client:
        return client.get(f"/login/device/{ticket['device_code']}")


def claim(api_server: ApiServer, user_code: str, refresh_token: str) -> httpx.Response:
    with anonymous(api_server) as client:
        body = {"user_code": user_code, "refresh_token": refresh_token}
        return client.post("/login/device/claim", json=body)


def test_a_ticket_is_pending_until_approved_then_yields_one_session(
    api_server: ApiServer,
) -> None:
    browser_session = sign_up(api_server, "ada@example.com")
    ticket = new_ticket(api_server)
    assert set(ticket) == TICKET_KEYS
    assert ticket["login_url"].startswith(f"{api_server.url}/login/device?user_code=")
    assert re.fullmatch(r"[A-Z2-9]{4}-[A-Z2-9]{4}", ticket["user_code"])

    pending = poll(api_server, ticket)
    assert pending.status_code == 404
    assert pending.json()["errors"][0]["location"] == "incomplete_device_login"

    code = ticket["user_code"].lower().replace("-", "")  # as someone might type it
    answer = claim(api_server, code, browser_session["token"]["refresh_token"])
    assert answer.status_code == 200 and answer.json() == {"claimed": True}

    done = poll(api_server, ticket)
    assert done.status_code == 200, done.text
    session = done.json()["session"]
    assert session["user"]["email"] == "ada@example.com"
    assert all(team["token"]["jwt"] for team in session["teams"])
    assert session["token"]["jwt"] in [team["token"]["jwt"] for team in session["teams"]]
    with httpx.Client(
        base_url=f"{api_server.url}/v1",
        headers={"Authorization": f"Bearer {session['token']['jwt']}"},
    ) as cli:
        assert cli.get("/apps").status_code == 200

    spent = poll(api_server, ticket)
    assert spent.status_code == 410 and "already completed" in spent.json()["detail"]
    again = claim(api_server, ticket["user_code"], browser_session["token"]["refresh_token"])
    assert again.status_code == 409


def test_expired_tickets_are_refused(api_server: ApiServer) -> None:
    browser_session = sign_up(api_server, "ada@example.com")
    ticket = new_ticket(api_server)
    with api_server.ctx.sessions.begin() as db:
        db.execute(update(models.DeviceLogin).values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = poll(api_server, ticket)
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]
    late = claim(api_server, ticket["user_code"], browser_session["token"]["refresh_token"])
    assert late.status_code == 410


def test_claims_need_a_live_session_and_a_real_code(api_server: ApiServer) -> None:
    browser_session = sign_up(api_server, "ada@example.com")
    ticket = new_ticket(api_server)
    assert claim(api_server, ticket["user_code"], "rf-not-a-token").status_code == 401
    unknown = claim(api_server, "ZZZZ-ZZZZ", browser_session["token"]["refresh_token"])
    assert unknown.status_code == 404 and "ZZZZ-ZZZZ" in unknown.json()["detail"]
    assert poll(api_server, {"device_code": "made-up"}).status_code == 404


def test_device_codes_are_stored_hashed(api_server: ApiServer) -> None:
    ticket = new_ticket(api_server)
    with api_server.ctx.sessions.begin() as db:
        stored = db.scalars(select(models.DeviceLogin.device_code_hash)).all()
    assert stored == [crypto.hash_token(ticket["device_code"])]


def test_the_login_page_signs_in_and_approves(api_server: ApiServer) -> None:
    sign_up(api_server, "ada@example.com")
    ticket = new_ticket(api_server)
    with httpx.Client(base_url=api_server.url, timeout=30) as browser:
        page = browser.get(ticket["login_url"])
        assert page.status_code == 200 and ticket["user_code"] in page.text
        assert 'name="password"' in page.text

        wrong = browser.post(
            "/login/device",
            data={"user_code": ticket["user_code"], "email": "ada@example.com", "password": "no"},
        )
        assert wrong.status_code == 401 and "Wrong email or password" in wrong.text
        assert poll(api_server, ticket).status_code == 404

        approved = browser.post(
            "/login/device",
            data={
                "user_code": ticket["user_code"],
                "email": "ada@example.com",
                "password": PASSWORD,
            },
        )
        assert approved.status_code == 200 and 'id="approved"' in approved.text
        assert browser.cookies.get("tower_session")
        assert poll(api_server, ticket).status_code == 200

        # Signed in now: the next approval is one click, with the page's form token.
        second = new_ticket(api_server)
        page = browser.get(second["login_url"])
        assert "Signed in as <strong>ada@example.com</strong>" in page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        forged = browser.post("/login/device", data={"user_code": second["user_code"]})
        assert forged.status_code == 401  # no form token: the cookie alone approves nothing
        one_click = browser.post(
            "/login/device", data={"user_code": second["user_code"], "csrf": csrf.group(1)}
        )
        assert one_click.status_code == 200 and 'id="approved"' in one_click.text
        assert poll(api_server, second).status_code == 200
