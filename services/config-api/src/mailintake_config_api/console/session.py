"""Console sessions: an API token is exchanged for a cookie, and every form carries a CSRF
token.

The cookie holds the session sealed by the secret box (AES-256-GCM with the settings'
encryption keys, bound to this purpose): a random session id, its CSRF token, the SHA-256 of
the API token signed in with and the time of sign-in. Nothing else is kept on the server, so
every replica of the API reads it, and the role is looked up again in the token table on
every request: a token removed from ``MAILINTAKE_API_TOKENS`` ends its sessions at once.
Signing out forgets the session in this process (a replica accepts the cookie until it
expires, ``MAILINTAKE_CONSOLE_SESSION_MINUTES`` after the sign-in).

The cookie is ``HttpOnly``, ``SameSite=Strict``, ``Secure`` when the request came over TLS
(``X-Forwarded-Proto`` from a trusted proxy counts), and limited to ``/console``. A visitor
who has not signed in gets an anonymous cookie with a CSRF token too, so the sign-in form is
protected like the others.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request, Response

from mailintake_config_api.auth import Role, TokenTable, hash_token
from mailintake_shared.secretbox import SecretBox, SecretDecryptError

COOKIE = "mailintake_console"
PATH = "/console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_PURPOSE = b"mailintake console session v1"


@dataclass(frozen=True)
class Session:
    """What the cookie says; ``digest`` is None before sign-in (only a CSRF token)."""

    sid: str
    csrf: str
    digest: str | None
    at: float  # when it was issued (seconds since the epoch)


@dataclass(frozen=True)
class User:
    """A signed-in operator: the role their token has now."""

    role: Role
    session: Session

    @property
    def actor(self) -> str:
        """As the audit log names a caller: ``role:`` and the token's fingerprint."""
        return f"{self.role.value}:{(self.session.digest or '')[:12]}"

    @property
    def can_change(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def can_read_mail(self) -> bool:
        return self.role is not Role.VIEWER


_FIELDS = {field.name for field in dataclasses.fields(Session)}


class Sessions:
    def __init__(
        self, box: SecretBox, lifetime_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._box, self._lifetime_s, self._clock = box, lifetime_s, clock
        self._ended: dict[str, float] = {}  # session id → when it would have expired
        self._lock = threading.Lock()

    def anonymous(self) -> Session:
        return Session(secrets.token_urlsafe(18), secrets.token_urlsafe(24), None, self._clock())

    def signed_in(self, token: str) -> Session:
        """A new session (new id and CSRF token: nothing carries over from before)."""
        fresh = self.anonymous()
        return Session(fresh.sid, fresh.csrf, hash_token(token), fresh.at)

    def seal(self, value: object) -> str:
        """``value`` (JSON) sealed for a cookie: only this deployment's keys open it."""
        sealed = self._box.encrypt(json.dumps(value), _PURPOSE)
        return base64.urlsafe_b64encode(sealed).decode("ascii")

    def open(self, cookie: str | None) -> object:
        """What ``seal`` sealed, or None for anything else."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            sealed = base64.urlsafe_b64decode(cookie.encode("ascii"))
            return json.loads(self._box.decrypt(sealed, _PURPOSE).get_secret_value())
        except (SecretDecryptError, ValueError, binascii.Error, UnicodeEncodeError):
            return None

    def read(self, cookie: str | None) -> Session | None:
        """The session the cookie holds, if it is ours, unexpired and not signed out."""
        value = self.open(cookie)
        if not isinstance(value, dict) or set(value) != _FIELDS:
            return None
        session = Session(**value)
        now = self._clock()
        with self._lock:
            ended = session.sid in self._ended
        if ended or not session.at <= now < session.at + self._lifetime_s:
            return None
        return session

    def end(self, session: Session) -> None:
        now = self._clock()
        with self._lock:
            self._ended = {sid: until for sid, until in self._ended.items() if until > now}
            self._ended[session.sid] = session.at + self._lifetime_s

    def role(self, session: Session, table: TokenTable) -> Role | None:
        return table.role_of_digest(session.digest) if session.digest else None

    def set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.seal(dataclasses.asdict(session)),
            max_age=int(self._lifetime_s),
            path=PATH,
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )


def csrf_matches(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())
