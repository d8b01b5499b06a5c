"""Alembic environment: the URL comes from the connection handed over by ``migrate()``."""

from __future__ import annotations

from alembic import context

from mailintake_shared.db.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
