"""Attempts are indexed by runner and end: a heartbeat finds the ones it must stop.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-23 14:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_run_attempts__runner_id_ended_at", "run_attempts", ["runner_id", "ended_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_run_attempts__runner_id_ended_at", table_name="run_attempts")
