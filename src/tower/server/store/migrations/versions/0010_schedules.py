"""Schedules: cron schedules of app runs, with the scheduler's bookkeeping.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 14:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fk(column: str, table: str, ondelete: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(
        f"{column}_id",
        sa.Uuid(),
        sa.ForeignKey(f"{table}.id", name=f"fk_schedules__{column}_id__{table}", ondelete=ondelete),
        nullable=nullable,
    )


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        _fk("account", "accounts", "CASCADE"),
        _fk("app", "apps", "CASCADE"),
        _fk("environment", "environments", "CASCADE"),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("cron", sa.String(length=256), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("overlap_policy", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_fired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_id", sa.Uuid(), nullable=True),
        sa.Column("skipped_ticks", sa.Integer(), nullable=False),
        sa.Column("last_skipped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_skip_reason", sa.Text(), nullable=True),
        _fk("created_by", "users", "SET NULL", nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_schedules__account_id_name")),
    )
    for columns in (["account_id"], ["app_id"], ["environment_id"]):
        op.create_index(op.f(f"ix_schedules__{columns[0]}"), "schedules", columns, unique=False)
    op.create_index(
        "ix_schedules__status_next_fire_at", "schedules", ["status", "next_fire_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_schedules__status_next_fire_at", table_name="schedules")
    for column in ("environment_id", "app_id", "account_id"):
        op.drop_index(op.f(f"ix_schedules__{column}"), table_name="schedules")
    op.drop_table("schedules")
