"""Tower's error tree. Every error a user can see names the thing and the fix.

TowerError
 ├── NotFound            404  (also when the caller may not see the object)
 │    ├── AppNotFound
 │    ├── RunNotFound
 │    ├── VersionNotFound
 │    ├── EnvironmentNotFound
 │    └── ScheduleNotFound
 ├── Conflict            409
 │    ├── AlreadyExists
 │    ├── InvalidTransition
 │    └── StaleAttempt
 ├── InvalidInput        422
 │    ├── TowerfileError
 │    ├── PackageError
 │    ├── UnknownParameter
 │    └── InvalidSchedule
 ├── BadRequest          400
 ├── Unauthenticated     401
 ├── Forbidden           403
 └── IntegrityError      (package checksum/signature mismatch, 400 at the edge)
"""

from __future__ import annotations

from typing import Any, ClassVar


class TowerError(Exception):
    """Something went wrong in Tower."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        location: str | None = None,
        value: Any = None,
    ) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.location = location
        self.value = value
        super().__init__(self.message)


class NotFound(TowerError):
    """The object does not exist."""

    status = 404
    code = "not_found"


class AppNotFound(NotFound):
    """The app does not exist."""

    code = "app_not_found"


class RunNotFound(NotFound):
    """The run does not exist."""

    code = "run_not_found"


class VersionNotFound(NotFound):
    """The app version does not exist."""

    code = "version_not_found"


class EnvironmentNotFound(NotFound):
    """The environment does not exist."""

    code = "environment_not_found"


class Conflict(TowerError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    """An object with that name already exists."""

    code = "already_exists"


class InvalidTransition(Conflict):
    """The run cannot move to that status from its current one."""

    code = "invalid_transition"


class StaleAttempt(Conflict):
    """The report belongs to an attempt that is no longer current."""

    code = "stale_attempt"


class InvalidInput(TowerError):
    """The request is not valid."""

    status = 422
    code = "invalid_input"


class TowerfileError(InvalidInput):
    """The Towerfile is not valid."""

    code = "invalid_towerfile"


class PackageError(InvalidInput):
    """The package is not valid."""

    code = "invalid_package"


class UnknownParameter(InvalidInput):
    """The run names a parameter the app does not declare."""

    code = "unknown_parameter"


class InvalidSchedule(InvalidInput):
    """The schedule's cron expression, phrase or timezone is not understood."""

    code = "invalid_schedule"


class ScheduleNotFound(NotFound):
    """The schedule does not exist."""

    code = "schedule_not_found"


class BadRequest(TowerError):
    """The request is malformed."""

    status = 400
    code = "bad_request"


class IntegrityError(BadRequest):
    """The content does not match its checksum."""

    code = "integrity_check_failed"


class Unauthenticated(TowerError):
    """Missing or invalid credentials. Log in with `tower login` or set TOWER_API_KEY."""

    status = 401
    code = "unauthenticated"


class Forbidden(TowerError):
    """The credentials do not allow this."""

    status = 403
    code = "forbidden"
