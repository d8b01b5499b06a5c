"""The run-wide watch for planted secrets sees them where they would leak."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.harness.planted import Watch, planted


def test_a_planted_secret_is_seen_in_text_files_and_responses(tmp_path: Path) -> None:
    watch = Watch()
    secret = planted("test-secret")
    watch.scan("a log line", "logs", f'{{"event": "login failed", "error": "{secret}"}}')
    (tmp_path / "out").mkdir()  # not "logs": the run's own watch would see it too
    (tmp_path / "out" / "fetcher.log").write_text(f"x {secret} y")
    watch.scan_files(tmp_path, "**/out/*.log", "service log files")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"x-echo": secret}, json={"password": secret})

    client = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://api.test")
    watch.watch_client(client)
    client.get("/connections")
    assert len(watch.sightings) == 4  # the log line, the file, the body and the header
    assert all(secret in sighting for sighting in watch.sightings)
    assert watch.scanned == {"logs": 1, "service log files": 1, "API responses": 2}


def test_other_text_is_not_a_sighting() -> None:
    watch = Watch()
    watch.scan("a log line", "logs", "PLANTED-password-123 and PLANTED-x-" + "g" * 32)
    assert watch.sightings == []


def test_the_tests_own_requests_are_not_sightings() -> None:
    watch = Watch()
    secret = planted("authorization-code")
    line = f"INFO httpx HTTP Request: GET http://testserver/oauth/callback?code={secret} 200"
    redirect = f"DEBUG httpcore (b'Location', b'http://testserver/oauth/callback?code={secret}')"
    watch.scan("captured log", "logs", f"{line}\n{redirect}\nproduct says {secret}\n")
    assert len(watch.sightings) == 1  # the product's line only
    assert watch.sightings[0].startswith(f"captured log: {secret} in …")
    assert "product says" in watch.sightings[0]
