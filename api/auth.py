"""Bearer-token authentication and role checks.

A missing, unknown, expired or revoked token answers 401; a valid token of a role the endpoint is
not meant for answers 403. What a role may *see* is decided later, by the service's scope checks:
another tenant's resource answers 404, exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import AuthSession, LedgerDep
from ledger.access import Principal, Role, authenticate

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="`Authorization: Bearer esc_…`, issued by `escrow token create` or the admin API",
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tuition-escrow"'}
_READS_ON_LOOP = "__escrow_reads_on_loop__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def reads_on_loop(endpoint: Endpoint) -> Endpoint:
    """Mark an ``async`` endpoint that reads in the session of authentication (``AuthSession``).

    Authentication then leaves that session's connection open for the endpoint: one pool
    checkout per request instead of two (issue 8; on PostgreSQL each checkout is also a ping and
    a rollback). Only for endpoints whose dependencies and body never await: the connection must
    not be held while other requests run on the loop, or they could wait on the pool forever.
    """
    setattr(endpoint, _READS_ON_LOOP, True)
    return endpoint


async def current_principal(
    request: Request,
    ledger: LedgerDep,
    session: AuthSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller of a live token, or 401.

    ``async`` so that the lookup runs on the event loop: as a ``def`` it cost a threadpool hop on
    every request (issue 8). It is one indexed read in a read-only session, which never waits for
    SQLite's write lock (WAL) or a PostgreSQL lock, and its connection is back in the pool before
    the next await, unless the endpoint is marked :func:`reads_on_loop`.
    """
    if credentials is None:
        raise HTTPException(401, "an Authorization: Bearer token is required", headers=_CHALLENGE)
    try:
        found = authenticate(session, credentials.credentials, ledger.clock.now())
    finally:
        if not getattr(request.scope.get("endpoint"), _READS_ON_LOOP, False):
            session.close()
    if found is None:
        raise HTTPException(401, "the token is unknown, expired or revoked", headers=_CHALLENGE)
    return found


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets only ``roles`` through (403 for the others)."""
    names = ", ".join(r.value for r in roles)

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        # async: no I/O here, so no threadpool hop (issue 8)
        if principal.role not in roles:
            raise HTTPException(
                403, f"this endpoint is for {names}; the token is a {principal.role.value}'s"
            )
        return principal

    check.roles = roles  # type: ignore[attr-defined]  # read by the authorization matrix test
    return check


ParentPrincipal = Annotated[Principal, Depends(require(Role.PARENT))]
InstitutionPrincipal = Annotated[Principal, Depends(require(Role.INSTITUTION))]
BankPrincipal = Annotated[Principal, Depends(require(Role.BANK))]
RegulatorPrincipal = Annotated[Principal, Depends(require(Role.REGULATOR))]
AdminPrincipal = Annotated[Principal, Depends(require(Role.ADMIN))]
AuditPrincipal = Annotated[Principal, Depends(require(Role.REGULATOR, Role.BANK, Role.ADMIN))]
