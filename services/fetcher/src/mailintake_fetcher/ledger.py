"""A poll's ledger: what became of every message it asked for (DESIGN.md, promise 9).

Each message asked for ends in exactly one state: published (then committed by the store),
confirmed gone from the server, or unfetched — the server holds it but did not deliver it,
with the server's own words. Unfetched messages go back to the store as *pending downloads*:
the next polls try them again, and after ``MAILINTAKE_DOWNLOAD_ATTEMPTS`` polls in a row they
are set aside in the Incoming Mail Queue. For IMAP the ledger also says how far the folder's
cursor may move: up to the last UID before the first one in none of the states, so the cursor
never passes a message that is not accounted for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailintake_shared.events import ErrorKind, Unfetched
from mailintake_shared.mailbox.errors import PollError

# A poll that meets this many messages the server does not deliver stops: the server is
# failing as a whole, and the poll's result stays small.
MAX_UNFETCHED = 100
_MAX_REASON = 500


@dataclass
class Ledger:
    """``cursor_from``: the IMAP cursor the poll started from (None for POP3 and Graph);
    ``asked``: the new UIDs above it, ascending; ``horizon``: the highest UID the listing
    covered (a first-sync baseline: UIDs up to it that the mode leaves out are accounted for
    by that rule); ``ceiling``: the highest UID the folder had handed out when the poll began
    (``UIDNEXT`` - 1), None when the server did not say."""

    cursor_from: int | None = None
    asked: list[int] = field(default_factory=list)
    horizon: int = 0
    ceiling: int | None = None
    published: set[int] = field(default_factory=set)
    gone: set[int] = field(default_factory=set)
    retried: list[str] = field(default_factory=list)
    unfetched: dict[str, Unfetched] = field(default_factory=dict)

    failed_uids: set[int] = field(default_factory=set)

    def fail(self, server_id: str, uid: int | None, reason: str) -> None:
        """Note a message the server holds and did not deliver. Raises ``PollError`` once
        ``MAX_UNFETCHED`` messages of the poll have failed."""
        reason = reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"
        self.unfetched[server_id] = Unfetched(server_id=server_id, uid=uid, reason=reason)
        if uid is not None:
            self.failed_uids.add(uid)
        if len(self.unfetched) >= MAX_UNFETCHED:
            raise PollError(
                ErrorKind.SERVER_ERROR,
                f"the server did not deliver {len(self.unfetched)} messages in this poll; "
                f"the last: {reason}",
            )

    def accounted(self, uid: int) -> bool:
        return uid in self.published or uid in self.gone or uid in self.failed_uids

    def cursor_to(self) -> int | None:
        """The highest UID up to which every UID asked for is accounted for (``cursor_from``
        when the first is not); None without a cursor (POP3, Graph).

        A UID found gone passes the cursor only up to the highest UID the server showed it
        holds (the ceiling, or a message it delivered or kept): a server that lists a UID it
        never had (a lie, a corrupt index) would otherwise move the cursor over the UIDs it
        hands out next, and their mail would never be asked for."""
        if self.cursor_from is None:
            return None
        shown = max(self.ceiling or 0, max(self.published | self.failed_uids, default=0))
        position = self.cursor_from
        for uid in self.asked:
            if uid > self.horizon:  # past the baseline: what the mode left out is accounted
                position = max(position, self.horizon)
            if not self.accounted(uid) or (uid in self.gone and uid > shown):
                return position
            position = uid
        return max(position, self.horizon)
