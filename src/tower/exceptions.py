"""Errors raised by the orchestration SDK (`tower.run_app`, `tower.wait_for_run(s)`).

The names, base classes and messages match the official `tower` SDK, so an app that
catches them works the same against tower.dev and against this server.
"""

from __future__ import annotations

__all__ = [
    "AppNotFoundError",
    "NotFoundException",
    "RunAppUnauthorizedError",
    "RunFailedError",
    "TimeoutException",
    "UnauthorizedException",
    "UnhandledRunStateException",
    "UnknownException",
]


class NotFoundException(Exception):
    """The run being waited for does not exist (or the credentials may not see it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class UnauthorizedException(Exception):
    """The Tower API refused the credentials (TOWER_JWT / TOWER_API_KEY)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class UnknownException(Exception):
    """The Tower API answered something unexpected, or could not be reached."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class UnhandledRunStateException(Exception):
    """A run reported a status this SDK does not know."""

    def __init__(self, state: str) -> None:
        super().__init__(
            f"Run state '{state}' was unexpected. Maybe you need to upgrade to the latest "
            "Tower SDK."
        )


class TimeoutException(Exception):
    """Waiting took longer than the caller allowed."""

    def __init__(self, time: float) -> None:
        super().__init__(f"A timeout occurred after {time} seconds.")


class RunFailedError(RuntimeError):
    """A waited-for run ended crashed, errored or cancelled (with raise_on_failure=True)."""

    def __init__(self, app_name: str, number: int, state: str) -> None:
        super().__init__(f"Run {app_name}#{number} failed with status '{state}'")


class AppNotFoundError(RuntimeError):
    """`run_app` named an app the server does not know."""

    def __init__(self, app_name: str) -> None:
        super().__init__(f"App '{app_name}' not found in the Tower.")


class RunAppUnauthorizedError(UnauthorizedException, RuntimeError):
    """`run_app` was refused the credentials.

    The official SDK raises a plain RuntimeError("Error running app: <title>") here, so
    apps written for it catch RuntimeError; this class is both that and an
    UnauthorizedException, so either `except` clause works.
    """
