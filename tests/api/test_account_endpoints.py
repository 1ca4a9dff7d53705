"""The user's profile and email preferences, accounts, plan, organization and feature flags."""

from __future__ import annotations

from tests.api.conftest import ApiServer
from tests.api.test_sessions import PASSWORD, USER_KEYS, bearer, log_in, sign_up


def test_profile_describe_and_update(api_server: ApiServer) -> None:
    session = sign_up(api_server, "ada@example.com")
    with bearer(api_server, session["token"]["jwt"]) as client:
        assert set(client.get("/user").json()["user"]) >= USER_KEYS
        answer = client.put(
            "/user", json={"first_name": "Ada", "company": "Engines", "is_alerts_enabled": False}
        )
        assert answer.status_code == 200, answer.text
        user = client.get("/user").json()["user"]
        refreshed = client.get("/session").json()["session"]["user"]
    assert (user["first_name"], user["company"], user["is_alerts_enabled"]) == (
        "Ada",
        "Engines",
        False,
    )
    assert user["last_name"] == "" and refreshed["first_name"] == "Ada"


def test_changing_the_password_ends_other_sessions_and_needs_a_session(
    api_server: ApiServer,
) -> None:
    session = sign_up(api_server, "ada@example.com")
    other = log_in(api_server, "ada@example.com").json()["session"]["token"]["jwt"]
    new_password = "a much better password"
    with bearer(api_server, session["token"]["jwt"]) as client:
        assert client.put("/user", json={"password": new_password}).status_code == 200
        assert client.get("/apps").status_code == 200  # this session stays
    with bearer(api_server, other) as client:
        assert client.get("/apps").status_code == 401
    assert log_in(api_server, "ada@example.com", PASSWORD).status_code == 401
    assert log_in(api_server, "ada@example.com", new_password).status_code == 200
    with api_server.client() as api_key_caller:
        refused = api_key_caller.put("/user", json={"password": new_password})
    assert refused.status_code == 403 and "signed-in session" in refused.json()["detail"]
    assert new_password not in refused.text


def test_email_preferences_update_partially(api_server: ApiServer) -> None:
    with api_server.client() as client:
        assert client.get("/user/email-preferences").json()["subscriptions"] == {
            "feature_updates": False,
            "marketing_emails": False,
            "tower_newsletter": False,
        }
        client.put("/user/email-preferences", json={"subscriptions": {"tower_newsletter": True}})
        answer = client.put(
            "/user/email-preferences", json={"subscriptions": {"feature_updates": True}}
        )
        user = client.get("/user").json()["user"]
    assert answer.json()["subscriptions"] == {
        "feature_updates": True,
        "marketing_emails": False,
        "tower_newsletter": True,
    }
    assert user["is_subscribed_to_changelog"] is True


def test_describe_and_rename_an_account(api_server: ApiServer) -> None:
    sign_up(api_server, "bo@example.com")  # owns the account "bo"
    with api_server.client() as client:
        account = client.get("/accounts/admin").json()["account"]
        assert account == {
            "name": "admin",
            "slug": "admin",
            "execution_region": "self-hosted",
            "is_self_hosted_only": True,
        }
        assert client.get("/accounts/bo").status_code == 404  # not a member: no existence leak
        bad = client.put("/accounts/admin", json={"name": "Not Valid!"})
        taken = client.put("/accounts/admin", json={"name": "bo"})
        region = client.put("/accounts/admin", json={"execution_region": "us-east-1"})
        renamed = client.put("/accounts/admin", json={"name": "ops"})
        apps = client.get("/apps")
    assert bad.status_code == 422 and "lowercase" in bad.json()["detail"]
    assert taken.status_code == 409
    assert region.status_code == 422 and "self-hosted" in region.json()["detail"]
    assert renamed.json()["account"]["name"] == "ops"
    assert apps.status_code == 200  # the key still works in the renamed account


def test_the_self_hosted_plan(api_server: ApiServer) -> None:
    with api_server.client() as client:
        plan = client.get("/plan").json()["plan"]
        same = client.put("/plan", json={"base_plan_name": "self-hosted"})
        other = client.put("/plan", json={"base_plan_name": "enterprise"})
    assert plan["base_plan_name"] == "self-hosted" and plan["features"] == []
    assert {"id", "created_at", "start_at"} <= set(plan)
    assert same.status_code == 201
    assert other.status_code == 422 and "self-hosted" in other.json()["detail"]


def test_only_the_owner_renames_the_organization(api_server: ApiServer) -> None:
    sign_up(api_server, "bo@example.com")
    with api_server.client() as client:
        answer = client.put("/organizations/admin", json={"name": "Analytical Engines"})
        teams = client.get("/session").json()["session"]["teams"]
        foreign = client.put("/organizations/bo", json={"name": "Mine now"})
    assert answer.status_code == 200, answer.text
    organization = answer.json()["organization"]
    assert organization["name"] == "Analytical Engines"
    assert organization["owner"]["email"] == api_server.ctx.settings.admin_email
    assert teams[0]["organization"] == "Analytical Engines"
    assert foreign.status_code == 404


def test_feature_flags_come_from_the_settings(api_server: ApiServer) -> None:
    api_server.ctx.settings.feature_flags = {"new-ui": True, "max-widgets": 3, "off": False}
    with api_server.client() as client:
        on = client.get("/feature-flags/new-ui").json()
        number = client.get("/feature-flags/max-widgets").json()
        off = client.get("/feature-flags/off").json()
        unknown = client.get("/feature-flags/never-heard-of-it").json()
    assert on == {"key": "new-ui", "enabled": True, "value": True, "value_type": "boolean"}
    assert number["value"] == 3 and number["value_type"] == "number"
    assert off["enabled"] is False
    assert unknown == {
        "key": "never-heard-of-it",
        "enabled": False,
        "value": False,
        "value_type": "boolean",
    }
