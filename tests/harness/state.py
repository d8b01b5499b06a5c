"""The fetcher's database view (``poll.State``) in memory, for polls run without a store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailintake_fetcher.poll import PendingAction
from mailintake_shared.mailbox.selection import Cursor


@dataclass
class MemoryState:
    cursor_value: Cursor | None = None
    pending: list[PendingAction] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    known: set[str] = field(default_factory=set)

    def cursor(self, connection_id: uuid.UUID, folder: str) -> Cursor | None:
        return self.cursor_value

    def pending_actions(
        self, connection_id: uuid.UUID, folder: str, uidvalidity: int | None
    ) -> list[PendingAction]:
        return self.pending

    def actions_applied(self, message_ids: Sequence[int]) -> None:
        self.applied.extend(message_ids)

    def known_server_ids(self, connection_id: uuid.UUID, folder: str) -> set[str]:
        return self.known
