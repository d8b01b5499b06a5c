"""Planted secrets, watched for across the whole test run.

Every secret the tests hand the product (mailbox passwords, OAuth client secrets, refresh and
access tokens, private-key passphrases) is made by ``planted(kind)``: a recognisable value,
``PLANTED-<kind>-<32 hex digits>``. The run then looks for that pattern in everything the
product gives out:

- every response of the config API (each ``TestClient`` the tests make is watched);
- every log line: the services' log files, and what in-process code logged or printed during
  each test (pytest's captured output, exception messages included);
- every metric: each service's ``/metrics``, scraped when the tests stop it;
- every database row a test leaves (error columns, the outbox of records to publish, the poll
  and message logs), dumped when the test's database is dropped.

A sighting fails the run at its end, naming where it was seen. The tests that check one secret
in one flow (connections, OAuth, S/MIME) also read their Kafka topics for it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PATTERN = re.compile(rb"PLANTED-[a-z-]+-[0-9a-f]{32}")
# The tests' own requests, as httpx and httpcore log them in the test process: requests to
# the in-process API, and the test browser's bounce back to the OAuth2 callback (the
# provider's redirect and the request to the callback carry the authorization code in their
# URL). Not the product's output.
TEST_CLIENT_REQUEST = re.compile(
    rb"^.*(HTTP Request: [A-Z]+ http://testserver/"
    rb"|HTTP Request: GET \S+/oauth/callback\?"
    rb"|\(b'Location', b'\S+/oauth/callback\?).*$",
    re.MULTILINE,
)


def planted(kind: str) -> str:
    """A secret value the whole run watches for; ``kind`` is lower-case words and dashes."""
    assert re.fullmatch(r"[a-z-]+", kind), kind
    WATCH.planted += 1
    return f"PLANTED-{kind}-{uuid.uuid4().hex}"


@dataclass
class Watch:
    planted: int = 0
    scanned: dict[str, int] = field(default_factory=dict)
    sightings: list[str] = field(default_factory=list)

    def scan(self, where: str, kind: str, data: bytes | str) -> None:
        """Look for planted secrets in ``data``; ``kind`` counts what was scanned."""
        raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
        raw = TEST_CLIENT_REQUEST.sub(b"", raw)
        self.scanned[kind] = self.scanned.get(kind, 0) + 1
        for found in PATTERN.finditer(raw):
            around = raw[max(0, found.start() - 100) : found.end() + 40].decode("utf-8", "replace")
            self.sightings.append(f"{where}: {found.group().decode()} in …{around}…")

    def scan_files(self, root: Path, glob: str, kind: str) -> None:
        for path in sorted(root.glob(glob)):
            if path.is_file():
                self.scan(str(path), kind, path.read_bytes())

    def watch_client(self, client: httpx.Client) -> None:
        """Scan every response the client receives."""

        def scan_response(response: httpx.Response) -> None:
            response.read()
            where = f"API response to {response.request.method} {response.request.url.path}"
            self.scan(where, "API responses", response.content)
            self.scan(where, "API responses", str(response.headers))

        client.event_hooks = {**client.event_hooks, "response": [scan_response]}

    def summary(self) -> str:
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.scanned.items()))
        return f"{self.planted} secrets planted; scanned {counts or 'nothing'}"


WATCH = Watch()
