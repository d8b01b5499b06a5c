"""Batch alterations that keep the tables' case-insensitive name indexes.

On SQLite, Alembic's batch mode copies a table into a new one and carries its indexes over by
reflecting them; an expression index (``lower(name)``) cannot be reflected, so it was skipped
with a warning and lost. The index is dropped before and made again after instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations


@contextmanager
def batch_keeping_name_index(table: str) -> Iterator[BatchOperations]:
    """``op.batch_alter_table(table)`` for a table with a ``uq_<table>_name`` index."""
    index = f"uq_{table}_name"
    op.drop_index(index, table_name=table)
    with op.batch_alter_table(table) as batch_op:
        yield batch_op
    op.create_index(index, table, [sa.text("lower(name)")], unique=True)
