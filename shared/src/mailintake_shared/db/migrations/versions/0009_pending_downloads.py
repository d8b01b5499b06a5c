"""Messages the server did not deliver, to try again (the per-poll ledger)

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailintake_shared.db.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_downloads",
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("folder", sa.String(length=1024), nullable=False),
        sa.Column("server_id", sa.String(length=512), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_failed_at", mailintake_shared.db.types.UTCDateTime(), nullable=False),
        sa.Column("last_failed_at", mailintake_shared.db.types.UTCDateTime(), nullable=False),
        sa.Column("last_poll_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("connection_id", "folder", "server_id"),
    )


def downgrade() -> None:
    op.drop_table("pending_downloads")
