"""Bearer-token authentication and role checks.

A missing, unknown, expired or revoked token answers 401; a valid token of a role the endpoint is
not meant for answers 403. What a role may *see* is decided later, by the service's scope checks:
another tenant's resource answers 404, exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import LedgerDep
from ledger.access import Principal, Role, authenticate

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="`Authorization: Bearer esc_…`, issued by `escrow token create` or the admin API",
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tuition-escrow"'}


def current_principal(
    ledger: LedgerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller of a live token, or 401."""
    if credentials is None:
        raise HTTPException(401, "an Authorization: Bearer token is required", headers=_CHALLENGE)
    with ledger.readers() as session:
        found = authenticate(session, credentials.credentials, ledger.clock.now())
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
