"""The Microsoft Graph transport end to end against a local Graph (delta, paging, $value,
PATCH, DELETE, throttling) and the local authorization server: delegated, shared mailbox,
app-only; PostgreSQL and the broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mailintake_shared.settings import Settings
from tests.api import api_client, enable
from tests.harness.graph_server import GraphServer
from tests.harness.mail import make_message
from tests.harness.oauth_server import OAuthServer
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.tls import make_pki
from tests.integration.test_oauth import CLIENT_SECRET, _authorize_with

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def graph_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OAuthServer, GraphServer, Path]]:
    pki = make_pki(Path(tmp_path_factory.mktemp("graph-pki")))
    oauth = OAuthServer(pki).start()
    graph = GraphServer(pki, oauth.state).start()
    yield oauth, graph, pki.ca_pem
    graph.stop()
    oauth.stop()


@pytest.fixture
def graph_settings(
    pipeline_settings: Settings, graph_servers: tuple[OAuthServer, GraphServer, Path]
) -> Settings:
    oauth, graph, ca = graph_servers
    return pipeline_settings.model_copy(
        update={
            "microsoft_authority_host": oauth.url,
            "graph_endpoint": graph.url,
            "oauth_ca_file": str(ca),
            "oauth_redirect_uri": "http://testserver/oauth/callback",
            "poll_max_messages": 7,  # several polls, each resuming the delta where it stopped
        }
    )


@pytest.fixture
def graph_pipeline(graph_settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    running = Pipeline(graph_settings, tmp_path / "logs")
    yield running
    running.stop_all()


def _credential(api: TestClient, oauth: OAuthServer, *, app_only: bool = False) -> str:
    client_id = f"graph-{uuid.uuid4().hex[:8]}"
    oauth.register(client_id, CLIENT_SECRET)
    created = api.post(
        "/oauth-credentials",
        json={
            "name": f"graph app {client_id}",
            "provider": "microsoft",
            "client_id": client_id,
            "client_secret": CLIENT_SECRET,
            "tenant": "contoso",
            "app_only": app_only,
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _connection(api: TestClient, credential: str, user: str, **extra: Any) -> str:
    created = api.post(
        "/connections",
        json={
            "name": f"graph {uuid.uuid4().hex[:6]}",
            "protocol": "microsoft_oauth2",
            "transport": "graph",
            "username": user,
            "oauth_credential_id": credential,
            "interval_minutes": 1,
            **extra,
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _mailbox(graph: GraphServer, count: int) -> tuple[str, list[bytes]]:
    user = f"user{uuid.uuid4().hex[:8]}@contoso.com"
    graph.state.mailboxes[user] = {}
    sent = [make_message(i, seed=hash(user) + i) for i in range(count)]
    for raw in sent:
        graph.deliver(user, raw)
    return user, sent


def test_delegated_access_with_paging_throttling_and_mark_read(
    graph_settings: Settings,
    graph_servers: tuple[OAuthServer, GraphServer, Path],
    graph_pipeline: Pipeline,
    db: Database,
) -> None:
    oauth, graph, ca = graph_servers
    user, sent = _mailbox(graph, 25)  # three delta pages of 10
    graph.state.throttle_every = 6
    with api_client(graph_settings) as api:
        cid = _connection(api, _credential(api, oauth), user)
        _authorize_with(api, ca, cid)
        tested = api.post(f"/connections/{cid}/test").json()
        assert (tested["ok"], tested["messages"]) == (True, 25), tested
        graph_pipeline.start("scheduler", "fetcher", "store")
        assert enable(api, cid).status_code == 200
        wait_until(lambda: db.message_count() >= 25, timeout_s=120, message="25 over Graph")
        wait_until(
            lambda: all(m.is_read for m in graph.messages(user)),
            timeout_s=60,
            message="every message marked read after its commit",
        )
        more = [make_message(100 + i, seed=7 + i) for i in range(3)]
        for raw in more:
            graph.deliver(user, raw)
        api.post(f"/connections/{cid}/poll")
        wait_until(lambda: db.message_count() >= 28, timeout_s=60, message="3 more")
    assert graph.state.throttled > 0
    assert db.message_count() == db.distinct_messages() == 28
    stored = {bytes(r.raw) for r in db.rows("SELECT raw FROM messages")}
    assert stored == set(sent + more)
    graph_pipeline.assert_running()


def test_shared_mailbox_deleted_after_commit_and_app_only_access(
    graph_settings: Settings,
    graph_servers: tuple[OAuthServer, GraphServer, Path],
    graph_pipeline: Pipeline,
    db: Database,
) -> None:
    oauth, graph, ca = graph_servers
    graph.state.throttle_every = 0
    delegate = f"agent{uuid.uuid4().hex[:6]}@contoso.com"
    graph.state.mailboxes[delegate] = {}
    shared, _ = _mailbox(graph, 9)
    graph.state.delegates[shared] = {delegate}
    app_box, _ = _mailbox(graph, 4)
    with api_client(graph_settings) as api:
        delegated = _connection(
            api, _credential(api, oauth), delegate, shared_mailbox=shared, after_download="delete"
        )
        _authorize_with(api, ca, delegated)
        app_only = _connection(api, _credential(api, oauth, app_only=True), app_box)
        assert api.get(f"/connections/{app_only}").json()["authorization"] == "app_only"
        assert api.post(f"/connections/{app_only}/authorize").status_code == 409
        graph_pipeline.start("scheduler", "fetcher", "store")
        assert enable(api, delegated).status_code == 200
        assert enable(api, app_only).status_code == 200
        wait_until(lambda: db.message_count() >= 13, timeout_s=120, message="13 stored")
        wait_until(
            lambda: graph.messages(shared) == [], timeout_s=60, message="shared mailbox emptied"
        )
    assert len(graph.messages(app_box)) == 4  # mark read keeps them
    assert db.message_count() == db.distinct_messages() == 13
    graph_pipeline.assert_running()
