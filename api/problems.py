"""RFC 9457 problem details: the one shape every error response takes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ledger.errors import LedgerError

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://tuition-escrow.example/problems/"


def problem(status: int, code: str, title: str, detail: str, **extensions: Any) -> JSONResponse:
    """A problem+json response whose ``type`` is stable per rule (``.../problems/<code>``)."""
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail}
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE)


async def _ledger_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, LedgerError)
    return problem(error.status, error.code, error.title, error.detail, **error.context)


def install(app: FastAPI) -> None:
    """Route every ``LedgerError`` through ``problem``."""
    app.add_exception_handler(LedgerError, _ledger_error)
