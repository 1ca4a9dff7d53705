"""Schedules remember the service account that created them (deleting it disables them).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22 15:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("service_account_id", sa.Uuid(), nullable=True))
        batch.create_index("ix_schedules__service_account_id", ["service_account_id"])
        batch.create_foreign_key(
            "fk_schedules__service_account_id__service_accounts",
            "service_accounts",
            ["service_account_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_constraint(
            "fk_schedules__service_account_id__service_accounts", type_="foreignkey"
        )
        batch.drop_index("ix_schedules__service_account_id")
        batch.drop_column("service_account_id")
