"""Request dependencies: the process's ledger, and sessions committed once per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ledger.runtime import Ledger


def get_ledger(request: Request) -> Ledger:
    """The ledger opened by the application's lifespan."""
    ledger: Ledger = request.app.state.ledger
    return ledger


def read_session(ledger: Annotated[Ledger, Depends(get_ledger)]) -> Iterator[Session]:
    """A read-only session for the request (never takes SQLite's write lock)."""
    with ledger.readers() as session:
        yield session


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
ReadSession = Annotated[Session, Depends(read_session)]
