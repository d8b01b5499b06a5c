"""Authorizing an OAuth2 connection from the web console, against the tests' local
authorization server: the Authorize button leads to the provider's sign-in (which the page's
policy lets the form go to), and the provider's redirect comes back to the connection."""

from __future__ import annotations

import ssl
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mailintake_shared.settings import Settings
from tests.api import ADMIN, api_client
from tests.conftest import ADMIN_TOKEN
from tests.console import sign_in
from tests.harness.dovecot import Dovecot
from tests.harness.oauth_server import OAuthServer
from tests.integration.test_oauth import (  # noqa: F401 (fixtures)
    _connect,
    oauth_servers,
    oauth_settings,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_authorize_from_the_console_comes_back_to_the_connection(
    oauth_settings: Settings,  # noqa: F811
    oauth_servers: tuple[OAuthServer, Dovecot],  # noqa: F811
    provider: str,
) -> None:
    server, dovecot = oauth_servers
    with api_client(oauth_settings) as console:
        cid = _connect(console, server, dovecot, "alice@example.com", provider)
        csrf = sign_in(console, ADMIN_TOKEN)
        page = console.get(f"/console/connections/{cid}")
        assert "authorization required" in page.text
        form_action = page.headers["content-security-policy"].split("form-action ")[1]
        assert server.url in form_action.split(";")[0].split()

        started = console.post(
            f"/console/connections/{cid}/authorize", data={"csrf": csrf}, follow_redirects=False
        )
        assert started.status_code == 303, started.text
        provider_page = started.headers["location"]
        assert provider_page.startswith(server.url)

        trust = ssl.create_default_context(cafile=str(dovecot.pki.ca_pem))
        signed_in = httpx.get(provider_page, verify=trust, follow_redirects=False)
        back = urlsplit(signed_in.headers["location"])
        done = console.get(back.path, params={k: v[0] for k, v in parse_qs(back.query).items()})
        assert done.status_code == 200, done.text
        assert f'content="0; url=/console/connections/{cid}"' in done.text

        shown = console.get(f"/console/connections/{cid}")
        assert "authorization required" not in shown.text
        assert "<dd>authorized</dd>" in shown.text
        assert console.get(f"/connections/{cid}", headers=ADMIN).json()["authorization"] == (
            "authorized"
        )
