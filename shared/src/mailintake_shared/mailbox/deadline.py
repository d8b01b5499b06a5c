"""The longest a poll's session with a mail server may last, whatever the server sends.

A poll's budget of seconds is checked between messages, and a socket's time-out only between
two bytes: a server that answers one byte at a time, or never ends its answer, would hold the
poll — and its fetcher, with every connection behind it — as long as it liked. Inside
``with SessionDeadline(seconds)``, each socket the session uses is registered (``track``) and
shut down when the time is up: the read under way ends at once, and ``errors.classify`` says
what happened (``cut_by``) instead of blaming the server for closing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from contextvars import ContextVar, Token
from typing import Self, TypeVar

S = TypeVar("S", bound=socket.socket)
_CURRENT: ContextVar[SessionDeadline | None] = ContextVar("session_deadline", default=None)


class SessionDeadline:
    """Shuts down, ``seconds`` after ``with`` begins, every socket tracked in its block (in
    the thread that entered it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._token: Token[SessionDeadline | None] | None = None

    def __enter__(self) -> Self:
        self._token = _CURRENT.set(self)
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()
        if self._token is not None:
            _CURRENT.reset(self._token)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            passed = self.passed
        if passed:
            _shut(sock)

    def _cut(self) -> None:
        with self._lock:
            self.passed = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def track(sock: S) -> S:
    """Register ``sock`` (a plain socket, or the TLS socket that replaced it) with the
    deadline of the block it is used in, if any; returns it."""
    deadline = _CURRENT.get()
    if deadline is not None:
        deadline._track(sock)
    return sock


def cut_by() -> SessionDeadline | None:
    """The deadline of the current block, if it has passed."""
    deadline = _CURRENT.get()
    return deadline if deadline is not None and deadline.passed else None


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, on TLS sockets too (their own would drop the TLS state
    # under the thread reading); a socket detached into a TLS one, or closed, has no fd left.
    if sock.fileno() != -1:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
