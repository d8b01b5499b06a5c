"""Sign-in and sign-out, the dashboard, and the console's static files."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mailintake_config_api import incoming
from mailintake_config_api.auth import FailureLimiter, TokenTable
from mailintake_config_api.connections import public
from mailintake_config_api.console import overview
from mailintake_config_api.console.session import COOKIE, PATH, csrf_matches
from mailintake_config_api.console.views import health
from mailintake_config_api.console.web import (
    HERE,
    ConsoleError,
    FormDep,
    PostedDep,
    SessionsDep,
    UserDep,
    redirect,
    render,
)
from mailintake_config_api.deps import ResourcesDep, SessionDep

router = APIRouter(prefix=PATH, include_in_schema=False)

STATIC = {
    "console.css": "text/css; charset=utf-8",
    "htmx.min.js": "text/javascript; charset=utf-8",
}


def _next(target: str | None) -> str:
    """Where to go after signing in: a console path only (no open redirect)."""
    if target and target.startswith(PATH) and not urlsplit(target).netloc and "\\" not in target:
        return target
    return PATH


@router.get("/sign-in")
def sign_in_page(
    request: Request, res: ResourcesDep, keeper: SessionsDep, next: str | None = None
) -> Response:
    session = keeper.read(request.cookies.get(COOKIE)) or keeper.anonymous()
    response = render(request, res, "sign_in.html", None, csrf=session.csrf, next=_next(next))
    keeper.set_cookie(request, response, session)
    return response


@router.post("/sign-in")
def sign_in(request: Request, res: ResourcesDep, keeper: SessionsDep, fields: FormDep) -> Response:
    """The API token, checked as the API checks a bearer token (with the limit on failed
    attempts), is exchanged for a new session."""
    before = keeper.read(request.cookies.get(COOKIE))
    if before is None or not csrf_matches(before, fields.get("csrf")):
        raise ConsoleError(403, "the sign-in form expired: reload the page and sign in again")
    token = fields.get("token", "").strip()
    table: TokenTable = request.app.state.tokens
    if table.role_of(token) is None:
        limiter: FailureLimiter = request.app.state.auth_failures
        address = request.client.host if request.client else "unknown"
        if limiter.failed(address) is not None:
            raise ConsoleError(429, "too many failed sign-ins from this address; try again later")
        return render(
            request,
            res,
            "sign_in.html",
            None,
            401,
            csrf=before.csrf,
            next=_next(fields.get("next")),
            error="this token is not valid here",
        )
    signed_in = redirect(request, _next(fields.get("next")))
    keeper.set_cookie(request, signed_in, keeper.signed_in(token))
    return signed_in


@router.post("/sign-out")
def sign_out(request: Request, user: PostedDep, keeper: SessionsDep) -> Response:
    keeper.end(user.session)
    response = redirect(request, f"{PATH}/sign-in")
    response.delete_cookie(COOKIE, path=PATH)
    return response


@router.get("")
def dashboard(request: Request, user: UserDep, session: SessionDep, res: ResourcesDep) -> Response:
    hours = overview.stored_per_hour(session)
    stalled_after = res.settings.stalled_after_seconds
    trouble = public(
        session, overview.in_trouble(session, stalled_after), res.settings, res.store_waiting.get
    )
    return render(
        request,
        res,
        "dashboard.html",
        user,
        hours=hours,
        peak=max([h.stored for h in hours] + [1]),
        trouble=[(item, health(item)) for item in trouble],
        queue=incoming.queue_counts(session),
    )


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The console's stylesheet and htmx (vendored by ``scripts/vendor_htmx.py``)."""
    if name not in STATIC:
        raise ConsoleError(404, "no such file")
    body = (HERE / "static" / name).read_bytes()
    return Response(body, media_type=STATIC[name], headers={"cache-control": "no-cache"})
