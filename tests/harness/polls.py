"""Polls run in the test process, without Kafka or a store: a sink that keeps the records,
the database view (``poll.State``) in memory, and one way to run a poll."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailintake_fetcher.poll import Budget, PendingAction, Poll, State
from mailintake_shared.events import FetchedChunk, PollDue, PollReason, PollResult
from mailintake_shared.fetched import FetchedPart
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.selection import Cursor


@dataclass
class ListSink:
    chunks: list[FetchedPart] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)

    def message(self, chunk: FetchedChunk, data: bytes) -> None:
        self.chunks.append(FetchedPart(chunk, data))

    def result(self, result: Any) -> None:
        self.results.append(result)

    def flush(self) -> None:
        pass

    def by_server_id(self) -> dict[str, bytes]:
        """Whole messages, their chunks joined."""
        whole: dict[str, bytes] = {}
        for part in self.chunks:
            whole[part.chunk.server_id] = whole.get(part.chunk.server_id, b"") + part.data
        return whole


def poll_due(connection_id: uuid.UUID, reason: PollReason = PollReason.MANUAL) -> PollDue:
    """A poll's order, as the scheduler (or the API, for "poll now") issues it."""
    return PollDue(
        connection_id=connection_id,
        poll_id=uuid.uuid4(),
        reason=reason,
        issued_at=datetime.now(UTC),
    )


def run_poll(
    kind: type[Poll], config: MailboxConfig, state: State, budget: Budget
) -> tuple[PollResult, ListSink]:
    """One poll, as the fetcher runs it for a manual "poll now"."""
    sink = ListSink()
    result = kind(config, poll_due(config.view.id), state, sink, budget).run()
    assert sink.results == [result]
    return result, sink


@dataclass
class MemoryState:
    cursor_value: Cursor | None = None
    pending: list[PendingAction] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    known: set[str] = field(default_factory=set)
    retry: dict[str, int | None] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)

    def cursor(self, connection_id: uuid.UUID, folder: str) -> Cursor | None:
        return self.cursor_value

    def pending_actions(
        self, connection_id: uuid.UUID, folder: str, uidvalidity: int | None
    ) -> list[PendingAction]:
        return self.pending

    def actions_applied(self, message_ids: Sequence[int]) -> None:
        self.applied.extend(message_ids)

    def known_server_ids(
        self, connection_id: uuid.UUID, folder: str, among: Collection[str] | None = None
    ) -> set[str]:
        return self.known if among is None else self.known & set(among)

    def pending_downloads(self, connection_id: uuid.UUID, folder: str) -> dict[str, int | None]:
        return self.retry

    def stored_digests(self, connection_id: uuid.UUID, folder: str, uidl: str) -> dict[str, str]:
        return {k: v for k, v in self.digests.items() if k == uidl or k.startswith(uidl + " ")}
