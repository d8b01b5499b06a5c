"""Access tokens per connection: cached, refreshed before expiry, rotated refresh tokens saved
atomically, and one refresh at a time per connection across every worker.

The grant row (``oauth_grants``) is the lock: a refresh runs inside ``SELECT … FOR UPDATE`` of
it, so a second worker waits, then finds the fresh token and uses it instead of spending the
refresh token again (Microsoft rotates them; a spent one is refused). A refused grant marks the
connection ``authorization_required``: polls fail at once with that kind, without asking the
provider again, until the connection is authorized anew.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from mailintake_shared.db.bindings import client_secret_binding, grant_binding
from mailintake_shared.db.models import Connection, OAuthCredential, OAuthGrant
from mailintake_shared.db.types import utcnow
from mailintake_shared.domain import Protocol
from mailintake_shared.events import ErrorKind
from mailintake_shared.logging import get_logger
from mailintake_shared.mailbox.errors import PollError
from mailintake_shared.oauth.providers import (
    Google,
    InvalidGrantError,
    Microsoft,
    OAuthProvider,
    Provider,
    ProviderError,
    Registration,
    default_scopes,
    http_session,
)
from mailintake_shared.secretbox import SecretBox, SecretDecryptError
from mailintake_shared.settings import Settings

log = get_logger(__name__)

AUTHORIZED = "authorized"
AUTHORIZATION_REQUIRED = "authorization_required"


class AuthorizationRequiredError(PollError):
    def __init__(self, reason: str) -> None:
        super().__init__(
            ErrorKind.AUTHORIZATION_REQUIRED,
            f"authorization required: {reason}; authorize the connection again",
        )


@contextmanager
def _unusable_is_unauthorized() -> Iterator[None]:
    """A stored token or secret that does not decrypt for the connection as it is now (its
    destination changed outside the API): authorize again, nothing is sent."""
    try:
        yield
    except SecretDecryptError as exc:
        raise AuthorizationRequiredError(str(exc)) from exc


def provider_of(protocol: Protocol) -> OAuthProvider:
    return OAuthProvider.GOOGLE if protocol is Protocol.GOOGLE_OAUTH2 else OAuthProvider.MICROSOFT


def registration(
    connection: Connection, credential: OAuthCredential, box: SecretBox
) -> Registration:
    view = connection.view()
    scopes = credential.scopes.split() if credential.scopes else None
    return Registration(
        provider=OAuthProvider(credential.provider),
        client_id=credential.client_id,
        client_secret=box.decrypt(credential.client_secret_enc, client_secret_binding(credential))
        if credential.client_secret_enc
        else None,
        tenant=credential.tenant,
        scopes=tuple(
            scopes
            or default_scopes(
                provider_of(view.protocol), view.transport, app_only=credential.app_only
            )
        ),
    )


@dataclass(frozen=True)
class _Cached:
    token: str
    expires_at: datetime
    binding: bytes  # the grant's binding when the token was read: where it may go


class TokenStore:
    def __init__(self, sessions: sessionmaker[Session], box: SecretBox, settings: Settings) -> None:
        self._sessions = sessions
        self._box = box
        self._margin = timedelta(seconds=settings.oauth_refresh_margin_seconds)
        self._microsoft = Microsoft(settings)
        self._providers: dict[OAuthProvider, Provider] = {
            OAuthProvider.GOOGLE: Google(settings),
            OAuthProvider.MICROSOFT: self._microsoft,
        }
        self.graph = (settings.graph_endpoint, http_session(settings))
        self._cache: dict[uuid.UUID, _Cached] = {}
        self._lock = threading.Lock()

    def provider(self, kind: OAuthProvider) -> Provider:
        return self._providers[kind]

    def access_token(
        self, connection_id: uuid.UUID, *, binding: bytes, refresh: bool = False
    ) -> str:
        """A token valid for at least the margin; ``refresh`` when the server refused the
        current one (revoked or expired early). ``binding`` is the grant's binding of the
        connection as the caller read it (``bindings.grant_binding``): a token cached for
        another destination is not handed out."""
        with self._lock:
            cached = self._cache.get(connection_id)
        if cached and cached.binding != binding:
            cached = None  # the destination changed since: read the grant again
        if cached and not refresh and cached.expires_at - self._margin > utcnow():
            return cached.token
        app = self._app_token(connection_id)
        if app is not None:
            with self._lock:
                self._cache[connection_id] = app
            return app.token
        refused: str | None = None
        with self._sessions() as session, session.begin(), _unusable_is_unauthorized():
            grant = session.get(OAuthGrant, connection_id, with_for_update=True)
            connection = session.get(Connection, connection_id)
            if (
                grant is None
                or connection is None
                or grant.status != AUTHORIZED
                or grant.refresh_token_enc is None
            ):
                reason = (
                    grant.error if grant and grant.error else "the connection is not authorized"
                )
                raise AuthorizationRequiredError(reason)
            current = self._stored(grant, grant_binding(connection))
            token: _Cached | None = None
            usable = current is not None and current.expires_at - self._margin > utcnow()
            refused_before = refresh and cached is not None and current == cached
            if usable and not refused_before:
                token = current  # another worker refreshed while this one waited
            else:
                try:
                    token = self._refresh(session, connection, grant)
                except InvalidGrantError as exc:
                    grant.status, grant.error = AUTHORIZATION_REQUIRED, str(exc)
                    refused = str(exc)
                    log.warning(
                        "authorization required", connection_id=str(connection_id), error=str(exc)
                    )
        if refused is not None:  # committed above: the state outlives this poll
            with self._lock:
                self._cache.pop(connection_id, None)
            raise AuthorizationRequiredError(refused)
        assert token is not None
        with self._lock:
            self._cache[connection_id] = token
        return token.token

    def _app_token(self, connection_id: uuid.UUID) -> _Cached | None:
        """App-only credentials (Graph's client credentials grant) need no grant: None when the
        connection's credential is not app-only."""
        with self._sessions() as session, _unusable_is_unauthorized():
            connection = session.get(Connection, connection_id)
            credential = (
                session.get(OAuthCredential, connection.oauth_credential_id)
                if connection is not None and connection.oauth_credential_id
                else None
            )
            if connection is None or credential is None or not credential.app_only:
                return None
            reg = registration(connection, credential, self._box)
            binding = grant_binding(connection)
        try:
            tokens = self._microsoft.app_token(reg)
        except (InvalidGrantError, ProviderError) as exc:
            raise PollError(ErrorKind.AUTHENTICATION, f"app-only token refused: {exc}") from exc
        return _Cached(tokens.access_token, tokens.expires_at, binding)

    def _stored(self, grant: OAuthGrant, binding: bytes) -> _Cached | None:
        if grant.access_token_enc is None or grant.access_expires_at is None:
            return None
        token = self._box.decrypt(grant.access_token_enc, binding).get_secret_value()
        return _Cached(token, grant.access_expires_at, binding)

    def _refresh(self, session: Session, connection: Connection, grant: OAuthGrant) -> _Cached:
        connection_id = connection.id
        credential = (
            session.get(OAuthCredential, connection.oauth_credential_id)
            if connection.oauth_credential_id
            else None
        )
        if credential is None:
            raise InvalidGrantError("the connection has no OAuth2 credential")
        assert grant.refresh_token_enc is not None
        binding = grant_binding(connection)
        refresh_token = self._box.decrypt(grant.refresh_token_enc, binding).get_secret_value()
        reg = registration(connection, credential, self._box)
        try:
            tokens = self._providers[reg.provider].refresh(reg, refresh_token)
        except ProviderError as exc:
            busy = any(sign in str(exc) for sign in ("429", "503", "temporarily_unavailable"))
            kind = ErrorKind.THROTTLED if busy else ErrorKind.SERVER_ERROR
            raise PollError(kind, f"token refresh failed: {exc}") from exc
        grant.access_token_enc = self._box.encrypt(tokens.access_token, binding)
        grant.access_expires_at = tokens.expires_at
        if tokens.refresh_token and tokens.refresh_token != refresh_token:
            grant.refresh_token_enc = self._box.encrypt(tokens.refresh_token, binding)  # rotated
        grant.refreshed_at = utcnow()
        log.info("access token refreshed", connection_id=str(connection_id))
        return _Cached(tokens.access_token, tokens.expires_at, binding)

    def forget(self, connection_id: uuid.UUID) -> None:
        with self._lock:
            self._cache.pop(connection_id, None)


def save_grant(
    session: Session,
    box: SecretBox,
    connection: Connection,
    access: str,
    refresh: str | None,
    expires_at: datetime,
) -> None:
    """After an authorization: the tokens, bound to the connection's destination, and the
    connection authorized."""
    grant = session.get(OAuthGrant, connection.id, with_for_update=True)
    if grant is None:
        grant = OAuthGrant(connection_id=connection.id, status=AUTHORIZED)
        session.add(grant)
    binding = grant_binding(connection)
    if refresh:
        grant.refresh_token_enc = box.encrypt(refresh, binding)
    grant.access_token_enc = box.encrypt(access, binding)
    grant.access_expires_at = expires_at
    grant.status, grant.error = AUTHORIZED, None
    grant.authorized_at = grant.refreshed_at = utcnow()
