"""A downstream consumer written from docs/topics.md and docs/asyncapi.json alone: it imports
no mailintake code. It subscribes to every channel of the AsyncAPI document, reads each
record with the CloudEvents SDK's Kafka binding, routes it on ``ce_type`` and checks its
headers, key and value against the document's own schemas. Whatever it did not expect is a
surprise."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from jsonschema import Draft202012Validator, FormatChecker
from kafka import KafkaConsumer

Check = Callable[[Any], list[str]]


class Downstream:
    def __init__(self, document: dict[str, Any], bootstrap: str, prefix: str, group: str):
        self._document = document
        self._bootstrap, self._group = bootstrap, group
        self.topics = [
            channel["address"].replace("{prefix}", prefix)
            for channel in document["channels"].values()
        ]
        self._routes = {
            name: self._route_for(message)
            for name, message in document["components"]["messages"].items()
        }
        self.seen: collections.Counter[str] = collections.Counter()
        self.events: collections.defaultdict[str, list[Any]] = collections.defaultdict(list)
        self.ids: collections.Counter[tuple[str, str]] = collections.Counter()
        self.surprises: list[str] = []

    def run(self, done: Callable[[Downstream], bool], timeout_s: float) -> None:
        """Consume in a group of its own, committing after each batch, until ``done``."""
        consumer = KafkaConsumer(
            *self.topics,
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_interval_ms=3000,
            session_timeout_ms=3000,
            heartbeat_interval_ms=1000,
        )
        deadline = time.monotonic() + timeout_s
        try:
            while not done(self):
                if time.monotonic() > deadline:
                    raise AssertionError(f"only {dict(self.seen)} after {timeout_s}s")
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        self.handle(record.topic, record.key, record.value, record.headers)
                consumer.commit()
        finally:
            consumer.close()

    def handle(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        found = {name: raw.decode() for name, raw in headers}
        ce_type = found.get("ce_type", "")
        route = self._routes.get(ce_type)
        if route is None:
            self.surprises.append(f"{topic}: a record of no known ce_type ({found})")
            return
        channel_types = self._channel_types(topic)
        if ce_type not in channel_types:
            self.surprises.append(f"{topic}: {ce_type} is not among {channel_types}")
        event = from_binary(KafkaMessage(dict(headers), key, value or b""), JSONFormat())
        problems = route(found, key.decode() if key is not None else None, value)
        self.surprises += [f"{topic} {ce_type}: {problem}" for problem in problems]
        self.seen[ce_type] += 1
        self.events[ce_type].append(event)
        self.ids[(event.get_source(), event.get_id())] += 1

    def _channel_types(self, topic: str) -> list[str]:
        for channel in self._document["channels"].values():
            if topic.endswith(channel["address"].replace("{prefix}", "")):
                return list(channel["messages"])
        return []

    def _route_for(self, message: dict[str, Any]) -> Callable[..., list[str]]:
        headers = self._validator(message["headers"])
        key = self._validator(message["bindings"]["kafka"]["key"])
        payload = self._validator(message["payload"])
        binary = message.get("contentType") == "application/octet-stream"

        def check(found: dict[str, str], record_key: str | None, value: bytes | None) -> list[str]:
            problems = [e.message for e in headers.iter_errors(found)]
            problems += [f"key: {e.message}" for e in key.iter_errors(record_key)]
            data: Any = value
            if value is not None and not binary:
                data = JSONFormat().read_data(value, found.get("content-type"))
            elif binary:
                data = (value or b"").decode("latin-1")  # bytes: a string of any content
            problems += [f"value: {e.message}" for e in payload.iter_errors(data)]
            return problems

        return check

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        """``schema`` resolved inside the document (its ``#/components/...`` references)."""
        root = {**schema, "components": self._document["components"]}
        return Draft202012Validator(root, format_checker=FormatChecker())
