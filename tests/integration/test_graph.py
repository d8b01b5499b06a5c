"""The Microsoft Graph transport end to end against a local Graph (delta, paging, $value,
PATCH, DELETE, throttling) and the local authorization server: delegated, shared mailbox,
app-only; PostgreSQL and the broker. Push through change notifications: the watcher
subscribes the folder, the tests' Graph validates the config API's notification URL and
posts a notification for each new message, the config API checks its clientState and asks
for a poll; lifecycle notifications, renewal before expiry, a forged notification, and the
subscription deleted when the connection is disabled."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from mailintake_devstack.broker import free_port
from mailintake_fetcher.graph_poll import GraphPoll
from mailintake_fetcher.repository import FetcherRepository
from mailintake_fetcher.worker import budget_from
from mailintake_shared.db.engine import make_engine, make_session_factory
from mailintake_shared.oauth.tokens import TokenStore
from mailintake_shared.secretbox import SecretBox
from mailintake_shared.settings import Settings
from mailintake_store.writer import StoreWriter
from tests.api import WITHOUT_ESTIMATE, api_client, enable, imap_body
from tests.conftest import Mailbox
from tests.harness.graph_server import GraphServer
from tests.harness.mail import make_message
from tests.harness.oauth_server import OAuthServer
from tests.harness.pipeline import Database, Pipeline, wait_until
from tests.harness.planted import planted
from tests.harness.polls import run_poll
from tests.harness.tls import make_pki
from tests.harness.views import LOOPBACK
from tests.integration.conftest import create_enabled
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


def test_a_failed_message_is_downloaded_again_after_a_retry(
    graph_settings: Settings, graph_servers: tuple[OAuthServer, GraphServer, Path]
) -> None:
    """The delta has moved past a message the store could not take: a retry drops the
    folder's delta link, and the next poll lists the folder again and downloads only it."""
    oauth, graph, ca = graph_servers
    graph.state.throttle_every = 0
    user, sent = _mailbox(graph, 3)
    engine = make_engine(graph_settings)
    sessions = make_session_factory(engine)
    box = SecretBox(graph_settings.encryption_keys)
    repository = FetcherRepository(
        sessions, box, TokenStore(sessions, box, graph_settings), LOOPBACK
    )
    writer = StoreWriter(sessions, topic_prefix=graph_settings.topic_prefix)
    budget = budget_from(graph_settings)
    try:
        with api_client(graph_settings) as api:
            cid = _connection(api, _credential(api, oauth), user)
            _authorize_with(api, ca, cid)
            config = repository.connection(uuid.UUID(cid))
            assert config is not None
            first, sink = run_poll(GraphPoll, config, repository, budget)
            assert (first.messages, first.delta_link is not None) == (3, True)
            last = sink.chunks[-1]  # arrives with a digest its bytes do not add up to
            tampered = replace(last, chunk=last.chunk.model_copy(update={"sha256": "0" * 64}))
            writer.write([*sink.chunks[:-1], tampered, *sink.results])
            queue = api.get("/queue", params={"connection_id": cid, "state": "failed"}).json()
            (failed,) = queue["items"]
            assert failed["server_id"] == last.chunk.server_id

            assert api.post(f"/queue/failed/{failed['id']}/retry").status_code == 200
            again, sink = run_poll(GraphPoll, config, repository, budget)
            assert [p.chunk.server_id for p in sink.chunks] == [failed["server_id"]]
            writer.write([*sink.chunks, *sink.results])
            assert again.delta_link is not None
    finally:
        engine.dispose()
    stored = Database(graph_settings.database_url)
    try:
        assert {bytes(r.raw) for r in stored.rows("SELECT raw FROM messages")} == set(sent)
    finally:
        stored.close()


@pytest.fixture
def push_pipeline(graph_settings: Settings, tmp_path: Path) -> Iterator[tuple[Pipeline, Settings]]:
    """The services as processes, the config API on a port known in advance: its
    notification URL is a setting."""
    port = free_port()
    settings = graph_settings.model_copy(
        update={
            "graph_notification_url": f"http://127.0.0.1:{port}/graph/notifications",
            "graph_subscription_minutes": 1,  # renewed every 30 s
            "watch_heartbeat_seconds": 1.0,
            "watch_reconnect_base_seconds": 0.5,
            "watch_reconnect_max_seconds": 2.0,
        }
    )
    running = Pipeline(settings, tmp_path / "logs")
    running.ports["config-api"] = port
    yield running, settings
    running.stop_all()


def _push_polls(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM poll_log WHERE reason = 'push'"))


def test_graph_notifications_bring_new_mail_in_and_the_subscription_lives(
    graph_servers: tuple[OAuthServer, GraphServer, Path],
    push_pipeline: tuple[Pipeline, Settings],
    db: Database,
) -> None:
    oauth, graph, ca = graph_servers
    graph.state.throttle_every = 0
    pipeline, settings = push_pipeline
    user, _ = _mailbox(graph, 0)
    with api_client(settings) as api:
        cid = _connection(api, _credential(api, oauth), user, interval_minutes=60)
        _authorize_with(api, ca, cid)
        pipeline.start("config-api", "scheduler", "fetcher", "store", "watcher")
        assert enable(api, cid).status_code == 200

        def watch() -> dict[str, object]:
            shown: dict[str, object] = api.get(f"/connections/{cid}").json()["watch"]
            return shown

        wait_until(lambda: watch()["watched"], timeout_s=90, message="subscribed")
        assert watch()["method"] == "graph"
        (subscription,) = graph.subscriptions(user)
        assert subscription.notification_url == settings.graph_notification_url
        wait_until(lambda: db.scalar("SELECT count(*) FROM poll_log") >= 1, timeout_s=60)

        graph.deliver(user, make_message(1, subject="notified"))
        wait_until(lambda: db.message_count() == 1, timeout_s=60, message="pushed")
        reason = db.scalar(
            "SELECT p.reason FROM messages m JOIN poll_log p ON p.poll_id = m.poll_id"
        )
        assert reason == "push"  # the interval is an hour

        assert graph.forge(subscription.notification_url, subscription.id, "guessed") == 403

        before = _push_polls(db)
        graph.lifecycle(subscription.id, "missed")
        wait_until(lambda: _push_polls(db) > before, timeout_s=60, message="missed: a poll")

        renewals = graph.state.renewals
        graph.lifecycle(subscription.id, "reauthorizationRequired")
        wait_until(lambda: graph.state.renewals > renewals, timeout_s=30, message="renewed")

        graph.lifecycle(subscription.id, "subscriptionRemoved", remove=True)
        wait_until(
            lambda: [s.id for s in graph.subscriptions(user)] not in ([], [subscription.id]),
            timeout_s=30,
            message="a new subscription",
        )
        graph.deliver(user, make_message(2, subject="after removal"))
        wait_until(lambda: db.message_count() == 2, timeout_s=60, message="pushed again")

        (current,) = graph.subscriptions(user)
        first_expiry = current.expires
        wait_until(
            lambda: graph.subscriptions(user)[0].expires > first_expiry,
            timeout_s=60,
            message="renewed before it expires",
        )

        assert api.post(f"/connections/{cid}/disable").status_code == 200
        wait_until(lambda: graph.subscriptions(user) == [], timeout_s=30, message="deleted")
        # The watcher deletes its row after Graph's subscription: waited for, not raced.
        wait_until(
            lambda: db.scalar("SELECT count(*) FROM graph_subscriptions") == 0,
            timeout_s=30,
            message="the subscription's row deleted",
        )
    assert all(200 <= s.status < 300 for s in graph.state.sent)  # every genuine one was taken
    assert db.message_count() == db.distinct_messages() == 2
    pipeline.assert_running()


def test_a_graph_that_throttles_for_an_hour_holds_up_no_other_watch(
    graph_servers: tuple[OAuthServer, GraphServer, Path],
    push_pipeline: tuple[Pipeline, Settings],
    mailbox: Mailbox,
) -> None:
    """Every Graph request answered 429 with ``Retry-After: 3600``, for more Graph
    connections than the watcher has threads for blocking work: each Graph watch says it is
    throttled and tries again later, and an IMAP connection beside them is watched as usual
    (its database work does not queue behind an hour of sleeping)."""
    oauth, graph, _ = graph_servers
    pipeline, settings = push_pipeline
    graph.state.throttle_every, graph.state.retry_after = 1, "3600"
    try:
        with api_client(settings) as api:
            credential = _credential(api, oauth, app_only=True)
            graph_ids = [_connection(api, credential, _mailbox(graph, 0)[0]) for _ in range(6)]
            for cid in graph_ids:
                enabled = api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE)
                assert enabled.status_code == 200, enabled.text
            pipeline.start("watcher")

            def watch(cid: str) -> dict[str, Any]:
                shown: dict[str, Any] = api.get(f"/connections/{cid}").json()["watch"]
                return shown

            wait_until(
                lambda: all(watch(cid)["state"] == "retrying" for cid in graph_ids),
                timeout_s=120,
                message="every Graph watch says it is throttled",
            )
            assert all(watch(cid)["reason"].startswith("throttled") for cid in graph_ids)
            imap = create_enabled(api, mailbox, interval_minutes=60)
            wait_until(lambda: watch(imap)["watched"], timeout_s=60, message="IMAP watched")
    finally:
        graph.state.throttle_every, graph.state.retry_after = 0, "1"
    pipeline.assert_running()


def test_the_notification_url_takes_nothing_a_stranger_sends(
    graph_settings: Settings, db: Database, logs: Any
) -> None:
    """What anyone on the Internet can send to the notification URL (it has no bearer
    token): a validation token written to run as a page, one too long, a body too large, a
    forged clientState, a lifecycle event of a subscription that is not ours. Only a
    genuine notification is acted on; no answer reflects anything as HTML; the clientState
    appears in no answer and no log line."""
    with api_client(graph_settings) as api:
        created = api.post("/connections", json=imap_body(name=f"m {uuid.uuid4().hex[:6]}"))
        cid = created.json()["id"]
        assert api.post(f"/connections/{cid}/enable", json=WITHOUT_ESTIMATE).status_code == 200
        client_state = planted("client-state")
        db.execute(
            "INSERT INTO graph_subscriptions (subscription_id, connection_id, "
            "client_state_sha256, expires_at, created_at) VALUES ('sub-1', :cid, :digest, "
            "now() + interval '1 day', now())",
            cid=cid,
            digest=hashlib.sha256(client_state.encode()).hexdigest(),
        )
        url = "/graph/notifications"
        anonymous = {"Authorization": ""}

        def counted(kind: str) -> float:
            name = "mailintake_api_graph_notifications_total"
            return REGISTRY.get_sample_value(name, {"kind": kind}) or 0.0

        page = "<script>alert(document.cookie)</script>"
        echoed = api.post(url, params={"validationToken": page}, headers=anonymous)
        assert (echoed.status_code, echoed.text) == (200, page)
        assert echoed.headers["content-type"].startswith("text/plain")
        assert echoed.headers["x-content-type-options"] == "nosniff"
        too_long = api.post(url, params={"validationToken": "A" * 5000}, headers=anonymous)
        assert too_long.status_code == 422
        assert "AAAA" not in too_long.text
        huge = b'{"value": [' + b" " * graph_settings.api_max_body_bytes + b"]}"
        assert api.post(url, content=huge, headers=anonymous).status_code == 413

        def notify(subscription: str, state: str, **item: str) -> int:
            value = [{"subscriptionId": subscription, "clientState": state, **item}]
            status: int = api.post(url, json={"value": value}, headers=anonymous).status_code
            return status

        created_before = counted("created")
        assert notify("sub-1", "guessed", changeType="created") == 403
        assert notify("sub-1", "guessed", lifecycleEvent="subscriptionRemoved") == 403
        assert notify("sub-2", client_state, lifecycleEvent="subscriptionRemoved") == 202
        assert db.scalar("SELECT needs FROM graph_subscriptions") is None
        assert counted("created") == created_before
        assert notify("sub-1", client_state, changeType="created") == 202
        assert notify("sub-1", client_state, changeType="created") == 202  # a replay: a poll
        assert counted("created") == created_before + 2
        assert notify("sub-1", client_state, lifecycleEvent="reauthorizationRequired") == 202
        assert db.scalar("SELECT needs FROM graph_subscriptions") == "reauthorize"

        before = len(logs.records())
        strangers = [{"subscriptionId": f"x-{n}", "clientState": "y"} for n in range(1000)]
        assert api.post(url, json={"value": strangers}, headers=anonymous).status_code == 202
        assert len(logs.records()) - before <= 3  # one request, not a thousand log lines
    assert client_state not in logs.text
