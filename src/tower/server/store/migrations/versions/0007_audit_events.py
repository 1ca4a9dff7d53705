"""The audit log: who did what in an account, when, with which credential.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 14:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "account_id",
            sa.Uuid(),
            sa.ForeignKey(
                "accounts.id", name="fk_audit_events__account_id__accounts", ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.Uuid(), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor_credential", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(
        op.f("ix_audit_events__account_id_created_at"),
        "audit_events",
        ["account_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_audit_events__account_id_action_created_at"),
        "audit_events",
        ["account_id", "action", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_events__account_id_action_created_at"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events__account_id_created_at"), table_name="audit_events")
    op.drop_table("audit_events")
