"""The two identity providers behind one small interface.

Google through google-auth (refresh) and its documented token endpoint (the code exchange);
Microsoft through msal (authorization code flow with PKCE, refresh). Both return a
``TokenSet``; a refused grant (revoked, expired, consent withdrawn) raises
``InvalidGrantError``, anything else ``ProviderError`` (worth retrying later).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import urlencode

import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.credentials
import msal
import requests
from pydantic import SecretStr

from mailintake_shared.domain import Transport
from mailintake_shared.settings import Settings

DEFAULT_MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"


class OAuthProvider(StrEnum):
    GOOGLE = "google"
    MICROSOFT = "microsoft"


def default_scopes(
    provider: OAuthProvider, transport: Transport, *, app_only: bool = False
) -> list[str]:
    """What the app asks for when the credential names no scopes of its own."""
    if provider is OAuthProvider.GOOGLE:
        return ["https://mail.google.com/"]
    if app_only:
        return ["https://graph.microsoft.com/.default"]  # the application permissions granted
    if transport is Transport.GRAPH:
        return ["https://graph.microsoft.com/Mail.ReadWrite"]
    return ["https://outlook.office.com/IMAP.AccessAsUser.All"]


@dataclass(frozen=True)
class Registration:
    """A credential, decrypted, with the scopes that apply to one connection."""

    provider: OAuthProvider
    client_id: str
    client_secret: SecretStr | None
    tenant: str | None
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    refresh_token: str | None  # a new one when the provider rotated it
    expires_at: datetime


class InvalidGrantError(Exception):
    """The provider refused the grant: authorize the connection again."""


class ProviderError(Exception):
    """The provider could not be reached or answered with an error worth retrying."""


class Provider(Protocol):
    def start(
        self, registration: Registration, state: str, login_hint: str
    ) -> tuple[str, dict[str, Any]]:
        """The authorization URL, and what ``finish`` needs later (kept encrypted)."""

    def finish(
        self, registration: Registration, flow: dict[str, Any], response: dict[str, str]
    ) -> TokenSet: ...

    def refresh(self, registration: Registration, refresh_token: str) -> TokenSet: ...


class _Session(requests.Session):
    """Every request verified against ``ca_file`` when one is set: ``Session.verify`` alone
    loses to ``REQUESTS_CA_BUNDLE`` from the environment."""

    def __init__(self, ca_file: str | None) -> None:
        super().__init__()
        self._ca_file = ca_file

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if self._ca_file:
            kwargs["verify"] = self._ca_file
        return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]


def http_session(settings: Settings) -> requests.Session:
    return _Session(settings.oauth_ca_file)


def _expiry(seconds: object) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=int(str(seconds or 3600)))


class Google:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http = http_session(settings)

    def start(
        self, registration: Registration, state: str, login_hint: str
    ) -> tuple[str, dict[str, Any]]:
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {
            "client_id": registration.client_id,
            "redirect_uri": self._settings.oauth_redirect_uri,
            "response_type": "code",
            "scope": " ".join(registration.scopes),
            "access_type": "offline",  # a refresh token
            "prompt": "consent",  # … every time, also for an account that consented before
            "state": state,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "login_hint": login_hint,
        }
        url = f"{self._settings.google_authorization_endpoint}?{urlencode(query)}"
        return url, {"code_verifier": verifier}

    def finish(
        self, registration: Registration, flow: dict[str, Any], response: dict[str, str]
    ) -> TokenSet:
        if "error" in response:
            raise InvalidGrantError(f"authorization refused: {response['error']}")
        form = {
            "grant_type": "authorization_code",
            "code": response.get("code", ""),
            "redirect_uri": self._settings.oauth_redirect_uri,
            "client_id": registration.client_id,
            "client_secret": _secret(registration),
            "code_verifier": flow["code_verifier"],
        }
        try:
            answer = self._http.post(self._settings.google_token_endpoint, data=form, timeout=30)
        except requests.RequestException as exc:
            raise ProviderError(f"the token endpoint did not answer: {exc}") from exc
        body = answer.json() if answer.content else {}
        if answer.status_code != 200:
            error = body.get("error", answer.status_code)
            if error == "invalid_grant":
                raise InvalidGrantError("the authorization code was refused")
            raise ProviderError(f"the token endpoint answered {error}")
        return TokenSet(
            body["access_token"], body.get("refresh_token"), _expiry(body.get("expires_in"))
        )

    def refresh(self, registration: Registration, refresh_token: str) -> TokenSet:
        credentials = google.oauth2.credentials.Credentials(  # type: ignore[no-untyped-call]
            token=None,
            refresh_token=refresh_token,
            token_uri=self._settings.google_token_endpoint,
            client_id=registration.client_id,
            client_secret=_secret(registration),
            scopes=list(registration.scopes),
        )
        try:
            credentials.refresh(google.auth.transport.requests.Request(self._http))  # type: ignore[no-untyped-call]
        except google.auth.exceptions.RefreshError as exc:
            if "invalid_grant" in str(exc):
                raise InvalidGrantError("the refresh token was refused") from exc
            raise ProviderError(f"refresh failed: {exc}") from exc
        except google.auth.exceptions.TransportError as exc:
            raise ProviderError(f"the token endpoint did not answer: {exc}") from exc
        expiry = credentials.expiry
        expires_at = expiry.replace(tzinfo=UTC) if expiry else _expiry(None)
        return TokenSet(str(credentials.token), credentials.refresh_token, expires_at)


class Microsoft:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http = http_session(settings)

    @lru_cache(maxsize=256)  # noqa: B019 (one app per registration, for the life of the process)
    def _app(self, client_id: str, secret: str, tenant: str) -> msal.ConfidentialClientApplication:
        host = self._settings.microsoft_authority_host.rstrip("/")
        known = host == DEFAULT_MICROSOFT_AUTHORITY
        return msal.ConfidentialClientApplication(
            client_id,
            client_credential=secret,
            authority=f"{host}/{tenant}",
            http_client=self._http,
            validate_authority=known,
            instance_discovery=None if known else False,
        )

    def _for(self, registration: Registration) -> msal.ConfidentialClientApplication:
        """The tenant's app; msal reads the authority's OpenID configuration first."""
        tenant = registration.tenant or "common"
        try:
            return self._app(registration.client_id, _secret(registration), tenant)
        except (requests.RequestException, ValueError) as exc:  # unreachable, or not OpenID
            authority = f"{self._settings.microsoft_authority_host.rstrip('/')}/{tenant}"
            raise ProviderError(f"Microsoft Entra ({authority}) did not answer: {exc}") from exc

    def start(
        self, registration: Registration, state: str, login_hint: str
    ) -> tuple[str, dict[str, Any]]:
        flow = self._for(registration).initiate_auth_code_flow(
            list(registration.scopes),
            redirect_uri=self._settings.oauth_redirect_uri,
            state=state,
            login_hint=login_hint,
        )
        if "auth_uri" not in flow:
            raise ProviderError(f"msal could not start the flow: {flow.get('error')}")
        return str(flow["auth_uri"]), dict(flow)

    def finish(
        self, registration: Registration, flow: dict[str, Any], response: dict[str, str]
    ) -> TokenSet:
        app = self._for(registration)
        try:
            result = app.acquire_token_by_auth_code_flow(flow, response)
        except ValueError as exc:  # msal: state mismatch, missing code
            raise InvalidGrantError(f"authorization refused: {exc}") from exc
        except requests.RequestException as exc:
            raise ProviderError(f"the token endpoint did not answer: {exc}") from exc
        return _token_set(result)

    def app_token(self, registration: Registration) -> TokenSet:
        """App-only access (client credentials): msal caches the token until near expiry."""
        try:
            result = self._for(registration).acquire_token_for_client(list(registration.scopes))
        except requests.RequestException as exc:
            raise ProviderError(f"the token endpoint did not answer: {exc}") from exc
        return _token_set(result)

    def refresh(self, registration: Registration, refresh_token: str) -> TokenSet:
        try:
            result = self._for(registration).acquire_token_by_refresh_token(
                refresh_token, list(registration.scopes)
            )
        except requests.RequestException as exc:
            raise ProviderError(f"the token endpoint did not answer: {exc}") from exc
        return _token_set(result)


def _token_set(result: dict[str, Any]) -> TokenSet:
    if "access_token" in result:
        return TokenSet(
            result["access_token"], result.get("refresh_token"), _expiry(result.get("expires_in"))
        )
    error = result.get("error", "unknown error")
    if error in ("invalid_grant", "interaction_required", "consent_required"):
        raise InvalidGrantError(f"the provider refused the grant ({error})")
    raise ProviderError(f"the token endpoint answered {error}")


def _secret(registration: Registration) -> str:
    return registration.client_secret.get_secret_value() if registration.client_secret else ""
