"""Read side: what parents, institutions, banks and regulators look at.

Functions about one contract or one institution take the object, not an id: the caller gets it
through ``ledger.escrow.scope``, which is where a tenant's reach is checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from ledger.accounts import CHART, AccountCode, AccountKind, OwnerKind
from ledger.entities import Contract, Institution, Lesson, Refund, RefundStatus, Regulator
from ledger.errors import InvalidRequest
from ledger.escrow import inputs
from ledger.escrow.contracts import contract_account, institution_account
from ledger.escrow.parties import ALL_DISTRICTS
from ledger.journal import balance
from ledger.models import Account, LogEntry, Posting
from ledger.money import Money

INSTITUTION_KINDS = tuple(k for k, c in CHART.items() if c.owner is OwnerKind.INSTITUTION)


@dataclass(frozen=True, slots=True)
class ContractSummary:
    """A contract with what is left of it."""

    contract: Contract
    lessons_remaining: int
    value_remaining: Money


def summaries(session: Session, contracts: list[Contract]) -> list[ContractSummary]:
    values = _contract_balances(session, [c.id for c in contracts])
    return [
        ContractSummary(c, c.lessons_remaining, Money(values.get(c.id, 0), c.currency))
        for c in contracts
    ]


def _contract_balances(session: Session, contract_ids: list[str]) -> dict[str, int]:
    if not contract_ids:
        return {}
    rows = session.execute(
        select(Account.code, Account.balance).where(
            Account.code.in_([contract_account(i) for i in contract_ids])
        )
    )
    return {AccountCode.parse(code).owner_id: amount for code, amount in rows}


def parent_contracts(session: Session, parent_id: str) -> list[ContractSummary]:
    """A parent's contracts, newest first, with remaining lessons and value."""
    contracts = session.scalars(
        select(Contract)
        .where(Contract.parent_id == parent_id)
        .order_by(Contract.created_seq.desc())
    )
    return summaries(session, list(contracts))


def contract_lessons(session: Session, contract: Contract) -> list[Lesson]:
    """Every lesson of a contract in the order it was reported, with its status."""
    return list(
        session.scalars(
            select(Lesson).where(Lesson.contract_id == contract.id).order_by(Lesson.reported_seq)
        )
    )


def contract_refunds(session: Session, contract: Contract) -> list[Refund]:
    """Every refund of a contract in the order it was asked for."""
    return list(
        session.scalars(
            select(Refund).where(Refund.contract_id == contract.id).order_by(Refund.requested_seq)
        )
    )


def parent_refunds(session: Session, parent_id: str) -> list[Refund]:
    return list(
        session.scalars(
            select(Refund)
            .join(Contract, Contract.id == Refund.contract_id)
            .where(Contract.parent_id == parent_id)
            .order_by(Refund.requested_seq.desc())
        )
    )


def institution_liability(session: Session, institution: Institution) -> Money:
    """学生余量: the value of every undelivered lesson the institution still owes its parents."""
    total = session.scalar(
        select(func.coalesce(func.sum(Account.balance), 0))
        .select_from(Contract)
        .join(Account, Account.code == literal(f"{AccountKind.CONTRACT.value}:") + Contract.id)
        .where(Contract.institution_id == institution.id)
    )
    return Money(int(total or 0))


def institution_accounts(session: Session, institution: Institution) -> dict[AccountKind, Money]:
    """Every institution-level account of the money flow, zero where never used."""
    return {
        kind: balance(session, institution_account(kind, institution.id))
        for kind in INSTITUTION_KINDS
    }


def seq_at(session: Session, at: datetime, *, inclusive: bool = True) -> int:
    """The last seq appended at (or, not inclusive, before) ``at``; -1 if none.

    Entry times never go backwards, so this is one probe of the (time, seq) index read backwards.
    """
    bound = LogEntry.time <= at if inclusive else LogEntry.time < at
    found = session.scalar(
        select(LogEntry.seq)
        .where(bound)
        .order_by(LogEntry.time.desc(), LogEntry.seq.desc())
        .limit(1)
    )
    return -1 if found is None else int(found)


def balance_as_of(
    session: Session, code: str, *, seq: int | None = None, at: datetime | None = None
) -> Money:
    """An account's normal-side balance after entry ``seq`` (or after the last entry at ``at``)."""
    if (seq is None) == (at is None):
        raise InvalidRequest("give exactly one of seq or at")
    if seq is not None:
        bound = inputs.integer(seq, "seq", low=-1)
    else:
        bound = seq_at(session, inputs.instant(at, "at"))
    parsed = AccountCode.parse(code)
    row = session.execute(
        select(Account.id, Account.currency).where(Account.code == code)
    ).one_or_none()
    if row is None:
        return Money.zero()
    total = session.scalar(
        select(func.coalesce(func.sum(Posting.amount), 0)).where(
            Posting.account_id == row.id, Posting.seq <= bound
        )
    )
    return Money(parsed.cls.type.normal_side.sign * int(total or 0), row.currency)


def overdue_refunds(session: Session, regulator: Regulator) -> list[Refund]:
    """Refunds past their payout deadline and still unpaid, in the regulator's jurisdiction."""
    query = (
        select(Refund)
        .join(Institution, Institution.id == Refund.institution_id)
        .where(Refund.status == RefundStatus.APPROVED, Refund.overdue_seq.is_not(None))
        .order_by(Refund.pay_by)
    )
    if regulator.jurisdiction != ALL_DISTRICTS:
        query = query.where(Institution.district == regulator.jurisdiction)
    return list(session.scalars(query))
