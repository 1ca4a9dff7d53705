"""The user's profile and email preferences; accounts, plan, organization; feature flags."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.api.sessions import user_json
from tower.server.services import profile
from tower.server.services.profile import SELF_HOSTED_REGION, AccountView, PlanView, UserView

router = APIRouter(prefix="/v1", tags=["account"])


def _user(view: UserView) -> dict[str, Any]:
    return user_json(view.user, view.profile)


def account_json(view: AccountView) -> dict[str, Any]:
    return {
        "name": view.account.name,
        "slug": view.account.name,
        "execution_region": SELF_HOSTED_REGION,
        "is_self_hosted_only": True,
    }


def organization_json(view: AccountView) -> dict[str, Any]:
    return {"name": view.organization, "owner": _user(view.owner) if view.owner else None}


def plan_json(view: PlanView) -> dict[str, Any]:
    """The self-hosted plan: no features metered, so no limits to list."""
    started = serializers.ts(view.account.created_at)
    return {
        "id": str(view.account.id),
        "base_plan_name": profile.SELF_HOSTED_PLAN,
        "created_at": started,
        "start_at": started,
        "end_at": None,
        "features": [],
        "extras": [],
    }


class UpdateUserParams(BaseModel):
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    country: str | None = None
    promo_code: str | None = None
    password: str | None = None
    is_alerts_enabled: bool | None = None
    is_subscribed_to_changelog: bool | None = None
    is_subscribed_to_marketing_emails: bool | None = None
    is_subscribed_to_newsletter: bool | None = None


class EmailSubscriptions(BaseModel):
    feature_updates: bool | None = None
    marketing_emails: bool | None = None
    tower_newsletter: bool | None = None


class UpdateEmailPreferencesBody(BaseModel):
    subscriptions: EmailSubscriptions


class UpdateAccountParams(BaseModel):
    name: str | None = Field(None, max_length=128)
    execution_region: str | None = None
    is_self_hosted_only: bool | None = None


class UpdateOrganizationParams(BaseModel):
    name: str | None = Field(None, max_length=128)


class UpdatePlanParams(BaseModel):
    base_plan_name: str = Field(max_length=128)


@router.get("/user", **scoped(None))
def describe_user(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"user": _user(profile.describe_user(ctx, principal))}


@router.put("/user", **scoped(None))
def update_user(ctx: ContextDep, principal: PrincipalDep, body: UpdateUserParams) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    return {"user": _user(profile.update_user(ctx, principal, changes))}


@router.get("/user/email-preferences", **scoped(None))
def describe_email_preferences(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"subscriptions": profile.email_preferences(ctx, principal)}


@router.put("/user/email-preferences", **scoped(None))
def update_email_preferences(
    ctx: ContextDep, principal: PrincipalDep, body: UpdateEmailPreferencesBody
) -> dict[str, Any]:
    wanted = body.subscriptions.model_dump(exclude_unset=True)
    return {"subscriptions": profile.update_email_preferences(ctx, principal, wanted)}


@router.get("/accounts/{name}", **scoped("teams:read"))
def describe_account(ctx: ContextDep, principal: PrincipalDep, name: str) -> dict[str, Any]:
    return {"account": account_json(profile.describe_account(ctx, principal, name))}


@router.put("/accounts/{name}", **scoped("teams:update"))
def update_account(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateAccountParams
) -> dict[str, Any]:
    view = profile.update_account(
        ctx,
        principal,
        name,
        new_name=body.name,
        execution_region=body.execution_region,
        is_self_hosted_only=body.is_self_hosted_only,
    )
    return {"account": account_json(view)}


@router.put("/organizations/{name}", **scoped("teams:update"))
def update_organization(
    ctx: ContextDep, principal: PrincipalDep, name: str, body: UpdateOrganizationParams
) -> dict[str, Any]:
    view = profile.update_organization(ctx, principal, name, body.name)
    return {"organization": organization_json(view)}


@router.get("/plan", **scoped("teams:read"))
def describe_plan(ctx: ContextDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"plan": plan_json(profile.describe_plan(ctx, principal))}


@router.put("/plan", status_code=201, **scoped("teams:update"))
def update_plan(ctx: ContextDep, principal: PrincipalDep, body: UpdatePlanParams) -> dict[str, Any]:
    return {"plan": plan_json(profile.update_plan(ctx, principal, body.base_plan_name))}


@router.get("/feature-flags/{key}", **scoped(None, shared=True))
def get_feature_flag_value(ctx: ContextDep, key: str) -> dict[str, Any]:
    enabled, value = profile.feature_flag(ctx, key)
    return {"key": key, "enabled": enabled, "value": value, "value_type": _value_type(value)}


def _value_type(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "object"
