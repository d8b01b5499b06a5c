"""Poll leases: a fence raised only by a lease taken over, not by one given back

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("poll_leases") as batch_op:
        batch_op.add_column(sa.Column("fence", sa.BigInteger(), nullable=False, server_default="0"))
    # Until now every new lease fenced the ones before it.
    op.execute("UPDATE poll_leases SET fence = token")


def downgrade() -> None:
    with op.batch_alter_table("poll_leases") as batch_op:
        batch_op.drop_column("fence")
