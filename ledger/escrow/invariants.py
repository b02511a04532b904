"""The escrow invariants of DESIGN.md (3, 4 and 5), checked against the stored state.

Invariants 1, 2 and 6 (balanced entries, replay equals state, the chain) are ``ledger.verify``'s;
these add the domain's meaning: every contract adds up to its prepayment to the fen, every escrow
account equals what it owes, and money only left escrow the lawful ways.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import AccountKind
from ledger.entities import Contract, Institution, Lesson, LessonStatus, Refund, RefundStatus
from ledger.escrow.contracts import contract_account, institution_account
from ledger.journal import balance
from ledger.models import Account, LogEntry, Posting

# The only events that may take money out of an escrow account.
LAWFUL_OUTFLOWS = frozenset({"refund.paid", "payout.executed", "contract.transferred"})
INSTITUTION_LIABILITIES = (
    AccountKind.PENDING,
    AccountKind.RELEASABLE,
    AccountKind.PAYABLE,
    AccountKind.REFUND_PAYABLE,
    AccountKind.RISK_DEPOSIT,
)


def check_contract(session: Session, contract: Contract) -> list[str]:
    """Invariant 3: prepaid = delivered + pending + refunded + remaining, in lessons and in fen."""
    lessons = list(session.scalars(select(Lesson).where(Lesson.contract_id == contract.id)))
    refunds = list(session.scalars(select(Refund).where(Refund.contract_id == contract.id)))
    confirmed = [x for x in lessons if x.status is LessonStatus.CONFIRMED]
    pending = [x for x in lessons if x.status in (LessonStatus.REPORTED, LessonStatus.DISPUTED)]
    refunded = [r for r in refunds if r.status in (RefundStatus.APPROVED, RefundStatus.PAID)]
    requested = [r for r in refunds if r.status is RefundStatus.REQUESTED]
    remaining_value = balance(session, contract_account(contract.id)).amount
    problems = []
    counted = len(confirmed) + len(pending) + sum(r.lessons for r in refunded)
    if counted + contract.lessons_remaining != contract.lessons:
        problems.append(
            f"{contract.id}: {len(confirmed)} delivered + {len(pending)} pending + "
            f"{sum(r.lessons for r in refunded)} refunded + {contract.lessons_remaining} remaining "
            f"!= {contract.lessons} lessons"
        )
    value = (
        sum(x.price_fen for x in confirmed)
        + sum(x.price_fen for x in pending)
        + sum(r.amount_fen or 0 for r in refunded)
        + remaining_value
    )
    if contract.paid_seq is not None and value != contract.total_fen:
        problems.append(
            f"{contract.id}: lessons, refunds and remainder add to {value}, not {contract.total_fen}"
        )
    if contract.lessons_delivered != len(confirmed) + len(pending):
        problems.append(
            f"{contract.id}: lessons_delivered {contract.lessons_delivered} != {len(confirmed) + len(pending)}"
        )
    if contract.lessons_refunded != sum(r.lessons for r in refunded):
        problems.append(f"{contract.id}: lessons_refunded disagrees with its refunds")
    if contract.lessons_reserved != sum(r.lessons for r in requested):
        problems.append(f"{contract.id}: lessons_reserved disagrees with open requests")
    if min(remaining_value, contract.lessons_remaining, contract.advance_remaining_fen) < 0:
        problems.append(f"{contract.id}: a negative remainder")
    return problems


def check_institution(session: Session, institution: Institution) -> list[str]:
    """Invariant 4: escrow = Σ contract + pending + releasable + payable + refund_payable
    + risk_deposit − advance − advance_due; and each account agrees with its lessons or refunds."""

    def fen(kind: AccountKind) -> int:
        return balance(session, institution_account(kind, institution.id)).amount

    contracts = list(
        session.scalars(select(Contract).where(Contract.institution_id == institution.id))
    )
    owed = sum(balance(session, contract_account(c.id)).amount for c in contracts)
    liabilities = owed + sum(fen(kind) for kind in INSTITUTION_LIABILITIES)
    assets = fen(AccountKind.ESCROW) + fen(AccountKind.ADVANCE) + fen(AccountKind.ADVANCE_DUE)
    problems = []
    if assets != liabilities:
        problems.append(
            f"{institution.id}: escrow {fen(AccountKind.ESCROW)} + advances "
            f"{assets - fen(AccountKind.ESCROW)} != liabilities {liabilities}"
        )
    lessons = session.scalars(
        select(Lesson).where(
            Lesson.institution_id == institution.id,
            Lesson.status.in_([LessonStatus.REPORTED, LessonStatus.DISPUTED]),
        )
    )
    if fen(AccountKind.PENDING) != sum(x.pending_fen for x in lessons):
        problems.append(f"{institution.id}: pending disagrees with its unconfirmed lessons")
    approved = session.scalars(
        select(Refund).where(
            Refund.institution_id == institution.id, Refund.status == RefundStatus.APPROVED
        )
    )
    if fen(AccountKind.REFUND_PAYABLE) != sum(r.amount_fen or 0 for r in approved):
        problems.append(f"{institution.id}: refund_payable disagrees with its approved refunds")
    if fen(AccountKind.ADVANCE) != sum(c.advance_remaining_fen for c in contracts):
        problems.append(f"{institution.id}: advance disagrees with its contracts' advances")
    return problems


def check_outflows(session: Session) -> list[str]:
    """Invariant 5: money left escrow only as a payout, a refund, or a move to a successor."""
    rows = session.execute(
        select(LogEntry.seq, LogEntry.type)
        .join(Posting, Posting.seq == LogEntry.seq)
        .join(Account, Account.id == Posting.account_id)
        .where(Account.code.like("escrow:%"), Posting.amount < 0)
    )
    return [
        f"seq {seq}: {type_} took money out of escrow"
        for seq, type_ in rows
        if type_ not in LAWFUL_OUTFLOWS
    ]


def check_all(session: Session) -> list[str]:
    """Every escrow invariant over every contract and institution."""
    problems: list[str] = []
    for contract in session.scalars(select(Contract)):
        problems += check_contract(session, contract)
    for institution in session.scalars(select(Institution)):
        problems += check_institution(session, institution)
    problems += check_outflows(session)
    return problems


def totals_by_kind(session: Session) -> dict[str, int]:
    """Sum of normal-side balances per account kind (for reports)."""
    totals: dict[str, int] = defaultdict(int)
    for code, amount in session.execute(select(Account.code, Account.balance)):
        totals[code.split(":", 1)[0]] += amount
    return dict(totals)
