"""Helpers for tests of the web console: signing in, and reading a page's CSRF token."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, token: str) -> str:
    """Sign in with ``token`` as a browser does; the session's CSRF token."""
    client.headers.pop("Authorization", None)  # the console knows only its cookie
    page = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"token": token, "csrf": csrf_of(page.text), "next": "/console/connections"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/console/connections").text)
