"""The outbound guard end to end: test connection, enabling and polling refuse a host that
resolves to loopback unless it is allowed, and always refuse the cloud metadata address —
without a packet sent to it. The suite's own settings allow loopback explicitly."""

from __future__ import annotations

import dataclasses

import pytest

from mailintake_fetcher.imap_poll import ImapPoll
from mailintake_fetcher.pop3_poll import Pop3Poll
from mailintake_shared.domain import Encryption, Protocol, Transport
from mailintake_shared.events import ErrorKind, PollOutcome
from mailintake_shared.mailbox.network import NetworkPolicy
from mailintake_shared.settings import Settings
from tests.api import api_client
from tests.conftest import Mailbox
from tests.harness.mail import make_message
from tests.harness.polls import MemoryState, run_poll
from tests.integration.conftest import imap_connection_body
from tests.integration.test_fetcher_imap import BUDGET, config

pytestmark = pytest.mark.integration


def test_test_connection_and_enable_refuse_loopback_unless_allowed(
    settings: Settings, mailbox: Mailbox
) -> None:
    mailbox.server.seed(mailbox.username, [make_message(1)])
    # "localhost": a name, resolved by the guard; the certificate is for 127.0.0.1, so plain.
    body = imap_connection_body(
        mailbox, host="localhost", port=mailbox.server.ports.imap, encryption="none"
    )
    del body["tls_ca_pem"]
    strict = settings.model_copy(update={"outbound_allow_cidrs": []})
    with api_client(strict) as api:
        result = api.post("/connections/test", json=body).json()
        assert (result["ok"], result["failed_step"]) == (False, "address_denied"), result
        assert "localhost resolves to" in result["error"]
        assert "127.0.0.0/8" in result["error"] or "::1/128" in result["error"]
        created = api.post("/connections", json=body).json()["id"]
        refused = api.post(f"/connections/{created}/enable")
        assert refused.status_code == 502, refused.text
        assert "address_denied" in refused.text
    with api_client(settings) as api:  # the suite's settings: loopback allowed
        assert api.post("/connections/test", json=body).json()["ok"] is True
        # Checked first without the network, so that a broken rule never sends a packet there.
        policy = NetworkPolicy.of(settings.outbound_allow_cidrs, settings.outbound_deny_cidrs)
        assert policy.denied_by("169.254.169.254") is not None
        metadata = api.post("/connections/test", json={**body, "host": "169.254.169.254"}).json()
        assert metadata["failed_step"] == "address_denied"
        assert "169.254.0.0/16" in metadata["error"]


@pytest.mark.parametrize("protocol", [Protocol.IMAP, Protocol.POP3])
def test_a_poll_to_a_denied_address_fails_and_fetches_nothing(
    mailbox: Mailbox, protocol: Protocol
) -> None:
    mailbox.server.seed(mailbox.username, [make_message(1)])
    allowed = config(mailbox, encryption=Encryption.NONE)
    pop3 = protocol is Protocol.POP3
    view = allowed.view.model_copy(
        update={
            "host": "localhost",
            "protocol": protocol,
            "transport": Transport.POP3 if pop3 else Transport.IMAP,
            "port": mailbox.server.ports.pop3 if pop3 else mailbox.server.ports.imap,
        }
    )
    kind = Pop3Poll if pop3 else ImapPoll
    denied = dataclasses.replace(allowed, view=view, network=NetworkPolicy())
    result, sink = run_poll(kind, denied, MemoryState(), BUDGET)
    assert (result.outcome, result.error_kind) == (PollOutcome.FAILED, ErrorKind.ADDRESS_DENIED)
    assert sink.chunks == []
    result, sink = run_poll(kind, dataclasses.replace(denied, network=allowed.network),
                            MemoryState(), BUDGET)  # fmt: skip
    assert (result.outcome, result.messages) == (PollOutcome.OK, 1), result.error
