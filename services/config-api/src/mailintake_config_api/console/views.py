"""How the console words what the API returns: a connection's health, whether it is watched
for new mail, and a connection test as the steps an operator knows (DNS, connect, TLS,
sign-in, folder)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailintake_config_api.schemas import ConnectionPublic, ConnectionTestResult
from mailintake_shared.domain import Encryption, Transport, effective_port
from mailintake_shared.events import ErrorKind
from mailintake_shared.watch import WatchMethod, WatchState


@dataclass(frozen=True)
class Health:
    key: str  # ok, failing, stalled, authorization, disabled, new
    label: str
    detail: str | None = None


def health(item: ConnectionPublic) -> Health:
    """Authorization required, disabled, stalled, failing, not polled yet, or ok; with the
    last error in the mail server's or the provider's words."""
    status = item.status
    if item.authorization in ("not_authorized", "authorization_required"):
        said = "not authorized yet" if item.authorization == "not_authorized" else None
        return Health("authorization", "authorization required", said or status.last_error)
    if not item.enabled:
        return Health("disabled", "disabled")
    if status.stalled:
        return Health("stalled", "stalled", status.last_error or "no successful poll for too long")
    if status.consecutive_failures:
        failures = f"{status.consecutive_failures} failed poll(s) in a row"
        return Health("failing", "failing", f"{status.last_error or ''} ({failures})".strip())
    if status.last_poll_at is None:
        return Health("new", "not polled yet")
    return Health("ok", "ok", status.waiting_for_store)


_METHODS = {WatchMethod.IMAP_IDLE: "IMAP IDLE", WatchMethod.GRAPH: "Graph change notifications"}


@dataclass(frozen=True)
class Watch:
    key: str  # ok (watched), stalled (it should be and is not), off (by choice, or unsupported)
    label: str
    method: str | None  # how it is watched, in words
    since: datetime | None
    reason: str | None  # why not, as the API says it


def watch(item: ConnectionPublic) -> Watch:
    """Whether the server announces the connection's new mail (push), how, since when and why
    not: the API's ``watch`` in the console's words."""
    shown = item.watch
    method = _METHODS[shown.method] if shown.method else None
    if shown.watched:
        return Watch("ok", "watched", method, shown.since, None)
    chosen = shown.state in (WatchState.OFF, WatchState.UNSUPPORTED)
    label = "not watched" if chosen else f"not watched ({shown.state.value})"
    return Watch("off" if chosen else "stalled", label, method, shown.since, shown.reason)


@dataclass(frozen=True)
class Step:
    label: str
    state: str  # ok, failed, skipped
    detail: str | None = None


# The probe's own steps are dns, connect (TCP, and TLS for ssl) and session (greeting,
# STARTTLS, sign-in, folder); a failure's kind says which part of them failed.
_KIND_STEP = {
    ErrorKind.DNS: "dns",
    ErrorKind.ADDRESS_DENIED: "dns",
    ErrorKind.CONNECTION_REFUSED: "connect",
    ErrorKind.TLS: "tls",
    ErrorKind.STARTTLS_UNAVAILABLE: "tls",
    ErrorKind.AUTHENTICATION: "login",
    ErrorKind.AUTHORIZATION_REQUIRED: "login",
    ErrorKind.FOLDER_MISSING: "folder",
    ErrorKind.UIDL_UNSUPPORTED: "folder",
}
_PROBE_STEP = {"dns": "dns", "connect": "connect", "session": "login"}


def steps_of(result: ConnectionTestResult, item: ConnectionPublic) -> list[Step]:
    """Each step with a tick, the failing one with the error and its advice, the rest not
    run."""
    graph = item.transport is Transport.GRAPH
    pop3 = item.transport is Transport.POP3
    names = ["login", "folder"] if graph else ["dns", "connect", "tls", "login", "folder"]
    if item.encryption is Encryption.NONE and not graph:
        names.remove("tls")
    box = "Mailbox" if pop3 or graph else f"Folder {item.folder or 'INBOX'}"
    labels = {
        "dns": f"DNS: {item.host}",
        "connect": f"Connect to port {effective_port(item.transport, item.encryption, item.port)}",
        "tls": "TLS (STARTTLS)" if item.encryption is Encryption.STARTTLS else "TLS",
        "login": f"Sign in as {item.username}",
        "folder": box,
    }
    failed: str | None = None
    if not result.ok:
        failed = _KIND_STEP.get(result.failed_step) if result.failed_step else None
        first_bad = next((s.name for s in result.steps if not s.ok), "session")
        failed = failed or _PROBE_STEP.get(first_bad, "login")
        if failed not in names:  # e.g. a TLS failure on a connection without encryption
            failed = "connect" if "connect" in names else "login"
    steps: list[Step] = []
    state = "ok"
    for name in names:
        if name == failed:
            steps.append(Step(labels[name], "failed", result.error))
            state = "skipped"
            continue
        detail = None
        if name == "folder" and result.messages is not None and state == "ok":
            detail = f"{result.messages:,} messages"
        steps.append(Step(labels[name], state, detail))
    return steps
