"""Rules that join several fields, checked on the merged state of a create or an update."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from cryptography import x509
from pydantic import BaseModel

from mailintake_config_api.schemas import FieldError
from mailintake_shared.domain import (
    AfterDownload,
    Encryption,
    FirstSync,
    Protocol,
    PushMode,
    Transport,
)


class ConnectionDraft(BaseModel):
    """Every attribute of a connection as it would be saved (the password as a flag only)."""

    name: str
    description: str | None = None
    protocol: Protocol
    transport: Transport | None = None
    oauth_credential_id: UUID | None = None
    encryption: Encryption | None = None
    host: str | None = None
    port: int | None = None
    tls_verify: bool = True
    tls_ca_pem: str | None = None
    interval_minutes: int = 5
    timeout_ms: int | None = None
    folder: str | None = None
    username: str
    shared_mailbox: str | None = None
    after_download: AfterDownload = AfterDownload.MARK_SEEN
    first_sync: FirstSync = FirstSync.ALL
    first_sync_since: date | None = None
    push: PushMode = PushMode.AUTO
    has_password: bool = False


def _allowed(host: str | None, port: int | None, entries: list[str]) -> bool:
    """``host`` (and ``port``, if given) match an entry ``host`` or ``host:port``."""
    for entry in entries:
        name, _, pinned = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if name == (host or "") and (port is None or (pinned.isdigit() and int(pinned) == port)):
            return True
    return False


def check(
    draft: ConnectionDraft, microsoft_hosts: list[str], google_hosts: list[str]
) -> list[FieldError]:
    errors: list[FieldError] = []

    def fail(field: str, rule: str) -> None:
        errors.append(FieldError(field=field, rule=rule))

    oauth = draft.protocol.is_oauth2
    if draft.transport is not None and draft.protocol is not Protocol.MICROSOFT_OAUTH2:
        fail("transport", "transport applies to microsoft_oauth2 only (imap or graph)")
    if draft.transport is Transport.POP3:
        fail("transport", "transport must be imap or graph")
    graph = draft.transport is Transport.GRAPH

    if oauth:
        if draft.oauth_credential_id is None:
            fail("oauth_credential_id", "oauth_credential_id is required for the OAuth2 protocols")
        if draft.has_password:
            fail(
                "password", "password applies to IMAP and POP3 only; OAuth2 connections use tokens"
            )
        if draft.encryption not in (None, Encryption.SSL):
            fail("encryption", "encryption of an OAuth2 connection is always ssl")
        if graph:
            if draft.host is not None or draft.port is not None:
                fail("host", "host and port do not apply to the graph transport")
        else:
            google = draft.protocol is Protocol.GOOGLE_OAUTH2
            allowed = google_hosts if google else microsoft_hosts
            setting = "GOOGLE" if google else "MICROSOFT"
            if draft.host is not None and not _allowed(draft.host, None, allowed):
                fail("host", "host must be one of " + ", ".join(allowed))
            elif draft.port is not None and not _allowed(draft.host, draft.port, allowed):
                fail(
                    "port",
                    f"port of an OAuth2 connection is 993 unless MAILINTAKE_{setting}_IMAP_HOSTS "
                    "pins another as host:port",
                )
    else:
        if draft.oauth_credential_id is not None:
            fail("oauth_credential_id", "oauth_credential_id applies to the OAuth2 protocols only")
        if draft.host is None:
            fail("host", "host is required for IMAP and POP3")
        if not draft.has_password:
            fail("password", "password is required for IMAP and POP3")

    if draft.shared_mailbox is not None and draft.protocol in (
        Protocol.POP3,
        Protocol.GOOGLE_OAUTH2,
    ):
        fail("shared_mailbox", "shared_mailbox applies to IMAP and Microsoft 365 only")
    if draft.protocol is Protocol.POP3 and draft.folder is not None:
        fail("folder", "folder applies to IMAP only")
    if draft.protocol is Protocol.POP3 and draft.first_sync is not FirstSync.ALL:
        fail(
            "first_sync",
            "POP3 has no flags or date search: its first poll takes all messages (first_sync all)",
        )
    if graph and draft.first_sync is not FirstSync.ALL:
        fail("first_sync", "first_sync applies to IMAP only")
    if (draft.first_sync is FirstSync.SINCE) != (draft.first_sync_since is not None):
        fail(
            "first_sync_since", "first_sync_since is required with first_sync since, and only then"
        )
    if draft.tls_ca_pem is not None:
        if draft.encryption is Encryption.NONE:
            fail("tls_ca_pem", "tls_ca_pem needs encryption ssl or starttls")
        try:
            x509.load_pem_x509_certificates(draft.tls_ca_pem.encode())
        except ValueError:
            fail("tls_ca_pem", "tls_ca_pem must be one or more PEM-encoded certificates")
    return errors
