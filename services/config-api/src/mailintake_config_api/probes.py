"""Testing a connection, and enabling it only with the estimate acknowledged.

Both talk to the mail server from the API process, through the clients the fetcher uses
(``mailintake_shared.mailbox``), bounded by the connection's time-out.
"""

from __future__ import annotations

import dataclasses
import uuid

from sqlalchemy.orm import Session

from mailintake_config_api import connections
from mailintake_config_api.resources import Resources
from mailintake_config_api.schemas import (
    ConnectionTestResult,
    EnableRequest,
    EstimateBody,
)
from mailintake_shared.db.models import Connection, MailboxState
from mailintake_shared.db.queries import cursor_of, known_server_ids, mailbox_config
from mailintake_shared.db.types import utcnow
from mailintake_shared.events import ErrorKind
from mailintake_shared.logging import get_logger
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.estimate import Estimate, estimate
from mailintake_shared.mailbox.probe import probe

log = get_logger(__name__)


class EstimateRequiredError(Exception):
    """The first poll would download messages the request did not acknowledge (``acknowledged``:
    the number it gave, if any)."""

    def __init__(self, estimate: EstimateBody, acknowledged: int | None) -> None:
        super().__init__(f"{estimate.messages} messages to download")
        self.estimate = estimate
        self.acknowledged = acknowledged


class EstimateFailedError(Exception):
    """The server could not be reached or asked; ``result`` says which step failed."""

    def __init__(self, result: ConnectionTestResult) -> None:
        super().__init__(result.error)
        self.result = result


UNBOUND_DESTINATION = (
    "the stored password does not belong to this connection as it is now (its destination was "
    "changed outside the API, or the encryption key is gone): send the password again"
)


def test(row: Connection, res: Resources) -> ConnectionTestResult:
    config = mailbox_config(row, res.secrets, res.tokens, res.network)
    if row.password_enc is not None and config.password is None:
        return ConnectionTestResult(
            ok=False, failed_step=ErrorKind.AUTHENTICATION, error=UNBOUND_DESTINATION, latency_ms=0
        )
    result = probe(config)
    log.info(
        "connection tested",
        connection_id=str(row.id),
        ok=result.ok,
        failed_step=result.failed_step,
        latency_ms=result.latency_ms,
    )
    return ConnectionTestResult.model_validate(dataclasses.asdict(result))


def enable(session: Session, res: Resources, row: Connection, request: EnableRequest) -> Connection:
    if row.enabled:
        return row
    if not request.skip_estimate:
        config = mailbox_config(row, res.secrets, res.tokens, res.network)
        found = _estimate(session, row, config, res)
        body = EstimateBody(
            messages=found.messages,
            confidence=found.confidence,
            known_mailbox=found.known_mailbox,
            first_sync=row.view().first_sync,
        )
        acknowledged = request.acknowledge_messages or 0
        if found.messages > res.settings.enable_ack_threshold and acknowledged < found.messages:
            raise EstimateRequiredError(body, request.acknowledge_messages)
        _fix_baseline(session, row.id, config.folder, found)
    log.info(
        "connection enabled", connection_id=str(row.id), estimate_skipped=request.skip_estimate
    )
    connections.set_enabled(session, res.settings, row, True)
    # The first poll at once rather than after the scheduler's spreading of first polls.
    connections.request_poll(session, res.settings, row)
    return row


def _estimate(session: Session, row: Connection, config: MailboxConfig, res: Resources) -> Estimate:
    try:
        return estimate(
            config,
            cursor_of(session, row.id, config.folder),
            known_server_ids(session, row.id, config.folder),
        )
    except Exception:
        # Say which step failed, the way a test does.
        raise EstimateFailedError(test(row, res)) from None


def _fix_baseline(session: Session, connection_id: uuid.UUID, folder: str, found: Estimate) -> None:
    """A new mailbox with a first-sync mode: "from now" means from this moment."""
    if found.baseline_uid is None or found.uidvalidity is None:
        return
    if session.get(MailboxState, (connection_id, folder)) is None:
        session.add(
            MailboxState(
                connection_id=connection_id,
                folder=folder,
                uidvalidity=found.uidvalidity,
                last_uid=0,
                baseline_uid=found.baseline_uid,
                updated_at=utcnow(),
            )
        )
