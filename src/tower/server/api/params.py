"""Request bodies shared by several routers."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tower.core.retries import MAX_RETRIES_LIMIT, MAX_RETRY_DELAY_SECONDS, RetryPolicy


class RetryPolicyParams(BaseModel):
    """The contract's RunRetryPolicy, with the product documentation's ranges."""

    max_retries: int = Field(default=0, ge=0, le=MAX_RETRIES_LIMIT)
    retry_delay_seconds: int = Field(default=0, ge=0, le=MAX_RETRY_DELAY_SECONDS)
    use_exponential_backoff: bool = False

    def to_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.max_retries,
            retry_delay_seconds=self.retry_delay_seconds,
            use_exponential_backoff=self.use_exponential_backoff,
        )
