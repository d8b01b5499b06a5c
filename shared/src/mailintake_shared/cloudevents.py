"""CloudEvents attributes on every record, as record headers (CloudEvents 1.0, Kafka protocol
binding, binary content mode, section 3.2): the value stays the event's JSON (a message
chunk's raw bytes on ``mail.fetched``) and the attributes travel beside it.

Headers (values UTF-8): ``ce_specversion`` ``1.0``; ``ce_type``
``mailintake.<event>.v<schema_version>``; ``ce_source`` ``/<deployment>/<service>`` (the topic
prefix without its final dot, and the service the event comes from); ``ce_id``, derived from
what identifies the event, so that the same event published again (a retried send, an outbox
relayed again after a crash, an operator's replay) keeps it; ``ce_time`` (RFC 3339, UTC, ``Z``);
``content-type``, absent on a tombstone (no data). A replayed ``mail.stored`` event also carries
the extension attribute ``ce_replay: true``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from mailintake_shared.events import (
    ConnectionHealthChanged,
    ConnectionState,
    DeadLetter,
    Event,
    FetchedBatch,
    FetchedChunk,
    MailStored,
    PollCompleted,
    PollDue,
    PollRequested,
    PollResult,
    StoreWaiting,
    decode,
)
from mailintake_shared.topics import Topic

SPEC_VERSION = "1.0"
JSON = "application/json"
OCTETS = "application/octet-stream"
REPLAY = "ce_replay"

Headers = list[tuple[str, bytes]]


def _rfc3339(at: datetime) -> str:
    """UTC with ``Z``, microseconds when not zero: as the events' own times are written."""
    return _utc_text(at.astimezone(UTC))


@functools.lru_cache(maxsize=1024)
def _utc_text(at: datetime) -> str:
    """Remembered: the events of one scheduler tick or store batch share their time. Keyed
    by the UTC instant: two times of a zone's repeated hour compare equal (``fold``)."""
    return at.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class EventKind:
    """One kind of record: its model (``None``: a tombstone), topic, ``ce_type`` name, who
    produces and consumes it, and how its id and time follow from the event."""

    model: type[Event] | None
    topic: Topic
    name: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    identity: Callable[[Any], str]
    time_field: str | None  # the field ``ce_time`` is, dotted; None: when it is published
    content_type: str | None = JSON
    id_rule: str = ""  # how ``ce_id`` is made, for the documentation
    meaning: str = ""  # what a tombstone (no model) says, for the documentation

    @property
    def version(self) -> int:
        if self.model is None:
            return 1
        version: int = self.model.model_fields["schema_version"].default
        return version

    @property
    def ce_type(self) -> str:
        return f"mailintake.{self.name}.v{self.version}"


def _stored_id(event: MailStored) -> str:
    decrypted = event.smime is not None and event.smime.decrypted_with is not None
    return _stored_event_id(event.message_id, decrypted)


def _stored_event_id(message_id: int, decrypted: bool) -> str:
    """An S/MIME message announced as fetched is announced again, under another id, when a
    retry decrypts it; a replay repeats the message's current announcement."""
    return f"{message_id}/decrypted" if decrypted else str(message_id)


KINDS: tuple[EventKind, ...] = (
    EventKind(
        ConnectionState,
        Topic.CONNECTIONS,
        "connection.state",
        ("config-api",),
        ("scheduler", "watcher"),
        lambda e: f"{e.connection.id}/{e.connection.version}",
        "connection.updated_at",
        id_rule="`{connection.id}/{connection.version}` (a resync repeats it)",
    ),
    EventKind(
        None,
        Topic.CONNECTIONS,
        "connection.deleted",
        ("config-api",),
        ("scheduler", "watcher"),
        lambda key: f"{key}/deleted",
        None,
        content_type=None,
        id_rule="`{connection id}/deleted`",
        meaning="A tombstone: the connection was deleted.",
    ),
    EventKind(
        PollDue,
        Topic.POLL_DUE,
        "poll.due",
        ("scheduler",),
        ("fetcher",),
        lambda e: str(e.poll_id),
        "issued_at",
        id_rule="`{poll_id}`",
    ),
    EventKind(
        PollRequested,
        Topic.POLL_REQUESTED,
        "poll.requested",
        ("config-api", "watcher", "fetcher"),
        ("scheduler",),
        lambda e: (
            f"{e.after_poll_id}/next"
            if e.after_poll_id
            else f"{e.connection_id}/{_rfc3339(e.requested_at)}"
        ),
        "requested_at",
        id_rule="`{connection_id}/{requested_at}` (an operator's, or a push: from the watcher, "
        "or from the config API for a Graph notification); `{after_poll_id}/next` (a fetcher's "
        "continuation)",
    ),
    EventKind(
        FetchedChunk,
        Topic.MAIL_FETCHED,
        "mail.fetched",
        ("fetcher",),
        ("store",),
        lambda e: f"{e.poll_id}/{e.server_id}/{e.chunk_index}",
        None,
        content_type=OCTETS,
        id_rule="`{poll_id}/{server_id}/{chunk_index}`",
    ),
    EventKind(
        FetchedBatch,
        Topic.MAIL_FETCHED,
        "mail.fetched.batch",
        ("fetcher",),
        ("store",),
        lambda e: f"{e.messages[0].poll_id}/{e.messages[0].server_id}/batch",
        None,
        content_type=OCTETS,
        id_rule="`{poll_id}/{the first message's server_id}/batch`",
    ),
    EventKind(
        PollResult,
        Topic.MAIL_FETCHED,
        "poll.result",
        ("fetcher",),
        ("store",),
        lambda e: f"{e.poll_id}/result",
        "finished_at",
        id_rule="`{poll_id}/result`",
    ),
    EventKind(
        MailStored,
        Topic.MAIL_STORED,
        "mail.stored",
        ("store",),
        ("downstream handlers",),
        _stored_id,
        "stored_at",
        id_rule="`{message_id}`, or `{message_id}/decrypted` when it carries the decrypted "
        "form of S/MIME mail; a replay keeps it",
    ),
    EventKind(
        PollCompleted,
        Topic.POLL_COMPLETED,
        "poll.completed",
        ("store",),
        ("scheduler",),
        lambda e: str(e.poll_id),
        "finished_at",
        id_rule="`{poll_id}`",
    ),
    EventKind(
        ConnectionHealthChanged,
        Topic.CONNECTION_HEALTH,
        "connection.health",
        ("scheduler",),
        ("operators' alerting",),
        lambda e: f"{e.connection_id}/{e.state.value}/{_rfc3339(e.at)}",
        "at",
        id_rule="`{connection_id}/{state}/{at}`",
    ),
    EventKind(
        StoreWaiting,
        Topic.STORE_WAITING,
        "store.waiting",
        ("store",),
        ("config-api", "operators' alerting"),
        lambda e: f"{e.connection_id}/{_rfc3339(e.at)}",
        "at",
        id_rule="`{connection_id}/{at}`",
    ),
    EventKind(
        None,
        Topic.STORE_WAITING,
        "store.written",
        ("store",),
        ("config-api", "operators' alerting"),
        lambda ref: f"{ref[0]}/written/{_rfc3339(ref[1])}",
        None,
        content_type=None,
        id_rule="`{connection id}/written/{time}`",
        meaning="A tombstone: the connection's downloaded records are written.",
    ),
    EventKind(
        DeadLetter,
        Topic.DEAD_LETTER,
        "deadletter",
        ("scheduler", "fetcher", "store"),
        ("operators",),
        lambda e: f"{e.source_topic}/{e.partition}/{e.offset}",
        "failed_at",
        id_rule="`{source_topic}/{partition}/{offset}`; `ce_source` names the service "
        "that set the record aside",
    ),
)
_BY_MODEL = {kind.model: kind for kind in KINDS if kind.model is not None}
_BY_NAME = {kind.name: kind for kind in KINDS}
TOMBSTONE = next(kind for kind in KINDS if kind.name == "connection.deleted")
WRITTEN = next(kind for kind in KINDS if kind.name == "store.written")


def ce_type_of(model: type[Event]) -> str:
    """The ``ce_type`` of a model's events."""
    return _BY_MODEL[model].ce_type


def kind_of(event: Event) -> EventKind:
    return _BY_MODEL[type(event)]


@functools.lru_cache(maxsize=64)
def source(prefix: str, service: str) -> str:
    """``ce_source``: ``/<deployment>/<service>``, the deployment being the topic prefix
    without its final dot (two deployments sharing a cluster have different prefixes)."""
    deployment = prefix.rstrip(".") or "mailintake"
    return f"/{quote(deployment, safe='')}/{service}"


def headers(
    event: Event, prefix: str, *, replay: bool = False, service: str | None = None
) -> Headers:
    """The record headers of ``event``; ``replay`` marks an operator's replay; ``service``
    names the producer when the event does not tell it (the watcher's poll requests)."""
    kind = kind_of(event)
    if service is None and isinstance(event, DeadLetter):
        service = event.service
    elif service is None and isinstance(event, PollRequested) and event.after_poll_id:
        service = "fetcher"
    service = service or kind.producers[0]
    found = _attributes(kind, prefix, service, kind.identity(event), _occurred(kind, event))
    return [*found, (REPLAY, b"true")] if replay else found


def mail_stored_headers(
    prefix: str, message_id: int, decrypted: bool, stored_at: datetime, *, replay: bool = False
) -> Headers:
    """The headers of a ``mail.stored`` event, from its fields (what ``headers`` gives for the
    event, without building it)."""
    kind = _BY_MODEL[MailStored]
    event_id = _stored_event_id(message_id, decrypted)
    found = _attributes(kind, prefix, kind.producers[0], event_id, stored_at)
    return [*found, (REPLAY, b"true")] if replay else found


def tombstone_headers(prefix: str, connection_id: str, at: datetime) -> Headers:
    """The headers of a deleted connection's tombstone (a null value)."""
    kind = TOMBSTONE
    return _attributes(kind, prefix, kind.producers[0], kind.identity(connection_id), at)


def written_headers(prefix: str, connection_id: str, at: datetime) -> Headers:
    """The headers of the tombstone that clears a connection's ``store.waiting``."""
    kind = WRITTEN
    return _attributes(kind, prefix, kind.producers[0], kind.identity((connection_id, at)), at)


def _occurred(kind: EventKind, event: Event) -> datetime | None:
    if kind.time_field is None:
        return None
    value: Any = event
    for name in kind.time_field.split("."):
        value = getattr(value, name)
    at: datetime = value
    return at


def _attributes(
    kind: EventKind, prefix: str, service: str, event_id: str, at: datetime | None
) -> Headers:
    before, after = _fixed(kind.name, prefix, service)
    occurred = _rfc3339(at or datetime.now(UTC))
    return [*before, ("ce_id", event_id.encode()), ("ce_time", occurred.encode()), *after]


@functools.lru_cache(maxsize=256)
def _fixed(kind_name: str, prefix: str, service: str) -> tuple[Headers, Headers]:
    """The headers that do not change from one event of a kind to the next: those before
    ``ce_id`` and those after ``ce_time``."""
    kind = _BY_NAME[kind_name]
    before = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_type", kind.ce_type.encode()),
        ("ce_source", source(prefix, service).encode()),
    ]
    after = [] if kind.content_type is None else [("content-type", kind.content_type.encode())]
    return before, after


def split_topic(name: str) -> tuple[str, Topic]:
    """A physical topic name as (prefix, logical topic); ``ValueError`` for another topic."""
    for topic in sorted(Topic, key=lambda t: -len(t.value)):
        if name.endswith(topic.value):
            return name[: -len(topic.value)], topic
    raise ValueError(f"{name!r} is not a mailintake topic")


def relayed_headers(topic: str, key: str, value: bytes | None, queued_at: datetime) -> Headers:
    """The headers of an outbox record, from the row alone, so that a row relayed again
    after a crash carries the same ones. Raises ``ValueError`` (``pydantic.ValidationError``
    among them) when the value is not its topic's event."""
    prefix, logical = split_topic(topic)
    if value is None:
        return tombstone_headers(prefix, key, queued_at)
    models = [k.model for k in KINDS if k.topic is logical and k.model is not None]
    if len(models) != 1:
        raise ValueError(f"records of {logical.value} are not relayed from the outbox")
    return headers(decode(models[0], value), prefix)
