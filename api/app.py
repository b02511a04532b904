"""The FastAPI application: one router per audience, errors as problem+json, tokens as bearer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import problems
from api.routers import (
    admin,
    audit,
    banks,
    health,
    institutions,
    parents,
    reconciliation,
    regulators,
    witnesses,
)
from api.writes import GroupCommit
from ledger.config import Settings
from ledger.runtime import Ledger

DESCRIPTION = """
Supervised escrow for prepaid tuition: parents' money reaches an institution lesson by lesson,
the day after each lesson is delivered, and every movement is written to a hash-chained, signed log.

* **Auth**: `Authorization: Bearer esc_…`, one token per principal (parent, institution, bank,
  regulator, admin). Another tenant's resource answers 404, exactly like a missing one.
* **Idempotency**: every POST needs an `Idempotency-Key`; a retry with the same key and body gets
  the first response again (`Idempotent-Replayed: true`) and has no second effect.
* **Errors**: RFC 9457 `application/problem+json`, with a stable `type` per rule.
* **Receipts**: money-moving responses carry the log seq, the entry hash and an Ed25519 signature
  verifiable with `GET /v1/audit/public-key`.
* **Money** is integer fen (1 yuan = 100 fen), currency CNY.
"""


def create_app(ledger: Ledger | None = None, settings: Settings | None = None) -> FastAPI:
    """Build the application around an open ledger, or open one from settings at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = ledger is None
        app.state.ledger = ledger if ledger is not None else Ledger.open(settings or Settings())
        # This process's write transactions, committed in groups (api.writes.GroupCommit).
        app.state.group_commit = GroupCommit(app.state.ledger)
        try:
            yield
        finally:
            if owned:
                app.state.ledger.close()

    app = FastAPI(
        title="tuition-escrow",
        summary="Supervised escrow for prepaid tuition, released lesson by lesson.",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    problems.install(app)
    for module in (health, parents, institutions, banks, regulators, admin, audit):
        app.include_router(module.router)
    app.include_router(witnesses.router)
    app.include_router(reconciliation.router)
    return app
