"""What a session needs to know about its connection: the public view plus the secret."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from imapclient import IMAPClient
from pydantic import SecretStr

from mailintake_shared.domain import ConnectionView, Encryption
from mailintake_shared.tls import client_context


@dataclass(frozen=True)
class MailboxConfig:
    view: ConnectionView
    password: SecretStr | None

    @property
    def folder(self) -> str:
        return self.view.folder or "INBOX"

    def login(self, client: IMAPClient) -> None:
        client.login(self.view.username, self.secret)

    @property
    def secret(self) -> str:
        return self.password.get_secret_value() if self.password else ""

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
