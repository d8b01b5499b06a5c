"""The FastAPI application, built by ``create_app`` from settings (never at import)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from mailintake_config_api import errors
from mailintake_config_api.resources import Resources
from mailintake_config_api.routes import connections, health, incoming, messages, oauth
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
        "probes needs a bearer token: `viewer` reads, `admin` also writes.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(connections.router)
    app.include_router(messages.router)
    app.include_router(incoming.router)
    app.include_router(oauth.router)
    return app
