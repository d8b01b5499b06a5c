"""Bearer-token authentication with three roles: ``viewer`` reads the configuration, the
logs and the queue (metadata only); ``reader`` also reads mail content (the raw messages);
``admin`` reads everything and writes.

Tokens are configured as SHA-256 digests (``MAILINTAKE_API_TOKENS``), never in clear: the
tokens are long random strings, so a fast hash suffices and comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailintake_shared.logging import get_logger

log = get_logger(__name__)


class Role(StrEnum):
    VIEWER = "viewer"
    READER = "reader"
    ADMIN = "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "mi_" + secrets.token_urlsafe(32)


class TokenTable:
    def __init__(self, entries: list[str]) -> None:
        self._entries = [
            (Role(role), digest.lower())
            for role, _, digest in (entry.partition(":") for entry in entries)
        ]

    def role_of(self, token: str) -> Role | None:
        return self.role_of_digest(hash_token(token))

    def role_of_digest(self, digest: str) -> Role | None:
        """The role of the token whose SHA-256 (hex) is ``digest``; compared in constant time."""
        found: Role | None = None
        for role, expected in self._entries:
            if hmac.compare_digest(digest, expected):
                found = role
        return found


class FailureLimiter:
    """Failed authentications per client address: past ``limit`` in ``window_s``, further
    failures from the address are answered 429 until the oldest one has left the window.

    Only failures are counted and slowed: a request with a valid token is never refused,
    whatever other clients behind the same address did (tokens are 256-bit random, so this
    is against noise and log floods, not against guessing).
    """

    def __init__(
        self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit, self._window_s, self._clock = limit, window_s, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def failed(self, address: str) -> float | None:
        """Count a failure from ``address``; the seconds it must wait before its next try
        when it is over the limit (this failure is then not counted), else None."""
        with self._lock:
            now = self._clock()
            failures = self._recent(address, now)
            if len(failures) >= self._limit:
                return failures[0] + self._window_s - now
            failures.append(now)
            if len(self._failures) > 10_000:  # forget addresses whose failures have expired
                for known in list(self._failures):
                    if not self._recent(known, now):
                        del self._failures[known]
            return None

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(address, deque())
        while failures and failures[0] <= now - self._window_s:
            failures.popleft()
        return failures


_bearer = HTTPBearer(auto_error=False)


def current_role(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Role:
    """The caller's role; the caller (role and the token's fingerprint) is kept on the
    request for the audit log."""
    table: TokenTable = request.app.state.tokens
    role = table.role_of(credentials.credentials) if credentials else None
    if role is None or credentials is None:
        address = request.client.host if request.client else "unknown"
        limiter: FailureLimiter = request.app.state.auth_failures
        wait = limiter.failed(address)
        if wait is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail="too many failed authentications from this address; try again later",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        log.warning("authentication failed", client=address, path=request.url.path)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.actor = f"{role.value}:{hash_token(credentials.credentials)[:12]}"
    return role


def require_admin(role: Annotated[Role, Depends(current_role)]) -> Role:
    if role is not Role.ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this action needs the admin role")
    return role


def require_reader(role: Annotated[Role, Depends(current_role)]) -> Role:
    """Mail content (the most sensitive thing the product holds): readers and admins."""
    if role is Role.VIEWER:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="mail content needs the reader or admin role"
        )
    return role


Viewer = Annotated[Role, Depends(current_role)]
Reader = Annotated[Role, Depends(require_reader)]
Admin = Annotated[Role, Depends(require_admin)]
