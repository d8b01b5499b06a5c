"""How a session signs in, on a recording client: password, shared mailbox, XOAUTH2 with a
refresh when the server refuses the token."""

from __future__ import annotations

from typing import Any

import pytest
from imapclient.exceptions import LoginError
from pydantic import SecretStr

from mailintake_shared.domain import Protocol
from mailintake_shared.mailbox.config import MailboxConfig
from tests.harness.views import connection_view


class RecordingClient:
    def __init__(self, refuse_first_token: bool = False, auth_plain: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._refuse = refuse_first_token
        self._auth_plain = auth_plain

    def has_capability(self, name: str) -> bool:
        return name == "AUTH=PLAIN" and self._auth_plain

    def login(self, user: str, password: str) -> None:
        self.calls.append(("login", user, password))

    def plain_login(self, identity: str, password: str, authorization_identity: str | None) -> None:
        self.calls.append(("plain", identity, password, authorization_identity))

    def oauth2_login(self, user: str, token: str) -> None:
        self.calls.append(("xoauth2", user, token))
        if self._refuse:
            self._refuse = False
            raise LoginError("AUTHENTICATE failed")


def tokens(refresh: bool) -> str:
    return "fresh-token" if refresh else "cached-token"


@pytest.mark.parametrize(
    ("shared", "oauth", "expected"),
    [
        (None, False, ("login", "agent@contoso.com", "pw")),
        ("support@contoso.com", False, ("plain", "agent@contoso.com", "pw", "support@contoso.com")),
        (None, True, ("xoauth2", "agent@contoso.com", "cached-token")),
        ("support@contoso.com", True, ("xoauth2", "support@contoso.com", "cached-token")),
    ],
)
def test_sign_in_forms(shared: str | None, oauth: bool, expected: tuple[str, ...]) -> None:
    view = connection_view(
        username="agent@contoso.com",
        shared_mailbox=shared,
        protocol=Protocol.MICROSOFT_OAUTH2 if oauth else Protocol.IMAP,
    )
    config = MailboxConfig(
        view=view,
        password=None if oauth else SecretStr("pw"),
        access_token=tokens if oauth else None,
    )
    client = RecordingClient()
    config.login(client)
    assert client.calls == [expected]


def test_a_refused_token_is_refreshed_once() -> None:
    view = connection_view(username="agent@contoso.com", protocol=Protocol.MICROSOFT_OAUTH2)
    config = MailboxConfig(view=view, password=None, access_token=tokens)
    client = RecordingClient(refuse_first_token=True)
    config.login(client)
    assert [c[2] for c in client.calls] == ["cached-token", "fresh-token"]


def test_a_password_goes_by_sasl_plain_where_the_server_offers_it() -> None:
    view = connection_view(username="agent@contoso.com")
    config = MailboxConfig(view=view, password=SecretStr("Grüße-Kennwort-2026"))
    client = RecordingClient(auth_plain=True)
    config.login(client)
    assert client.calls == [("plain", "agent@contoso.com", "Grüße-Kennwort-2026", None)]
