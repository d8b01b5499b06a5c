"""Wire contracts: every event mailintake publishes, as versioned, frozen pydantic models.

Values are JSON (UTF-8). Each model carries ``schema_version``; a consumer that meets a
version it does not know sends the record to the dead-letter topic instead of guessing.
Keys are the connection id (UUID text) on every topic.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from mailintake_shared.domain import ConnectionView


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


E = TypeVar("E", bound=Event)


def decode(model: type[E], value: bytes) -> E:
    """Parse one record value; raises ``pydantic.ValidationError`` on a bad record."""
    return model.model_validate_json(value)


class ConnectionState(Event):
    """Topic ``connections`` (compacted): a connection's current state after each change.

    A deleted connection is a tombstone (a null value) under its key. ``connection.version``
    grows with every change, so a reader that folds the topic keeps the highest version.
    """

    schema_version: Literal[1] = 1
    connection: ConnectionView
