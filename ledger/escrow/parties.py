"""Registering the parties: custody banks, regulators, institutions, parents and students."""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from ledger import privacy
from ledger.entities import (
    Bank,
    Institution,
    InstitutionStatus,
    LicenceType,
    Parent,
    Regulator,
    Student,
)
from ledger.errors import InvalidRequest, NotFound
from ledger.escrow import inputs
from ledger.escrow.context import Context
from ledger.policy import PolicyError

ALL_DISTRICTS = "*"


def new_id(prefix: str) -> str:
    """An opaque id: a type prefix and 64 random bits, e.g. ``ctr_9f86d081884c7d65``."""
    return f"{prefix}_{secrets.token_hex(8)}"


def register_bank(session: Session, ctx: Context, *, name: str, actor: str) -> Bank:
    """A custody bank that will hold escrow accounts."""
    ctx.lock(session)
    bank = Bank(id=new_id("bnk"), name=inputs.required_text(name, "bank name"), registered_seq=-1)
    bank.registered_seq = ctx.record(
        session, "bank.registered", actor, {"bank": bank.id, "name": bank.name}
    ).seq
    session.add(bank)
    session.flush()
    return bank


def register_regulator(
    session: Session, ctx: Context, *, name: str, jurisdiction: str, actor: str
) -> Regulator:
    """An education bureau; ``jurisdiction`` is a district code or ``*`` for all districts."""
    ctx.lock(session)
    if jurisdiction != ALL_DISTRICTS:
        inputs.code(jurisdiction, "jurisdiction")
    regulator = Regulator(
        id=new_id("reg"),
        name=inputs.required_text(name, "regulator name"),
        jurisdiction=jurisdiction,
        registered_seq=-1,
    )
    regulator.registered_seq = ctx.record(
        session,
        "regulator.registered",
        actor,
        {"regulator": regulator.id, "name": regulator.name, "jurisdiction": jurisdiction},
    ).seq
    session.add(regulator)
    session.flush()
    return regulator


def register_institution(
    session: Session,
    ctx: Context,
    *,
    name: str,
    licence: LicenceType,
    district: str,
    bank_id: str,
    escrow_account: str,
    settlement_account: str,
    is_new: bool,
    actor: str,
    risk_deposit_fen: int = 0,
    policy: str | None = None,
) -> Institution:
    """A training institution with its dedicated custody account at ``bank_id``."""
    ctx.lock(session)
    if not isinstance(bank_id, str) or session.get(Bank, bank_id) is None:
        raise NotFound(f"no bank {bank_id}")
    try:
        profile = ctx.policies.get(policy).name
    except PolicyError:
        # The loader's message names files on the server; the caller only needs the name.
        raise InvalidRequest(f"unknown or unreadable policy profile {policy!r}") from None
    if not isinstance(is_new, bool):
        raise InvalidRequest("is_new must be true or false")
    institution = Institution(
        id=new_id("ins"),
        name=inputs.required_text(name, "institution name"),
        licence=inputs.choice(licence, LicenceType, "licence"),
        district=inputs.code(district, "district"),
        status=InstitutionStatus.ACTIVE,
        bank_id=bank_id,
        escrow_account=inputs.code(escrow_account, "escrow account"),
        settlement_account=inputs.code(settlement_account, "settlement account"),
        is_new=is_new,
        risk_deposit_fen=inputs.integer(risk_deposit_fen, "risk deposit", low=0),
        policy=profile,
        registered_seq=-1,
    )
    institution.registered_seq = ctx.record(
        session,
        "institution.registered",
        actor,
        {
            "institution": institution.id,
            "name": institution.name,
            "licence": institution.licence.value,
            "district": institution.district,
            "bank": bank_id,
            "escrow_account": institution.escrow_account,
            "settlement_account": institution.settlement_account,
            "is_new": is_new,
            "risk_deposit": risk_deposit_fen,
            "policy": profile,
        },
    ).seq
    session.add(institution)
    session.flush()
    return institution


def register_parent(
    session: Session, ctx: Context, *, name: str, phone: str | None, actor: str
) -> Parent:
    """A parent: personal data stored aside, the log gets the id and salted commitments."""
    ctx.lock(session)
    parent = Parent(id=new_id("par"), registered_seq=-1)
    data = privacy.record(
        session,
        ctx.clock,
        parent.id,
        name=inputs.required_text(name, "parent name"),
        phone=inputs.text(phone, "phone", limit=32, required=False),
    )
    parent.registered_seq = ctx.record(
        session,
        "parent.registered",
        actor,
        {"parent": parent.id, "commitments": privacy.commitments(data)},
    ).seq
    session.add(parent)
    session.flush()
    return parent


def register_student(
    session: Session, ctx: Context, *, parent_id: str, name: str, actor: str
) -> Student:
    """A pupil of ``parent_id``; the name is stored aside like the parent's."""
    ctx.lock(session)
    if not isinstance(parent_id, str) or session.get(Parent, parent_id) is None:
        raise NotFound(f"no parent {parent_id}")
    student = Student(id=new_id("stu"), parent_id=parent_id, registered_seq=-1)
    data = privacy.record(
        session, ctx.clock, student.id, name=inputs.required_text(name, "student name"), phone=None
    )
    student.registered_seq = ctx.record(
        session,
        "student.registered",
        actor,
        {"student": student.id, "parent": parent_id, "commitments": privacy.commitments(data)},
    ).seq
    session.add(student)
    session.flush()
    return student


def change_settlement_account(
    session: Session, ctx: Context, *, institution_id: str, account: str, actor: str
) -> Institution:
    """Point future payouts (retries of failed ones included) at another account of the institution.

    Changing where escrow money goes is the kind of change fraud hides in, so it is logged with
    both accounts; instructions already sent keep the account they were sent to.
    """
    ctx.lock(session)
    institution = (
        session.get(Institution, institution_id) if isinstance(institution_id, str) else None
    )
    if institution is None:
        raise NotFound(f"no institution {institution_id}")
    account = inputs.code(account, "settlement account")
    ctx.record(
        session,
        "institution.settlement_account_changed",
        actor,
        {"institution": institution.id, "from": institution.settlement_account, "to": account},
    )
    institution.settlement_account = account
    session.flush()
    return institution
