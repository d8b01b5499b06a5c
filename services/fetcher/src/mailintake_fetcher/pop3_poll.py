"""One poll of one POP3 mailbox, within a budget.

1. connect (the time-out applies to every step), log in, list the messages by UIDL;
2. ``delete``: DELE the messages the store has committed; ``mark_seen`` means keep on server
   (nothing to do there);
3. choose the messages whose UIDL is not stored (``selection.select_pop3``) and RETR them
   within the budget, streaming large ones in chunks;
4. QUIT, which is when the server applies the deletions: only then are the actions recorded
   as applied. A session that breaks before QUIT deletes nothing, and the next poll tries again.

Keep-on-server costs a full UIDL listing and a comparison with every stored UIDL on each poll:
the work grows with the mailbox, not with the new mail (see the README).
"""

from __future__ import annotations

from mailintake_fetcher.poll import Identity, PendingAction, Poll, Progress
from mailintake_shared.domain import AfterDownload
from mailintake_shared.mailbox.pop3 import Pop3Mailbox, Pop3Message
from mailintake_shared.mailbox.selection import select_pop3


class Pop3Poll(Poll):
    def _session(self, progress: Progress) -> None:
        view, folder = self._config.view, self._config.folder
        with Pop3Mailbox.open(self._config) as mailbox:
            listing = mailbox.messages()
            pending = self._state.pending_actions(view.id, folder, None)
            if view.after_download is AfterDownload.DELETE and pending:
                self._mark_deleted(mailbox, listing, pending)
            new = select_pop3(listing, self._state.known_server_ids(view.id, folder))
            done = self._download(mailbox, new, progress)
            progress.more_pending = done < len(new)
            if pending:
                self._check_fence()  # the deletions take effect at QUIT: not for a stale owner
            mailbox.commit()
        if pending:
            # After QUIT: the deletions happened (or, keep-on-server, there was nothing to do).
            self._state.actions_applied([p.message_id for p in pending])
            progress.actions = len(pending)

    @staticmethod
    def _mark_deleted(
        mailbox: Pop3Mailbox, listing: list[Pop3Message], pending: list[PendingAction]
    ) -> None:
        """DELE what the store committed (a message no longer listed is already gone)."""
        numbers = {m.uidl: m.number for m in listing}
        mailbox.delete([numbers[p.server_id] for p in pending if p.server_id in numbers])

    def _download(self, mailbox: Pop3Mailbox, new: list[Pop3Message], progress: Progress) -> int:
        budget = self._budget
        deadline = self._deadline()
        for message in new[: budget.max_messages]:
            if self._time_is_up(deadline, progress) or (
                progress.messages and progress.bytes + message.size > budget.max_bytes
            ):
                break
            identity = Identity(
                server_id=message.uidl,
                uidvalidity=None,
                uid=None,
                size=message.size,
                internal_date=None,
                seen=False,
            )
            self._publish(identity, mailbox.retrieve(message.number, budget.chunk_bytes), progress)
        return progress.messages
