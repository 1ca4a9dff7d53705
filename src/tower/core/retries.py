"""Retry policies: which failed runs get another attempt, and after how long.

The product documentation's rules: only `crashed` and `errored` are retried,
`max_retries` counts retries after the first attempt (0 = off), the wait before
retry N is `retry_delay_seconds`, or `retry_delay_seconds * 2^(N-1)` with
exponential backoff, never more than an hour.
"""

from __future__ import annotations

from dataclasses import dataclass

from tower.core import errors
from tower.core.runs import FAILED, RunStatus

MAX_RETRIES_LIMIT = 10
MAX_RETRY_DELAY_SECONDS = 3600
#: the longest wait between two attempts, whatever the backoff says
MAX_BACKOFF_SECONDS = 3600


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 0
    retry_delay_seconds: int = 0
    use_exponential_backoff: bool = False

    def __post_init__(self) -> None:
        _check_range("max_retries", self.max_retries, MAX_RETRIES_LIMIT)
        _check_range("retry_delay_seconds", self.retry_delay_seconds, MAX_RETRY_DELAY_SECONDS)

    @property
    def enabled(self) -> bool:
        return self.max_retries > 0

    def delay_before(self, retry_number: int) -> int:
        """Seconds to wait before retry `retry_number` (1 = the first retry)."""
        if retry_number < 1:
            raise ValueError("retry numbers start at 1")
        if not self.use_exponential_backoff:
            return self.retry_delay_seconds
        # 2**(n-1) grows fast; cap the exponent before multiplying.
        factor = 2 ** min(retry_number - 1, 16)
        return min(self.retry_delay_seconds * factor, MAX_BACKOFF_SECONDS)


def _check_range(field: str, value: int, upper: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= upper:
        raise errors.InvalidInput(
            f"retry_policy.{field} must be an integer from 0 to {upper}, not {value!r}.",
            location=f"body.retry_policy.{field}",
            value=value,
        )


def next_retry(
    policy: RetryPolicy, outcome: RunStatus, *, attempts_made: int, app_enabled: bool = True
) -> int | None:
    """The delay (s) before the next attempt of a run whose attempt ended `outcome`,
    or None when the run is finished: success, cancel, retries used up or disabled app."""
    if outcome not in FAILED or not app_enabled:
        return None
    retries_made = max(0, attempts_made - 1)
    if retries_made >= policy.max_retries:
        return None
    return policy.delay_before(retries_made + 1)
