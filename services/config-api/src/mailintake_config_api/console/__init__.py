"""The operators' web console, served by the config API under ``/console``.

Server-rendered pages (Jinja2) over the same service functions as the API, with htmx for
searching as you type and for the connection form that changes with the protocol. Sign-in
exchanges an API token for a session cookie (``session.py``); the roles apply as in the API.
Every page has its own Content-Security-Policy: scripts and styles from this origin only.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailintake_config_api.console import connection_pages, home, incoming_pages, oauth_pages
from mailintake_config_api.console.session import PATH
from mailintake_config_api.console.web import (
    ConsoleError,
    SignInRequiredError,
    error_page,
    redirect,
    sign_in_url,
)
from mailintake_config_api.errors import NOT_SAVED, CommitFailedError, field_errors

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def _is_console(request: Request) -> bool:
    return request.url.path == PATH or request.url.path.startswith(PATH + "/")


def _words(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, ConsoleError):
        return exc.status, exc.message
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, CommitFailedError):
        return 503, NOT_SAVED
    if isinstance(exc, RequestValidationError):  # the API's words for the same parameter
        return 422, "; ".join(f"{e.field}: {e.rule}" for e in field_errors(exc.errors()))
    return 500, "the console could not answer this request"


def install(app: FastAPI) -> None:
    """Serve the console under ``/console``; its errors are pages, the API's stay JSON."""
    for pages in (home, connection_pages, incoming_pages, oauth_pages):
        app.include_router(pages.router)

    async def sign_in(request: Request, _exc: Exception) -> Response:
        return redirect(request, sign_in_url(request))

    app.add_exception_handler(SignInRequiredError, sign_in)
    for kind in (ConsoleError, StarletteHTTPException, CommitFailedError, RequestValidationError):
        app.add_exception_handler(kind, _as_page(app.exception_handlers.get(kind)))


def _as_page(api_handler: Handler | None) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if _is_console(request) or api_handler is None:
            status, message = _words(exc)
            return error_page(
                request, getattr(request.app.state, "resources", None), status, message
            )
        answer = api_handler(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    return handle
