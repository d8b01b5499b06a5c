"""The delete action's choice between UID EXPUNGE and EXPUNGE, on a recording client.

A plain EXPUNGE removes every \\Deleted message, so without UIDPLUS it runs only when every
other flagged message is accounted for; otherwise the action is not reported as applied.
(The scripted server's tests run the same on the wire.)
"""

from __future__ import annotations

from typing import Any

from mailintake_shared.mailbox.imap import DELETED, ImapMailbox


class RecordingClient:
    def __init__(self, flagged: list[int]) -> None:
        self.flagged = flagged
        self.calls: list[tuple[str, Any]] = []

    def add_flags(self, uids: list[int], flags: list[bytes], silent: bool) -> None:
        self.calls.append(("add_flags", (uids, flags)))
        self.flagged = sorted(set(self.flagged) | set(uids))

    def uid_expunge(self, uids: list[int]) -> None:
        self.calls.append(("uid_expunge", uids))

    def expunge(self) -> None:
        self.calls.append(("expunge", None))

    def search(self, criteria: list[str]) -> list[int]:
        assert criteria == ["DELETED"]
        return self.flagged


def mailbox(client: RecordingClient, capabilities: tuple[bytes, ...]) -> ImapMailbox:
    box = ImapMailbox(client)
    box._capabilities = capabilities
    return box


def never(others: set[int]) -> bool:
    raise AssertionError("asked whether other flagged messages may go")


def test_uidplus_expunges_exactly_the_committed_uids() -> None:
    client = RecordingClient(flagged=[9])
    assert mailbox(client, (b"UIDPLUS",)).delete([1, 2], never) is True
    assert client.calls == [("add_flags", ([1, 2], [DELETED])), ("uid_expunge", [1, 2])]


def test_without_uidplus_expunge_runs_only_when_the_other_flagged_ones_are_accounted() -> None:
    clean = RecordingClient(flagged=[])
    assert mailbox(clean, ()).delete([1, 2], never) is True
    assert clean.calls[-1] == ("expunge", None)

    asked: list[set[int]] = []

    def accounted(others: set[int]) -> bool:
        asked.append(others)
        return True

    stored = RecordingClient(flagged=[7])  # flagged by someone else, stored by us already
    assert mailbox(stored, ()).delete([1, 2], accounted) is True
    assert asked == [{7}]
    assert stored.calls[-1] == ("expunge", None)

    other = RecordingClient(flagged=[7])  # flagged by someone else, not stored yet
    assert mailbox(other, ()).delete([1, 2], lambda o: False) is False
    assert [name for name, _ in other.calls] == ["add_flags"]  # left flagged, not expunged


def test_large_action_lists_are_split_into_short_commands() -> None:
    client = RecordingClient(flagged=[])
    mailbox(client, (b"UIDPLUS",)).mark_seen(list(range(1, 1202)))
    sizes = [len(args[0]) for name, args in client.calls if name == "add_flags"]
    assert sizes == [500, 500, 201]
