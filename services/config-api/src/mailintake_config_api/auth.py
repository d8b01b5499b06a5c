"""Bearer-token authentication with two roles: ``admin`` (read and write) and ``viewer``.

Tokens are configured as SHA-256 digests (``MAILINTAKE_API_TOKENS``), never in clear: the
tokens are long random strings, so a fast hash suffices and comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer


class Role(StrEnum):
    VIEWER = "viewer"
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
        digest = hash_token(token)
        found: Role | None = None
        for role, expected in self._entries:
            if hmac.compare_digest(digest, expected):
                found = role
        return found


_bearer = HTTPBearer(auto_error=False)


def current_role(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Role:
    table: TokenTable = request.app.state.tokens
    role = table.role_of(credentials.credentials) if credentials else None
    if role is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return role


def require_admin(role: Annotated[Role, Depends(current_role)]) -> Role:
    if role is not Role.ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this action needs the admin role")
    return role


Viewer = Annotated[Role, Depends(current_role)]
Admin = Annotated[Role, Depends(require_admin)]
