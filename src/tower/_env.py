"""Environment-variable helpers shared by the SDK (`tower.secret`, `tower.info`, ...).

Tower hands everything to an app through its environment: secrets and parameters as
plain variables, run metadata as ``TOWER__RUNTIME__*``. Standard library only, because
`import tower` must stay light.
"""

from __future__ import annotations

import os

__all__ = [
    "PARAMETER_PREFIX",
    "env_bool",
    "env_int",
    "env_text",
    "first_set",
    "parse_bool",
]

# Parameters will move under this prefix; the SDK reads both spellings.
PARAMETER_PREFIX = "TOWER__PARAMETER__"

_TRUE = frozenset({"y", "yes", "t", "true", "on", "1"})
_FALSE = frozenset({"n", "no", "f", "false", "off", "0"})


def first_set(*names: str) -> str | None:
    """Value of the first of `names` present in the environment (even if empty), else None."""
    for name in names:
        value = os.environ.get(name)
        if value is not None:
            return value
    return None


def env_text(name: str) -> str | None:
    """Value of `name`, or None when it is unset or blank.

    Runtime metadata is optional, and a runner may export an empty variable instead of
    omitting it; both mean "not known".
    """
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value


def parse_bool(name: str, value: str) -> bool:
    """Parse `value` (from variable `name`) as y/yes/t/true/on/1 or n/no/f/false/off/0."""
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(
        f"Environment variable {name}={value!r} is not a boolean; "
        "use one of y, yes, t, true, on, 1 or n, no, f, false, off, 0."
    )


def env_bool(name: str, default: bool = False) -> bool:
    """Boolean value of `name`; `default` when it is unset or blank."""
    value = env_text(name)
    return default if value is None else parse_bool(name, value)


def env_int(name: str) -> int | None:
    """Integer value of `name`; None when it is unset or blank."""
    value = env_text(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"Environment variable {name}={value!r} is not an integer.") from None
