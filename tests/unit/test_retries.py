"""Retry policy math: what is retried, how often, after how long."""

from __future__ import annotations

import pytest

from tower.core import errors
from tower.core.retries import RetryPolicy, next_retry
from tower.core.runs import RunStatus


def test_fixed_delay_and_exponential_backoff_capped_at_an_hour() -> None:
    fixed = RetryPolicy(max_retries=3, retry_delay_seconds=30)
    assert [fixed.delay_before(n) for n in (1, 2, 3)] == [30, 30, 30]
    backoff = RetryPolicy(max_retries=10, retry_delay_seconds=30, use_exponential_backoff=True)
    assert [backoff.delay_before(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff.delay_before(10) == 3600  # 30 * 512 would be 15360
    assert (
        RetryPolicy(
            max_retries=10, retry_delay_seconds=3600, use_exponential_backoff=True
        ).delay_before(10)
        == 3600
    )


@pytest.mark.parametrize("outcome", [RunStatus.CRASHED, RunStatus.ERRORED])
def test_failures_are_retried_until_max_retries(outcome: RunStatus) -> None:
    policy = RetryPolicy(max_retries=2, retry_delay_seconds=5, use_exponential_backoff=True)
    assert next_retry(policy, outcome, attempts_made=1) == 5
    assert next_retry(policy, outcome, attempts_made=2) == 10
    assert next_retry(policy, outcome, attempts_made=3) is None


@pytest.mark.parametrize("outcome", [RunStatus.EXITED, RunStatus.CANCELLED])
def test_success_and_cancel_are_never_retried(outcome: RunStatus) -> None:
    assert next_retry(RetryPolicy(max_retries=5), outcome, attempts_made=1) is None


def test_no_retries_by_default_or_for_a_disabled_app() -> None:
    assert next_retry(RetryPolicy(), RunStatus.CRASHED, attempts_made=1) is None
    policy = RetryPolicy(max_retries=5)
    assert next_retry(policy, RunStatus.CRASHED, attempts_made=1, app_enabled=False) is None
    assert next_retry(policy, RunStatus.CRASHED, attempts_made=1) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_retries", 11),
        ("max_retries", -1),
        ("retry_delay_seconds", 3601),
        ("max_retries", True),
    ],
)
def test_out_of_range_policies_are_refused_with_the_field_named(field: str, value: int) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        RetryPolicy(**{field: value})
    assert caught.value.location == f"body.retry_policy.{field}"
    assert field in caught.value.message
