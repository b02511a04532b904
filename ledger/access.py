"""Who may call the API: bearer tokens bound to one principal, and stored idempotency records.

A token is 32 random bytes, shown once when it is created and stored only as its SHA-256: a
database dump gives no usable token, and with 256 bits of entropy a plain hash is as strong as a
slow one (there is nothing to guess). Each token is bound to one principal, a role and a party id,
and can expire and be revoked. Creating and revoking tokens are log events, so a regulator can see
who was given access to what, and when.

Idempotency records keep the first response to a POST under its ``Idempotency-Key``, written in
the same transaction as the effect, so a retried request can never have a second effect.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, bindparam, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ledger.entities import ID, Bank, Institution, Parent, Regulator
from ledger.errors import InvalidRequest, NotFound
from ledger.escrow import inputs
from ledger.escrow.context import Context
from ledger.escrow.parties import new_id
from ledger.models import Base, UTCDateTime, table

TOKEN_PREFIX = "esc_"
TOKEN_BYTES = 32
MAX_TOKEN_DAYS = 3650


class Role(StrEnum):
    """The five kinds of API users; each sees only its own tenant's data."""

    PARENT = "parent"
    INSTITUTION = "institution"
    BANK = "bank"
    REGULATOR = "regulator"
    ADMIN = "admin"


_PARTY = {
    Role.PARENT: Parent,
    Role.INSTITUTION: Institution,
    Role.BANK: Bank,
    Role.REGULATOR: Regulator,
}


class ApiToken(Base):
    """A bearer token: only its hash is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    """SHA-256 of the token string; the token itself is never stored."""
    role: Mapped[str] = mapped_column(String(16))
    principal_id: Mapped[str] = mapped_column(String(64))
    """The party the token acts for (an admin token names its holder, e.g. ``ops``)."""
    label: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_seq: Mapped[int] = mapped_column(BigInteger)


class IdempotencyRecord(Base):
    """The first response to a POST, under the caller's key; replayed for the same request."""

    __tablename__ = "idempotency_records"
    __table_args__ = (Index("ix_idempotency_records_created_at", "created_at"),)

    principal: Mapped[str] = mapped_column(String(100), primary_key=True)
    """``role:id`` of the caller: keys are scoped per principal, so callers cannot collide."""
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    """SHA-256 over the method, the path and the canonical body of the first request."""
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as established from its token."""

    role: Role
    id: str
    token_id: str

    @property
    def actor(self) -> str:
        """How the log names this caller (``role:id``)."""
        return f"{self.role.value}:{self.id}"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    """``esc_`` and 32 random bytes in unpadded base64url (43 characters)."""
    raw = secrets.token_bytes(TOKEN_BYTES)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def create_token(
    session: Session,
    ctx: Context,
    *,
    role: str,
    principal_id: str,
    actor: str,
    expires_in: timedelta | None = None,
    label: str | None = None,
) -> tuple[ApiToken, str]:
    """Issue a token for a principal; the returned string is the only copy there will ever be."""
    ctx.lock(session)
    kind = inputs.choice(role, Role, "role")
    party = inputs.code(principal_id, "principal")
    if kind is not Role.ADMIN and session.get(_PARTY[kind], party) is None:
        raise NotFound(f"no {kind.value} {party}")
    if expires_in is not None and not timedelta(minutes=1) <= expires_in <= timedelta(
        days=MAX_TOKEN_DAYS
    ):
        raise InvalidRequest(f"a token lives between one minute and {MAX_TOKEN_DAYS} days")
    now = ctx.now()
    secret = new_token()
    token = ApiToken(
        id=new_id("tok"),
        token_hash=token_hash(secret),
        role=kind.value,
        principal_id=party,
        label=inputs.text(label, "label", required=False),
        created_at=now,
        expires_at=None if expires_in is None else now + expires_in,
        revoked_at=None,
        created_seq=-1,
    )
    token.created_seq = ctx.record(
        session,
        "token.created",
        actor,
        {
            "token": token.id,
            "role": token.role,
            "principal": token.principal_id,
            "expires_at": None if token.expires_at is None else token.expires_at.isoformat(),
        },
    ).seq
    session.add(token)
    session.flush()
    return token, secret


def revoke_token(session: Session, ctx: Context, *, token_id: str, actor: str) -> ApiToken:
    """Revoke a token from now on; revoking it again changes nothing."""
    ctx.lock(session)
    token = session.get(ApiToken, token_id) if isinstance(token_id, str) else None
    if token is None:
        raise NotFound(f"no token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = ctx.now()
        ctx.record(session, "token.revoked", actor, {"token": token.id})
        session.flush()
    return token


_TOKENS = table(ApiToken)
_TOKEN_LOOKUP = select(
    _TOKENS.c.role,
    _TOKENS.c.principal_id,
    _TOKENS.c.id,
    _TOKENS.c.revoked_at,
    _TOKENS.c.expires_at,
).where(_TOKENS.c.token_hash == bindparam("token_hash"))
"""Built once and run as Core: every API request makes this lookup, and loading an ``ApiToken``
through the ORM took about two thirds of its CPU (issue 8)."""


def authenticate(session: Session, secret: str, now: datetime) -> Principal | None:
    """The principal of a live token, or None for an unknown, expired or revoked one.

    Looked up afresh on every call: a revoked or expired token is refused from the next request.
    """
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 100:
        return None
    token = session.connection().execute(_TOKEN_LOOKUP, {"token_hash": token_hash(secret)}).first()
    if token is None or token.revoked_at is not None:
        return None
    if token.expires_at is not None and token.expires_at <= now:
        return None
    return Principal(Role(token.role), token.principal_id, token.id)
