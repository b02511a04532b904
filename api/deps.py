"""Request dependencies: the process's ledger, and sessions committed once per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ledger.runtime import Ledger


async def get_ledger(request: Request) -> Ledger:
    """The ledger opened by the application's lifespan.

    ``async`` because it does no I/O: FastAPI runs a plain ``def`` dependency in the threadpool,
    and each such hop cost about 0.15 ms of the server's CPU per request (issue 8).
    """
    ledger: Ledger = request.app.state.ledger
    return ledger


async def read_session(ledger: Annotated[Ledger, Depends(get_ledger)]) -> AsyncIterator[Session]:
    """A read-only session for the request (never takes SQLite's write lock).

    Made on the event loop, where it costs nothing (a session connects on its first query, in
    the endpoint's thread), and closed there: ending a read-only transaction waits for no lock.
    As a ``def`` generator it took two threadpool hops per request (issue 8).
    """
    session = ledger.readers()
    try:
        yield session
    finally:
        session.close()


async def auth_session(ledger: Annotated[Ledger, Depends(get_ledger)]) -> AsyncIterator[Session]:
    """The read-only session authentication uses, shared with an endpoint that reads on the loop.

    Closed when the endpoint returns, before the response is sent (``scope="function"``), so a
    connection it holds is never kept across an await (issue 8: see ``api.auth.reads_on_loop``).
    """
    session = ledger.loop_readers()  # its checkout runs on the loop: a pool that never waits
    try:
        yield session
    finally:
        session.close()


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
ReadSession = Annotated[Session, Depends(read_session)]
AuthSession = Annotated[Session, Depends(auth_session, scope="function")]
"""The session of :func:`auth_session`; only for endpoints marked ``reads_on_loop``."""
