"""The FastAPI application, built by ``create_app`` from settings (never at import)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from mailintake_config_api import console, errors
from mailintake_config_api.audit import AuditLog
from mailintake_config_api.auth import FailureLimiter
from mailintake_config_api.hardening import Hardening
from mailintake_config_api.resources import Resources
from mailintake_config_api.routes import (
    audit,
    certificates,
    connections,
    contracts,
    graph,
    health,
    incoming,
    messages,
    oauth,
)
from mailintake_config_api.schemas import ErrorBody
from mailintake_shared.settings import Settings

API_VERSION = "0.1.0"


def create_app(settings: Settings | None = None, resources: Resources | None = None) -> FastAPI:
    """The API; ``resources`` is built from ``settings`` at start-up unless handed in."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res = resources or Resources.from_settings(settings or Settings())
        app.state.resources = res
        app.state.tokens = res.api_tokens
        res.start()
        try:
            yield
        finally:
            res.close()

    app = FastAPI(
        title="mailintake config API",
        version=API_VERSION,
        description="Manage incoming mail connections. Every endpoint but the health "
        "probes needs a bearer token: `viewer` reads metadata, `reader` also mail content (the "
        "raw messages), `admin` also writes.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody, "description": "The body could not be read (not JSON)."},
            503: {
                "model": ErrorBody,
                "description": "The database refused to commit the request: nothing was saved.",
            },
        },
    )
    config = settings or (resources.settings if resources else Settings())
    app.state.auth_failures = FailureLimiter(config.api_auth_failures_per_minute)
    errors.install(app)
    # Outermost last: CORS (only when origins are configured), then the body limit and the
    # security headers, then the audit log around the routes.
    app.add_middleware(AuditLog)
    app.add_middleware(Hardening, max_body_bytes=config.api_max_body_bytes)
    if config.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.api_cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.include_router(health.router)
    app.include_router(contracts.router)
    app.include_router(connections.router)
    app.include_router(messages.router)
    app.include_router(incoming.router)
    app.include_router(oauth.router)
    app.include_router(certificates.router)
    app.include_router(audit.router)
    app.include_router(graph.router)
    if config.console_enabled:
        console.install(app)
    return app
