"""The connection form: which fields each protocol shows, the form's text to an API body and
back, and the API's own field errors placed next to the fields they name.

The inputs are named as the API's fields, so that a 422's ``field`` is the input it is about
and its ``rule`` is shown in the API's words: the console adds no rule of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mailintake_config_api.errors import field_errors
from mailintake_config_api.schemas import ConnectionPublic, FieldError
from mailintake_shared.domain import Encryption, Protocol, Transport, default_port, transport_for
from mailintake_shared.settings import Settings

COMMON = ("name", "description", "protocol", "username", "interval_minutes", "timeout_ms")
SERVER = ("encryption", "host", "port", "tls_verify", "tls_ca_pem")
FIRST_SYNC = ("first_sync", "first_sync_since")
# Every field the form may send; the others of the API (none today) keep their values.
ALL = (
    *COMMON,
    *SERVER,
    "transport",
    "oauth_credential_id",
    "folder",
    "shared_mailbox",
    "password",
    "after_download",
    *FIRST_SYNC,
    "push",
)
CHECKBOXES = ("tls_verify",)


def fields_for(protocol: Protocol, transport: Transport | None, settings: Settings) -> set[str]:
    """The inputs shown for a protocol (and Microsoft's transport), as the reference's form
    changes with the protocol."""
    if protocol is Protocol.POP3:  # POP3 cannot announce new mail: no push
        return {*COMMON, "after_download", *SERVER, "password"}
    shown = {*COMMON, "after_download", "push"}
    if protocol is Protocol.IMAP:
        return shown | {*SERVER, "folder", "shared_mailbox", "password", *FIRST_SYNC}
    shown.add("oauth_credential_id")
    if protocol is Protocol.GOOGLE_OAUTH2:
        hosts = {"host"} if len(settings.google_imap_hosts) > 1 else set()
        return shown | hosts | {"folder", *FIRST_SYNC}
    shown |= {"transport", "shared_mailbox"}
    if transport is not Transport.GRAPH:
        shown |= {"host", "folder", *FIRST_SYNC}
    return shown


def _choice(value: str | None, kind: type[Any], default: Any) -> Any:
    try:
        return kind(value) if value else default
    except ValueError:
        return default


@dataclass
class ConnectionForm:
    """What the form shows: the values typed (never a password), the errors by field."""

    values: dict[str, str]
    protocol: Protocol
    transport: Transport | None
    shown: set[str]
    connection_id: str | None = None
    has_password: bool = False
    errors: dict[str, list[str]] = field(default_factory=dict)
    general: list[str] = field(default_factory=list)  # errors about fields not shown

    @classmethod
    def of(
        cls, values: dict[str, str], settings: Settings, connection_id: str | None = None
    ) -> ConnectionForm:
        kept = {k: v for k, v in values.items() if k in ALL and k != "password"}
        for name in ("shared", "change_password"):
            if values.get(name):
                kept[name] = "on"
        protocol = _choice(kept.get("protocol"), Protocol, Protocol.IMAP)
        transport = None
        if protocol is Protocol.MICROSOFT_OAUTH2:
            transport = _choice(kept.get("transport"), Transport, Transport.IMAP)
        kept["protocol"] = protocol.value
        return cls(
            kept, protocol, transport, fields_for(protocol, transport, settings), connection_id
        )

    @classmethod
    def of_connection(cls, item: ConnectionPublic, settings: Settings) -> ConnectionForm:
        dumped = item.model_dump(mode="json")
        values = {k: "" if dumped.get(k) is None else str(dumped[k]) for k in ALL if k in dumped}
        values["tls_verify"] = "on" if item.tls_verify else ""
        values["shared"] = "on" if item.shared_mailbox else ""
        if item.protocol is not Protocol.MICROSOFT_OAUTH2:
            values.pop("transport", None)
        form = cls.of(values, settings, str(item.id))
        form.has_password = item.has_password
        return form

    @property
    def default_port(self) -> str:
        """The port a blank one means, for the protocol and encryption chosen."""
        if "port" not in self.shown:
            return ""
        encryption = _choice(self.values.get("encryption"), Encryption, Encryption.SSL)
        return str(default_port(transport_for(self.protocol, self.transport), encryption))

    def value(self, name: str) -> str:
        return self.values.get(name, "")

    def checked(self, name: str, default: bool = False) -> bool:
        if name not in self.values:
            return default
        return bool(self.values[name])

    def body(self, password: str, *, update: bool) -> dict[str, Any]:
        """The API body the form describes. A field the protocol does not show is sent as
        null on an update (it is cleared, as the protocol wants), left out on a create."""
        body: dict[str, Any] = {}
        for name in ALL:
            if name == "password" or name not in self.shown:
                if update and name != "password":
                    body[name] = None
                continue
            text = self.values.get(name, "").strip()
            if name in CHECKBOXES:
                body[name] = bool(text)
            elif text or name in ("name", "username"):  # required: blank says so
                body[name] = text
            elif update:
                body[name] = None
        if not self.values.get("shared"):
            body["shared_mailbox"] = None
        if "password" in self.shown and password:
            body["password"] = password
        return body

    def fail(self, errors: Iterable[FieldError]) -> None:
        for error in errors:
            name = error.field.split(".")[0]
            if name in self.shown:
                self.errors.setdefault(name, []).append(error.rule)
            else:
                self.general.append(f"{error.field}: {error.rule}")


Model = TypeVar("Model", bound=BaseModel)


def parsed(model: type[Model], body: dict[str, Any]) -> Model:
    """``body`` as the API reads it; raises ``InvalidFormError`` with the API's field errors."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidFormError(field_errors(exc.errors())) from None


class InvalidFormError(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.rule}" for e in errors))
        self.errors = errors
