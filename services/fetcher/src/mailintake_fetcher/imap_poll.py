"""One poll of one IMAP folder, within a budget.

1. connect, log in, select the folder;
2. apply the server action (\\Seen, or delete) to messages the store has committed;
3. choose the new UIDs (``selection.select_imap``: above the cursor, first-sync mode);
4. download within the budget (messages, bytes, seconds) with ``BODY.PEEK[]``, publishing each
   message (large ones in chunks, fetched by byte range so memory stays bounded);
5. publish the poll's result (saying whether more is pending) and wait for the broker.
"""

from __future__ import annotations

from collections.abc import Iterator

from mailintake_fetcher.poll import Identity, Poll, Progress
from mailintake_shared.domain import AfterDownload
from mailintake_shared.mailbox.imap import ImapMailbox, MessageMeta
from mailintake_shared.mailbox.selection import select_imap

_BATCH_BYTES = 8 * 1024 * 1024  # most bytes asked for in one FETCH of whole messages


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
        """Download within the budget; return how many of ``uids`` were published."""
        budget = self._budget
        deadline = self._deadline()
        candidates = mailbox.metadata(uids[: budget.max_messages])
        planned: list[MessageMeta] = []
        planned_bytes = 0
        for meta in candidates:
            if planned and planned_bytes + meta.size > budget.max_bytes:
                break
            planned.append(meta)
            planned_bytes += meta.size
        size = budget.chunk_bytes
        for group in _groups(planned, budget.batch_messages, size):
            if self._time_is_up(deadline, progress):
                break
            if len(group) == 1 and group[0].size > size:
                # A large message, fetched by byte range: memory stays at two chunks.
                meta = group[0]
                self._publish(
                    _identity(uidvalidity, meta), _ranges(mailbox, meta.uid, size), progress
                )
                continue
            bodies = mailbox.bodies([m.uid for m in group])
            for meta in group:
                body = bodies.get(meta.uid, b"")
                pieces = (body[i : i + size] for i in range(0, len(body), size))
                self._publish(_identity(uidvalidity, meta), pieces, progress)
        return progress.messages


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
