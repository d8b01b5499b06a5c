"""One poll of one IMAP folder, within a budget.

1. connect, log in, select the folder (``EXAMINE``, read-only, for ``after_download: keep``);
2. apply the server action (\\Seen, or delete; nothing for ``keep``) to messages the store
   has committed;
3. choose the new UIDs (``selection.select_imap``: above the cursor, first-sync mode);
4. try again the messages earlier polls could not download (the store's pending downloads),
   each alone, by byte range;
5. download the new ones in UID order within the budget (messages, bytes, seconds) with
   ``BODY.PEEK[]``: small messages in groups, each published as it arrives; large ones
   (``LARGER`` than a chunk) alone, fetched by byte range so memory stays bounded. A message
   a group's answer did not deliver is looked for (``UID FETCH … (UID)``): gone, or fetched
   again alone; what still fails is noted in the ledger with the server's words;
6. publish the poll's result — with its ledger, which says how far the cursor may move — and
   wait for the broker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import chain

from mailintake_fetcher.ledger import Ledger
from mailintake_fetcher.poll import (
    Budget,
    Identity,
    MessageTooLargeError,
    Poll,
    Progress,
    capped,
)
from mailintake_shared.domain import AfterDownload
from mailintake_shared.events import ErrorKind, Resume
from mailintake_shared.mailbox.errors import PollError
from mailintake_shared.mailbox.imap import (
    MIN_BULK_LITERAL,
    ImapMailbox,
    MessageMeta,
)
from mailintake_shared.mailbox.selection import Cursor, select_imap


class ImapPoll(Poll):
    def _session(self, progress: Progress) -> None:
        view, folder = self._config.view, self._config.folder
        with ImapMailbox.open(self._config) as mailbox:
            info = mailbox.select(folder, readonly=view.after_download is AfterDownload.KEEP)
            progress.uidvalidity = info.uidvalidity
            cursor = self._resumed(self._state.cursor(view.id, folder), info.uidvalidity)
            retry = self._retries(info.uidvalidity)
            progress.actions = self._apply_actions(mailbox, info.uidvalidity, cursor, retry)
            selection = select_imap(
                mailbox, info.uidvalidity, cursor, view.first_sync, view.first_sync_since
            )
            progress.baseline_uid = selection.baseline_uid
            ledger = progress.ledger = Ledger(
                cursor_from=selection.start,
                asked=selection.uids,
                horizon=selection.horizon,
                ceiling=info.uidnext - 1 if info.uidnext else None,
            )
            deadline = self._deadline()
            for uid in sorted(retry)[: self._budget.max_messages]:
                if self._time_is_up(deadline, progress):
                    break
                ledger.retried.append(_server_id(info.uidvalidity, uid))
                self._fetch_alone(mailbox, info.uidvalidity, uid, progress, "")
            self._download(mailbox, info.uidvalidity, progress, deadline)
            progress.more_pending = not all(ledger.accounted(uid) for uid in ledger.asked)
            last = ledger.cursor_to()
            if progress.more_pending and last is not None:
                baseline = selection.baseline_uid or (cursor.baseline_uid if cursor else None)
                progress.resume = Resume(
                    uidvalidity=info.uidvalidity, last_uid=last, baseline_uid=baseline
                )

    def _resumed(self, cursor: Cursor | None, uidvalidity: int) -> Cursor | None:
        """The stored cursor, or where the previous slice of this poll left off when the
        store has not committed that slice yet (a continuation issued at once). A gap the
        store then finds behind it keeps its cursor where it was (``cursor_from``)."""
        resume = self._due.resume
        if resume is None or resume.uidvalidity != uidvalidity:
            return cursor
        if cursor is not None and cursor.uidvalidity == uidvalidity:
            if cursor.last_uid >= resume.last_uid:
                return cursor
            return Cursor(uidvalidity, resume.last_uid, cursor.baseline_uid, cursor.delta_link)
        return Cursor(uidvalidity, resume.last_uid, resume.baseline_uid)

    def _retries(self, uidvalidity: int) -> set[int]:
        """The UIDs of this folder epoch that earlier polls could not download."""
        pending = self._state.pending_downloads(self._config.view.id, self._config.folder)
        prefix = f"{uidvalidity}:"
        return {uid for server_id, uid in pending.items() if uid and server_id.startswith(prefix)}

    def _apply_actions(
        self, mailbox: ImapMailbox, uidvalidity: int, cursor: Cursor | None, retry: set[int]
    ) -> int:
        view = self._config.view
        pending = self._state.pending_actions(view.id, self._config.folder, uidvalidity)
        uids = [p.uid for p in pending if p.uid is not None]
        if not uids:
            return 0
        if view.after_download is AfterDownload.KEEP:  # nothing to do on the server
            self._state.actions_applied([p.message_id for p in pending])
            return len(pending)
        self._check_fence()
        if view.after_download is AfterDownload.DELETE:
            last = cursor.last_uid if cursor and cursor.uidvalidity == uidvalidity else 0

            def accounted(others: set[int]) -> bool:
                # Another client's \Deleted messages: an EXPUNGE may take them only when they
                # are behind the cursor (stored, or left out by the first-sync rule) and not
                # waiting to be downloaded again.
                return all(uid <= last and uid not in retry for uid in others)

            if not mailbox.delete(uids, accounted):
                return 0  # flagged, not expunged yet: not reported as applied
        else:
            mailbox.mark_seen(uids)
        self._state.actions_applied([p.message_id for p in pending])
        return len(pending)

    def _download(
        self, mailbox: ImapMailbox, uidvalidity: int, progress: Progress, deadline: float
    ) -> None:
        """Download the new UIDs in order within the budget, noting each one's fate."""
        budget, ledger = self._budget, progress.ledger
        room = max(0, budget.max_messages - len(ledger.retried))
        uids = ledger.asked[:room]
        large = mailbox.larger_than(uids, budget.chunk_bytes)
        for group in _groups(uids, large, budget.batch_messages):
            if self._time_is_up(deadline, progress) or self._bytes_spent(progress):
                return
            if group[0] in large:
                self._fetch_alone(mailbox, uidvalidity, group[0], progress, "")
            elif not self._fetch_group(mailbox, uidvalidity, group, progress):
                return

    def _fetch_group(
        self, mailbox: ImapMailbox, uidvalidity: int, group: list[int], progress: Progress
    ) -> bool:
        """One bulk FETCH; False when the byte budget stopped it (what was delivered and not
        published waits for the next poll)."""
        ledger = progress.ledger
        command = mailbox.fetch(group, max(MIN_BULK_LITERAL, 16 * self._budget.chunk_bytes))
        spent = False
        try:
            for item in command:  # read to the tagged reply, whatever is kept
                if not spent and item.body is not None:
                    self._publish_whole(uidvalidity, item.meta, item.body, progress)
                    spent = self._bytes_spent(progress)
        except PollError as exc:
            # The session is gone. The first message asked for and not delivered is charged
            # with it: a message that breaks the server every time is set aside after the
            # attempts allowed, and the folder moves on.
            first = next((u for u in group if u not in command.report.delivered), None)
            if first is not None and not spent:
                ledger.fail(
                    _server_id(uidvalidity, first),
                    first,
                    f"the session ended during its download: {exc}",
                )
            raise
        if spent:
            return False
        report = command.report
        missing = [uid for uid in group if uid not in report.delivered]
        if not missing:
            return True
        present = mailbox.present(missing)
        ledger.gone.update(uid for uid in missing if uid not in present)
        for uid in missing:
            if uid in present:  # fetched again alone, by byte range
                why = report.problems.get(uid, "the server's answer left it out")
                said = report.server_said
                self._fetch_alone(
                    mailbox,
                    uidvalidity,
                    uid,
                    progress,
                    f"{why}; the server said: {said}" if said else why,
                )
        return True

    def _publish_whole(
        self, uidvalidity: int, meta: MessageMeta, body: bytes, progress: Progress
    ) -> None:
        """A message received whole: published, or noted as too large."""
        identity = _identity(uidvalidity, meta)
        limit = self._budget.max_message_bytes
        if len(body) <= min(limit, self._budget.chunk_bytes):  # one record: nearly every message
            self._publish_one(identity, body, progress)
            return
        try:
            self._publish(identity, capped(_pieces(body, self._budget), len(body), limit), progress)
        except MessageTooLargeError as exc:
            progress.ledger.fail(identity.server_id, meta.uid, str(exc))

    def _fetch_alone(
        self, mailbox: ImapMailbox, uidvalidity: int, uid: int, progress: Progress, why: str
    ) -> None:
        """One message by byte range (memory stays at two chunks), or its fate noted: gone,
        or unfetched with what the server answered (after ``why``, an earlier answer). A
        session that ends meanwhile is charged to this message, then raised."""
        server_id = _server_id(uidvalidity, uid)
        try:
            self._fetch_ranges(mailbox, uidvalidity, uid, progress, why)
        except PollError as exc:
            if server_id not in progress.ledger.unfetched:
                progress.ledger.fail(
                    server_id, uid, f"the session ended during its download: {exc}"
                )
            raise

    def _fetch_ranges(
        self, mailbox: ImapMailbox, uidvalidity: int, uid: int, progress: Progress, why: str
    ) -> None:
        ledger, size = progress.ledger, self._budget.chunk_bytes
        server_id = _server_id(uidvalidity, uid)
        metas = mailbox.metadata([uid])
        meta = metas[0] if metas else MessageMeta(uid, 0, None, False)
        limit = self._budget.max_message_bytes
        if meta.size > limit:  # not one byte of it
            ledger.fail(server_id, uid, str(MessageTooLargeError(meta.size, limit, read=0)))
            return
        first, problem = mailbox.body_range(uid, 0, size)
        if first is not None and not first and meta.size > 0:
            first, problem = None, f"the server sent no bytes for a message of {meta.size} bytes"
        if first is None:
            if uid not in mailbox.present([uid]):
                ledger.gone.add(uid)
            else:
                ledger.fail(server_id, uid, f"{why}; fetched alone: {problem}" if why else problem)
            return
        if len(first) > size:  # a server that ignores the partial range: the whole message
            pieces: Iterable[bytes] = _pieces(first, self._budget)
        else:
            pieces = chain((first,), _ranges(mailbox, uid, size, len(first)))
        try:
            self._publish(_identity(uidvalidity, meta), capped(pieces, 0, limit), progress)
        except MessageTooLargeError as exc:  # no more ranges asked for: the session is in step
            ledger.fail(server_id, uid, str(exc))
        except _RangeError as exc:
            ledger.fail(server_id, uid, str(exc))
            raise PollError(exc.kind, f"message UID {uid}: {exc}") from exc

    def _bytes_spent(self, progress: Progress) -> bool:
        return progress.bytes >= self._budget.max_bytes


class _RangeError(PollError):
    """A later byte range of a message did not come: its chunks published so far wait in the
    store's staging area for a complete download."""


def _server_id(uidvalidity: int, uid: int) -> str:
    return f"{uidvalidity}:{uid}"


def _identity(uidvalidity: int, meta: MessageMeta) -> Identity:
    # Positional: one is made per message on the bulk path, and keywords cost twice as much.
    uid, size, internal_date, seen = meta
    return Identity(f"{uidvalidity}:{uid}", uidvalidity, uid, size, internal_date, seen)


def _ranges(mailbox: ImapMailbox, uid: int, size: int, first: int) -> Iterator[bytes]:
    """The pieces of a message after its first (``first`` bytes long), one
    ``BODY.PEEK[]<offset.size>`` each, until a short piece (the server's RFC822.SIZE is not
    trusted to say where the end is). Raises ``_RangeError`` when a range is not answered."""
    offset = first
    if first < size:  # the first piece was short: it was the whole message
        return
    while True:
        piece, problem = mailbox.body_range(uid, offset, size)
        if piece is None:
            raise _RangeError(ErrorKind.SERVER_ERROR, f"bytes from {offset}: {problem}")
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
