"""Test a connection step by step: DNS, TCP connect, TLS handshake, then the protocol's
greeting, STARTTLS, login and folder. The result names the step that failed and why, with
the server's greeting and capabilities, the folder's message count and the latency. The
password is never part of it.

The connection's time-out bounds every step, so a server that accepts TCP and never answers
fails with ``timeout`` after about that long.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

from mailintake_shared.domain import Encryption, Transport
from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.config import MailboxConfig
from mailintake_shared.mailbox.graph import GraphMailbox
from mailintake_shared.mailbox.hints import opening_failed
from mailintake_shared.mailbox.imap import ImapMailbox
from mailintake_shared.mailbox.pop3 import Pop3Mailbox


@dataclass
class Step:
    name: str  # dns, connect, tls, session, folder
    ok: bool
    milliseconds: float


@dataclass
class ProbeResult:
    ok: bool
    failed_step: ErrorKind | None = None
    error: str | None = None
    greeting: str | None = None
    capabilities: list[str] = field(default_factory=list)
    messages: int | None = None
    latency_ms: float = 0.0
    steps: list[Step] = field(default_factory=list)


class _Steps:
    def __init__(self, result: ProbeResult) -> None:
        self._result = result
        self._started = time.monotonic()

    def run(self, name: str, action: Callable[[], object]) -> None:
        started = time.monotonic()
        try:
            action()
        except Exception:
            self._result.steps.append(Step(name, False, _ms(started)))
            raise
        self._result.steps.append(Step(name, True, _ms(started)))

    def total(self) -> float:
        return _ms(self._started)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def probe(config: MailboxConfig) -> ProbeResult:
    view = config.view
    result = ProbeResult(ok=False)
    steps = _Steps(result)
    host, port, timeout = config.address
    try:
        if view.transport is Transport.GRAPH:  # HTTPS to Graph: the session is the test
            steps.run("session", lambda: _graph_session(config, result))
            result.ok = True
            result.latency_ms = steps.total()
            return result
        addresses: list[tuple[object, ...]] = []
        steps.run("dns", lambda: addresses.extend(_resolve(config, host, port, timeout)))
        steps.run("connect", lambda: _connect(addresses, config))
        steps.run("session", lambda: _session(config, result))
        result.ok = True
    except Exception as exc:
        error = opening_failed(exc, config)
        result.failed_step, result.error = error.kind, config.scrub(str(error))
    result.latency_ms = steps.total()
    return result


def _resolve(
    config: MailboxConfig, host: str, port: int, timeout: float
) -> list[tuple[object, ...]]:
    """The host's addresses, each checked by the outbound guard (``network.py``).
    getaddrinfo has no time-out of its own: it runs in a thread that is waited for."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        found = pool.submit(config.network.resolve, host, port)
        return [address for _, address in found.result(timeout=timeout)]
    except FutureTimeout:
        raise TimeoutError("DNS resolution did not answer in time") from None
    finally:
        pool.shutdown(wait=False)


def _connect(addresses: list[tuple[object, ...]], config: MailboxConfig) -> None:
    """TCP connect (first address that answers), then the TLS handshake for implicit TLS."""
    host, _, timeout = config.address
    last: Exception | None = None
    for address in addresses:
        try:
            sock = socket.create_connection(address[:2], timeout=timeout)  # type: ignore[arg-type]
        except OSError as exc:
            last = exc
            continue
        with sock:
            context = config.tls_context()
            if config.view.encryption is Encryption.SSL and context is not None:
                with context.wrap_socket(sock, server_hostname=host):
                    pass
        return
    raise last or OSError("the host name resolved to no address")


def _graph_session(config: MailboxConfig, result: ProbeResult) -> None:
    with GraphMailbox.open(config) as graph:
        result.messages = graph.count()


def _session(config: MailboxConfig, result: ProbeResult) -> None:
    """Greeting, STARTTLS, login and the folder, through the same client the fetcher uses."""
    if config.view.transport is Transport.POP3:
        with Pop3Mailbox.open(config) as pop3:
            result.greeting = pop3.greeting
            result.capabilities = list(pop3.capabilities)
            result.messages = len(pop3.messages())  # also checks UIDL
        return
    with ImapMailbox.open(config) as imap:
        result.greeting = imap.greeting
        result.capabilities = [c.decode("ascii", "replace") for c in imap.capabilities]
        result.messages = imap.select(config.folder).exists
