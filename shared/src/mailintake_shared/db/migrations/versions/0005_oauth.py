"""OAuth2 grants and authorization flows, app-only credentials, Graph's delta cursor

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailintake_shared.db.types
from mailintake_shared.db.migrations.batch import batch_keeping_name_index

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TIME = mailintake_shared.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    with batch_keeping_name_index("oauth_credentials") as batch_op:
        batch_op.add_column(sa.Column("scopes", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("app_only", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("mailbox_state") as batch_op:
        batch_op.add_column(sa.Column("delta_link", sa.Text(), nullable=True))
    op.create_table(
        "oauth_grants",
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("refresh_token_enc", sa.LargeBinary(), nullable=True),
        sa.Column("access_token_enc", sa.LargeBinary(), nullable=True),
        sa.Column("access_expires_at", _TIME, nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("authorized_at", _TIME, nullable=True),
        sa.Column("refreshed_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("connection_id"),
    )
    op.create_table(
        "oauth_flows",
        sa.Column("state", sa.String(length=128), nullable=False),
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("flow_enc", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("state"),
    )


def downgrade() -> None:
    op.drop_table("oauth_flows")
    op.drop_table("oauth_grants")
    with op.batch_alter_table("mailbox_state") as batch_op:
        batch_op.drop_column("delta_link")
    with batch_keeping_name_index("oauth_credentials") as batch_op:
        batch_op.drop_column("app_only")
        batch_op.drop_column("scopes")
