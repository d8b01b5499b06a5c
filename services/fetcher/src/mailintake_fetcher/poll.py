"""One poll of one IMAP folder, within a budget.

1. connect, log in, select the folder;
2. apply the server action (\\Seen, or delete) to messages the store has committed;
3. ``UID SEARCH UID n+1:*`` above the cursor (the highest committed UID of this UIDVALIDITY);
4. download within the budget (messages, bytes, seconds) with ``BODY.PEEK[]``, publishing each
   message (large ones in chunks, fetched by byte range so memory stays bounded);
5. publish the poll's result (saying whether more is pending) and wait for the broker.

Nothing on the server changes before the store has committed the message: actions come
only from the database's committed rows.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from mailintake_fetcher.config import MailboxConfig
from mailintake_fetcher.errors import PollError, classify
from mailintake_fetcher.imap import ImapMailbox, MessageMeta
from mailintake_fetcher.metrics import FETCHED_BYTES, FETCHED_MESSAGES, POLL_SECONDS, POLLS
from mailintake_fetcher.repository import Cursor, PendingAction
from mailintake_shared.db.types import utcnow
from mailintake_shared.domain import AfterDownload
from mailintake_shared.events import FetchedChunk, PollDue, PollOutcome, PollResult
from mailintake_shared.logging import get_logger

log = get_logger(__name__)
_BATCH_BYTES = 8 * 1024 * 1024  # most bytes asked for in one FETCH of whole messages


@dataclass(frozen=True)
class Budget:
    max_messages: int
    max_bytes: int
    max_seconds: float
    batch_messages: int
    chunk_bytes: int


class Sink(Protocol):
    """Where a poll's records go: the broker in production, anything in a benchmark."""

    def message(self, chunk: FetchedChunk, data: bytes) -> None: ...
    def result(self, result: PollResult) -> None: ...
    def flush(self) -> None:
        """Return once every record is acknowledged; raise if any was not."""


class State(Protocol):
    """The poll's view of the database."""

    def cursor(self, connection_id: uuid.UUID, folder: str) -> Cursor | None: ...
    def pending_actions(
        self, connection_id: uuid.UUID, folder: str, uidvalidity: int
    ) -> list[PendingAction]: ...
    def actions_applied(self, message_ids: Sequence[int]) -> None: ...


@dataclass
class _Progress:
    messages: int = 0
    bytes: int = 0
    actions: int = 0


class ImapPoll:
    def __init__(
        self,
        config: MailboxConfig,
        due: PollDue,
        state: State,
        sink: Sink,
        budget: Budget,
        *,
        opener: Callable[[MailboxConfig], ImapMailbox] = ImapMailbox.open,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._due = due
        self._state = state
        self._sink = sink
        self._budget = budget
        self._open = opener
        self._clock = clock

    def run(self) -> PollResult:
        started_at, started = utcnow(), self._clock()
        progress = _Progress()
        folder = self._config.folder
        uidvalidity: int | None = None
        more_pending = False
        error: PollError | None = None
        try:
            with self._open(self._config) as mailbox:
                info = mailbox.select(folder)
                uidvalidity = info.uidvalidity
                progress.actions = self._apply_actions(mailbox, folder, info.uidvalidity)
                cursor = self._state.cursor(self._config.view.id, folder)
                last_uid = (
                    cursor.last_uid if cursor and cursor.uidvalidity == info.uidvalidity else 0
                )
                new_uids = mailbox.uids_after(last_uid)
                done = self._download(mailbox, folder, info.uidvalidity, new_uids, progress)
                more_pending = done < len(new_uids)
        except Exception as exc:
            error = classify(exc)
            log.warning(
                "poll failed",
                connection_id=str(self._config.view.id),
                error_kind=error.kind.value,
                error=str(error),
            )
        result = PollResult(
            connection_id=self._config.view.id,
            poll_id=self._due.poll_id,
            reason=self._due.reason,
            outcome=PollOutcome.FAILED if error else PollOutcome.OK,
            error_kind=error.kind if error else None,
            error=str(error) if error else None,
            folder=folder,
            uidvalidity=uidvalidity,
            messages=progress.messages,
            bytes=progress.bytes,
            more_pending=more_pending,
            actions_applied=progress.actions,
            started_at=started_at,
            finished_at=utcnow(),
        )
        self._sink.result(result)
        self._sink.flush()
        POLLS.labels(result.outcome.value, result.error_kind or "").inc()
        POLL_SECONDS.observe(self._clock() - started)
        return result

    def _apply_actions(self, mailbox: ImapMailbox, folder: str, uidvalidity: int) -> int:
        pending = self._state.pending_actions(self._config.view.id, folder, uidvalidity)
        if not pending:
            return 0
        uids = [p.uid for p in pending]
        if self._config.view.after_download is AfterDownload.DELETE:
            mailbox.delete(uids)
        else:
            mailbox.mark_seen(uids)
        self._state.actions_applied([p.message_id for p in pending])
        return len(pending)

    def _download(
        self,
        mailbox: ImapMailbox,
        folder: str,
        uidvalidity: int,
        uids: list[int],
        progress: _Progress,
    ) -> int:
        """Download within the budget; return how many of ``uids`` were published."""
        budget = self._budget
        deadline = self._clock() + budget.max_seconds
        candidates = mailbox.metadata(uids[: budget.max_messages])
        planned: list[MessageMeta] = []
        planned_bytes = 0
        for meta in candidates:
            if planned and planned_bytes + meta.size > budget.max_bytes:
                break
            planned.append(meta)
            planned_bytes += meta.size
        for group in _groups(planned, budget.batch_messages, budget.chunk_bytes):
            if progress.messages and self._clock() > deadline:
                break
            size = budget.chunk_bytes
            if len(group) == 1 and group[0].size > size:
                # A large message, fetched by byte range: memory stays at two chunks.
                ranges = _ranges(mailbox, group[0].uid, size)
                self._publish(folder, uidvalidity, group[0], ranges, progress)
                continue
            bodies = mailbox.bodies([m.uid for m in group])
            for meta in group:
                body = bodies.get(meta.uid, b"")
                pieces = (body[i : i + size] for i in range(0, len(body), size))
                self._publish(folder, uidvalidity, meta, pieces, progress)
        return progress.messages

    def _chunk(
        self,
        folder: str,
        uidvalidity: int,
        meta: MessageMeta,
        index: int,
        *,
        final: bool,
        sha256: str | None,
    ) -> FetchedChunk:
        # model_construct: every field comes from this code, typed; validating them again
        # would only cost time on the bulk path.
        return FetchedChunk.model_construct(
            connection_id=self._config.view.id,
            poll_id=self._due.poll_id,
            folder=folder,
            server_id=f"{uidvalidity}:{meta.uid}",
            uidvalidity=uidvalidity,
            uid=meta.uid,
            size=meta.size,
            internal_date=meta.internal_date,
            seen_before=meta.seen,
            chunk_index=index,
            final=final,
            sha256=sha256,
        )

    def _publish(
        self,
        folder: str,
        uidvalidity: int,
        meta: MessageMeta,
        pieces: Iterable[bytes],
        progress: _Progress,
    ) -> None:
        """Publish a message as its pieces come, held back by one so that the last can carry
        ``final``: at most two chunks in memory. A chunked message's last record also carries
        the SHA-256 of the whole, which the store checks after assembly; a single record needs
        none (the broker's CRC covers it, and the store hashes it for dedup anyway)."""
        digest = hashlib.sha256()
        total, index = 0, 0
        held: bytes | None = None
        for piece in pieces:
            if held is not None:
                digest.update(held)
                self._sink.message(
                    self._chunk(folder, uidvalidity, meta, index, final=False, sha256=None), held
                )
                index += 1
            total += len(piece)
            held = piece
        sha256 = None
        if index:
            digest.update(held or b"")
            sha256 = digest.hexdigest()
        final = self._chunk(folder, uidvalidity, meta, index, final=True, sha256=sha256)
        self._sink.message(final, held or b"")
        self._count(progress, total)

    @staticmethod
    def _count(progress: _Progress, size: int) -> None:
        progress.messages += 1
        progress.bytes += size
        FETCHED_MESSAGES.inc()
        FETCHED_BYTES.inc(size)


def _ranges(mailbox: ImapMailbox, uid: int, size: int) -> Iterator[bytes]:
    """A message's bytes in pieces of ``size``, one ``BODY.PEEK[]<offset.size>`` each, until a
    short piece (the server's RFC822.SIZE is not trusted to say where the end is)."""
    offset = 0
    while True:
        piece = mailbox.body_range(uid, offset, size)
        if piece:
            yield piece
        if len(piece) < size:
            return
        offset += size


def _groups(
    metas: list[MessageMeta], batch_messages: int, chunk_bytes: int
) -> Iterator[list[MessageMeta]]:
    """FETCH groups: small messages together (bounded in count and bytes), large ones alone."""
    group: list[MessageMeta] = []
    group_bytes = 0
    for meta in metas:
        if meta.size > chunk_bytes:
            if group:
                yield group
                group, group_bytes = [], 0
            yield [meta]
            continue
        if group and (len(group) >= batch_messages or group_bytes + meta.size > _BATCH_BYTES):
            yield group
            group, group_bytes = [], 0
        group.append(meta)
        group_bytes += meta.size
    if group:
        yield group
