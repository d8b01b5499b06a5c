"""pipeline tables

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailintake_shared.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_state",
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("folder", sa.String(length=1024), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at", mailintake_shared.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("connection_id", "folder"),
    )
    op.create_table(
        "message_chunks",
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("folder", sa.String(length=1024), nullable=False),
        sa.Column("server_id", sa.String(length=512), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("connection_id", "folder", "server_id", "chunk_index"),
    )
    op.create_table(
        "messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("folder", sa.String(length=1024), nullable=False),
        sa.Column("server_id", sa.String(length=512), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "internal_date", mailintake_shared.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("seen_before", sa.Boolean(), nullable=False),
        sa.Column("poll_id", sa.Uuid(), nullable=True),
        sa.Column(
            "stored_at", mailintake_shared.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("header_from", sa.Text(), nullable=True),
        sa.Column("header_to", sa.Text(), nullable=True),
        sa.Column("header_cc", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("header_date", sa.Text(), nullable=True),
        sa.Column("message_id_header", sa.Text(), nullable=True),
        sa.Column("in_reply_to", sa.Text(), nullable=True),
        sa.Column("references", sa.Text(), nullable=True),
        sa.Column("problems", sa.Text(), nullable=True),
        sa.Column("action_state", sa.String(length=16), nullable=False),
        sa.Column(
            "action_applied_at",
            mailintake_shared.db.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "folder", "server_id", name="uq_messages_server_id"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_action", ["connection_id", "folder", "action_state"], unique=False
        )
        batch_op.create_index("ix_messages_sha256", ["connection_id", "sha256"], unique=False)

    op.create_table(
        "poll_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("poll_id", sa.Uuid(), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=True),
        sa.Column(
            "started_at", mailintake_shared.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "finished_at", mailintake_shared.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("error_kind", sa.String(length=32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("fetched", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("more_pending", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("poll_id"),
    )
    with op.batch_alter_table("poll_log", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_poll_log_connection_id"), ["connection_id"], unique=False
        )

    op.create_table(
        "connection_status",
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column(
            "last_poll_at", mailintake_shared.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_success_at", mailintake_shared.db.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_error_kind", sa.String(length=32), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("messages_stored", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("connection_id"),
    )


def downgrade() -> None:
    op.drop_table("connection_status")
    with op.batch_alter_table("poll_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_poll_log_connection_id"))

    op.drop_table("poll_log")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_sha256")
        batch_op.drop_index("ix_messages_action")

    op.drop_table("messages")
    op.drop_table("message_chunks")
    op.drop_table("mailbox_state")
