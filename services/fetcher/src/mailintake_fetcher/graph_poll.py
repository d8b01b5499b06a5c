"""One poll of one mailbox folder over Microsoft Graph, within a budget.

1. apply the server action (``isRead``, or delete; nothing for ``keep``) to messages the store
   has committed;
2. try again the messages earlier polls could not download (the store's pending downloads),
   by their immutable id;
3. run the folder's delta query from the stored delta link (everything, the first time);
4. download each new message's MIME (``/$value``, streamed in chunks), skipping ids already
   stored — the delta also reports messages that only changed, such as those just marked read.
   A message Graph refuses is noted in the poll's ledger (gone when Graph says it no longer
   exists) and the others go on;
5. hand the cursor over in the poll's result: the delta link when the round is complete, or
   the link of the page it stopped in (the budget), which the next poll resumes.

The store saves the cursor after the poll's messages are committed, so a crash costs a
second download of some messages (recognised by their immutable ids), never a lost one.
"""

from __future__ import annotations

from datetime import datetime

from mailintake_fetcher.poll import Identity, Poll, Progress
from mailintake_shared.domain import AfterDownload
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.errors import PollError
from mailintake_shared.mailbox.graph import DeltaItem, GraphMailbox


class GraphPoll(Poll):
    def _session(self, progress: Progress) -> None:
        view, folder = self._config.view, self._config.folder
        deadline = self._deadline()
        with GraphMailbox.open(self._config, deadline=deadline) as mailbox:
            pending = self._state.pending_actions(view.id, folder, None)
            keep = view.after_download is AfterDownload.KEEP
            if pending and not keep:
                self._check_fence()
            for action in [] if keep else pending:
                if view.after_download is AfterDownload.DELETE:
                    mailbox.delete(action.server_id)
                else:
                    mailbox.mark_read(action.server_id)
            if pending:
                self._state.actions_applied([p.message_id for p in pending])
                progress.actions = len(pending)
            for server_id in sorted(self._state.pending_downloads(view.id, folder)):
                if self._time_is_up(deadline, progress):
                    break
                progress.ledger.retried.append(server_id)
                self._download(mailbox, DeltaItem(server_id, False, None, False), progress)
            cursor = self._state.cursor(view.id, folder)
            budget = self._budget
            for page in mailbox.delta(cursor.delta_link if cursor else None):
                new = [item for item in page.items if not item.removed]
                known = self._state.known_server_ids(view.id, folder, [i.id for i in new])
                for item in new:
                    if item.id in known or item.id in progress.ledger.retried:
                        continue
                    if self._time_is_up(deadline, progress) or (
                        progress.messages
                        and (
                            progress.messages >= budget.max_messages
                            or progress.bytes >= budget.max_bytes
                        )
                    ):
                        progress.delta_link, progress.more_pending = page.url, True
                        return
                    self._download(mailbox, item, progress)
                progress.delta_link = page.delta_link or page.next_link

    def _download(self, mailbox: GraphMailbox, item: DeltaItem, progress: Progress) -> None:
        """Publish one message, or note why Graph did not give it (the session goes on)."""
        try:
            self._publish(
                _identity(item), mailbox.mime(item.id, self._budget.chunk_bytes), progress
            )
        except PollError as exc:
            if exc.kind is not ErrorKind.SERVER_ERROR:
                raise  # throttled, signed out, timed out: the whole poll stops
            if "ErrorItemNotFound" not in str(exc):
                progress.ledger.fail(item.id, None, str(exc))


def _identity(item: DeltaItem) -> Identity:
    received = datetime.fromisoformat(item.received) if item.received else None
    return Identity(
        server_id=item.id,
        uidvalidity=None,
        uid=None,
        size=0,  # Graph's delta does not say; the store measures the MIME
        internal_date=received,
        seen=item.is_read,
    )
