"""Indexes for listing runs and run statistics at a million runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 13:30:00+00:00

- (app_id, created_at, number): one app's runs newest first, and the per-app
  "last run" / "last 10 runs" lookups of app health.
- (account_id, created_at, number): the search across an account, newest first,
  and date-range pages.
- (account_id, status, created_at, number) and (app_id, status, created_at,
  number): pages filtered by status, read in order one status at a time (so a
  rare status is as fast as a common one); the statistics (grouped by status over
  a created_at window, read from the index alone); each app's run counts per
  status (the App's run_results, 7x faster than from the table at 20,000 runs).

Every index ends with `number`, the tie-break of newest first: without it SQLite
(which has no statistics unless ANALYZE ran) prefers whichever index orders the
whole ORDER BY, even one that must walk every run of the account to find a rare
status.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("ix_runs__app_id_created_at_number", ["app_id", "created_at", "number"]),
    ("ix_runs__account_id_created_at_number", ["account_id", "created_at", "number"]),
    (
        "ix_runs__account_id_status_created_at_number",
        ["account_id", "status", "created_at", "number"],
    ),
    ("ix_runs__app_id_status_created_at_number", ["app_id", "status", "created_at", "number"]),
)


def upgrade() -> None:
    for name, columns in _INDEXES:
        op.create_index(op.f(name), "runs", columns, unique=False)


def downgrade() -> None:
    for name, _columns in reversed(_INDEXES):
        op.drop_index(op.f(name), table_name="runs")
