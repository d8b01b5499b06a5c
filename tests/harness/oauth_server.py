"""A local OAuth2 authorization server that google-auth, msal and Dovecot really talk to.

It speaks the documented protocol: the authorization endpoint (it signs the configured user
in at once and redirects back with a code), the token endpoint (authorization code with PKCE,
refresh token with rotation, client credentials), token introspection (RFC 7662, for
Dovecot's oauth2 passdb), revocation (RFC 7009) and the OpenID discovery document msal reads.
HTTPS on 127.0.0.1 with the test CA. Tests steer it: expire access tokens, revoke grants, count
refreshes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.harness.planted import planted
from tests.harness.tls import TestPki


@dataclass
class _Grant:
    user: str
    client_id: str
    scope: str
    refresh_token: str
    revoked: bool = False


@dataclass
class OAuthServerState:
    clients: dict[str, str] = field(default_factory=dict)  # client id → secret
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    access: dict[str, tuple[_Grant | None, str, float]] = field(default_factory=dict)
    grants: dict[str, _Grant] = field(default_factory=dict)  # by current refresh token
    refreshes: int = 0
    token_seconds: int = 3600
    rotate: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


class OAuthServer:
    def __init__(self, pki: TestPki) -> None:
        self.state = OAuthServerState()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert_pem, pki.key_pem)
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> OAuthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- what tests do ----------------------------------------------------------------------
    def register(self, client_id: str, secret: str) -> None:
        self.state.clients[client_id] = secret

    def expire_access_tokens(self) -> None:
        with self.state.lock:
            for token, (grant, user, _) in list(self.state.access.items()):
                self.state.access[token] = (grant, user, 0.0)

    def revoke_all(self) -> None:
        with self.state.lock:
            for grant in self.state.grants.values():
                grant.revoked = True

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token handed out (for planted-secret checks)."""
        with self.state.lock:
            return [*self.state.access, *self.state.grants]


def _b64url_sha256(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def _handler(state: OAuthServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            basic = self.headers.get("Authorization", "")
            if basic.startswith("Basic "):
                user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                form.setdefault("client_id", user)
                form.setdefault("client_secret", password)
            return form

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path.endswith("/.well-known/openid-configuration"):
                base = f"https://{self.headers['Host']}{url.path.split('/v2.0/')[0]}"
                base = base.removesuffix("/.well-known/openid-configuration")
                self._json(
                    200,
                    {
                        "issuer": base,
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                        "response_types_supported": ["code"],
                    },
                )
            elif url.path.endswith(("/authorize", "/auth")):
                self._authorize(query)
            else:
                self._json(404, {"error": "not_found"})

        def _authorize(self, query: dict[str, str]) -> None:
            if query.get("client_id") not in state.clients:
                self._json(400, {"error": "unauthorized_client"})
                return
            code = planted("authorization-code")
            with state.lock:
                state.codes[code] = {
                    "client_id": query["client_id"],
                    "redirect_uri": query.get("redirect_uri", ""),
                    "challenge": query.get("code_challenge", ""),
                    "scope": query.get("scope", ""),
                    "user": query.get("login_hint", ""),
                }
            back = {"code": code, "state": query.get("state", "")}
            self.send_response(302)
            self.send_header("Location", f"{query.get('redirect_uri')}?{urlencode(back)}")
            self.end_headers()

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            form = self._form()
            if path.endswith("/token"):
                self._token(form)
            elif path.endswith("/introspect"):
                self._introspect(form)
            elif path.endswith("/revoke"):
                with state.lock:
                    grant = state.grants.get(form.get("token", ""))
                    if grant:
                        grant.revoked = True
                self._json(200, {})
            else:
                self._json(404, {"error": "not_found"})

        def _issue(self, grant: _Grant | None, user: str, scope: str) -> dict[str, Any]:
            access = planted("access-token")
            state.access[access] = (grant, user, time.time() + state.token_seconds)
            body: dict[str, Any] = {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": state.token_seconds,
                "scope": scope,
            }
            if grant is not None:
                body["refresh_token"] = grant.refresh_token
            return body

        def _token(self, form: dict[str, str]) -> None:
            client = form.get("client_id", "")
            if state.clients.get(client) != form.get("client_secret"):
                self._json(401, {"error": "invalid_client"})
                return
            kind = form.get("grant_type")
            with state.lock:
                if kind == "authorization_code":
                    code = state.codes.pop(form.get("code", ""), None)
                    verifier = form.get("code_verifier", "")
                    if (
                        code is None
                        or code["client_id"] != client
                        or code["redirect_uri"] != form.get("redirect_uri")
                        or _b64url_sha256(verifier) != code["challenge"]
                    ):
                        self._json(400, {"error": "invalid_grant"})
                        return
                    grant = _Grant(code["user"], client, code["scope"], planted("refresh-token"))
                    state.grants[grant.refresh_token] = grant
                    self._json(200, self._issue(grant, grant.user, grant.scope))
                elif kind == "refresh_token":
                    known = state.grants.get(form.get("refresh_token", ""))
                    if known is None or known.revoked or known.client_id != client:
                        self._json(400, {"error": "invalid_grant"})
                        return
                    state.refreshes += 1
                    if state.rotate:  # the old refresh token is spent
                        del state.grants[known.refresh_token]
                        known.refresh_token = planted("refresh-token")
                        state.grants[known.refresh_token] = known
                    self._json(200, self._issue(known, known.user, known.scope))
                elif kind == "client_credentials":
                    self._json(200, self._issue(None, f"app:{client}", form.get("scope", "")))
                else:
                    self._json(400, {"error": "unsupported_grant_type"})

        def _introspect(self, form: dict[str, str]) -> None:
            with state.lock:
                found = state.access.get(form.get("token", ""))
            active = (
                found is not None
                and found[2] > time.time()
                and (found[0] is None or not found[0].revoked)
            )
            body: dict[str, Any] = {"active": active}
            if active and found is not None:
                body["username"] = found[1]
            self._json(200, body)

    return Handler
