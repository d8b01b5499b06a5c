"""One poll of one POP3 mailbox, within a budget.

1. connect (the time-out applies to every step), log in, list the messages by UIDL;
2. ``delete``: DELE the messages the store has committed; ``mark_seen`` and ``keep`` leave
   the mailbox as it is;
3. choose the messages whose UIDL is not stored (``selection.select_pop3``), those earlier
   polls could not download first, and RETR them within the budget, streaming large ones in
   chunks. A message the server refuses (``-ERR``) is noted in the ledger and the others go on;
4. QUIT, which is when the server applies the deletions: only then are the actions recorded
   as applied. A session that breaks before QUIT deletes nothing, and the next poll tries again.

**One UIDL, several messages.** RFC 1939 makes a UIDL unique, but migrated mailboxes reuse
them (a copied ``X-UIDL`` header; Dovecot's ``pop3_reuse_xuidl``). Messages listed under the
same UIDL are told apart by content: each is stored under its UIDL and the first 16 hex digits
of its SHA-256 (``selection.content_key``), and one is deleted only when its content is what
the store committed.

Keep-on-server costs a full UIDL listing and a comparison with every stored UIDL on each poll:
the work grows with the mailbox, not with the new mail (see the README).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable

from mailintake_fetcher.poll import (
    Identity,
    MessageTooLargeError,
    PendingAction,
    Poll,
    Progress,
    capped,
)
from mailintake_shared.domain import AfterDownload
from mailintake_shared.mailbox.errors import PollError
from mailintake_shared.mailbox.pop3 import Pop3Mailbox, Pop3Message, Pop3RetrieveError
from mailintake_shared.mailbox.selection import content_key, select_pop3, uidl_of


class Pop3Poll(Poll):
    def _session(self, progress: Progress) -> None:
        view, folder = self._config.view, self._config.folder
        with Pop3Mailbox.open(self._config) as mailbox:
            listing = mailbox.messages()
            pending = self._state.pending_actions(view.id, folder, None)
            if view.after_download is AfterDownload.DELETE and pending:
                self._mark_deleted(mailbox, listing, pending)
            known = self._state.known_server_ids(view.id, folder)
            retry = set(self._state.pending_downloads(view.id, folder))
            listed = {uidl_of(server_id) for server_id in retry} & {m.uidl for m in listing}
            # Retries that are no longer listed are gone: they leave the pending downloads.
            progress.ledger.retried.extend(s for s in retry if uidl_of(s) not in listed)
            new = select_pop3(listing, known)
            new.sort(key=lambda m: m.uidl not in listed)  # earlier failures first
            self._download(mailbox, listing, new, retry, progress)
            if pending:
                self._check_fence()  # the deletions take effect at QUIT: not for a stale owner
            mailbox.commit()
        if pending:
            # After QUIT: the deletions happened (or, keep-on-server, there was nothing to do).
            self._state.actions_applied([p.message_id for p in pending])
            progress.actions = len(pending)

    def _mark_deleted(
        self, mailbox: Pop3Mailbox, listing: list[Pop3Message], pending: list[PendingAction]
    ) -> None:
        """DELE what the store committed (a message no longer listed is already gone).

        A UIDL listed once, for a message of the stored size, is deleted by number. Where the
        UIDL is listed several times (or the stored message was one of several), each
        candidate is read again and only the one whose SHA-256 is the stored one is deleted.
        """
        by_uidl: dict[str, list[Pop3Message]] = defaultdict(list)
        for message in listing:
            by_uidl[message.uidl].append(message)
        numbers: list[int] = []
        for action in pending:
            candidates = by_uidl.get(uidl_of(action.server_id), [])
            if not candidates:
                continue
            plain = len(candidates) == 1 and action.server_id == candidates[0].uidl
            if plain and action.size in (None, candidates[0].size):
                numbers.append(candidates[0].number)
                continue
            for candidate in candidates:
                digest = _digest(mailbox.retrieve(candidate.number, self._budget.chunk_bytes))
                if digest == action.sha256:
                    numbers.append(candidate.number)
                    break
        mailbox.delete(sorted(set(numbers)))

    def _download(
        self,
        mailbox: Pop3Mailbox,
        listing: list[Pop3Message],
        new: list[Pop3Message],
        retry: set[str],
        progress: Progress,
    ) -> None:
        budget, ledger = self._budget, progress.ledger
        deadline = self._deadline()
        counts: dict[str, int] = defaultdict(int)
        for message in listing:
            counts[message.uidl] += 1
        retried = {uidl_of(s): s for s in retry}
        done = 0
        for message in new[: budget.max_messages]:
            if self._time_is_up(deadline, progress) or (
                progress.messages and progress.bytes + message.size > budget.max_bytes
            ):
                break
            if message.uidl in retried:
                ledger.retried.append(retried.pop(message.uidl))
            try:
                if counts[message.uidl] > 1:
                    self._publish_by_content(mailbox, message, progress)
                else:
                    pieces = mailbox.retrieve(message.number, budget.chunk_bytes)
                    limit = budget.max_message_bytes
                    self._publish(
                        _identity(message, message.uidl),
                        capped(pieces, message.size, limit),
                        progress,
                    )
            except Pop3RetrieveError as exc:
                ledger.fail(message.uidl, None, str(exc))
            except MessageTooLargeError as exc:
                ledger.fail(message.uidl, None, str(exc))
                if exc.read:
                    raise  # the rest of it is still coming: the session cannot go on
            except PollError as exc:
                ledger.fail(message.uidl, None, f"the session ended during its download: {exc}")
                raise
            done += 1
        progress.more_pending = done < len(new)

    def _publish_by_content(
        self, mailbox: Pop3Mailbox, message: Pop3Message, progress: Progress
    ) -> None:
        """A message whose UIDL is not its own: read whole, keyed by content, and published
        unless that content is stored under the UIDL already."""
        size = self._budget.chunk_bytes
        pieces = mailbox.retrieve(message.number, size)
        raw = b"".join(capped(pieces, message.size, self._budget.max_message_bytes))
        digest = hashlib.sha256(raw).hexdigest()
        view, folder = self._config.view, self._config.folder
        stored = self._state.stored_digests(view.id, folder, message.uidl)
        if digest in stored.values():
            return  # this one is stored already
        key = content_key(message.uidl, digest)
        whole = [raw[i : i + size] for i in range(0, len(raw), size)] or [b""]
        self._publish(_identity(message, key), whole, progress)


def _digest(pieces: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


def _identity(message: Pop3Message, server_id: str) -> Identity:
    return Identity(
        server_id=server_id,
        uidvalidity=None,
        uid=None,
        size=message.size,
        internal_date=None,
        seen=False,
    )
