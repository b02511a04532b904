"""Registering the parties: custody banks, regulators, institutions, parents and students."""

from __future__ import annotations

import re
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
from ledger.escrow.context import Context

ALL_DISTRICTS = "*"
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def new_id(prefix: str) -> str:
    """An opaque id: a type prefix and 64 random bits, e.g. ``ctr_9f86d081884c7d65``."""
    return f"{prefix}_{secrets.token_hex(8)}"


def _code(value: str, what: str) -> str:
    if not _CODE.match(value):
        raise InvalidRequest(f"{what} {value!r} must be 1-64 letters, digits or _.-")
    return value


def _text(value: str, what: str, limit: int = 200) -> str:
    value = value.strip()
    if not value or len(value) > limit:
        raise InvalidRequest(f"{what} must be 1-{limit} characters")
    return value


def register_bank(session: Session, ctx: Context, *, name: str, actor: str) -> Bank:
    """A custody bank that will hold escrow accounts."""
    ctx.lock(session)
    bank = Bank(id=new_id("bnk"), name=_text(name, "bank name"), registered_seq=-1)
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
        _code(jurisdiction, "jurisdiction")
    regulator = Regulator(
        id=new_id("reg"),
        name=_text(name, "regulator name"),
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
    if session.get(Bank, bank_id) is None:
        raise NotFound(f"no bank {bank_id}")
    profile = ctx.policies.get(policy).name
    if risk_deposit_fen < 0:
        raise InvalidRequest("the risk deposit cannot be negative")
    institution = Institution(
        id=new_id("ins"),
        name=_text(name, "institution name"),
        licence=LicenceType(licence),
        district=_code(district, "district"),
        status=InstitutionStatus.ACTIVE,
        bank_id=bank_id,
        escrow_account=_code(escrow_account, "escrow account"),
        settlement_account=_code(settlement_account, "settlement account"),
        is_new=is_new,
        risk_deposit_fen=risk_deposit_fen,
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
        session, ctx.clock, parent.id, name=_text(name, "parent name"), phone=phone
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
    if session.get(Parent, parent_id) is None:
        raise NotFound(f"no parent {parent_id}")
    student = Student(id=new_id("stu"), parent_id=parent_id, registered_seq=-1)
    data = privacy.record(
        session, ctx.clock, student.id, name=_text(name, "student name"), phone=None
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
