"""Package signatures: the control plane's Ed25519 signature of each stored package.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 15:10:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("app_versions") as batch:
        batch.add_column(sa.Column("package_signature", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("app_versions") as batch:
        batch.drop_column("package_signature")
