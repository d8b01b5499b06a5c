"""The error taxonomy of mail-server sessions: every failure becomes one ``PollError`` with the
step that failed (``ErrorKind``), wrapped at the protocol boundary."""

from __future__ import annotations

import ast
import poplib
import re
import socket
import ssl

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mailintake_shared.events import ErrorKind
from mailintake_shared.logging import redact_text
from mailintake_shared.mailbox.deadline import cut_by
from mailintake_shared.mailbox.imap_wire import ProtocolViolation, ServerClosed


class PollError(Exception):
    """A poll failed at one step; ``kind`` says which, the message says why (no secrets)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(redact_text(message)[:2000])
        self.kind = kind


class FolderMissingError(PollError):
    """The configured folder does not exist on the server; ``existing``: the folders that do,
    when the server said (the first 20 are named)."""

    def __init__(self, folder: str, existing: list[str] | None = None) -> None:
        message = f"folder {folder!r} does not exist"
        if existing:
            names = ", ".join(repr(name) for name in existing[:20])
            more = f" (the first 20 of {len(existing)})" if len(existing) > 20 else ""
            message += f"; the folders there: {names}{more}"
        super().__init__(ErrorKind.FOLDER_MISSING, message)


class StartTlsUnavailableError(PollError):
    """STARTTLS was asked for, and the server does not offer it (fail closed)."""

    def __init__(self) -> None:
        super().__init__(
            ErrorKind.STARTTLS_UNAVAILABLE,
            "the server does not offer STARTTLS; refusing to continue in plain text",
        )


def injection_refused(command: str) -> PollError:
    """An argument of ``command`` holds CR, LF or NUL: sent as it is, it would end the command
    and start another of its own (IMAP and POP3 alike)."""
    kind = ErrorKind.INTERNAL
    if command in ("LOGIN", "AUTHENTICATE", "USER", "PASS", "AUTH"):
        kind = ErrorKind.AUTHENTICATION
    return PollError(
        kind,
        f"refused to send {command}: an argument holds a line break or NUL, which would let it "
        "run a command of its own",
    )


# Response codes of a server that refuses for now, not for good: IMAP (RFC 5530) and POP3
# (RFC 2449 §8.1.2 [IN-USE], RFC 3206 [SYS/TEMP]).
_THROTTLING = ("[LIMIT]", "[UNAVAILABLE]", "[INUSE]", "[IN-USE]", "[SYS/TEMP]")
_BYTES_LITERAL = re.compile(r"""b(['"])(?:\\.|(?!\1).)*\1""")


def server_words(text: str) -> str:
    """``text`` with each Python bytes literal in it (``b'[AUTHENTICATIONFAILED] …'``, as
    library exceptions quote server answers) turned back into the server's text."""

    def plain(match: re.Match[str]) -> str:
        try:
            value = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            return match.group(0)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else match.group(0)

    return _BYTES_LITERAL.sub(plain, text)


def classify(exc: BaseException) -> PollError:
    """Map a library or socket exception onto the taxonomy, with the server's words as text."""
    if isinstance(exc, PollError):
        return exc
    if (deadline := cut_by()) is not None:  # whatever the socket's end looked like
        return PollError(
            ErrorKind.TIMEOUT,
            f"the session was cut after {deadline.seconds:g} s "
            "(MAILINTAKE_POLL_SESSION_MAX_SECONDS): the server was still answering, slowly or "
            "without end",
        )
    words = server_words(str(exc))
    if isinstance(exc, socket.gaierror):
        return PollError(ErrorKind.DNS, f"the host name does not resolve ({exc})")
    if isinstance(exc, ConnectionRefusedError):
        return PollError(ErrorKind.CONNECTION_REFUSED, "the server refused the connection")
    if isinstance(exc, TimeoutError | socket.timeout):
        return PollError(ErrorKind.TIMEOUT, "the server did not answer in time")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PollError(ErrorKind.TLS, f"certificate not trusted: {exc.verify_message}")
    if isinstance(exc, ssl.SSLError):
        return PollError(ErrorKind.TLS, f"TLS handshake failed: {exc}")
    if any(code in words.upper() for code in _THROTTLING):
        return PollError(ErrorKind.THROTTLED, f"the server asks to slow down: {words}")
    if isinstance(exc, LoginError):
        return PollError(ErrorKind.AUTHENTICATION, f"the server refused the login: {words}")
    if isinstance(exc, ServerClosed) or (
        isinstance(exc, IMAPClientAbortError) and not words.startswith("socket error")
    ):
        return PollError(ErrorKind.SERVER_ERROR, f"the server ended the session: {words}")
    if isinstance(exc, ProtocolViolation):
        return PollError(ErrorKind.SERVER_ERROR, f"the server's answer broke the protocol: {words}")
    if isinstance(exc, IMAPClientError | poplib.error_proto | OSError | EOFError):
        return PollError(ErrorKind.SERVER_ERROR, f"{type(exc).__name__}: {words}")
    return PollError(ErrorKind.INTERNAL, f"{type(exc).__name__}: {exc}")
