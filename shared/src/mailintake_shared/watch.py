"""The vocabulary of push, shared by the watcher (which writes a connection's watch state)
and the config API (which shows it): how a connection is watched, and how it stands."""

from __future__ import annotations

from enum import StrEnum

# A watch row not confirmed for this many heartbeats belongs to a watcher that stopped.
STALE_AFTER_HEARTBEATS = 3


class WatchMethod(StrEnum):
    IMAP_IDLE = "imap_idle"  # one IMAP session idles on the folder (RFC 2177)
    GRAPH = "graph"  # a Microsoft Graph change-notification subscription of the folder


class WatchState(StrEnum):
    WATCHING = "watching"  # the server announces new mail: polls follow within seconds
    CONNECTING = "connecting"  # the watch is being set up
    RETRYING = "retrying"  # the watch is down and reconnects with back-off (``reason``)
    WAITING = "waiting"  # another watcher holds it, or the session budget leaves no room
    UNSUPPORTED = "unsupported"  # the server cannot announce (no IDLE), or push is not set up
    OFF = "off"  # not watched by choice: push off, disabled, or POP3
    UNKNOWN = "unknown"  # no watcher reports it: none is running, or it stopped
