"""The error taxonomy of mail-server sessions: every failure becomes one ``PollError`` with the
step that failed (``ErrorKind``), wrapped at the protocol boundary."""

from __future__ import annotations

import poplib
import socket
import ssl

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mailintake_shared.events import ErrorKind
from mailintake_shared.logging import redact_text


class PollError(Exception):
    """A poll failed at one step; ``kind`` says which, the message says why (no secrets)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(redact_text(message)[:2000])
        self.kind = kind


class FolderMissingError(PollError):
    """The configured folder does not exist on the server."""

    def __init__(self, folder: str) -> None:
        super().__init__(ErrorKind.FOLDER_MISSING, f"folder {folder!r} does not exist")


class StartTlsUnavailableError(PollError):
    """STARTTLS was asked for, and the server does not offer it (fail closed)."""

    def __init__(self) -> None:
        super().__init__(
            ErrorKind.STARTTLS_UNAVAILABLE,
            "the server does not offer STARTTLS; refusing to continue in plain text",
        )


# IMAP response codes of a server that refuses for now (RFC 5530), not for good.
_THROTTLING = ("[LIMIT]", "[UNAVAILABLE]", "[INUSE]")


def classify(exc: BaseException) -> PollError:
    """Map a library or socket exception onto the taxonomy."""
    if isinstance(exc, PollError):
        return exc
    text = f"{type(exc).__name__}: {exc}"
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
    if any(code in text for code in _THROTTLING) or (
        isinstance(exc, IMAPClientAbortError) and "BYE" in text
    ):
        return PollError(ErrorKind.THROTTLED, f"the server asks to slow down: {exc}")
    if isinstance(exc, LoginError):
        return PollError(ErrorKind.AUTHENTICATION, f"the server refused the login: {exc}")
    if isinstance(exc, IMAPClientError | poplib.error_proto | OSError | EOFError):
        return PollError(ErrorKind.SERVER_ERROR, text)
    return PollError(ErrorKind.INTERNAL, text)
