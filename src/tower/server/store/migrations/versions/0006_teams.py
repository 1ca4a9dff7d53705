"""Teams, invitations, service accounts (and their keys and runs), guests.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 14:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fk(table: str, column: str, target: str, ondelete: str = "CASCADE") -> sa.ForeignKey:
    return sa.ForeignKey(f"{target}.id", name=f"fk_{table}__{column}__{target}", ondelete=ondelete)


def _account_column(table: str) -> sa.Column:
    return sa.Column("account_id", sa.Uuid(), _fk(table, "account_id", "accounts"), nullable=False)


def _created_by(table: str) -> sa.Column:
    return sa.Column(
        "created_by_id", sa.Uuid(), _fk(table, "created_by_id", "users", "SET NULL"), nullable=True
    )


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("account_id", sa.Uuid(), _fk("teams", "account_id", "accounts"), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        _created_by("teams"),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_teams")),
    )
    op.create_table(
        "team_invitations",
        sa.Column("id", sa.Uuid(), nullable=False),
        _account_column("team_invitations"),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "invited_by_id",
            sa.Uuid(),
            _fk("team_invitations", "invited_by_id", "users", "SET NULL"),
            nullable=True,
        ),
        _timestamp("created_at"),
        _timestamp("sent_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_invitations")),
        sa.UniqueConstraint(
            "account_id", "email", name=op.f("uq_team_invitations__account_id_email")
        ),
    )
    op.create_index(
        op.f("ix_team_invitations__account_id"), "team_invitations", ["account_id"], unique=False
    )
    op.create_index(op.f("ix_team_invitations__email"), "team_invitations", ["email"], unique=False)
    op.create_table(
        "service_accounts",
        sa.Column("id", sa.Uuid(), nullable=False),
        _account_column("service_accounts"),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=True),
        _created_by("service_accounts"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_service_accounts")),
        sa.UniqueConstraint(
            "account_id", "name", name=op.f("uq_service_accounts__account_id_name")
        ),
    )
    op.create_index(
        op.f("ix_service_accounts__account_id"), "service_accounts", ["account_id"], unique=False
    )
    op.create_table(
        "service_account_runs",
        sa.Column(
            "run_id", sa.Uuid(), _fk("service_account_runs", "run_id", "runs"), nullable=False
        ),
        sa.Column(
            "service_account_id",
            sa.Uuid(),
            _fk("service_account_runs", "service_account_id", "service_accounts"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_service_account_runs")),
    )
    op.create_index(
        op.f("ix_service_account_runs__service_account_id"),
        "service_account_runs",
        ["service_account_id"],
        unique=False,
    )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("service_account_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            "fk_api_keys__service_account_id__service_accounts",
            "service_accounts",
            ["service_account_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index("ix_api_keys__service_account_id", ["service_account_id"], unique=False)
    op.create_table(
        "guests",
        sa.Column("id", sa.Uuid(), nullable=False),
        _account_column("guests"),
        sa.Column("app_id", sa.Uuid(), _fk("guests", "app_id", "apps"), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("login_token_hash", sa.String(length=64), nullable=False),
        sa.Column("login_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("session_seconds", sa.Integer(), nullable=False),
        sa.Column("redirect_url", sa.String(length=2048), nullable=False),
        _created_by("guests"),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guests")),
        sa.UniqueConstraint("login_token_hash", name=op.f("uq_guests__login_token_hash")),
    )
    op.create_index(op.f("ix_guests__account_id"), "guests", ["account_id"], unique=False)
    op.create_index(op.f("ix_guests__app_id"), "guests", ["app_id"], unique=False)
    op.create_table(
        "guest_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column(
            "guest_id", sa.Uuid(), _fk("guest_sessions", "guest_id", "guests"), nullable=False
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        _timestamp("created_at"),
        _timestamp("expires_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guest_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_guest_sessions__token_hash")),
    )
    op.create_index(
        op.f("ix_guest_sessions__guest_id"), "guest_sessions", ["guest_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_guest_sessions__guest_id"), table_name="guest_sessions")
    op.drop_table("guest_sessions")
    op.drop_index(op.f("ix_guests__app_id"), table_name="guests")
    op.drop_index(op.f("ix_guests__account_id"), table_name="guests")
    op.drop_table("guests")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index("ix_api_keys__service_account_id")
        batch.drop_constraint(
            "fk_api_keys__service_account_id__service_accounts", type_="foreignkey"
        )
        batch.drop_column("service_account_id")
    op.drop_index(
        op.f("ix_service_account_runs__service_account_id"), table_name="service_account_runs"
    )
    op.drop_table("service_account_runs")
    op.drop_index(op.f("ix_service_accounts__account_id"), table_name="service_accounts")
    op.drop_table("service_accounts")
    op.drop_index(op.f("ix_team_invitations__email"), table_name="team_invitations")
    op.drop_index(op.f("ix_team_invitations__account_id"), table_name="team_invitations")
    op.drop_table("team_invitations")
    op.drop_table("teams")
