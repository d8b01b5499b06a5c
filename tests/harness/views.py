"""A ``ConnectionView`` with plausible values, for tests that need one without the API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from mailintake_shared.domain import (
    AfterDownload,
    ConnectionView,
    Encryption,
    Protocol,
    Transport,
)
from mailintake_shared.mailbox.network import NetworkPolicy


def connection_view(**overrides: Any) -> ConnectionView:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "version": 1,
        "name": "test connection",
        "description": None,
        "protocol": Protocol.IMAP,
        "transport": Transport.IMAP,
        "oauth_credential_id": None,
        "encryption": Encryption.SSL,
        "host": "127.0.0.1",
        "port": 993,
        "tls_verify": True,
        "tls_ca_pem": None,
        "interval_minutes": 5,
        "timeout_ms": 30000,
        "folder": "INBOX",
        "username": "user@example.com",
        "shared_mailbox": None,
        "after_download": AfterDownload.MARK_SEEN,
        "enabled": True,
        "created_at": now,
        "updated_at": now,
    }
    values.update(overrides)
    return ConnectionView(**values)


LOOPBACK_CIDRS = ["127.0.0.0/8", "::1/128"]
# The tests' mail servers listen on 127.0.0.1, which the outbound guard denies by default.
LOOPBACK = NetworkPolicy.of(allow=LOOPBACK_CIDRS)
