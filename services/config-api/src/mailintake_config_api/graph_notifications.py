"""Microsoft Graph change notifications (and lifecycle notifications) for the subscriptions
the watcher keeps: each is checked, then turned into a poll request or a note for the
watcher. Graph's documented contract: a notification is authentic when its ``clientState``
is the subscription's; the answer must come within 3 seconds, and a 2xx means it was taken
(otherwise Graph sends it again, for up to 4 hours).

- A change (``created``) or a ``missed`` lifecycle event: a poll of the connection (reason
  ``push``) through the outbox, in the request's transaction, so that the 2xx answer is sent
  only once the request is durable. The delta query, not the notification, says what is new.
- ``reauthorizationRequired``: the watcher renews the subscription (which reauthorizes it);
  ``subscriptionRemoved``: the watcher creates a new one, and polls.
- An unknown subscription is ignored (one deleted here: answered 2xx all the same, so that
  Graph stops sending it); a ``clientState`` that does not match is never trusted (counted
  and logged), and a collection of nothing but such is refused (``Received.forged``). What
  is ignored is logged once per kind and request: a stranger's thousand items are not a
  thousand log lines.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailintake_config_api.connections import request_poll
from mailintake_shared.db.models import Connection, GraphSubscription
from mailintake_shared.events import PollReason
from mailintake_shared.logging import get_logger
from mailintake_shared.settings import Settings

log = get_logger(__name__)

NOTIFICATIONS = Counter(
    "mailintake_api_graph_notifications_total",
    "Microsoft Graph notifications received, by kind: created, missed, "
    "reauthorization_required, subscription_removed; ignored ones as unknown_subscription "
    "or client_state_mismatch.",
    ["kind"],
)
_NEEDS = {"reauthorizationRequired": "reauthorize", "subscriptionRemoved": "recreate"}
_KINDS = {
    "missed": "missed",
    "reauthorizationRequired": "reauthorization_required",
    "subscriptionRemoved": "subscription_removed",
}


class ChangeNotification(BaseModel):
    """One item of a ``changeNotificationCollection`` (Graph sends more fields: ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    subscription_id: str = Field(alias="subscriptionId", max_length=255, pattern=r"^[^\x00]*$")
    client_state: str | None = Field(None, alias="clientState", max_length=255)
    change_type: str | None = Field(None, alias="changeType", max_length=64)
    lifecycle_event: str | None = Field(
        None,
        alias="lifecycleEvent",
        max_length=64,
        description="Lifecycle notifications: `reauthorizationRequired`, "
        "`subscriptionRemoved` or `missed`.",
    )


class ChangeNotificationCollection(BaseModel):
    """What Graph posts to the notification URL."""

    model_config = ConfigDict(extra="ignore")

    value: list[ChangeNotification] = Field(max_length=1000)


@dataclass
class Received:
    taken: int = 0  # authentic: acted on
    forged: int = 0  # with a clientState that is not the subscription's

    @property
    def only_forged(self) -> bool:
        return self.forged > 0 and self.taken == 0


def receive(
    session: Session, settings: Settings, collection: ChangeNotificationCollection
) -> Received:
    """Check each notification and act on it, in the caller's transaction."""
    received = Received()
    ids = {item.subscription_id for item in collection.value}
    subscriptions = {
        s.subscription_id: s
        for s in session.scalars(
            select(GraphSubscription).where(GraphSubscription.subscription_id.in_(ids))
        )
    }
    to_poll: set[uuid.UUID] = set()
    ignored: dict[str, list[str]] = {}
    for item in collection.value:
        subscription = subscriptions.get(item.subscription_id)
        kind = _authentic(item, subscription)
        if kind is None:
            event = item.lifecycle_event
            kind = _KINDS.get(event or "", "created" if event is None else "unknown_event")
        NOTIFICATIONS.labels(kind).inc()
        if subscription is None or kind in ("unknown_subscription", "client_state_mismatch"):
            received.forged += kind == "client_state_mismatch"
            ignored.setdefault(kind, []).append(item.subscription_id)
            continue
        received.taken += 1
        if kind in ("created", "missed"):
            to_poll.add(subscription.connection_id)
        elif item.lifecycle_event in _NEEDS and subscription.needs != "recreate":
            subscription.needs = _NEEDS[item.lifecycle_event]
    for connection_id in sorted(to_poll):
        row = session.get(Connection, connection_id)
        if row is not None and row.enabled:
            request_poll(session, settings, row, PollReason.PUSH)
    for reason, subscription_ids in ignored.items():  # a line per kind, not per item
        log.warning(
            "Graph notifications ignored",
            reason=reason,
            count=len(subscription_ids),
            subscription_ids=sorted(set(subscription_ids))[:5],
        )
    return received


def _authentic(item: ChangeNotification, subscription: GraphSubscription | None) -> str | None:
    """None when the notification is one of ours, else why it is ignored."""
    if subscription is None:
        return "unknown_subscription"
    digest = hashlib.sha256((item.client_state or "").encode()).hexdigest()
    if not hmac.compare_digest(digest, subscription.client_state_sha256):
        return "client_state_mismatch"
    return None
