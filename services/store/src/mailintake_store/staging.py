"""Chunks of large messages, staged in the database until the last one arrives.

On PostgreSQL a staged message never passes through the store's memory as a whole: the
database checks its chunks, hashes them (``sha256(string_agg(…))``) and copies them into the
message row itself. Other databases (SQLite, the embedded development default) join the
chunks in Python.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import and_, delete, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from mailintake_shared.db.dialect import insert_for
from mailintake_shared.db.models import MessageChunk
from mailintake_shared.events import FetchedChunk

StagingKey = tuple[uuid.UUID, str, str]  # connection id, folder, server id


@dataclass(frozen=True)
class Staged:
    """A complete staged message as the database sees it."""

    size: int
    sha256: str
    head: bytes  # the first chunk: enough for the header summary
    has_nul: bool


class ChunksMissingError(ValueError):
    """The final chunk arrived but some earlier ones are not staged."""


def key_of(chunk: FetchedChunk) -> StagingKey:
    return (chunk.connection_id, chunk.folder, chunk.server_id)


def _where(key: StagingKey) -> ColumnElement[bool]:
    return and_(
        MessageChunk.connection_id == key[0],
        MessageChunk.folder == key[1],
        MessageChunk.server_id == key[2],
    )


def in_database(session: Session) -> bool:
    """Whether chunks are assembled by the database (PostgreSQL) rather than in Python."""
    return session.get_bind().dialect.name == "postgresql"


def stage(session: Session, chunk: FetchedChunk, data: bytes) -> None:
    insert = insert_for(session)
    session.execute(
        insert(MessageChunk)
        .values(
            connection_id=chunk.connection_id,
            folder=chunk.folder,
            server_id=chunk.server_id,
            chunk_index=chunk.chunk_index,
            data=data,
        )
        .on_conflict_do_nothing()  # a replayed chunk
    )


_SUMMARY = text(
    """
    SELECT count(*) AS chunks, max(chunk_index) AS last, coalesce(sum(length(data)), 0) AS size,
           encode(sha256(string_agg(data, ''::bytea ORDER BY chunk_index)), 'hex') AS sha256,
           coalesce(bool_or(position('\\x00'::bytea IN data) > 0), false) AS has_nul,
           (SELECT data FROM message_chunks h
             WHERE h.connection_id = :connection_id AND h.folder = :folder
               AND h.server_id = :server_id AND h.chunk_index = 0) AS head
      FROM message_chunks
     WHERE connection_id = :connection_id AND folder = :folder AND server_id = :server_id
       AND chunk_index <= :last
    """
)

_COPY = text(
    """
    UPDATE messages SET raw = (
        SELECT string_agg(data, ''::bytea ORDER BY chunk_index) FROM message_chunks
         WHERE connection_id = :connection_id AND folder = :folder AND server_id = :server_id)
     WHERE id = :message_id
    """
)


def _params(key: StagingKey) -> dict[str, object]:
    return {"connection_id": key[0], "folder": key[1], "server_id": key[2]}


def summarize_in_database(session: Session, key: StagingKey, last: int) -> Staged:
    """Size, SHA-256 and first chunk of a staged message, computed by PostgreSQL."""
    row = session.execute(_SUMMARY, {**_params(key), "last": last}).one()
    if row.chunks != last + 1 or row.last != last:
        raise ChunksMissingError()
    return Staged(size=row.size, sha256=row.sha256, head=bytes(row.head), has_nul=row.has_nul)


def copy_into_message(session: Session, key: StagingKey, message_id: int) -> None:
    """PostgreSQL: the staged chunks become the message row's ``raw``."""
    session.execute(_COPY, {**_params(key), "message_id": message_id})


def join_in_python(session: Session, key: StagingKey, last: int) -> bytes:
    parts = session.execute(
        select(MessageChunk.chunk_index, MessageChunk.data)
        .where(_where(key), MessageChunk.chunk_index <= last)
        .order_by(MessageChunk.chunk_index)
    ).all()
    if [p.chunk_index for p in parts] != list(range(last + 1)):
        raise ChunksMissingError()
    return b"".join(bytes(p.data) for p in parts)


def discard(session: Session, key: StagingKey) -> None:
    session.execute(delete(MessageChunk).where(_where(key)))
