"""OAuth2 end to end against local servers that speak the protocols for real: an authorization
server (which google-auth and msal talk to, and Dovecot's oauth2 passdb introspects tokens
against), Dovecot with XOAUTH2, PostgreSQL and the broker."""

from __future__ import annotations

import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from mailintake_devstack.broker import free_port
from mailintake_shared.db.bindings import grant_binding
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.db.models import Connection, OAuthGrant
from mailintake_shared.kafka import read_topic_to_end
from mailintake_shared.oauth.tokens import TokenStore
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from mailintake_shared.topics import Topic
from tests.api import api_client, enable, microsoft_connection
from tests.harness.dovecot import Dovecot
from tests.harness.mail import make_message
from tests.harness.oauth_server import OAuthServer
from tests.harness.pipeline import BIN, Database, Pipeline, wait_until
from tests.harness.planted import planted
from tests.harness.tls import make_pki
from tests.integration.test_cli import Cli, answers

pytestmark = pytest.mark.integration
CLIENT_SECRET = planted("client-secret")


@pytest.fixture(scope="module")
def oauth_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OAuthServer, Dovecot]]:
    pki = make_pki(Path(tmp_path_factory.mktemp("oauth-pki")))
    server = OAuthServer(pki).start()
    dovecot = Dovecot(pki=pki, oauth2_introspection_url=f"{server.url}/introspect").start()
    yield server, dovecot
    dovecot.destroy()
    server.stop()


@pytest.fixture
def oauth_settings(
    pipeline_settings: Settings, oauth_servers: tuple[OAuthServer, Dovecot]
) -> Settings:
    server, dovecot = oauth_servers
    local = f"127.0.0.1:{dovecot.ports.imaps}"
    return pipeline_settings.model_copy(
        update={
            "google_authorization_endpoint": f"{server.url}/o/oauth2/v2/auth",
            "google_token_endpoint": f"{server.url}/token",
            "microsoft_authority_host": server.url,
            "oauth_ca_file": str(dovecot.pki.ca_pem),
            "google_imap_hosts": ["imap.gmail.com", local],
            "microsoft_imap_hosts": ["outlook.office365.com", local],
            "oauth_redirect_uri": "http://testserver/oauth/callback",
        }
    )


@pytest.fixture
def oauth_pipeline(oauth_settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    running = Pipeline(oauth_settings, tmp_path / "logs")
    yield running
    running.stop_all()


def _connect(
    api: TestClient, server: OAuthServer, dovecot: Dovecot, user: str, provider: str
) -> str:
    client_id = f"app-{uuid.uuid4().hex[:8]}"
    server.register(client_id, CLIENT_SECRET)
    credential = api.post(
        "/oauth-credentials",
        json={
            "name": f"{provider} app {client_id}",
            "provider": provider,
            "client_id": client_id,
            "client_secret": CLIENT_SECRET,
            **({"tenant": "contoso"} if provider == "microsoft" else {}),
        },
    )
    assert credential.status_code == 201, credential.text
    created = api.post(
        "/connections",
        json={
            "name": f"{provider} mailbox {client_id}",
            "protocol": f"{provider}_oauth2",
            "host": "127.0.0.1",
            "port": dovecot.ports.imaps,
            "tls_ca_pem": dovecot.pki.ca_text,
            "username": user,
            "oauth_credential_id": credential.json()["id"],
            "interval_minutes": 1,
        },
    )
    assert created.status_code == 201, created.text
    cid: str = created.json()["id"]
    return cid


def _authorize(api: TestClient, dovecot: Dovecot, cid: str) -> None:
    _authorize_with(api, dovecot.pki.ca_pem, cid)


def _authorize_with(api: TestClient, ca: Path, cid: str) -> None:
    """What an administrator's browser does: open the URL, sign in, come back."""
    started = api.post(f"/connections/{cid}/authorize")
    assert started.status_code == 200, started.text
    url = started.json()["authorization_url"]
    trust = ssl.create_default_context(cafile=str(ca))
    signed_in = httpx.get(url, verify=trust, follow_redirects=False)
    assert signed_in.status_code == 302
    back = urlsplit(signed_in.headers["location"])
    assert back.path == "/oauth/callback"
    done = api.get("/oauth/callback", params={k: v[0] for k, v in parse_qs(back.query).items()})
    assert done.status_code == 200, done.text
    assert "authorized" in done.text
    assert api.get(f"/connections/{cid}").json()["authorization"] == "authorized"


def _polls(db: Database, cid: str) -> int:
    return int(db.scalar("SELECT count(*) FROM poll_log WHERE connection_id = :c", c=cid))


@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_authorize_ingest_refresh_revoke_and_authorize_again(
    oauth_settings: Settings,
    oauth_servers: tuple[OAuthServer, Dovecot],
    oauth_pipeline: Pipeline,
    db: Database,
    logs: Any,
    provider: str,
) -> None:
    server, dovecot = oauth_servers
    user, _ = dovecot.add_user(password=uuid.uuid4().hex)
    dovecot.seed(user, (make_message(i) for i in range(6)))
    responses: list[str] = []
    with api_client(oauth_settings) as api:
        cid = _connect(api, server, dovecot, user, provider)
        assert api.get(f"/connections/{cid}").json()["authorization"] == "not_authorized"
        unauthorized = api.post(f"/connections/{cid}/enable")
        assert unauthorized.status_code == 502
        assert unauthorized.json()["test"]["failed_step"] == "authorization_required", (
            unauthorized.text
        )

        _authorize(api, dovecot, cid)
        oauth_pipeline.start("scheduler", "fetcher", "store")
        assert enable(api, cid).status_code == 200  # the estimate logs in with XOAUTH2
        wait_until(lambda: db.message_count() >= 6, timeout_s=90, message="6 stored over XOAUTH2")

        # The server stops accepting the access token early: refreshed, transparently.
        # A poll that logged in before the expiry may still be running, so ask again until
        # a login meets the expired token.
        refreshes = server.state.refreshes
        server.expire_access_tokens()
        dovecot.seed(user, [make_message(10)])

        def refreshed() -> bool:
            if server.state.refreshes > refreshes:
                return True
            api.post(f"/connections/{cid}/poll")
            return False

        wait_until(refreshed, timeout_s=60, interval_s=2, message="a refresh")
        wait_until(lambda: db.message_count() >= 7, timeout_s=60, message="after a refresh")

        # The grant is revoked: authorization required, and the polls stop.
        server.revoke_all()
        server.expire_access_tokens()
        api.post(f"/connections/{cid}/poll")
        wait_until(
            lambda: (
                api.get(f"/connections/{cid}").json()["authorization"] == "authorization_required"
            ),
            timeout_s=60,
            message="authorization required",
        )
        wait_until(  # the poll's result reaches the store after the grant was marked
            lambda: api.get(f"/connections/{cid}").json()["status"]["last_error_kind"],
            timeout_s=60,
            message="the failed poll recorded",
        )
        status = api.get(f"/connections/{cid}").json()["status"]
        assert status["last_error_kind"] == "authorization_required"
        time.sleep(2)  # a poll already under way ends
        parked = _polls(db, cid)
        time.sleep(8)  # a failing connection would be retried after 1, 2, 4 s here
        assert _polls(db, cid) == parked

        # Authorized again: polls resume on their own.
        dovecot.seed(user, [make_message(11)])
        _authorize(api, dovecot, cid)
        wait_until(lambda: db.message_count() >= 8, timeout_s=90, message="polls resumed")
        for path in (f"/connections/{cid}", "/oauth-credentials", "/connections"):
            responses.append(api.get(path).text)
        api.app.state.resources.relay.flush()  # type: ignore[attr-defined]

    assert db.distinct_messages() == 8
    secrets = [CLIENT_SECRET, *server.issued_tokens()]
    topics = b"".join(
        (r.value or b"") + b"".join(v for _, v in r.headers or [])
        for topic in Topic
        if topic is not Topic.MAIL_FETCHED
        for r in read_topic_to_end(oauth_settings, topic)
    )
    haystacks = {
        "responses": "".join(responses).encode(),
        "API logs": logs.text.encode(),
        "service logs": oauth_pipeline.logs().encode(),
        "topics": topics,
    }
    for where, haystack in haystacks.items():
        for secret in secrets:
            assert secret.encode() not in haystack, f"a token or client secret in the {where}"


def test_credentials_are_write_only_and_kept_while_in_use(
    oauth_settings: Settings, oauth_servers: tuple[OAuthServer, Dovecot]
) -> None:
    server, dovecot = oauth_servers
    with api_client(oauth_settings) as api:
        cid = _connect(api, server, dovecot, "someone@example.com", "microsoft")
        credential_id = api.get(f"/connections/{cid}").json()["oauth_credential_id"]
        shown = api.get(f"/oauth-credentials/{credential_id}").json()
        assert shown["has_client_secret"] is True
        assert "client_secret" not in shown
        name = api.get(f"/connections/{cid}").json()["name"]
        refused = api.delete(f"/oauth-credentials/{credential_id}")
        assert refused.status_code == 409
        assert name in refused.json()["detail"]
        moved = api.patch(f"/oauth-credentials/{credential_id}", json={"tenant": "fabrikam"})
        assert moved.status_code == 422  # the secret would go to another tenant's endpoint
        assert moved.json()["errors"][0]["field"] == "client_secret"
        assert "tenant changed" in moved.json()["errors"][0]["rule"]
        renamed = api.patch(
            f"/oauth-credentials/{credential_id}",
            json={"tenant": "fabrikam", "client_secret": CLIENT_SECRET},
        )
        assert renamed.json()["tenant"] == "fabrikam"
        assert api.delete(f"/connections/{cid}").status_code == 204
        assert api.delete(f"/oauth-credentials/{credential_id}").status_code == 204
        bad = api.post(
            "/oauth-credentials",
            json={"name": "g", "provider": "google", "client_id": "x", "client_secret": "y",
                  "tenant": "contoso"},
        )  # fmt: skip
        assert bad.status_code == 422
        stale = api.get("/oauth/callback", params={"state": "made-up", "code": "x"})
        assert stale.status_code == 400


def test_the_command_authorizes_a_connection(
    oauth_settings: Settings, oauth_servers: tuple[OAuthServer, Dovecot], tmp_path: Path
) -> None:
    server, dovecot = oauth_servers
    port = free_port()
    settings = oauth_settings.model_copy(
        update={"oauth_redirect_uri": f"http://127.0.0.1:{port}/oauth/callback"}
    )
    pipeline = Pipeline(settings, tmp_path / "logs")
    pipeline.ports["config-api"] = port
    pipeline.start("config-api")
    try:
        cli = Cli(f"http://127.0.0.1:{port}")
        wait_until(lambda: answers(f"{cli.url}/readyz"), timeout_s=60, message="the API")
        user, _ = dovecot.add_user(password=uuid.uuid4().hex)
        dovecot.seed(user, [make_message(1), make_message(2)])
        client_id = f"cli-{uuid.uuid4().hex[:8]}"
        server.register(client_id, CLIENT_SECRET)
        credential = cli.json(
            "credentials", "create", "--name", "Gmail app", "--provider", "google",
            "--client-id", client_id, "--secret-stdin", stdin=CLIENT_SECRET + "\n",
        )  # fmt: skip
        ca = tmp_path / "ca.pem"
        ca.write_text(dovecot.pki.ca_text)
        cli.json(
            "connections", "create", "--name", "Gmail", "--protocol", "google_oauth2",
            "--host", "127.0.0.1", "--port", str(dovecot.ports.imaps), "--tls-ca-file", str(ca),
            "--username", user, "--oauth-credential-id", credential["id"],
        )  # fmt: skip
        authorizing = subprocess.Popen(
            [str(BIN / "mailintake"), "connections", "authorize", "Gmail"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli.env,
        )
        assert authorizing.stdout is not None
        url = next(line.strip() for line in authorizing.stdout if line.startswith("https://"))
        trust = ssl.create_default_context(cafile=str(dovecot.pki.ca_pem))
        signed_in = httpx.get(url, verify=trust, follow_redirects=False)
        back = httpx.get(signed_in.headers["location"])  # the browser lands on the API
        assert back.status_code == 200, back.text
        output, _ = authorizing.communicate(timeout=30)
        assert authorizing.returncode == 0, output
        assert "authorized Gmail" in output
        assert cli.json("connections", "show", "Gmail")["authorization"] == "authorized"
        tested = cli.run("connections", "test", "Gmail").stdout
        assert "ok" in tested
        assert "2 messages" in tested
        assert CLIENT_SECRET not in pipeline.logs()
    finally:
        pipeline.stop_all()


def test_concurrent_refreshes_of_one_connection_spend_the_refresh_token_once(
    oauth_settings: Settings, oauth_servers: tuple[OAuthServer, Dovecot]
) -> None:
    """Eight workers find the token expired at once; the grant row's lock lets one refresh
    (the provider rotates refresh tokens: a second refresh with the spent one would be refused
    and end the authorization) and the others take its token."""
    server, dovecot = oauth_servers
    user, _ = dovecot.add_user(password=uuid.uuid4().hex)
    with api_client(oauth_settings) as api:
        cid = _connect(api, server, dovecot, user, "microsoft")
        _authorize(api, dovecot, cid)
        resources = api.app.state.resources  # type: ignore[attr-defined]
    engine = make_engine(oauth_settings)
    sessions = make_session_factory(engine)
    box = SecretBox(oauth_settings.encryption_keys)
    with sessions() as session, session.begin():  # the stored access token has expired
        grant = session.get(OAuthGrant, uuid.UUID(cid))
        assert grant is not None
        grant.access_expires_at = datetime.now(UTC) - timedelta(minutes=1)
        connection = session.get(Connection, uuid.UUID(cid))
        assert connection is not None
        binding = grant_binding(connection)
    del resources
    stores = [TokenStore(sessions, box, oauth_settings) for _ in range(8)]  # eight processes
    refreshes = server.state.refreshes
    with ThreadPoolExecutor(max_workers=8) as pool:
        tokens = list(
            pool.map(lambda store: store.access_token(uuid.UUID(cid), binding=binding), stores)
        )
    engine.dispose()
    assert server.state.refreshes == refreshes + 1
    assert len(set(tokens)) == 1
    with sessions() as session:
        grant = session.get(OAuthGrant, uuid.UUID(cid))
        assert grant is not None
        assert grant.status == "authorized"
        stored_refresh = box.decrypt(grant.refresh_token_enc or b"", binding).get_secret_value()
    assert stored_refresh in server.state.grants  # the rotated one, not the spent one


def test_an_unreachable_identity_provider_is_a_502_naming_it(settings: Settings) -> None:
    nowhere = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    offline = settings.model_copy(update={"microsoft_authority_host": nowhere})
    with api_client(offline) as api:
        answer = api.post(f"/connections/{microsoft_connection(api)}/authorize")
    assert answer.status_code == 502, answer.text
    detail = answer.json()["detail"]
    assert "identity provider (microsoft)" in detail
    assert f"Microsoft Entra ({nowhere}/common) did not answer" in detail


def test_an_oauth2_mailbox_is_watched_with_xoauth2_and_a_refused_token_refreshed(
    oauth_settings: Settings,
    oauth_servers: tuple[OAuthServer, Dovecot],
    tmp_path: Path,
    db: Database,
) -> None:
    """The watch logs in as the poll does (XOAUTH2 with the connection's token); a token the
    server no longer accepts is refreshed once and the watch comes back."""
    server, dovecot = oauth_servers
    user, _ = dovecot.add_user(password=uuid.uuid4().hex)
    settings = oauth_settings.model_copy(
        update={"watch_heartbeat_seconds": 1.0, "watch_reconnect_base_seconds": 0.5}
    )
    pipeline = Pipeline(settings, tmp_path / "logs")
    try:
        with api_client(settings) as api:
            cid = _connect(api, server, dovecot, user, "google")
            _authorize(api, dovecot, cid)
            api.patch(f"/connections/{cid}", json={"interval_minutes": 60})
            pipeline.start("scheduler", "fetcher", "store", "watcher")
            assert enable(api, cid).status_code == 200

            def watched() -> bool:
                return bool(api.get(f"/connections/{cid}").json()["watch"]["watched"])

            wait_until(watched, timeout_s=90, message="watched over XOAUTH2")
            wait_until(lambda: db.scalar("SELECT count(*) FROM poll_log") >= 1, timeout_s=60)
            dovecot.seed(user, [make_message(1, subject="pushed")])
            wait_until(lambda: db.message_count() == 1, timeout_s=60, message="pushed")

            refreshes = server.state.refreshes
            server.expire_access_tokens()  # the watcher's cached token is refused from now on
            api.post(f"/connections/{cid}/disable")
            wait_until(  # the watcher let go of the session that logged in before
                lambda: (
                    db.scalar(
                        "SELECT count(*) FROM connection_watches WHERE connection_id = :cid",
                        cid=cid,
                    )
                    == 0
                ),
                timeout_s=30,
                message="unwatched",
            )
            api.post(f"/connections/{cid}/enable", json={"skip_estimate": True})
            wait_until(watched, timeout_s=60, message="watched again with a fresh token")
            assert server.state.refreshes > refreshes
            dovecot.seed(user, [make_message(2, subject="pushed again")])
            wait_until(lambda: db.message_count() == 2, timeout_s=60, message="pushed again")
        reasons = {r.reason for r in db.rows("SELECT reason FROM poll_log")}
        assert "push" in reasons
    finally:
        pipeline.stop_all()
