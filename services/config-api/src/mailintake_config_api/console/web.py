"""What every console page shares: the templates, the page's own Content-Security-Policy,
the signed-in user, form bodies with their CSRF check, one-time notices and error pages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mailintake_config_api.auth import TokenTable
from mailintake_config_api.console.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    PATH,
    Sessions,
    User,
    csrf_matches,
)
from mailintake_config_api.resources import Resources
from mailintake_shared.secretbox import SecretBox

HERE = Path(__file__).parent
NOTICE = "mailintake_console_notice"
FORM_FIELDS_MAX = 200

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: datetime | None) -> str:
    """A time in UTC, to the second: what the API returns, without the noise."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


_LABELS = {
    "oauth_credential_id": "OAuth2 credential",
    "tls_verify": "Verify the TLS certificate",
    "timeout_ms": "Timeout (ms)",
    "interval_minutes": "Interval (minutes)",
}


def _label(name: str) -> str:
    """A field's name in words; fields added later read well enough without an entry."""
    return _LABELS.get(name) or name.replace("_", " ").capitalize()


templates.filters["label"] = _label
templates.filters["when"] = _when
templates.filters["count"] = _count


class SignInRequiredError(Exception):
    """No valid session: the browser is sent to the sign-in page."""


class ConsoleError(Exception):
    """A request the console refuses, shown as a page with its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sessions(request: Request) -> Sessions:
    """The process's session keeper, made from the settings on first use."""
    state = request.app.state
    if getattr(state, "console_sessions", None) is None:
        res: Resources = state.resources
        state.console_sessions = Sessions(
            SecretBox(res.settings.encryption_keys), res.settings.console_session_minutes * 60
        )
    keeper: Sessions = state.console_sessions
    return keeper


SessionsDep = Annotated[Sessions, Depends(sessions)]


def current_user(request: Request, keeper: SessionsDep) -> User:
    session = keeper.read(request.cookies.get(COOKIE))
    table: TokenTable = request.app.state.tokens
    role = keeper.role(session, table) if session is not None else None
    if session is None or role is None:
        raise SignInRequiredError()
    user = User(role, session)
    request.state.actor = user.actor  # the audit log records console changes too
    return user


UserDep = Annotated[User, Depends(current_user)]


async def form_fields(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the body limit applies), last value of
    each name winning."""
    body = await request.body()
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=FORM_FIELDS_MAX,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConsoleError(400, "the form could not be read") from exc
    return dict(pairs)


FormDep = Annotated[dict[str, str], Depends(form_fields)]


def id_or_none(text: str, field: str) -> uuid.UUID | None:
    """A connection's id sent as text (blank: none); a 422 page for anything else."""
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        raise ConsoleError(422, f"{field} must be a connection's id") from None


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every browser on every request; the token decides
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def posted(request: Request, user: UserDep, fields: FormDep) -> User:
    """A signed-in user's form, with its CSRF token (field or header) and from this origin."""
    sent = fields.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not (_same_origin(request) and csrf_matches(user.session, sent)):
        raise ConsoleError(403, "the form's security token is missing or wrong: reload the page")
    return user


PostedDep = Annotated[User, Depends(posted)]


def admin(user: PostedDep) -> User:
    if not user.can_change:
        raise ConsoleError(403, f"changes need the admin role; you are signed in as {user.role}")
    return user


AdminDep = Annotated[User, Depends(admin)]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(res: Resources) -> str:
    """Scripts, styles and requests from this origin only; no inline script or style. Forms
    may also go to the identity providers (the Authorize button is answered with a redirect
    there)."""
    settings = res.settings
    providers = sorted(
        {
            _origin(settings.google_authorization_endpoint),
            _origin(settings.microsoft_authority_host),
        }
    )
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        f"connect-src 'self'; form-action 'self' {' '.join(providers)}; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def _secure(response: Response, res: Resources) -> None:
    """The page's own policy; and the referrer within this origin only, so that the browser
    sends the Origin of its forms (``no-referrer``, the API's, makes it ``null``)."""
    response.headers["content-security-policy"] = content_security_policy(res)
    response.headers["referrer-policy"] = "same-origin"


def render(
    request: Request,
    res: Resources,
    template: str,
    user: User | None,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    notice = None
    if user is not None:
        opened = sessions(request).open(request.cookies.get(NOTICE))
        notice = opened if isinstance(opened, str) else None
    html = templates.get_template(template).render(
        request=request, user=user, notice=notice, path=request.url.path, **context
    )
    response = HTMLResponse(html, status_code=status)
    _secure(response, res)
    if notice is not None:
        response.delete_cookie(NOTICE, path=PATH)
    return response


def redirect(request: Request, url: str, notice: str | None = None) -> Response:
    """303 to ``url``, with a one-time notice shown there; to an htmx request, the same as
    its ``HX-Redirect`` (it loads the page whole rather than swapping a part of it), with
    the same percent-encoded URL (a header holds no line break or non-Latin-1 text)."""
    response: Response = RedirectResponse(url, status_code=303)
    if request.headers.get("hx-request"):
        response = Response(status_code=200, headers={"HX-Redirect": response.headers["location"]})
    if notice is not None:
        response.set_cookie(
            NOTICE,
            sessions(request).seal(notice),
            path=PATH,
            httponly=True,
            secure=request.url.scheme == "https",
            samesite="strict",
        )
    return response


def sign_in_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{PATH}/sign-in?next={quote(target, safe='')}"


def error_page(request: Request, res: Resources | None, status: int, message: str) -> Response:
    html = templates.get_template("error.html").render(
        request=request,
        user=None,
        notice=None,
        path=request.url.path,
        status=status,
        message=message,
    )
    response = HTMLResponse(html, status_code=status)
    if res is not None:
        _secure(response, res)
    return response
