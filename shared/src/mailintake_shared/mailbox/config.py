"""What a poll needs to know about its connection: the public view plus the secret."""

from __future__ import annotations

from dataclasses import dataclass

from imapclient import IMAPClient
from pydantic import SecretStr

from mailintake_shared.domain import ConnectionView


@dataclass(frozen=True)
class MailboxConfig:
    view: ConnectionView
    password: SecretStr | None

    @property
    def folder(self) -> str:
        return self.view.folder or "INBOX"

    def login(self, client: IMAPClient) -> None:
        password = self.password.get_secret_value() if self.password else ""
        client.login(self.view.username, password)
