"""TLS contexts for mail servers: verification on, TLS 1.2 at least, a per-connection CA."""

from __future__ import annotations

import ssl
from functools import lru_cache

from mailintake_shared.logging import get_logger

log = get_logger(__name__)


def client_context(*, verify: bool, ca_pem: str | None, server: str) -> ssl.SSLContext:
    """A client context that verifies the server against the system CAs plus ``ca_pem``.

    ``verify=False`` is an explicit, logged opt-out (for a lab server with a self-signed
    certificate); the connection is still encrypted, but not authenticated. Contexts are
    shared between connections with the same settings: loading the system CAs costs more
    than a whole poll of a synced mailbox.
    """
    if not verify:
        log.warning("TLS certificate verification is off for this server", server=server)
    return _context(verify, ca_pem)


@lru_cache(maxsize=64)
def _context(verify: bool, ca_pem: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_pem:
        context.load_verify_locations(cadata=ca_pem)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
