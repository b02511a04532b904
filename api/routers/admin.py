"""Administration: registering the parties and issuing their API tokens.

The operator's administrators onboard custody banks, regulators, institutions and parents, and
hand each principal a bearer token. Every registration and every token issued or revoked is a log
entry naming the administrator, so the regulator can audit who was given access to what.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, TypeAlias

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.auth import AdminPrincipal
from api.deps import ReadSession
from api.ids import IdField, IdPath
from api.pagination import Cursor, Limit, Page, paginate
from api.problems import responses
from api.writes import Tx, WriterDep
from ledger.access import ApiToken, Role, create_token, revoke_token
from ledger.entities import LicenceType
from ledger.escrow import parties

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Id: TypeAlias = IdField
Name = Annotated[str, Field(min_length=1, max_length=200)]
TokenId: TypeAlias = IdPath


class Registered(BaseModel):
    """A newly registered party and the log entry that records it."""

    id: str = Field(examples=["ins_5add02cfab0d91bb"])
    seq: int = Field(description="The log entry that registered it")


class BankIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = Field(examples=["Bank of Ningbo, Haishu branch"])


class RegulatorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = Field(examples=["Haishu District Education Bureau"])
    jurisdiction: str = Field(
        pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_.:-]{0,63})$",
        max_length=64,
        description="A district code, or * for every district",
        examples=["haishu"],
    )


class InstitutionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = Field(examples=["星河艺术中心"])
    licence: LicenceType
    district: Id = Field(examples=["haishu"])
    bank_id: Id = Field(description="The custody bank holding its escrow account")
    escrow_account: Id = Field(examples=["ESC00001"])
    settlement_account: Id = Field(examples=["SET00002"])
    is_new: bool = Field(description="Opened less than a year ago (stricter rules may apply)")
    risk_deposit_fen: int = Field(default=0, ge=0, le=10_000_000_000)
    policy: Id | None = Field(default=None, description="Policy profile; default: the service's")


class ParentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = Field(examples=["王芳"])
    phone: str | None = Field(default=None, max_length=32, examples=["13800000001"])


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    principal_id: Id = Field(
        description="The party the token acts for (an admin token: the holder's name)",
        examples=["par_1f2e3d4c5b6a7980"],
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    label: str | None = Field(default=None, max_length=200)


class TokenOut(BaseModel):
    """A token's metadata; the secret itself appears only once, when it is created."""

    id: str
    role: Role
    principal_id: str
    label: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    created_seq: int

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(
            id=token.id,
            role=Role(token.role),
            principal_id=token.principal_id,
            label=token.label,
            created_at=token.created_at,
            expires_at=token.expires_at,
            revoked_at=token.revoked_at,
            created_seq=token.created_seq,
        )


class IssuedToken(TokenOut):
    token: str | None = Field(
        description="The bearer token. Shown once, in the first response: only its hash is stored, "
        "so a replay of the request answers null here (revoke and issue another if it was lost)."
    )


def _without_secret(body: dict[str, object]) -> dict[str, object]:
    return {**body, "token": None}


_WRITE_ERRORS = responses(401, 403, 404, 409, 422)


@router.post(
    "/banks",
    status_code=201,
    response_model=Registered,
    summary="Register a custody bank",
    responses=_WRITE_ERRORS,
)
def register_bank(body: BankIn, admin: AdminPrincipal, writer: WriterDep) -> object:
    """A bank that will hold institutions' escrow accounts and report money in and out."""

    def work(tx: Tx) -> Registered:
        bank = parties.register_bank(tx.session, tx.ctx, name=body.name, actor=admin.actor)
        return Registered(id=bank.id, seq=bank.registered_seq)

    return writer.run(admin, body, work, status=201)


@router.post(
    "/regulators",
    status_code=201,
    response_model=Registered,
    summary="Register a regulator",
    responses=_WRITE_ERRORS,
)
def register_regulator(body: RegulatorIn, admin: AdminPrincipal, writer: WriterDep) -> object:
    """An education bureau supervising one district, or every district (``*``)."""

    def work(tx: Tx) -> Registered:
        regulator = parties.register_regulator(
            tx.session, tx.ctx, name=body.name, jurisdiction=body.jurisdiction, actor=admin.actor
        )
        return Registered(id=regulator.id, seq=regulator.registered_seq)

    return writer.run(admin, body, work, status=201)


@router.post(
    "/institutions",
    status_code=201,
    response_model=Registered,
    summary="Register a training institution",
    responses=_WRITE_ERRORS,
)
def register_institution(body: InstitutionIn, admin: AdminPrincipal, writer: WriterDep) -> object:
    """An institution with its custody (escrow) account at a bank and its own settlement account."""

    def work(tx: Tx) -> Registered:
        institution = parties.register_institution(
            tx.session,
            tx.ctx,
            name=body.name,
            licence=body.licence,
            district=body.district,
            bank_id=body.bank_id,
            escrow_account=body.escrow_account,
            settlement_account=body.settlement_account,
            is_new=body.is_new,
            risk_deposit_fen=body.risk_deposit_fen,
            policy=body.policy,
            actor=admin.actor,
        )
        return Registered(id=institution.id, seq=institution.registered_seq)

    return writer.run(admin, body, work, status=201)


@router.post(
    "/parents",
    status_code=201,
    response_model=Registered,
    summary="Register a parent",
    responses=_WRITE_ERRORS,
)
def register_parent(body: ParentIn, admin: AdminPrincipal, writer: WriterDep) -> object:
    """A parent; name and phone are stored aside, the log keeps only salted commitments."""

    def work(tx: Tx) -> Registered:
        parent = parties.register_parent(
            tx.session, tx.ctx, name=body.name, phone=body.phone, actor=admin.actor
        )
        return Registered(id=parent.id, seq=parent.registered_seq)

    return writer.run(admin, body, work, status=201)


@router.post(
    "/tokens",
    status_code=201,
    response_model=IssuedToken,
    summary="Issue an API token",
    responses=_WRITE_ERRORS,
)
def issue_token(body: TokenIn, admin: AdminPrincipal, writer: WriterDep) -> object:
    """A bearer token for one principal. The response is the only place the token appears."""

    def work(tx: Tx) -> IssuedToken:
        token, secret = create_token(
            tx.session,
            tx.ctx,
            role=body.role.value,
            principal_id=body.principal_id,
            actor=admin.actor,
            expires_in=None if body.expires_in_days is None else timedelta(body.expires_in_days),
            label=body.label,
        )
        return IssuedToken(token=secret, **TokenOut.of(token).model_dump())

    return writer.run(admin, body, work, status=201, keep=_without_secret)


@router.post(
    "/tokens/{token_id}/revoke",
    response_model=TokenOut,
    summary="Revoke an API token",
    responses=_WRITE_ERRORS,
)
def revoke(token_id: TokenId, admin: AdminPrincipal, writer: WriterDep) -> object:
    """The token stops working at once; revoking it again changes nothing."""

    def work(tx: Tx) -> TokenOut:
        return TokenOut.of(revoke_token(tx.session, tx.ctx, token_id=token_id, actor=admin.actor))

    return writer.run(admin, None, work)


@router.get(
    "/tokens",
    response_model=Page[TokenOut],
    summary="List API tokens (never their secrets)",
    responses=responses(401, 403, 422),
)
def list_tokens(
    admin: AdminPrincipal, session: ReadSession, cursor: Cursor = None, limit: Limit = 100
) -> Page[TokenOut]:
    """Every token issued, oldest first, with its state; the secrets are not stored."""
    return paginate(
        session, select(ApiToken), ApiToken.created_seq, ApiToken.id, cursor, limit, TokenOut.of
    )
