"""Read side: what parents, institutions, banks and regulators look at.

Functions about one contract or one institution take the object, not an id: the caller gets it
through ``ledger.escrow.scope``, which is where a tenant's reach is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, func, literal, or_, select
from sqlalchemy.orm import Session

from ledger.accounts import CHART, AccountCode, AccountKind, OwnerKind
from ledger.entities import Contract, Institution, Lesson, Refund, RefundStatus, Regulator
from ledger.errors import InvalidRequest
from ledger.escrow import inputs
from ledger.escrow.contracts import contract_account, institution_account
from ledger.escrow.parties import ALL_DISTRICTS
from ledger.journal import balance
from ledger.models import Account, LogEntry, Posting, table
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


_CONTRACTS = table(Contract)
_INSTITUTIONS = table(Institution)
_ACCOUNTS = table(Account)
CONTRACT_PAGE_COLUMNS = (
    "id",
    "institution_id",
    "student_id",
    "subject",
    "course_name",
    "status",
    "lessons",
    "unit_price_fen",
    "total_fen",
    "currency",
    "start_date",
    "end_date",
    "class_size",
    "lesson_minutes",
    "lessons_delivered",
    "lessons_refunded",
    "lessons_reserved",
    "transferred_from",
    "created_seq",
    "paid_seq",
)
"""The contract columns of a :func:`parent_contract_page` row."""


def _parent_contract_page(*, by_student: bool, after: bool) -> Select[Any]:
    c = _CONTRACTS.c
    query = (
        select(
            *(c[name] for name in CONTRACT_PAGE_COLUMNS),
            _INSTITUTIONS.c.name.label("institution_name"),
            func.coalesce(_ACCOUNTS.c.balance, 0).label("value_remaining_fen"),
        )
        .select_from(
            _CONTRACTS.join(_INSTITUTIONS, _INSTITUTIONS.c.id == c.institution_id).outerjoin(
                _ACCOUNTS,
                _ACCOUNTS.c.code == literal(f"{AccountKind.CONTRACT.value}:") + c.id,
            )
        )
        .where(c.parent_id == bindparam("parent_id"))
        .order_by(c.created_seq, c.id)
        .limit(bindparam("limit"))
    )
    if by_student:
        query = query.where(c.student_id == bindparam("student_id"))
    if after:
        last_seq = bindparam("last_seq", type_=c.created_seq.type)
        last_id = bindparam("last_id", type_=c.id.type)
        query = query.where(
            or_(c.created_seq > last_seq, and_(c.created_seq == last_seq, c.id > last_id))
        )
    return query


# Built once: a statement object keeps its cache key, so each call skips building the select
# and computing the key (issue 8).
_PARENT_CONTRACT_PAGES = {
    (by_student, after): _parent_contract_page(by_student=by_student, after=after)
    for by_student in (False, True)
    for after in (False, True)
}


def parent_contract_page(
    session: Session,
    parent_id: str,
    *,
    student_id: str | None,
    after: tuple[int, str] | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """Up to ``limit`` of a parent's contracts after ``after`` (created_seq, id), oldest first,
    each with its institution's name and the value still held for it (its contract account; 0
    before payment). The order and the cursor are those of ``api.pagination``.

    One Core statement instead of loading ``Contract`` objects and then querying names and
    balances apart: three ORM round trips were most of a balance read's CPU (issue 8).
    """
    params: dict[str, Any] = {"parent_id": parent_id, "limit": limit}
    if student_id is not None:
        params["student_id"] = student_id
    if after is not None:
        params["last_seq"], params["last_id"] = after
    statement = _PARENT_CONTRACT_PAGES[student_id is not None, after is not None]
    return session.connection().execute(statement, params).all()


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
