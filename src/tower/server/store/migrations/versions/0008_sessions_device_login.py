"""User profiles, organization names and device-login tickets.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 14:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "user_profiles",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("company", sa.String(length=256), nullable=False),
        sa.Column("country", sa.String(length=128), nullable=False),
        sa.Column("promo_code", sa.String(length=128), nullable=False),
        sa.Column("is_alerts_enabled", sa.Boolean(), nullable=False),
        sa.Column("is_subscribed_to_changelog", sa.Boolean(), nullable=False),
        sa.Column("is_subscribed_to_marketing_emails", sa.Boolean(), nullable=False),
        sa.Column("is_subscribed_to_newsletter", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_user_profiles__user_id__users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_profiles"),
    )
    op.create_table(
        "organizations",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name="fk_organizations__account_id__accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name="pk_organizations"),
    )
    op.create_table(
        "device_logins",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("device_code_hash", sa.String(length=64), nullable=False),
        sa.Column("user_code", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by_id", sa.Uuid(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["claimed_by_id"],
            ["users.id"],
            name="fk_device_logins__claimed_by_id__users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_device_logins"),
        sa.UniqueConstraint("device_code_hash", name="uq_device_logins__device_code_hash"),
        sa.UniqueConstraint("user_code", name="uq_device_logins__user_code"),
    )


def downgrade() -> None:
    op.drop_table("device_logins")
    op.drop_table("organizations")
    op.drop_table("user_profiles")
