"""Errors of opening a session, said with what to change: the host that does not resolve, the
host and port that refused, and the encryption that does not match what the port speaks.

A port that speaks plain text answers a TLS handshake with its greeting, which OpenSSL reads as
``WRONG_VERSION_NUMBER``. A port that speaks TLS from the first byte (993, 995) sends nothing to
a client that waits for a greeting in plain text: that client times out, and a TLS handshake
with the port then tells the two cases apart. The handshake gets a tenth of the time-out
(0.25–3 s; a TLS server answers at once), so a silent server still fails after about its
time-out.
"""

from __future__ import annotations

import socket
import ssl

from mailintake_shared.domain import Encryption
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.errors import PollError, classify

_TLS_PORTS = "IMAP 993, POP3 995"
_PROBE_TIMEOUT_S = (0.25, 3.0)


def opening_failed(exc: BaseException, config: MailboxConfig) -> PollError:
    """``classify(exc)``, with what to change when the cause is the host, port or encryption."""
    host, port, timeout = config.address
    where = f"{host} port {port}"
    encryption = config.view.encryption
    if isinstance(exc, socket.gaierror):
        return PollError(ErrorKind.DNS, f"{host} does not resolve ({exc}); check the host name")
    if isinstance(exc, ConnectionRefusedError):
        return PollError(
            ErrorKind.CONNECTION_REFUSED,
            f"{where} refused the connection: nothing listens there; check the host and port",
        )
    if isinstance(exc, ssl.SSLError) and exc.reason == "WRONG_VERSION_NUMBER":
        return PollError(
            ErrorKind.TLS,
            f"TLS handshake failed: {where} answers in plain text, not TLS; use encryption "
            f"`starttls` (or `none`) for this port, or the port of implicit TLS ({_TLS_PORTS})",
        )
    if (
        isinstance(exc, TimeoutError)
        and encryption is not Encryption.SSL
        and speaks_tls(config, max(_PROBE_TIMEOUT_S[0], min(timeout / 10, _PROBE_TIMEOUT_S[1])))
    ):
        return PollError(
            ErrorKind.TLS,
            f"no greeting from {where} in {timeout:g} s: the port speaks TLS from the first "
            f"byte; use encryption `ssl` for it, or the port of `{encryption.value}` "
            "(IMAP 143, POP3 110)",
        )
    return classify(exc)


def speaks_tls(config: MailboxConfig, timeout: float) -> bool:
    """Whether a TLS handshake with the connection's port completes (certificates unchecked:
    only the protocol is asked about, and no data is sent)."""
    host, port, _ = config.address
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            config.network.connect(host, port, timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False
