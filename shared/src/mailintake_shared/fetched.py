"""The ``mail.fetched`` wire format, between fetcher and store.

Binary content mode (as CloudEvents' Kafka binding defines it): a message chunk's bytes are
the record's value, untouched, and its JSON envelope (``FetchedChunk``) travels in the
``mailintake-envelope`` header. Small whole messages travel several to a record
(``FetchedBatch``: the bytes one after the other, the envelopes and lengths in the header).
No base64 on the bulk path: the bytes go from the IMAP socket to the broker and into the
database as they are. A poll result is a JSON value. All carry the CloudEvents attributes as
headers (``mailintake_shared.cloudevents``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from mailintake_shared.cloudevents import Headers, ce_type_of, headers
from mailintake_shared.events import FetchedBatch, FetchedChunk, PollResult, decode

ENVELOPE_HEADER = "mailintake-envelope"
TYPE_HEADER = "ce_type"
CONTENT_TYPE_HEADER = "content-type"
RESULT_CONTENT_TYPE = b"application/json"
BATCH_TYPE = ce_type_of(FetchedBatch).encode()


@dataclass(frozen=True)
class FetchedPart:
    """One chunk of a downloaded message: its envelope and its bytes."""

    chunk: FetchedChunk
    data: bytes
    downloaded_at: datetime | None = None  # when the fetcher published it (the record time)


def encode_part(chunk: FetchedChunk, data: bytes, prefix: str) -> tuple[bytes, Headers]:
    """``content-type: application/octet-stream`` and the envelope beside the bytes."""
    return data, [*headers(chunk, prefix), (ENVELOPE_HEADER, chunk.to_bytes())]


def encode_batch(parts: list[tuple[FetchedChunk, bytes]], prefix: str) -> tuple[bytes, Headers]:
    """Whole messages in one record: their bytes one after the other, the envelopes and
    lengths in the envelope header."""
    batch = FetchedBatch.model_construct(
        messages=[chunk for chunk, _ in parts], lengths=[len(data) for _, data in parts]
    )
    value = b"".join(data for _, data in parts)
    return value, [*headers(batch, prefix), (ENVELOPE_HEADER, batch.to_bytes())]


def encode_result(result: PollResult, prefix: str) -> tuple[bytes, Headers]:
    """The JSON value, ``content-type: application/json``."""
    return result.to_bytes(), headers(result, prefix)


def decode_record(
    value: bytes | None, headers: Headers | None, timestamp_ms: int | None = None
) -> list[FetchedPart] | PollResult:
    """The record's message chunks (one, or several whole messages of a batch), or its poll
    result. Raise ``ValueError`` (``pydantic.ValidationError`` among them) for a bad record."""
    found = dict(headers or [])
    envelope = found.get(ENVELOPE_HEADER)
    if envelope is not None:
        downloaded_at = (
            datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms is not None else None
        )
        data = value or b""
        if found.get(TYPE_HEADER) != BATCH_TYPE:
            return [FetchedPart(decode(FetchedChunk, envelope), data, downloaded_at)]
        batch = decode(FetchedBatch, envelope)
        if len(batch.lengths) != len(batch.messages) or sum(batch.lengths) != len(data):
            raise ValueError("a batch whose lengths do not add up to its value")
        parts, start = [], 0
        for chunk, length in zip(batch.messages, batch.lengths, strict=True):
            parts.append(FetchedPart(chunk, data[start : start + length], downloaded_at))
            start += length
        return parts
    if found.get(CONTENT_TYPE_HEADER) == RESULT_CONTENT_TYPE:
        return decode(PollResult, value or b"")
    raise ValueError("neither a message chunk (no envelope header) nor a poll result")
