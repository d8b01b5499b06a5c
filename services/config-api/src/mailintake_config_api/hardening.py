"""HTTP hardening of the API: a request body limit and security headers on every answer.

A pure ASGI middleware (no buffering of bodies): a request whose ``Content-Length`` is over
``MAILINTAKE_API_MAX_BODY_BYTES`` is answered 413 before its body is read, and a chunked body
that grows past it is cut off with the same answer.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
# The interactive docs load Swagger UI's script and style from a CDN: everything else
# forbids every source.
CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOCS = ("/docs", "/redoc")


def _too_large_detail(limit: int) -> str:
    return f"request body larger than {limit} bytes (MAILINTAKE_API_MAX_BODY_BYTES)"


class BodyTooLargeError(HTTPException):
    """Raised from ``receive``: FastAPI passes HTTP exceptions on, so the answer is a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=_too_large_detail(limit))


class Hardening:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self._app = app
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await self._too_large(send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise BodyTooLargeError(self._max)
            return message

        headers = SECURITY_HEADERS
        if not str(scope.get("path", "")).startswith(DOCS):
            headers = (*headers, CSP)

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in headers if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self._app(scope, limited_receive, secured_send)
        except BodyTooLargeError:
            if not started:
                await self._too_large(secured_send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"detail": _too_large_detail(self._max)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *SECURITY_HEADERS,
                    CSP,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
