"""/v1/schedules: create, list, describe, update, delete, activate and deactivate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from tower.core import errors
from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, scoped
from tower.server.services import schedules as schedules_service
from tower.server.services.schedules import ScheduleChanges, ScheduleView

router = APIRouter(prefix="/v1", tags=["schedules"])


class ScheduleParameter(BaseModel):
    name: str = Field(max_length=256)
    value: str | None = Field(None, max_length=65536)


class ScheduleFields(BaseModel):
    """Fields a create and an update share; absent or null leaves a field as it is."""

    cron: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=256)
    environment: str | None = Field(None, max_length=128)
    timezone: str | None = Field(None, max_length=64)
    overlap_policy: str | None = None
    status: str | None = None
    parameters: list[ScheduleParameter] | None = None
    #: in the official model; refused when set: a schedule runs its environment's version
    app_version: str | None = None

    def changes(self) -> ScheduleChanges:
        if self.app_version:
            raise errors.InvalidInput(
                "A schedule runs the version deployed to its environment when it fires, "
                "never a fixed one: leave out app_version and pin the version to the "
                "environment instead (`tower apps promote APP --version vN -e ENV`).",
                location="body.app_version",
                value=self.app_version,
            )
        return ScheduleChanges(
            cron=self.cron,
            name=self.name,
            environment=self.environment,
            timezone=self.timezone,
            overlap_policy=self.overlap_policy,
            status=self.status,
            parameters=None
            if self.parameters is None
            else [p.model_dump() for p in self.parameters],
        )


class CreateScheduleParams(ScheduleFields):
    app_name: str = Field(max_length=128)
    cron: str = Field(max_length=256)  # type: ignore[assignment]


class UpdateScheduleParams(ScheduleFields):
    owner: Any = None  # in the official model; ownership does not move here


class ScheduleIds(BaseModel):
    #: ids (or names) of the schedules
    ids: list[str] = Field(max_length=1000)


def schedule_json(view: ScheduleView) -> dict[str, Any]:
    """The contract's Schedule model, plus what the scheduler knows about it."""
    schedule = view.schedule
    body: dict[str, Any] = {
        "id": str(schedule.id),
        "name": schedule.name,
        "app_name": view.app_name,
        "app_status": view.app_status,
        "created_at": serializers.ts(schedule.created_at),
        "updated_at": serializers.ts(schedule.updated_at),
        "cron": schedule.cron,
        "environment": view.environment,
        "overlap_policy": schedule.overlap_policy,
        "status": schedule.status,
        "timezone": schedule.timezone,
        "owner": {"name": view.owner_name, "type": "user"},
        "parameters": [
            {"name": p["name"], "value": p["value"], "hidden": False, "is_override": True}
            for p in schedule.parameters
        ],
        # Not in the contract (clients ignore extra keys): the scheduler's bookkeeping.
        "next_fire_at": serializers.ts(schedule.next_fire_at),
        "last_fired_at": serializers.ts(schedule.last_fired_at),
        "skipped_ticks": schedule.skipped_ticks,
        "last_skipped_at": serializers.ts(schedule.last_skipped_at),
        "last_skip_reason": schedule.last_skip_reason,
    }
    if view.app_version is not None:
        body["app_version"] = view.app_version
    if view.next_fire_times:
        body["next_fire_times"] = [serializers.ts(t) for t in view.next_fire_times]
    return body


@router.get("/schedules", **scoped("schedules:read"))
def list_schedules(
    ctx: ContextDep,
    principal: PrincipalDep,
    page: int = Query(0, ge=0),
    page_size: int = Query(100, ge=1, le=1000),
    environment: str | None = None,
    app: str | None = None,
) -> dict[str, Any]:
    views, total = schedules_service.list_schedules(
        ctx, principal, app=app, environment=environment, page=page, page_size=page_size
    )
    return {
        "schedules": [schedule_json(view) for view in views],
        "pages": serializers.pages(page, page_size, total),
    }


@router.post("/schedules", status_code=201, **scoped("schedules:create"))
def create_schedule(
    ctx: ContextDep, principal: PrincipalDep, body: CreateScheduleParams
) -> dict[str, Any]:
    view = schedules_service.create_schedule(
        ctx, principal, app_name=body.app_name, changes=body.changes()
    )
    return {"schedule": schedule_json(view)}


@router.patch("/schedules/activate", **scoped("schedules:update"))
def activate_schedules(
    ctx: ContextDep, principal: PrincipalDep, body: ScheduleIds
) -> dict[str, Any]:
    views = schedules_service.set_status(ctx, principal, body.ids, "active")
    return {"schedules": [schedule_json(view) for view in views]}


@router.patch("/schedules/deactivate", **scoped("schedules:update"))
def deactivate_schedules(
    ctx: ContextDep, principal: PrincipalDep, body: ScheduleIds
) -> dict[str, Any]:
    views = schedules_service.set_status(ctx, principal, body.ids, "disabled")
    return {"schedules": [schedule_json(view) for view in views]}


@router.get("/schedules/{id_or_name}", **scoped("schedules:read"))
def describe_schedule(ctx: ContextDep, principal: PrincipalDep, id_or_name: str) -> dict[str, Any]:
    view = schedules_service.describe_schedule(ctx, principal, id_or_name)
    return {"schedule": schedule_json(view)}


@router.put("/schedules/{id_or_name}", **scoped("schedules:update"))
def update_schedule(
    ctx: ContextDep, principal: PrincipalDep, id_or_name: str, body: UpdateScheduleParams
) -> dict[str, Any]:
    view = schedules_service.update_schedule(ctx, principal, id_or_name, body.changes())
    return {"schedule": schedule_json(view)}


@router.delete("/schedules", **scoped("schedules:delete"))
def delete_schedules(ctx: ContextDep, principal: PrincipalDep, body: ScheduleIds) -> dict[str, Any]:
    views = schedules_service.delete_schedules(ctx, principal, body.ids)
    return {"schedules": [schedule_json(view) for view in views]}
