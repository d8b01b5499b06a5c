"""What a session needs to know about its connection: the public view plus the secret."""

from __future__ import annotations

import base64
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from pydantic import SecretStr

from mailintake_shared.domain import ConnectionView, Encryption
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.errors import PollError
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.tls import client_context

TokenSource = Callable[[bool], str]  # refresh? → an OAuth2 access token


@dataclass(frozen=True)
class MailboxConfig:
    view: ConnectionView
    password: SecretStr | None
    access_token: TokenSource | None = None  # OAuth2 connections
    graph: tuple[str, Any] | None = None  # Graph connections: the endpoint and an HTTP session
    network: NetworkPolicy = field(default_factory=NetworkPolicy)  # which addresses it may reach

    @property
    def folder(self) -> str:
        return self.view.folder or "INBOX"

    def login(self, client: IMAPClient) -> None:
        """A password by SASL ``AUTHENTICATE PLAIN`` (RFC 4616, UTF-8) where the server offers
        it, else ``LOGIN`` (ASCII only); or XOAUTH2 with an access token: a token the server
        refuses (revoked, or expired early) is refreshed once and tried again.

        A shared mailbox: with a password, SASL PLAIN with the shared mailbox as the
        authorization identity (sign in as the account, act as the mailbox); with XOAUTH2, the
        shared mailbox as the user and the account's token (Microsoft's form).

        Raises ``PollError`` (authentication) for a password ``LOGIN`` cannot carry.
        """
        view, shared = self.view, self.view.shared_mailbox
        if self.access_token is None:
            if shared or client.has_capability("AUTH=PLAIN"):
                client.plain_login(view.username, self.secret, authorization_identity=shared)
            elif not (view.username + self.secret).isascii():
                raise PollError(
                    ErrorKind.AUTHENTICATION,
                    "the server does not offer AUTHENTICATE PLAIN, and its LOGIN command carries "
                    "only ASCII: this user name or password cannot be sent to it",
                )
            else:
                client.login(view.username, self.secret)
            return
        user = shared or view.username
        try:
            client.oauth2_login(user, self.access_token(False))
        except IMAPClientError:
            client.oauth2_login(user, self.access_token(True))

    @property
    def secret(self) -> str:
        return self.password.get_secret_value() if self.password else ""

    def scrub(self, text: str) -> str:
        """``text`` without the connection's secret in any form a server could quote back: as
        it is, quoted for an IMAP command (RFC 3501 §4.3), and base64-encoded alone or in a
        SASL PLAIN response (RFC 4616). Server text passes through here before it leaves the
        mail client (a poll's result, a test's answer, the logs); its NULs too, which no
        database text can hold (they would stop the store on the poll's result)."""
        text = scrub_secret(text, self.secret, self.view.username, self.view.shared_mailbox)
        return text.replace("\x00", "\ufffd")

    @property
    def address(self) -> tuple[str, int, float]:
        """Host, port and the time-out (seconds) every step of a session gets."""
        view = self.view
        return view.host or "", view.port or 0, view.timeout_ms / 1000

    def tls_context(self) -> ssl.SSLContext | None:
        """The verifying TLS context for ``ssl`` and ``starttls``; None for plain text."""
        view = self.view
        if view.encryption is Encryption.NONE:
            return None
        return client_context(
            verify=view.tls_verify, ca_pem=view.tls_ca_pem, server=view.host or ""
        )


def scrub_secret(text: str, secret: str, username: str = "", shared: str | None = None) -> str:
    """``text`` with every form of ``secret`` (see ``MailboxConfig.scrub``) replaced by
    ``[secret]``. Secrets shorter than 3 characters are left: they would blank out text."""
    if len(secret) < 3 or not text:
        return text
    forms = {secret, secret.replace("\\", "\\\\").replace('"', '\\"')}
    for plain in (f"\0{username}\0{secret}", f"{shared or ''}\0{username}\0{secret}", secret):
        forms.add(base64.b64encode(plain.encode("utf-8")).decode("ascii"))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "[secret]")
    return text
