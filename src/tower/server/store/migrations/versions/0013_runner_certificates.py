"""Runner credentials remember their client certificate's serial and what they rotated from.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-22 17:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runner_credentials") as batch:
        batch.add_column(sa.Column("certificate_serial", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("rotated_from_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            "fk_runner_credentials__rotated_from_id__runner_credentials",
            "runner_credentials",
            ["rotated_from_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("runner_credentials") as batch:
        batch.drop_constraint(
            "fk_runner_credentials__rotated_from_id__runner_credentials", type_="foreignkey"
        )
        batch.drop_column("rotated_from_id")
        batch.drop_column("certificate_serial")
