"""Apps carry sandbox settings: resource limits for their runs and network isolation.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-22 17:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIMIT_COLUMNS = ("memory_mb", "cpu_seconds", "file_size_mb", "processes")


def upgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        for name in LIMIT_COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("isolate_network", sa.Boolean(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("isolate_network")
        for name in reversed(LIMIT_COLUMNS):
            batch.drop_column(name)
