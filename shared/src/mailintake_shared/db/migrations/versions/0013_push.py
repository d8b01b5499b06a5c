"""Push: the per-connection push setting, watch states and Graph subscriptions

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailintake_shared.db.types

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "connections",
        sa.Column("push", sa.String(length=8), nullable=False, server_default="auto"),
    )
    op.create_table(
        "connection_watches",
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=True),
        sa.Column("since", mailintake_shared.db.types.UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("confirmed_at", mailintake_shared.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("connection_id"),
    )
    op.create_index("ix_connection_watches_confirmed_at", "connection_watches", ["confirmed_at"])
    op.create_table(
        "graph_subscriptions",
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("client_state_sha256", sa.String(length=64), nullable=False),
        sa.Column("expires_at", mailintake_shared.db.types.UTCDateTime(), nullable=False),
        sa.Column("needs", sa.String(length=16), nullable=True),
        sa.Column("created_at", mailintake_shared.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id"),
        sa.UniqueConstraint("connection_id"),
    )


def downgrade() -> None:
    op.drop_table("graph_subscriptions")
    op.drop_index("ix_connection_watches_confirmed_at", "connection_watches")
    op.drop_table("connection_watches")
    op.drop_column("connections", "push")
