"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import problems
from api.routers import audit, health
from ledger.config import Settings
from ledger.runtime import Ledger


def create_app(ledger: Ledger | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the application around an open ledger, or open one from settings at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = ledger is None
        app.state.ledger = ledger if ledger is not None else Ledger.open(settings or Settings())
        try:
            yield
        finally:
            if owned:
                app.state.ledger.close()

    app = FastAPI(
        title="tuition-escrow",
        summary="Supervised escrow for prepaid tuition, released lesson by lesson.",
        version="0.1.0",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(health.router)
    app.include_router(audit.router)
    return app
