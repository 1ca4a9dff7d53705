"""An app's sandbox settings: the resource limits its runs ask for, and network isolation.

Shared by the control plane (validates and stores them, sends them in each claim
assignment as `limits` and `isolate_network`) and the CLI (checks the ranges before any
request). A runner still clamps each limit to its own maximum
(`TOWER_RUNNER_MAX_<NAME>`), so these bounds only keep obvious typos out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the most each limit may be set to: name → (maximum, unit shown in help and errors)
LIMIT_BOUNDS: dict[str, tuple[int, str]] = {
    "memory_mb": (1_048_576, "MB"),  # 1 TiB
    "cpu_seconds": (2_592_000, "seconds"),  # 30 days
    "file_size_mb": (1_048_576, "MB"),  # 1 TiB
    "processes": (65_536, "processes"),
}
#: every limit name, in the order they are shown
LIMIT_NAMES = tuple(LIMIT_BOUNDS)


@dataclass(frozen=True)
class SandboxSettings:
    """What an app's runs ask of the runner's sandbox; None = the runner's default."""

    memory_mb: int | None = None
    cpu_seconds: int | None = None
    file_size_mb: int | None = None
    processes: int | None = None
    isolate_network: bool = False

    def __post_init__(self) -> None:
        for name in LIMIT_NAMES:
            check_limit(name, getattr(self, name))

    def limits(self) -> dict[str, int]:
        """The limits that are set, as an assignment's `limits` object."""
        return {n: v for n in LIMIT_NAMES if (v := getattr(self, n)) is not None}

    def as_json(self) -> dict[str, Any]:
        limits = {n: getattr(self, n) for n in LIMIT_NAMES}
        return {**limits, "isolate_network": self.isolate_network}


def check_limit(name: str, value: int | None) -> None:
    """ValueError naming the limit and its range when `value` is out of it (None is fine)."""
    if value is None:
        return
    maximum, unit = LIMIT_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValueError(
            f"{name} must be a whole number from 1 to {maximum} ({unit}), not {value!r}"
        )
