"""Liveness and readiness probes for process managers and load balancers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from api.deps import LedgerDep
from api.problems import PROBLEM_MEDIA_TYPE, problem
from ledger import schema

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    schema_revision: str | None
    log_size: int


@router.get("/healthz", response_model=Health, summary="The process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    summary="The database is reachable and its schema is current",
    responses={503: {"content": {PROBLEM_MEDIA_TYPE: {}}, "description": "Not ready"}},
)
def readyz(ledger: LedgerDep) -> Any:
    expected = schema.head_revision()
    try:
        with ledger.readers() as session:
            revision = schema.current_revision(session.connection())
            if revision != expected:
                return problem(
                    503,
                    "schema-not-current",
                    "Not ready",
                    f"database schema is at {revision}, the code expects {expected}; "
                    "run `escrow migrate`",
                )
            size = ledger.log.head(session).size
    except SQLAlchemyError as error:
        return problem(
            503, "not-ready", "Not ready", f"database unreachable: {type(error).__name__}"
        )
    return JSONResponse(Ready(status="ready", schema_revision=revision, log_size=size).model_dump())
