"""Helpers for tests that talk to the config API in-process (FastAPI's TestClient)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from mailintake_config_api.app import create_app
from mailintake_shared.settings import Settings
from tests.conftest import ADMIN_TOKEN, VIEWER_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}


def imap_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Support inbox",
        "protocol": "imap",
        "host": "imap.example.com",
        "username": "support@example.com",
        "password": "correct horse",
    }
    body.update(overrides)
    return body


def api_client(settings: Settings) -> TestClient:
    """A client whose ``with`` block runs the app's start-up and shutdown."""
    return TestClient(create_app(settings), headers=ADMIN)
