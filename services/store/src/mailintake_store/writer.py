"""One batch of fetched records → one database transaction.

In that transaction: new messages inserted with dedup (the server key, then the content
hash across UIDVALIDITY epochs), chunks of large messages staged until the last one, the
folder's cursor advanced, the poll log and the connection's status updated, and the
``mail.stored`` and ``poll.completed`` events queued in the outbox. The caller commits the
Kafka offsets only after this returns, so a crash at any point replays the batch, and the
replay stores nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from mailintake_shared import smime
from mailintake_shared.cloudevents import Headers, headers
from mailintake_shared.db import leases
from mailintake_shared.db.dialect import insert_for
from mailintake_shared.db.models import (
    ConnectionStatus,
    FailedMessage,
    MailboxState,
    Message,
    MessageLog,
    OutboxRecord,
    PollLog,
)
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import (
    FetchedChunk,
    HeaderSummary,
    PollCompleted,
    PollOutcome,
    PollResult,
    SmimeInfo,
)
from mailintake_shared.fetched import FetchedPart
from mailintake_shared.logging import get_logger
from mailintake_shared.mime import NUL_PROBLEM, summarize
from mailintake_shared.outbox import OutboxEntry, Prepared, announce_stored
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.stored_event import SMIME_PROBLEM, StoredRecord, mail_stored
from mailintake_shared.topics import Topic, topic_name
from mailintake_store import bulk, cursor, pending, staging
from mailintake_store.metrics import DUPLICATES, LOST_IN_TRANSIT, POLL_RESULTS, SMIME, STORED

log = get_logger(__name__)


@dataclass(frozen=True)
class Rejected:
    """A fetched message that cannot be stored; the worker dead-letters its record."""

    index: int  # position of the record in the batch
    reason: str


@dataclass
class _Complete:
    """A whole message, ready to insert: in memory, or staged in PostgreSQL (``raw`` None)."""

    index: int
    first: FetchedChunk  # identity fields (any chunk carries them)
    raw: bytes | None
    size: int
    sha256: str
    head: bytes  # what the header summary is made from
    has_nul: bool = False
    downloaded_at: datetime | None = None
    smime: SmimeInfo | None = None
    unwrapped: bytes | None = None  # the S/MIME layers opened (decrypted) form

    @property
    def looks_smime(self) -> bool:
        """The header says S/MIME: as the fetcher read it, else read here."""
        if self.first.headers is not None:
            return self.first.smime
        return bool(self.head) and smime.is_smime(self.head)

    @cached_property
    def summary(self) -> tuple[HeaderSummary, list[str]]:
        if self.first.headers is not None:  # read by the fetcher
            headers, problems = self.first.headers, list(self.first.problems)
        else:
            headers, problems = summarize(self.head)
            if self.has_nul and NUL_PROBLEM not in problems:
                problems.insert(0, NUL_PROBLEM)
        if self.smime is not None and self.smime.problem is not None:
            problems.append(f"{SMIME_PROBLEM}{self.smime.problem}")
        announced = self.first.size
        if self.first.uid is not None and announced > 0 and announced != self.size:
            # Exchange's RFC822.SIZE is approximate: noted, not refused (the bytes stand).
            problems.append(f"RFC822.SIZE said {announced} bytes; {self.size} were received")
        return headers, problems


@dataclass
class _PollCounts:
    connection_id: uuid.UUID
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0


class _Polls(dict[uuid.UUID, _PollCounts]):
    """Counts per poll id, made on first use."""

    def of(self, chunk: FetchedChunk | PollResult) -> _PollCounts:
        if chunk.poll_id not in self:
            self[chunk.poll_id] = _PollCounts(chunk.connection_id)
        return self[chunk.poll_id]


@dataclass
class BatchOutcome:
    stored: int = 0
    duplicates: int = 0
    stale: int = 0  # records of a fetcher whose lease had been taken over: dropped
    rejected: list[Rejected] = field(default_factory=list)
    prepared: list[Prepared] = field(default_factory=list)  # to publish after the commit


def _envelope(record: FetchedPart | PollResult) -> FetchedChunk | PollResult:
    return record if isinstance(record, PollResult) else record.chunk


def _mismatch(chunk: FetchedChunk, digest: str) -> str:
    return f"SHA-256 mismatch: announced {chunk.sha256}, got {digest}"


class StoreWriter:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        topic_prefix: str,
        secrets: SecretBox | None = None,
        download_attempts: int = 3,
        inline_max_bytes: int = 256 * 1024,
    ) -> None:
        self._sessions = sessions
        self._prefix = topic_prefix
        self._attempts = download_attempts
        self._inline_max = inline_max_bytes
        self._secrets = secrets  # opens the certificates' keys; None: S/MIME left closed
        # The events and log rows of the batch being written, in order; inserted with it.
        self._outbox: list[tuple[OutboxEntry, bytes, Headers]] = []  # row, value, headers
        self._log: list[dict[str, Any]] = []

    def write(self, records: Sequence[FetchedPart | PollResult]) -> BatchOutcome:
        """Write the batch in one transaction; its outcome carries the outbox records it
        queued, built in memory, to publish once the transaction is committed (when this
        returns)."""
        outcome = BatchOutcome()
        self._outbox, self._log = [], []
        with self._sessions() as session, session.begin():
            pending: list[_Complete] = []
            polls = _Polls()
            fence = leases.fences(session, {_envelope(r).connection_id for r in records})
            for index, record in enumerate(records):
                token = _envelope(record).lease_token
                if token is not None and token < fence.get(_envelope(record).connection_id, 0):
                    outcome.stale += 1  # its lease was taken over: the new owner fetches again
                    continue
                if isinstance(record, PollResult):
                    self._store_messages(session, pending, polls, outcome)
                    pending = []
                    counts = polls.of(record)
                    del polls[record.poll_id]
                    self._record_poll(session, record, counts)
                    continue
                rejected_before = len(outcome.rejected)
                complete = self._assemble(session, index, record, outcome)
                if complete is not None:
                    pending.append(complete)
                elif len(outcome.rejected) > rejected_before:
                    polls.of(record.chunk).rejected += 1
            self._store_messages(session, pending, polls, outcome)
            for poll_id, counts in polls.items():
                self._add_poll_counts(session, poll_id, counts)
            outbox_ids = self._queue(session)
            bulk.insert_rows(session, MessageLog, self._log)
        outcome.prepared = [
            Prepared(
                outbox_id,
                topic_name(self._prefix, entry.topic),
                entry.key.encode(),
                value,
                headers_,
                entry.message_id,
            )
            for outbox_id, (entry, value, headers_) in zip(outbox_ids, self._outbox, strict=True)
        ]
        return outcome

    def _queue(self, session: Session) -> list[int]:
        """The batch's outbox rows, in order; their ids."""
        now = utcnow()
        rows = [
            {
                "topic": topic_name(self._prefix, entry.topic),
                "key": entry.key,
                "value": entry.value,
                "created_at": now,
                "message_id": entry.message_id,
            }
            for entry, _, _ in self._outbox
        ]
        return bulk.insert_rows(session, OutboxRecord, rows, with_ids=True)

    # --- messages --------------------------------------------------------------------------
    def _assemble(
        self, session: Session, index: int, part: FetchedPart, outcome: BatchOutcome
    ) -> _Complete | None:
        chunk = part.chunk
        if chunk.chunk_index == 0 and chunk.final:
            return self._verified(session, index, part, part.data, outcome)
        staging.stage(session, chunk, part.data)
        if not chunk.final:
            return None
        key = staging.key_of(chunk)
        try:
            if not staging.in_database(session):
                raw = staging.join_in_python(session, key, chunk.chunk_index)
                staging.discard(session, key)
                return self._verified(session, index, part, raw, outcome)
            staged = staging.summarize_in_database(session, key, chunk.chunk_index)
        except staging.ChunksMissingError:
            if self._already_stored(session, chunk):
                # The replay of a batch whose earlier chunks were assembled and committed:
                # passed on as it is, the duplicate check counts it.
                return _Complete(index, chunk, None, 0, chunk.sha256 or "", b"")
            staging.discard(session, key)
            self._reject(session, index, part, "chunks of the message are missing", None, outcome)
            return None
        if chunk.sha256 != staged.sha256:
            reason = _mismatch(chunk, staged.sha256)
            self._reject(session, index, part, reason, None, outcome)
            staging.discard(session, key)
            return None
        return _Complete(
            index,
            chunk,
            None,
            staged.size,
            staged.sha256,
            staged.head,
            staged.has_nul,
            part.downloaded_at,
        )

    @staticmethod
    def _already_stored(session: Session, chunk: FetchedChunk) -> bool:
        found = session.scalar(
            select(Message.id).where(
                Message.connection_id == chunk.connection_id,
                Message.folder == chunk.folder,
                Message.server_id == chunk.server_id,
            )
        )
        return found is not None

    def _verified(
        self,
        session: Session,
        index: int,
        part: FetchedPart,
        raw: bytes,
        outcome: BatchOutcome,
    ) -> _Complete | None:
        chunk = part.chunk
        digest = hashlib.sha256(raw).hexdigest()
        if chunk.sha256 not in (digest, None):  # a single record announces no digest
            self._reject(session, index, part, _mismatch(chunk, digest), raw, outcome)
            return None
        return _Complete(index, chunk, raw, len(raw), digest, raw, False, part.downloaded_at)

    def _reject(
        self,
        session: Session,
        index: int,
        part: FetchedPart,
        reason: str,
        raw: bytes | None,
        outcome: BatchOutcome,
    ) -> None:
        """Dead-lettered by the worker, and kept in the Incoming Mail Queue (with the bytes
        received, when there are any) until an administrator retries or deletes it."""
        chunk = part.chunk
        outcome.rejected.append(Rejected(index, reason))
        session.execute(
            insert_for(session)(FailedMessage)
            .values(
                connection_id=chunk.connection_id,
                poll_id=chunk.poll_id,
                folder=chunk.folder,
                server_id=chunk.server_id,
                uidvalidity=chunk.uidvalidity,
                uid=chunk.uid,
                reason=reason,
                raw=raw,
                failed_at=utcnow(),
            )
            .on_conflict_do_nothing()
        )
        self._log_message(chunk, "rejected", None, part.downloaded_at, chunk.size, reason)

    def _log_message(
        self,
        chunk: FetchedChunk,
        outcome: str,
        message_id: int | None,
        downloaded_at: datetime | None,
        size: int,
        detail: str | None = None,
    ) -> None:
        self._log.append(
            {
                "connection_id": chunk.connection_id,
                "poll_id": chunk.poll_id,
                "folder": chunk.folder,
                "server_id": chunk.server_id,
                "message_id": message_id,
                "outcome": outcome,
                "detail": detail,
                "size": size,
                "downloaded_at": downloaded_at,
                "logged_at": utcnow(),
            }
        )

    def _store_messages(
        self,
        session: Session,
        messages: list[_Complete],
        polls: _Polls,
        outcome: BatchOutcome,
    ) -> None:
        if not messages:
            return
        stored, duplicates = outcome.stored, outcome.duplicates  # a batch may have several runs
        fresh = self._drop_known(session, messages, polls, outcome)
        fresh = self._rekey_after_uidvalidity_change(session, fresh, polls, outcome)
        self._open_smime(session, fresh)
        now = utcnow()
        inserted = self._insert_rows(session, fresh, now)
        for message in messages:
            if message.raw is None:  # staged in PostgreSQL: copied there, then dropped
                key = staging.key_of(message.first)
                if key in inserted:
                    staging.copy_into_message(session, key, inserted[key])
                staging.discard(session, key)
        for message in fresh:
            chunk = message.first
            message_id = inserted.get(staging.key_of(chunk))
            if message_id is None:  # a concurrent writer stored it first
                self._duplicate(message, polls, outcome, None, "stored concurrently")
                continue
            polls.of(chunk).stored += 1
            outcome.stored += 1
            self._log_message(chunk, "stored", message_id, message.downloaded_at, message.size)
            record = self._stored_record(message, message_id, now)
            entry = announce_stored(message_id, chunk.connection_id)
            self._outbox.append((entry, record.value, record.headers))
        STORED.inc(outcome.stored - stored)
        DUPLICATES.inc(outcome.duplicates - duplicates)

    def _drop_known(
        self,
        session: Session,
        messages: list[_Complete],
        polls: _Polls,
        outcome: BatchOutcome,
    ) -> list[_Complete]:
        """Messages whose server key is already stored (or repeated in this batch) are dups."""
        by_connection: dict[uuid.UUID, set[str]] = defaultdict(set)
        for message in messages:
            by_connection[message.first.connection_id].add(message.first.server_id)
        known: dict[tuple[uuid.UUID, str, str], int | None] = {}
        for connection_id, server_ids in by_connection.items():
            rows = session.execute(
                select(Message.id, Message.folder, Message.server_id).where(
                    Message.connection_id == connection_id, Message.server_id.in_(server_ids)
                )
            ).all()
            known.update({(connection_id, r.folder, r.server_id): r.id for r in rows})
        fresh: list[_Complete] = []
        for message in messages:
            key = staging.key_of(message.first)
            if key in known:
                self._duplicate(message, polls, outcome, known[key], "already stored")
            else:
                known[key] = None
                fresh.append(message)
        return fresh

    def _duplicate(
        self,
        message: _Complete,
        polls: _Polls,
        outcome: BatchOutcome,
        message_id: int | None,
        detail: str,
    ) -> None:
        polls.of(message.first).duplicates += 1
        outcome.duplicates += 1
        self._log_message(
            message.first, "duplicate", message_id, message.downloaded_at, message.size, detail
        )

    def _rekey_after_uidvalidity_change(
        self,
        session: Session,
        messages: list[_Complete],
        polls: _Polls,
        outcome: BatchOutcome,
    ) -> list[_Complete]:
        """A message whose content is already stored from an earlier UIDVALIDITY of the same
        folder is the same mail under a new UID: the stored row takes the new identity (so the
        server action reaches it) and nothing new is stored or announced."""
        imap = [m for m in messages if m.first.uidvalidity is not None]
        if not imap:
            return messages
        candidates: dict[tuple[uuid.UUID, str, str], list[Any]] = defaultdict(list)
        for connection_id in {m.first.connection_id for m in imap}:
            hashes = {m.sha256 for m in imap if m.first.connection_id == connection_id}
            rows = session.execute(
                select(Message.id, Message.folder, Message.sha256, Message.uidvalidity)
                .where(Message.connection_id == connection_id, Message.sha256.in_(hashes))
                .order_by(Message.id)
            ).all()
            for row in rows:
                candidates[(connection_id, row.folder, row.sha256)].append(row)
        fresh: list[_Complete] = []
        for message in messages:
            chunk = message.first
            rows = candidates.get((chunk.connection_id, chunk.folder, message.sha256), [])
            older = next((r for r in rows if r.uidvalidity != chunk.uidvalidity), None)
            if chunk.uidvalidity is None or older is None:
                fresh.append(message)
                continue
            rows.remove(older)
            session.execute(
                update(Message)
                .where(Message.id == older.id)
                .values(
                    server_id=chunk.server_id,
                    uidvalidity=chunk.uidvalidity,
                    uid=chunk.uid,
                    action_state="pending",
                )
            )
            self._duplicate(
                message, polls, outcome, older.id, "same content under a new UIDVALIDITY"
            )
        return fresh

    def _open_smime(self, session: Session, messages: list[_Complete]) -> None:
        """Decrypt and verify S/MIME messages with their connection's certificates."""
        keys: dict[uuid.UUID, tuple[list[smime.KeyPair], list[str]]] = {}
        for message in messages:
            if not message.looks_smime:
                continue
            chunk = message.first
            if self._secrets is None:
                message.smime = SmimeInfo(problem="no encryption key configured to open keys")
                continue
            if chunk.connection_id not in keys:
                keys[chunk.connection_id] = smime.load_keys(
                    session, self._secrets, chunk.connection_id
                )
            raw = message.raw
            if raw is None:  # a large message, staged in PostgreSQL
                raw = staging.join_in_python(session, staging.key_of(chunk), chunk.chunk_index)
            try:
                result = smime.unwrap_with(raw, keys[chunk.connection_id], utcnow())
            except Exception as exc:  # a bug on hostile input must not block the partition
                log.exception("S/MIME processing failed", connection_id=str(chunk.connection_id))
                message.smime = SmimeInfo(
                    problem=f"S/MIME processing failed ({type(exc).__name__})"
                )
                continue
            message.smime, message.unwrapped = result.info, result.mime
            SMIME.labels(_smime_outcome(result.info)).inc()

    def _insert_rows(
        self, session: Session, messages: list[_Complete], now: datetime
    ) -> dict[tuple[uuid.UUID, str, str], int]:
        """Insert the new messages; their ids by dedup key (a message another writer stored
        meanwhile has none, on SQLite; on PostgreSQL the batch fails and is retried)."""
        ids = bulk.insert_rows(
            session,
            Message,
            [self._row(m, now) for m in messages],
            with_ids=True,
            skip_conflicts_on=("connection_id", "folder", "server_id"),
        )
        return {
            staging.key_of(message.first): id_
            for message, id_ in zip(messages, ids, strict=True)
            if id_
        }

    def _stored_record(self, message: _Complete, message_id: int, now: datetime) -> StoredRecord:
        """The ``mail.stored`` record of a message just inserted, from what is in memory: the
        same the relay would build from its row (``stored_event.mail_stored``)."""
        chunk = message.first
        headers, problems = message.summary
        body = message.unwrapped if message.unwrapped is not None else message.raw
        return mail_stored(
            self._prefix,
            message_id=message_id,
            connection_id=chunk.connection_id,
            folder=chunk.folder,
            server_id=chunk.server_id,
            size=message.size,
            sha256=message.sha256,
            internal_date=chunk.internal_date,
            stored_at=now,
            headers=headers,
            problems=problems,
            body=body if body is not None and len(body) <= self._inline_max else None,
            smime=message.smime,
        )

    @staticmethod
    def _row(message: _Complete, now: Any) -> dict[str, Any]:
        chunk = message.first
        headers, problems = message.summary
        return {
            "connection_id": chunk.connection_id,
            "folder": chunk.folder,
            "server_id": chunk.server_id,
            "uidvalidity": chunk.uidvalidity,
            "uid": chunk.uid,
            "sha256": message.sha256,
            "size": message.size,
            "raw": b"" if message.raw is None else message.raw,
            "internal_date": chunk.internal_date,
            "seen_before": chunk.seen_before,
            "poll_id": chunk.poll_id,
            "stored_at": now,
            "header_from": headers.from_,
            "header_to": headers.to,
            "header_cc": headers.cc,
            "subject": headers.subject,
            "header_date": headers.date,
            "message_id_header": headers.message_id,
            "in_reply_to": headers.in_reply_to,
            "references": headers.references,
            "problems": json.dumps(problems) if problems else None,
            "unwrapped": message.unwrapped,
            "smime": message.smime.model_dump_json() if message.smime is not None else None,
            "smime_unopened": message.smime is not None and message.smime.unopened,
            "action_state": "pending",
            "action_applied_at": None,
        }

    # --- polls -----------------------------------------------------------------------------
    def _add_poll_counts(
        self, session: Session, poll_id: uuid.UUID, counts: _PollCounts
    ) -> PollLog:
        row = session.scalar(select(PollLog).where(PollLog.poll_id == poll_id).with_for_update())
        if row is None:
            row = PollLog(
                poll_id=poll_id,
                connection_id=counts.connection_id,
                fetched=0,
                bytes=0,
                stored=0,
                duplicates=0,
                rejected=0,
                more_pending=False,
            )
            session.add(row)
        row.stored += counts.stored
        row.duplicates += counts.duplicates
        row.rejected += counts.rejected
        if counts.stored:
            self._status(session, counts.connection_id).messages_stored += counts.stored
        return row

    def _record_poll(self, session: Session, result: PollResult, counts: _PollCounts) -> None:
        row = self._add_poll_counts(session, result.poll_id, counts)
        # Every record of the poll came before its result, on the same partition: fewer here
        # than the poll published means records were lost on the way (a broker that lost
        # acknowledged data). Then the cursor goes back below the poll's first message, and
        # the next poll downloads again what is missing (the rest is recognised as stored).
        lost = result.messages - (row.stored + row.duplicates + row.rejected)
        if lost > 0:
            log.warning(
                "records of a poll never reached the store; the next poll downloads them again",
                connection_id=str(result.connection_id),
                poll_id=str(result.poll_id),
                lost=lost,
                published=result.messages,
            )
            LOST_IN_TRANSIT.inc(lost)
        elif result.folder and result.uidvalidity is not None:
            cursor.advance(session, result)
        if result.delta_link is not None and result.folder and lost <= 0:
            self._set_delta_link(session, result)
        self._log.extend(pending.record(session, result, self._attempts, forget_retried=lost <= 0))
        row.reason = result.reason.value
        row.started_at, row.finished_at = result.started_at, result.finished_at
        row.outcome = result.outcome.value
        row.error_kind = result.error_kind.value if result.error_kind else None
        row.error = result.error
        row.fetched, row.bytes, row.more_pending = (
            result.messages,
            result.bytes,
            result.more_pending,
        )

        status = self._status(session, result.connection_id)
        if result.outcome is PollOutcome.OK:
            status.last_poll_at = status.last_success_at = result.finished_at
            status.consecutive_failures = 0
            status.last_error_kind = status.last_error = None
        elif result.outcome is PollOutcome.FAILED:
            status.last_poll_at = result.finished_at
            status.consecutive_failures += 1
            status.last_error_kind = row.error_kind
            status.last_error = result.error
        actions_pending = (
            session.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.connection_id == result.connection_id, Message.action_state == "pending"
                )
            )
            or 0
        )
        event = PollCompleted(
            connection_id=result.connection_id,
            poll_id=result.poll_id,
            outcome=result.outcome,
            error_kind=result.error_kind,
            more_pending=result.more_pending or lost > 0,
            stored=row.stored,
            duplicates=row.duplicates,
            actions_pending=actions_pending,
            consecutive_failures=status.consecutive_failures,
            finished_at=result.finished_at,
        )
        value = event.to_bytes()
        entry = OutboxEntry(Topic.POLL_COMPLETED, str(result.connection_id), value)
        self._outbox.append((entry, value, headers(event, self._prefix)))
        POLL_RESULTS.labels(result.outcome.value).inc()

    @staticmethod
    def _set_delta_link(session: Session, result: PollResult) -> None:
        """Graph: the poll's messages are committed (they come first on the partition), so
        the next poll may start where this one stopped."""
        assert result.folder is not None
        key = (result.connection_id, result.folder)
        state = session.get(MailboxState, key, with_for_update=True)
        if state is None:
            state = MailboxState(connection_id=key[0], folder=key[1], uidvalidity=None, last_uid=0)
            session.add(state)
        state.delta_link, state.updated_at = result.delta_link, utcnow()

    @staticmethod
    def _status(session: Session, connection_id: uuid.UUID) -> ConnectionStatus:
        status = session.get(ConnectionStatus, connection_id, with_for_update=True)
        if status is None:
            status = ConnectionStatus(
                connection_id=connection_id, consecutive_failures=0, messages_stored=0
            )
            session.add(status)
            session.flush()
        return status


def _smime_outcome(info: SmimeInfo) -> str:
    if info.decrypted_with is not None:
        return "decrypted"
    if info.encrypted:
        return "left_encrypted"
    return f"signature_{info.signature}" if info.signature else "other"
