"""The run state machine: the one place that says which status may follow which.

Every status change in Tower goes through :func:`check_transition`; callers record
the timestamp of each transition (see DESIGN.md, "Runs").
"""

from __future__ import annotations

from enum import StrEnum

from tower.core import errors


class RunStatus(StrEnum):
    #: accepted, waiting for its time to come (or for dispatch)
    SCHEDULED = "scheduled"
    #: in the queue, waiting for a runner
    PENDING = "pending"
    #: a runner claimed it and is provisioning (package, venv)
    STARTING = "starting"
    #: the app's code is executing
    RUNNING = "running"
    #: a failed attempt is waiting for the next one
    RETRYING = "retrying"
    #: the app exited with code 0
    EXITED = "exited"
    #: the app exited with a non-zero code
    CRASHED = "crashed"
    #: an infrastructure problem stopped the run (dependency install, runner lost, timeout)
    ERRORED = "errored"
    #: a user cancelled the run
    CANCELLED = "cancelled"


ACTIVE: frozenset[RunStatus] = frozenset(
    {
        RunStatus.SCHEDULED,
        RunStatus.PENDING,
        RunStatus.STARTING,
        RunStatus.RUNNING,
        RunStatus.RETRYING,
    }
)
TERMINAL: frozenset[RunStatus] = frozenset(
    {RunStatus.EXITED, RunStatus.CRASHED, RunStatus.ERRORED, RunStatus.CANCELLED}
)
FAILED: frozenset[RunStatus] = frozenset({RunStatus.CRASHED, RunStatus.ERRORED})

_S = RunStatus
TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    _S.SCHEDULED: frozenset({_S.PENDING, _S.ERRORED, _S.CANCELLED}),
    _S.PENDING: frozenset({_S.STARTING, _S.ERRORED, _S.CANCELLED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.CRASHED, _S.ERRORED, _S.CANCELLED, _S.PENDING}),
    _S.RUNNING: frozenset({_S.EXITED, _S.CRASHED, _S.ERRORED, _S.CANCELLED}),
    _S.CRASHED: frozenset({_S.RETRYING}),
    _S.ERRORED: frozenset({_S.RETRYING}),
    _S.RETRYING: frozenset({_S.PENDING, _S.CANCELLED, _S.ERRORED}),
    _S.EXITED: frozenset(),
    _S.CANCELLED: frozenset(),
}


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    """Whether a run in `current` may move to `target`."""
    return target in TRANSITIONS[current]


def check_transition(current: RunStatus, target: RunStatus) -> RunStatus:
    """Return `target` if the move is allowed, else raise InvalidTransition."""
    if not can_transition(current, target):
        raise errors.InvalidTransition(
            f"A run cannot go from '{current}' to '{target}'.",
            value={"from": str(current), "to": str(target)},
        )
    return target


def is_active(status: RunStatus) -> bool:
    return status in ACTIVE


def is_terminal(status: RunStatus) -> bool:
    return status in TERMINAL


def status_group(status: RunStatus) -> str:
    """The contract's `status_group`: '' while active, then successful or failed."""
    if status == RunStatus.EXITED:
        return "successful"
    if status in TERMINAL:
        return "failed"
    return ""


def outcome_for_exit_code(exit_code: int) -> RunStatus:
    """Map a finished process to a run status (the product documentation's definitions)."""
    return RunStatus.EXITED if exit_code == 0 else RunStatus.CRASHED
