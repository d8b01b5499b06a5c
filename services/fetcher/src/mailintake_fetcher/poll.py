"""What every poll shares, whatever the protocol: the budget, where records go (``Sink``),
the database view (``State``), publishing a message in chunks, and the poll's result.

A protocol's poll (``ImapPoll``, ``Pop3Poll``) implements ``_session``: connect, apply the
server actions of committed messages, choose the new messages and download them within the
budget. Nothing on the server changes before the store has committed the message: actions
come only from the database's committed rows.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

from mailintake_fetcher.ledger import Ledger
from mailintake_fetcher.metrics import (
    FETCHED_BYTES,
    FETCHED_MESSAGES,
    POLL_SECONDS,
    POLLS,
    UNFETCHED,
)
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import (
    ErrorKind,
    FetchedChunk,
    PollDue,
    PollOutcome,
    PollResult,
    Resume,
)
from mailintake_shared.logging import get_logger
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.deadline import SessionDeadline
from mailintake_shared.mailbox.errors import PollError, classify
from mailintake_shared.mailbox.selection import Cursor
from mailintake_shared.mime import Reading

log = get_logger(__name__)


@dataclass(frozen=True)
class Budget:
    max_messages: int
    max_bytes: int
    max_seconds: float
    batch_messages: int
    chunk_bytes: int
    max_session_seconds: float = 240.0  # the settings' defaults
    max_message_bytes: int = 256 * 1024 * 1024


class MessageTooLargeError(PollError):
    """A message over ``MAILINTAKE_MAX_MESSAGE_BYTES``: not downloaded (``read`` 0: by its
    announced size), or not further than ``read`` bytes. It counts as not delivered."""

    def __init__(self, size: int, limit: int, *, read: int) -> None:
        self.read = read
        more = "more than " if read else ""
        super().__init__(
            ErrorKind.SERVER_ERROR,
            f"the message has {more}{size} bytes, over the {limit} a message may have "
            "(MAILINTAKE_MAX_MESSAGE_BYTES)",
        )


def capped(pieces: Iterable[bytes], announced: int, limit: int) -> Iterator[bytes]:
    """``pieces`` of a message whose server announced ``announced`` bytes, as long as the
    whole stays within ``limit``. Raises ``MessageTooLargeError`` before reading anything
    when the announced size is over it, and as soon as the pieces pass it (a server's size
    is not trusted to say where the message ends)."""
    if announced > limit:
        raise MessageTooLargeError(announced, limit, read=0)
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > limit:
            raise MessageTooLargeError(limit, limit, read=total)
        yield piece


class Sink(Protocol):
    """Where a poll's records go: the broker in production, anything in a benchmark."""

    def message(self, chunk: FetchedChunk, data: bytes) -> None: ...
    def result(self, result: PollResult) -> None: ...
    def flush(self) -> None:
        """Return once every record is acknowledged; raise if any was not."""


@dataclass(frozen=True)
class PendingAction:
    """A committed message whose server action (\\Seen, delete) is still to apply."""

    message_id: int
    server_id: str
    uid: int | None
    sha256: str | None = None  # what the store committed: POP3 checks it before DELE
    size: int | None = None


class State(Protocol):
    """The poll's view of the database."""

    def cursor(self, connection_id: uuid.UUID, folder: str) -> Cursor | None: ...
    def pending_actions(
        self, connection_id: uuid.UUID, folder: str, uidvalidity: int | None
    ) -> list[PendingAction]: ...
    def actions_applied(self, message_ids: Sequence[int]) -> None: ...
    def known_server_ids(
        self, connection_id: uuid.UUID, folder: str, among: Collection[str] | None = None
    ) -> set[str]: ...
    def pending_downloads(self, connection_id: uuid.UUID, folder: str) -> dict[str, int | None]:
        """Messages earlier polls could not download, to try again: server id → UID."""
        ...

    def stored_digests(self, connection_id: uuid.UUID, folder: str, uidl: str) -> dict[str, str]:
        """POP3: the SHA-256 of each message stored under ``uidl``, by server id."""
        ...


class Identity(NamedTuple):
    """Who a message is on its server, as the envelope carries it (a tuple: one is made per
    message on the bulk path)."""

    server_id: str
    uidvalidity: int | None
    uid: int | None
    size: int
    internal_date: datetime | None
    seen: bool


@dataclass
class Progress:
    messages: int = 0
    bytes: int = 0
    actions: int = 0
    uidvalidity: int | None = None
    baseline_uid: int | None = None
    delta_link: str | None = None
    more_pending: bool = False
    ledger: Ledger = field(default_factory=Ledger)
    resume: Resume | None = None  # IMAP: where the next slice goes on


class Poll:
    """One poll of one mailbox; subclasses speak the protocol in ``_session``."""

    def __init__(
        self,
        config: MailboxConfig,
        due: PollDue,
        state: State,
        sink: Sink,
        budget: Budget,
        *,
        lease_token: int | None = None,
        fence: Callable[[], bool] = lambda: True,
        stopping: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        read: Callable[[bytes], Reading] = Reading.of,
    ) -> None:
        """``read`` makes what the last record of each message carries for the store from the
        message's first piece (header summary, problems, S/MIME: ``Reading``); the benchmark
        replaces it to time the download path apart."""
        self._config = config
        self._due = due
        self._state = state
        self._sink = sink
        self._budget = budget
        self._lease_token = lease_token
        self._fence = fence
        self._stopping = stopping
        self._clock = clock
        self._read = read
        self._resume: Resume | None = None
        self._template = FetchedChunk.model_construct(
            connection_id=config.view.id,
            poll_id=due.poll_id,
            folder=config.folder,
            server_id="",
            uidvalidity=None,
            uid=None,
            size=0,
            internal_date=None,
            seen_before=False,
            chunk_index=0,
            final=True,
            sha256=None,
            lease_token=lease_token,
        )

    def _check_fence(self) -> None:
        """Before changing anything on the server: this fetcher still owns the connection."""
        if not self._fence():
            raise PollError(
                ErrorKind.LEASE_LOST,
                "this fetcher's lease on the connection has ended; another one polls it now",
            )

    def _session(self, progress: Progress) -> None:
        raise NotImplementedError

    @property
    def resume(self) -> Resume | None:
        """After ``run``: where the next slice goes on, when more is pending (IMAP)."""
        return self._resume

    def run(self) -> PollResult:
        started_at, started = utcnow(), self._clock()
        progress = Progress()
        error: PollError | None = None
        # Failures are classified inside the deadline's block: a session it cut is named so.
        with SessionDeadline(self._budget.max_session_seconds):
            try:
                self._session(progress)
            except Exception as exc:
                classified = classify(exc)  # the server's words, without the secret
                error = PollError(classified.kind, self._config.scrub(str(classified)))
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
            folder=self._config.folder,
            uidvalidity=progress.uidvalidity,
            baseline_uid=progress.baseline_uid,
            delta_link=progress.delta_link,
            messages=progress.messages,
            bytes=progress.bytes,
            cursor_from=progress.ledger.cursor_from,
            cursor_to=progress.ledger.cursor_to(),
            retried=progress.ledger.retried,
            unfetched=[
                u.model_copy(update={"reason": self._config.scrub(u.reason)})
                for u in progress.ledger.unfetched.values()
            ],
            more_pending=progress.more_pending,
            actions_applied=progress.actions,
            lease_token=self._lease_token,
            started_at=started_at,
            finished_at=utcnow(),
        )
        FETCHED_MESSAGES.inc(progress.messages)
        FETCHED_BYTES.inc(progress.bytes)
        UNFETCHED.inc(len(result.unfetched))
        self._sink.result(result)
        self._sink.flush()
        self._resume = progress.resume if error is None else None
        POLLS.labels(result.outcome.value, result.error_kind or "").inc()
        POLL_SECONDS.observe(self._clock() - started)
        return result

    def _deadline(self) -> float:
        return self._clock() + self._budget.max_seconds

    def _time_is_up(self, deadline: float, progress: Progress) -> bool:
        """Stop downloading: the service is shutting down, or the poll has used its time
        (after one message at least, so that every poll makes progress). What was published
        is kept; the rest is left for the next poll (``more_pending``)."""
        return self._stopping() or (progress.messages > 0 and self._clock() > deadline)

    def _chunk(
        self,
        identity: Identity,
        index: int,
        *,
        final: bool,
        sha256: str | None,
        reading: Reading | None = None,
    ) -> FetchedChunk:
        # A copy of the poll's template: every field comes from this code, typed; validating
        # them again, or constructing field by field, would only cost time on the bulk path.
        update: dict[str, object] = {
            "server_id": identity.server_id,
            "uidvalidity": identity.uidvalidity,
            "uid": identity.uid,
            "size": identity.size,
            "internal_date": identity.internal_date,
            "seen_before": identity.seen,
            "chunk_index": index,
            "final": final,
            "sha256": sha256,
        }
        if reading is not None:  # the last record carries what was read from the message
            update.update(headers=reading.headers, problems=reading.problems, smime=reading.smime)
        return self._template.model_copy(update=update)

    def _publish(self, identity: Identity, pieces: Iterable[bytes], progress: Progress) -> None:
        """Publish a message as its pieces come, held back by one so that the last can carry
        ``final``: at most two chunks in memory. The last record also carries what the
        fetcher read from the message (header summary, problems, S/MIME), so that the store
        need not, and for a chunked message the SHA-256 of the whole, which the store checks
        after assembly; a single record needs none (the broker's CRC covers it, and the store
        hashes it for dedup anyway)."""
        digest = None
        total, index = 0, 0
        held: bytes | None = None
        reading: Reading | None = None
        for piece in pieces:
            if held is not None:
                digest = digest or hashlib.sha256()
                digest.update(held)
                self._sink.message(self._chunk(identity, index, final=False, sha256=None), held)
                index += 1
            reading = reading.more(piece) if reading else self._read(piece)
            total += len(piece)
            held = piece
        sha256 = None
        if digest is not None:
            digest.update(held or b"")
            sha256 = digest.hexdigest()
        last = self._chunk(
            identity, index, final=True, sha256=sha256, reading=reading or self._read(b"")
        )
        self._sink.message(last, held or b"")
        self._published(identity, total, progress)

    def _publish_one(self, identity: Identity, data: bytes, progress: Progress) -> None:
        """``_publish`` of a message that is one record (its size checked by the caller)."""
        last = self._chunk(identity, 0, final=True, sha256=None, reading=self._read(data))
        self._sink.message(last, data)
        self._published(identity, len(data), progress)

    @staticmethod
    def _published(identity: Identity, size: int, progress: Progress) -> None:
        progress.messages += 1
        progress.bytes += size
        if identity.uid is not None:
            progress.ledger.published.add(identity.uid)
