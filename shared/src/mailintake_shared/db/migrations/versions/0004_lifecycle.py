"""first-sync modes, the Incoming Mail Queue and Log

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailintake_shared.db.types
from mailintake_shared.db.migrations.batch import batch_keeping_name_index

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = mailintake_shared.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with batch_keeping_name_index("connections") as batch_op:
        batch_op.add_column(
            sa.Column("first_sync", sa.String(length=16), nullable=False, server_default="all")
        )
        batch_op.add_column(sa.Column("first_sync_since", sa.Date(), nullable=True))
    with op.batch_alter_table("mailbox_state") as batch_op:
        batch_op.add_column(sa.Column("baseline_uid", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.add_column(sa.Column("message_id", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("messages") as batch_op:
        batch_op.add_column(sa.Column("published_at", _TIME, nullable=True))
        batch_op.create_index("ix_messages_published_at", ["published_at"], unique=False)
    with op.batch_alter_table("poll_log") as batch_op:
        batch_op.create_index("ix_poll_log_started_at", ["started_at"], unique=False)
    # Messages stored before this revision were announced long ago.
    op.execute("UPDATE messages SET published_at = stored_at")
    op.create_table(
        "message_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("poll_id", sa.Uuid(), nullable=True),
        sa.Column("folder", sa.String(length=1024), nullable=False),
        sa.Column("server_id", sa.String(length=512), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("downloaded_at", _TIME, nullable=True),
        sa.Column("logged_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_message_log_connection", "message_log", ["connection_id", "logged_at"])
    op.create_index("ix_message_log_logged_at", "message_log", ["logged_at"])
    op.create_table(
        "failed_messages",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("poll_id", sa.Uuid(), nullable=True),
        sa.Column("folder", sa.String(length=1024), nullable=False),
        sa.Column("server_id", sa.String(length=512), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("failed_at", _TIME, nullable=False),
        sa.Column("dismissed_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connection_id", "folder", "server_id", name="uq_failed_messages_key"),
    )
    op.create_index("ix_failed_messages_failed_at", "failed_messages", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_failed_messages_failed_at", table_name="failed_messages")
    op.drop_table("failed_messages")
    op.drop_index("ix_message_log_logged_at", table_name="message_log")
    op.drop_index("ix_message_log_connection", table_name="message_log")
    op.drop_table("message_log")
    with op.batch_alter_table("poll_log") as batch_op:
        batch_op.drop_index("ix_poll_log_started_at")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_index("ix_messages_published_at")
        batch_op.drop_column("published_at")
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("message_id")
    with op.batch_alter_table("mailbox_state") as batch_op:
        batch_op.drop_column("baseline_uid")
    with batch_keeping_name_index("connections") as batch_op:
        batch_op.drop_column("first_sync_since")
        batch_op.drop_column("first_sync")
