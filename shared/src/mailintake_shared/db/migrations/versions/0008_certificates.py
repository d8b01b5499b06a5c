"""S/MIME certificates, the connections that use them, and decrypted messages

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mailintake_shared.db.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("alias", sa.String(length=255), nullable=True),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("private_key_enc", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", mailintake_shared.db.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint_sha256", name="uq_certificates_fingerprint"),
    )
    op.create_table(
        "connection_certificates",
        sa.Column("connection_id", sa.Uuid(), nullable=False),
        sa.Column("certificate_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(["connection_id"], ["connections.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["certificate_id"], ["certificates.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("connection_id", "certificate_id"),
    )
    op.create_index(
        "ix_connection_certificates_certificate_id", "connection_certificates", ["certificate_id"]
    )
    with op.batch_alter_table("messages") as batch_op:
        batch_op.add_column(sa.Column("unwrapped", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("smime", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("smime_unopened", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    if op.get_bind().dialect.name == "postgresql":
        savepoint = op.get_bind().begin_nested()
        try:
            op.execute("ALTER TABLE messages ALTER COLUMN unwrapped SET COMPRESSION lz4")
            savepoint.commit()
        except sa.exc.DBAPIError:
            savepoint.rollback()  # this server has no lz4: keep its default


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("smime_unopened")
        batch_op.drop_column("smime")
        batch_op.drop_column("unwrapped")
    op.drop_index("ix_connection_certificates_certificate_id", table_name="connection_certificates")
    op.drop_table("connection_certificates")
    op.drop_table("certificates")
