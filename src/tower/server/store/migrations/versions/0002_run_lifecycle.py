"""Run lifecycle: retry policies, deadlines, parent runs, fencing tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 12:10:00+00:00

Non-null columns are added with a temporary server default (so existing rows get
a value) which is then dropped: the models set every default in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POLICY_COLUMNS = (
    ("max_retries", sa.Integer(), "0"),
    ("retry_delay_seconds", sa.Integer(), "0"),
    ("use_exponential_backoff", sa.Boolean(), sa.false()),
)


def _add_policy_columns(table: str) -> None:
    with op.batch_alter_table(table) as batch:
        for name, type_, default in _POLICY_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=False, server_default=default))
    with op.batch_alter_table(table) as batch:
        for name, type_, _default in _POLICY_COLUMNS:
            batch.alter_column(name, existing_type=type_, server_default=None)


def upgrade() -> None:
    _add_policy_columns("apps")
    _add_policy_columns("runs")
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("parent_run_id", sa.Uuid(), nullable=True))
        for name in ("retry_at", "pending_deadline_at", "running_deadline_at"):
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_runs__parent_run_id"), ["parent_run_id"], unique=False)
    with op.batch_alter_table("run_attempts") as batch:
        batch.add_column(
            sa.Column("fencing_token", sa.String(length=64), nullable=False, server_default="")
        )
    with op.batch_alter_table("run_attempts") as batch:
        batch.alter_column("fencing_token", existing_type=sa.String(length=64), server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("run_attempts") as batch:
        batch.drop_column("fencing_token")
    with op.batch_alter_table("runs") as batch:
        batch.drop_index(batch.f("ix_runs__parent_run_id"))
        for name in ("running_deadline_at", "pending_deadline_at", "retry_at", "parent_run_id"):
            batch.drop_column(name)
        for name, _type, _default in _POLICY_COLUMNS:
            batch.drop_column(name)
    with op.batch_alter_table("apps") as batch:
        for name, _type, _default in _POLICY_COLUMNS:
            batch.drop_column(name)
