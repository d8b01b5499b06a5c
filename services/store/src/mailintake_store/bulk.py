"""The multi-row writes of a batch, at the speed of the database.

On PostgreSQL the rows go in with ``COPY … FROM STDIN (FORMAT binary)``: every value is
sent in its binary form (a message's bytes as they are), where a multi-row INSERT sends the
bytes as hex text that the client escapes and the server parses again. Measured on 5,000
messages of 8 KB: 60 µs of PostgreSQL CPU and 25 µs of the store's a message, against 170 and
90 µs with psycopg2's ``execute_values`` (and more with SQLAlchemy's bulk insert). The ids of
the new rows are taken from the table's sequence beforehand, so none has to be returned.

COPY has no ON CONFLICT: the caller leaves out the rows it knows are stored (the store reads
the dedup keys first, in the same transaction). A row another writer stored meanwhile (two
store processes around a rebalance) makes the COPY fail with a unique violation; the batch is
then retried from the last commit, and the second time its read finds the row.

SQLite (the one-machine default) takes SQLAlchemy's executemany with ON CONFLICT DO NOTHING.
"""

from __future__ import annotations

import functools
import io
import struct
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Boolean, Integer, LargeBinary, String, Table, Text, Uuid, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from mailintake_shared.db.models import Base
from mailintake_shared.db.types import UTCDateTime

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_LENGTH = struct.Struct("!i")
_NULL = _LENGTH.pack(-1)
_INT8 = struct.Struct("!iq")  # length 8, then the value
_INT4 = struct.Struct("!ii")
_BOOL = (struct.pack("!ib", 1, 0), struct.pack("!ib", 1, 1))
_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)


def insert_rows(
    session: Session,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    *,
    with_ids: bool = False,
    skip_conflicts_on: Sequence[str] = (),
) -> list[int]:
    """INSERT ``rows`` (dicts with the same keys, the model's column names) into the model's
    table in the session's transaction, in order. With ``with_ids``, the new rows' ids in the
    same order. ``skip_conflicts_on`` names the unique key whose clashes SQLite skips; on
    PostgreSQL a clash raises (see the module's docstring)."""
    if not rows:
        return []
    table = cast(Table, model.__table__)
    if session.get_bind().dialect.name != "postgresql":
        return _insert_with_sqlalchemy(session, table, rows, with_ids, skip_conflicts_on)
    names = list(rows[0])
    columns = names
    ids: list[int] = []
    if with_ids:
        sequence = session.scalar(
            text("SELECT pg_get_serial_sequence(:table, 'id')"), {"table": table.name}
        )
        ids = list(
            session.scalars(
                text("SELECT nextval(:sequence) FROM generate_series(1, :count)"),
                {"sequence": sequence, "count": len(rows)},
            )
        )
        columns = ["id", *columns]
    encoders = [_encoder(table, column) for column in names]
    count = struct.pack("!h", len(columns))
    id_field = _encoder(table, "id") if with_ids else None
    parts = [_HEADER]
    for index, row in enumerate(rows):
        parts.append(count)
        if id_field is not None:
            parts.append(id_field(ids[index]))
        for encode, name in zip(encoders, names, strict=True):
            value = row[name]
            parts.append(_NULL if value is None else encode(value))
    parts.append(_TRAILER)
    stream = io.BytesIO(b"".join(parts))
    listed = ", ".join(f'"{column}"' for column in columns)  # "references" is reserved
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.copy_expert(f"COPY {table.name} ({listed}) FROM STDIN WITH (FORMAT binary)", stream)
    finally:
        cursor.close()
    return ids


def _insert_with_sqlalchemy(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    with_ids: bool,
    skip_conflicts_on: Sequence[str],
) -> list[int]:
    statement: Any = sqlite.insert(table)
    if skip_conflicts_on:
        statement = statement.on_conflict_do_nothing(index_elements=list(skip_conflicts_on))
    if not with_ids:
        session.execute(statement, list(rows))
        return []
    keys = list(skip_conflicts_on)
    statement = statement.returning(table.c.id, *(table.c[k] for k in keys))
    found = {tuple(row[1:]): row[0] for row in session.execute(statement, list(rows))}
    # A row skipped as a clash has no id (0): the caller counts it a duplicate.
    return [found.get(tuple(row[k] for k in keys), 0) for row in rows]


Encoder = Callable[[Any], bytes]


def _encoder(table: Table, column: str) -> Encoder:
    """How a value of ``column`` is written in COPY's binary format (a 4-byte length, then
    the value in the type's binary send form)."""
    kind = table.c[column].type
    if isinstance(kind, UTCDateTime):
        return _timestamptz
    if isinstance(kind, Uuid):
        return _uuid
    if isinstance(kind, Boolean):
        return _BOOL.__getitem__  # False/True index it
    if isinstance(kind, BigInteger):
        return functools.partial(_INT8.pack, 8)
    if isinstance(kind, Integer):
        return functools.partial(_INT4.pack, 4)
    if isinstance(kind, LargeBinary):
        return _bytes
    if isinstance(kind, String | Text):
        return _text
    raise TypeError(f"no binary COPY encoder for {table.name}.{column} ({kind!r})")


def _bytes(value: bytes) -> bytes:
    return _LENGTH.pack(len(value)) + value


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return _LENGTH.pack(len(data)) + data


def _uuid(value: uuid.UUID) -> bytes:
    return b"\x00\x00\x00\x10" + value.bytes


def _timestamptz(value: datetime) -> bytes:
    """Microseconds since 2000-01-01 UTC (PostgreSQL's binary timestamp)."""
    delta = value - _PG_EPOCH
    return _INT8.pack(8, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
