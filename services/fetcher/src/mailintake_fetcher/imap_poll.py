"""One poll of one IMAP folder, within a budget.

1. connect, log in, select the folder;
2. apply the server action (\\Seen, or delete) to messages the store has committed;
3. choose the new UIDs (``selection.select_imap``: above the cursor, first-sync mode);
4. download in UID order within the budget (messages, bytes, seconds) with ``BODY.PEEK[]``:
   small messages in groups, each published as it arrives; large ones (``LARGER`` than a
   chunk) alone, fetched by byte range so memory stays bounded;
5. publish the poll's result (saying whether more is pending) and wait for the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from mailintake_fetcher.poll import Budget, Identity, Poll, Progress
from mailintake_shared.domain import AfterDownload
from mailintake_shared.mailbox.imap import ImapMailbox, MessageMeta
from mailintake_shared.mailbox.selection import select_imap


class ImapPoll(Poll):
    def _session(self, progress: Progress) -> None:
        view, folder = self._config.view, self._config.folder
        with ImapMailbox.open(self._config) as mailbox:
            info = mailbox.select(folder)
            progress.uidvalidity = info.uidvalidity
            progress.actions = self._apply_actions(mailbox, info.uidvalidity)
            cursor = self._state.cursor(view.id, folder)
            selection = select_imap(
                mailbox, info.uidvalidity, cursor, view.first_sync, view.first_sync_since
            )
            progress.baseline_uid = selection.baseline_uid
            done = self._download(mailbox, info.uidvalidity, selection.uids, progress)
            progress.more_pending = done < len(selection.uids)

    def _apply_actions(self, mailbox: ImapMailbox, uidvalidity: int) -> int:
        view = self._config.view
        pending = self._state.pending_actions(view.id, self._config.folder, uidvalidity)
        uids = [p.uid for p in pending if p.uid is not None]
        if not uids:
            return 0
        self._check_fence()
        if view.after_download is AfterDownload.DELETE:
            mailbox.delete(uids)
        else:
            mailbox.mark_seen(uids)
        self._state.actions_applied([p.message_id for p in pending])
        return len(pending)

    def _download(
        self, mailbox: ImapMailbox, uidvalidity: int, uids: list[int], progress: Progress
    ) -> int:
        """Download in UID order within the budget; return how many of ``uids`` are behind
        the poll (published, or expunged meanwhile)."""
        budget = self._budget
        deadline = self._deadline()
        uids = uids[: budget.max_messages]
        large = mailbox.larger_than(uids, budget.chunk_bytes)
        handled = 0
        for group in _groups(uids, large, budget.batch_messages):
            if self._time_is_up(deadline, progress) or self._bytes_spent(progress):
                break
            if group[0] in large:
                # Fetched by byte range: memory stays at two chunks.
                for meta in mailbox.metadata(group):
                    ranges = _ranges(mailbox, meta.uid, budget.chunk_bytes)
                    self._publish(_identity(uidvalidity, meta), ranges, progress)
                handled += 1
                continue
            last_uid: int | None = None
            for meta, body in mailbox.messages(group):  # read to the end, whatever is kept
                if last_uid is None:
                    self._publish(_identity(uidvalidity, meta), _pieces(body, budget), progress)
                    if self._bytes_spent(progress):  # the rest waits for the next poll
                        last_uid = meta.uid
            handled += len(group) if last_uid is None else group.index(last_uid) + 1
            if last_uid is not None:
                break
        return handled

    def _bytes_spent(self, progress: Progress) -> bool:
        return progress.bytes >= self._budget.max_bytes


def _identity(uidvalidity: int, meta: MessageMeta) -> Identity:
    return Identity(
        server_id=f"{uidvalidity}:{meta.uid}",
        uidvalidity=uidvalidity,
        uid=meta.uid,
        size=meta.size,
        internal_date=meta.internal_date,
        seen=meta.seen,
    )


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


def _pieces(body: bytes, budget: Budget) -> Iterable[bytes]:
    size = budget.chunk_bytes
    if len(body) <= size:
        return (body,)
    return (body[i : i + size] for i in range(0, len(body), size))


def _groups(uids: list[int], large: set[int], batch_messages: int) -> Iterator[list[int]]:
    """FETCH groups in UID order: small messages together, each large one alone."""
    group: list[int] = []
    for uid in uids:
        if uid in large:
            if group:
                yield group
                group = []
            yield [uid]
            continue
        group.append(uid)
        if len(group) >= batch_messages:
            yield group
            group = []
    if group:
        yield group
