"""Helpers for tests that talk to the config API in-process (FastAPI's TestClient)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi.testclient import TestClient

from mailintake_config_api.app import create_app
from mailintake_devstack.broker import free_port
from mailintake_shared.settings import Settings
from tests.conftest import ADMIN_TOKEN, READER_TOKEN, VIEWER_TOKEN
from tests.harness.pipeline import wait_until
from tests.harness.planted import WATCH, planted

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
READER = {"Authorization": f"Bearer {READER_TOKEN}"}


def imap_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Support inbox",
        "protocol": "imap",
        "host": "imap.example.com",
        "username": "support@example.com",
        "password": planted("password"),
    }
    body.update(overrides)
    return body


def api_client(settings: Settings) -> TestClient:
    """A client whose ``with`` block runs the app's start-up and shutdown; every answer is
    searched for planted secrets."""
    client = TestClient(create_app(settings), headers=ADMIN)
    WATCH.watch_client(client)
    return client


def microsoft_connection(client: TestClient) -> str:
    """A Microsoft 365 connection over IMAP (not authorized) with a credential of its own;
    the connection's id."""
    credential = {"name": "app", "provider": "microsoft", "client_id": "c", "client_secret": "s"}
    body = {
        "name": "m365",
        "protocol": "microsoft_oauth2",
        "username": "helpdesk@contoso.com",
        "oauth_credential_id": client.post("/oauth-credentials", json=credential).json()["id"],
    }
    connection_id: str = client.post("/connections", json=body).json()["id"]
    return connection_id


# For connections whose server does not exist (imap.example.com): no DNS lookup, no estimate.
WITHOUT_ESTIMATE = {"skip_estimate": True}


def enable(client: TestClient, connection_id: str) -> httpx.Response:
    """Enable as an administrator does: ask, read the estimate, acknowledge exactly it."""
    first: httpx.Response = client.post(f"/connections/{connection_id}/enable")
    if first.status_code != 409:
        return first
    count = first.json()["estimate"]["messages"]
    path = f"/connections/{connection_id}/enable"
    acknowledged: httpx.Response = client.post(path, json={"acknowledge_messages": count})
    return acknowledged


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The API served by uvicorn on a free port of 127.0.0.1, as in production: a client
    gets its answer when the server sends it (the TestClient waits for the whole request)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=60, message="the API serves")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
