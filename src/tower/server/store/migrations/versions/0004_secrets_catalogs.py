"""Secrets, catalogs and their properties (envelope-encrypted), and the server's RSA key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 15:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _encrypted_value_columns() -> list[sa.Column]:
    return [
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("preview", sa.String(length=32), nullable=False),
    ]


def _account_column(table: str) -> sa.Column:
    return sa.Column(
        "account_id",
        sa.Uuid(),
        sa.ForeignKey("accounts.id", name=f"fk_{table}__account_id__accounts", ondelete="CASCADE"),
        nullable=False,
    )


def _environment_column(table: str) -> sa.Column:
    return sa.Column(
        "environment_id",
        sa.Uuid(),
        sa.ForeignKey(
            "environments.id", name=f"fk_{table}__environment_id__environments", ondelete="CASCADE"
        ),
        nullable=False,
    )


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.Uuid(), nullable=False),
        _account_column("secrets"),
        _environment_column("secrets"),
        sa.Column("name", sa.String(length=256), nullable=False),
        *_timestamps(),
        *_encrypted_value_columns(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secrets")),
        sa.UniqueConstraint("environment_id", "name", name=op.f("uq_secrets__environment_id_name")),
    )
    op.create_index(op.f("ix_secrets__account_id"), "secrets", ["account_id"], unique=False)
    op.create_table(
        "catalogs",
        sa.Column("id", sa.Uuid(), nullable=False),
        _account_column("catalogs"),
        _environment_column("catalogs"),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalogs")),
        sa.UniqueConstraint(
            "environment_id", "name", name=op.f("uq_catalogs__environment_id_name")
        ),
    )
    op.create_index(op.f("ix_catalogs__account_id"), "catalogs", ["account_id"], unique=False)
    op.create_table(
        "catalog_properties",
        sa.Column(
            "catalog_id",
            sa.Uuid(),
            sa.ForeignKey(
                "catalogs.id",
                name="fk_catalog_properties__catalog_id__catalogs",
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        _account_column("catalog_properties"),
        sa.Column("environment_variable", sa.String(length=256), nullable=False),
        *_encrypted_value_columns(),
        sa.PrimaryKeyConstraint("catalog_id", "name", name=op.f("pk_catalog_properties")),
    )
    op.create_index(
        op.f("ix_catalog_properties__account_id"),
        "catalog_properties",
        ["account_id"],
        unique=False,
    )
    op.create_table(
        "server_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_keys")),
    )


def downgrade() -> None:
    op.drop_table("server_keys")
    op.drop_index(op.f("ix_catalog_properties__account_id"), table_name="catalog_properties")
    op.drop_table("catalog_properties")
    op.drop_index(op.f("ix_catalogs__account_id"), table_name="catalogs")
    op.drop_table("catalogs")
    op.drop_index(op.f("ix_secrets__account_id"), table_name="secrets")
    op.drop_table("secrets")
