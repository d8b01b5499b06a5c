"""The AsyncAPI 3.0 document of every topic mailintake uses, generated from the models.

Each channel is a physical topic, ``{prefix}<topic>`` with the deployment's topic prefix as
a parameter; each message is one event kind with its value schema, its CloudEvents headers
(Kafka protocol binding) and its key; operations say which service sends and which
receives each. The config API serves it at ``/asyncapi.json``.
"""

from __future__ import annotations

import re
from typing import Any

from mailintake_shared.cloudevents import (
    JSON,
    KINDS,
    REPLAY,
    SPEC_VERSION,
    EventKind,
)
from mailintake_shared.contracts.schemas import UTC_TIME, shared_definitions
from mailintake_shared.events import DeadLetter, FetchedBatch, FetchedChunk, MailStored
from mailintake_shared.fetched import ENVELOPE_HEADER
from mailintake_shared.topics import TOPIC_SPECS, Topic, TopicSpec

VERSION = "0.1.0"
DEFAULT_PREFIX = "mailintake."
KAFKA_BINDING = "0.5.0"
_SCHEMAS = "#/components/schemas/"

_DESCRIPTION = """\
Every record's key is the connection id (UUID text), so the records of one connection are in
order on one partition. Values are UTF-8 JSON (a message chunk's raw bytes on `mail.fetched`),
and every record carries its CloudEvents attributes as headers (Kafka protocol binding, binary
content mode): route on `ce_type`, deduplicate on `ce_source` + `ce_id`. Delivery is at least
once. Within a version an event may gain fields: ignore the ones you do not know. See
docs/topics.md for what each event means, how to deduplicate and how to notice gaps."""


def asyncapi_document(prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The document, with ``prefix`` as the default of the channels' ``prefix`` parameter."""
    by_topic = {spec.topic: [k for k in KINDS if k.topic is spec.topic] for spec in TOPIC_SPECS}
    by_topic = {topic: kinds for topic, kinds in by_topic.items() if kinds}
    specs = {spec.topic: spec for spec in TOPIC_SPECS}
    return {
        "asyncapi": "3.0.0",
        "id": "urn:mailintake:events",
        "info": {"title": "mailintake events", "version": VERSION, "description": _DESCRIPTION},
        "defaultContentType": JSON,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The Kafka cluster (MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS).",
                "variables": {
                    "bootstrap": {
                        "default": "127.0.0.1:9092",
                        "description": "A broker's host:port; `make run` listens here.",
                    }
                },
            }
        },
        "channels": {
            topic.value: _channel(specs[topic], kinds) for topic, kinds in by_topic.items()
        },
        "operations": _operations(by_topic),
        "components": {
            "schemas": shared_definitions(_SCHEMAS + "{model}"),
            "messages": {kind.ce_type: _message(kind) for kind in KINDS},
            "parameters": {
                "prefix": {
                    "default": prefix,
                    "examples": [prefix],
                    "description": "The deployment's topic prefix (MAILINTAKE_TOPIC_PREFIX).",
                }
            },
        },
    }


def _channel(spec: TopicSpec, kinds: list[EventKind]) -> dict[str, Any]:
    configuration: dict[str, Any] = {"cleanup.policy": [spec.configs()["cleanup.policy"]]}
    if spec.retention_ms is not None:
        configuration["retention.ms"] = spec.retention_ms
    compacted = " Compacted: read it from the start and keep the last record of each key."
    return {
        "address": "{prefix}" + spec.topic.value,
        "title": spec.topic.value,
        "description": spec.description[0].upper()
        + spec.description[1:]
        + "."
        + (compacted if spec.compacted else ""),
        "parameters": {"prefix": {"$ref": "#/components/parameters/prefix"}},
        "messages": {k.ce_type: {"$ref": f"#/components/messages/{k.ce_type}"} for k in kinds},
        "bindings": {
            "kafka": {"topicConfiguration": configuration, "bindingVersion": KAFKA_BINDING}
        },
    }


def _operations(by_topic: dict[Topic, list[EventKind]]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for topic, kinds in by_topic.items():
        parties: list[tuple[str, str, EventKind | None]] = [
            ("send", p, k) for k in kinds for p in k.producers
        ]
        consumers = dict.fromkeys(c for k in kinds for c in k.consumers)
        parties += [("receive", c, None) for c in consumers]
        for action, party, kind in parties:
            sent = [kind] if kind is not None else kinds
            verb = "sends" if action == "send" else "receives"
            name = kind.name if kind is not None else topic.value
            operations[f"{_slug(party)}.{verb}.{name}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{topic.value}"},
                "title": f"{party} {verb} {', '.join(k.ce_type for k in sent)}",
                "tags": [{"name": party}],
                "messages": [
                    {"$ref": f"#/channels/{topic.value}/messages/{k.ce_type}"} for k in sent
                ],
            }
    return operations


def _message(kind: EventKind) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": kind.ce_type,
        "title": kind.ce_type,
        "headers": _headers(kind),
        "payload": _payload(kind),
        "bindings": {"kafka": {"key": _key(kind), "bindingVersion": KAFKA_BINDING}},
    }
    if kind.model is not None:
        message["summary"] = (kind.model.__doc__ or "").split("\n\n")[0].replace("\n", " ")
    if kind.content_type is not None:
        message["contentType"] = kind.content_type
    return message


def _payload(kind: EventKind) -> dict[str, Any]:
    if kind.model is None:
        return {"type": "null", "description": kind.meaning}
    if kind.model is FetchedChunk:
        return {
            "type": "string",
            "format": "binary",
            "description": "The message's bytes (this chunk of them), untouched; the envelope "
            f"is the `{ENVELOPE_HEADER}` header.",
        }
    if kind.model is FetchedBatch:
        return {
            "type": "string",
            "format": "binary",
            "description": "The messages' bytes one after the other, untouched; the envelopes "
            f"and lengths are the `{ENVELOPE_HEADER}` header.",
        }
    return {"$ref": _SCHEMAS + kind.model.__name__}


def _key(kind: EventKind) -> dict[str, Any]:
    if kind.model is DeadLetter:
        return {"type": ["string", "null"], "description": "The original record's key."}
    return {"type": "string", "format": "uuid", "description": "The connection id."}


def _headers(kind: EventKind) -> dict[str, Any]:
    services = "|".join(kind.producers)
    properties: dict[str, Any] = {
        "ce_specversion": {"type": "string", "const": SPEC_VERSION},
        "ce_type": {"type": "string", "const": kind.ce_type},
        "ce_source": {
            "type": "string",
            "pattern": f"^/[^/]+/({services})$",
            "description": "/{the topic prefix without its final dot}/{the producing service}",
        },
        "ce_id": {
            "type": "string",
            "minLength": 1,
            "description": "Unique per source; the same event published again keeps it: "
            + kind.id_rule,
        },
        "ce_time": {"type": "string", "format": "date-time", "pattern": UTC_TIME},
    }
    if kind.content_type is not None:
        properties["content-type"] = {"type": "string", "const": kind.content_type}
    if kind.model is MailStored:
        properties[REPLAY] = {
            "type": "string",
            "const": "true",
            "description": "Only on an operator's replay of an event published before.",
        }
    if kind.model in (FetchedChunk, FetchedBatch):
        name = kind.model.__name__
        properties[ENVELOPE_HEADER] = {
            "type": "string",
            "contentMediaType": JSON,
            "description": f"The envelope: {_SCHEMAS}{name}, as JSON.",
        }
    optional = {REPLAY}
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
    }


def _slug(party: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", party).strip("-")
