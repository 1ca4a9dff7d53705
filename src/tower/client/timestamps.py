"""Reading the API's timestamps (RFC 3339, UTC), for the CLI and the runner alike."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def parse_timestamp(value: Any) -> datetime | None:
    """An API timestamp (RFC 3339) as an aware UTC datetime; None when absent or invalid."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        # The contract says timestamps are UTC; a naive one is read as UTC, not local time.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
