"""The escrow invariants of DESIGN.md (3, 4 and 5), checked against the stored state.

Invariants 1, 2 and 6 (balanced entries, replay equals state, the chain) are ``ledger.verify``'s;
these add the domain's meaning: every contract adds up to its prepayment to the fen, every escrow
account equals what it owes, and money only left escrow the lawful ways. Each check is a handful
of aggregate queries, whatever the number of contracts.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ledger.accounts import AccountCode, AccountKind
from ledger.entities import (
    Contract,
    Institution,
    Lesson,
    LessonStatus,
    Payout,
    PayoutStatus,
    Refund,
    RefundStatus,
    SettlementBatch,
)
from ledger.models import Account, LogEntry, Posting

# The only events that may take money out of escrow as a whole.
LAWFUL_OUTFLOWS = frozenset({"refund.paid", "payout.executed"})
INSTITUTION_LIABILITIES = (
    AccountKind.PENDING,
    AccountKind.RELEASABLE,
    AccountKind.PAYABLE,
    AccountKind.REFUND_PAYABLE,
    AccountKind.RISK_DEPOSIT,
)
INSTITUTION_ASSETS = (AccountKind.ESCROW, AccountKind.ADVANCE, AccountKind.ADVANCE_DUE)
_OPEN = (LessonStatus.REPORTED, LessonStatus.DISPUTED)
_OWED = (RefundStatus.APPROVED, RefundStatus.PAID)


def _balances(session: Session) -> dict[tuple[AccountKind, str], int]:
    """Every stored balance by (kind, owner)."""
    out = {}
    for code, amount in session.execute(select(Account.code, Account.balance)):
        parsed = AccountCode.parse(code)
        out[(parsed.kind, parsed.owner_id)] = amount
    return out


def _accounts_like(pattern: str) -> Select[int]:
    return select(Account.id).where(Account.code.like(pattern))


def check_contracts(session: Session, balances: dict[tuple[AccountKind, str], int]) -> list[str]:
    """Invariant 3: prepaid = delivered + pending + refunded + remaining, in lessons and in fen;
    and the contract's counters agree with its lessons and refunds."""
    lessons: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for contract_id, count, value in session.execute(
        select(Lesson.contract_id, func.count(), func.sum(Lesson.price_fen))
        .where(Lesson.status != LessonStatus.VOIDED)
        .group_by(Lesson.contract_id)
    ):
        lessons[contract_id]["count"] += count
        lessons[contract_id]["value"] += int(value)
    refunds: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for contract_id, refund_status, refunded_lessons, refunded_value in session.execute(
        select(
            Refund.contract_id,
            Refund.status,
            func.sum(Refund.lessons),
            func.coalesce(func.sum(Refund.amount_fen), 0),
        ).group_by(Refund.contract_id, Refund.status)
    ):
        key = (
            "requested"
            if refund_status is RefundStatus.REQUESTED
            else ("owed" if refund_status in _OWED else "rejected")
        )
        refunds[contract_id][key] += int(refunded_lessons or 0)
        refunds[contract_id][key + "_value"] += int(refunded_value or 0)
    problems = []
    for contract in session.scalars(select(Contract)):
        delivered = lessons[contract.id]
        refunded = refunds[contract.id]
        remaining = balances.get((AccountKind.CONTRACT, contract.id), 0)
        if delivered["count"] + refunded["owed"] + contract.lessons_remaining != contract.lessons:
            problems.append(
                f"{contract.id}: {delivered['count']} delivered or pending + {refunded['owed']} "
                f"refunded + {contract.lessons_remaining} remaining != {contract.lessons} lessons"
            )
        value = delivered["value"] + refunded["owed_value"] + remaining
        if contract.paid_seq is not None and value != contract.total_fen:
            problems.append(
                f"{contract.id}: lessons, refunds and remainder add to {value}, "
                f"not the prepaid {contract.total_fen}"
            )
        if contract.paid_seq is None and (remaining or delivered["count"] or refunded["owed"]):
            problems.append(f"{contract.id}: unpaid, yet it holds money or lessons")
        if contract.lessons_delivered != delivered["count"]:
            problems.append(f"{contract.id}: lessons_delivered disagrees with its lessons")
        if contract.lessons_refunded != refunded["owed"]:
            problems.append(f"{contract.id}: lessons_refunded disagrees with its refunds")
        if contract.lessons_reserved != refunded["requested"]:
            problems.append(f"{contract.id}: lessons_reserved disagrees with open requests")
        if min(contract.lessons_remaining, contract.advance_remaining_fen) < 0:
            problems.append(f"{contract.id}: a negative remainder")
    return problems


def check_institutions(session: Session, balances: dict[tuple[AccountKind, str], int]) -> list[str]:
    """Invariant 4: escrow + advance + advance_due = Σ contract + pending + releasable + payable
    + refund_payable + risk_deposit; and pending, refund_payable and advance each agree with the
    lessons, refunds and contracts behind them."""
    owed: dict[str, int] = defaultdict(int)
    advances: dict[str, int] = defaultdict(int)
    for contract in session.scalars(select(Contract)):
        owed[contract.institution_id] += balances.get((AccountKind.CONTRACT, contract.id), 0)
        advances[contract.institution_id] += contract.advance_remaining_fen
    pending = dict(
        session.execute(
            select(Lesson.institution_id, func.sum(Lesson.price_fen - Lesson.advance_fen))
            .where(Lesson.status.in_(_OPEN))
            .group_by(Lesson.institution_id)
        ).all()
    )
    payable_refunds = dict(
        session.execute(
            select(Refund.institution_id, func.sum(Refund.amount_fen))
            .where(Refund.status == RefundStatus.APPROVED)
            .group_by(Refund.institution_id)
        ).all()
    )
    problems = []
    for institution_id in session.scalars(select(Institution.id)):

        def fen(kind: AccountKind, owner: str = institution_id) -> int:
            return balances.get((kind, owner), 0)

        assets = sum(fen(kind) for kind in INSTITUTION_ASSETS)
        liabilities = owed[institution_id] + sum(fen(kind) for kind in INSTITUTION_LIABILITIES)
        if assets != liabilities:
            problems.append(
                f"{institution_id}: escrow {fen(AccountKind.ESCROW)} + advances "
                f"{assets - fen(AccountKind.ESCROW)} != what it owes {liabilities}"
            )
        if fen(AccountKind.PENDING) != int(pending.get(institution_id) or 0):
            problems.append(f"{institution_id}: pending disagrees with its unconfirmed lessons")
        if fen(AccountKind.REFUND_PAYABLE) != int(payable_refunds.get(institution_id) or 0):
            problems.append(f"{institution_id}: refund_payable disagrees with its approved refunds")
        if fen(AccountKind.ADVANCE) != advances[institution_id]:
            problems.append(f"{institution_id}: advance disagrees with its contracts' advances")
    return problems


def check_outflows(session: Session) -> list[str]:
    """Invariant 5: money left the escrow accounts only as a payout or a refund.

    Moves between two escrow accounts (a contract transferred to a successor, or a voided lesson
    following its contract there) take nothing out of escrow as a whole: what counts is each
    entry's net effect on all escrow accounts together.
    """
    # Issue 8: summed from the escrow accounts' postings (their index), not a join of the whole
    # log with every posting; that join was a fifth of verify. Same groups: seq is unique.
    net = (
        select(Posting.seq, func.sum(Posting.amount).label("net"))
        .where(Posting.account_id.in_(_accounts_like(f"{AccountKind.ESCROW.value}:%")))
        .group_by(Posting.seq)
        .having(func.sum(Posting.amount) < 0)
        .subquery()
    )
    rows = session.execute(
        select(LogEntry.seq, LogEntry.type, net.c.net)
        .join(net, net.c.seq == LogEntry.seq)
        .order_by(LogEntry.seq)
    )
    return [
        f"seq {seq}: {type_} took {-int(net)} fen out of escrow"
        for seq, type_, net in rows
        if type_ not in LAWFUL_OUTFLOWS
    ]


def check_settlement(session: Session, balances: dict[tuple[AccountKind, str], int]) -> list[str]:
    """Settlement: payable is exactly the instructions not yet paid, each batch took from
    releasable what its lessons and entry say, and each settled lesson is confirmed and was
    confirmed inside its batch's window."""
    problems = []
    outstanding = dict(
        session.execute(
            select(Payout.institution_id, func.sum(Payout.amount_fen))
            .where(
                (Payout.status == PayoutStatus.INSTRUCTED)
                | ((Payout.status == PayoutStatus.FAILED) & Payout.retried.is_(False))
            )
            .group_by(Payout.institution_id)
        ).all()
    )
    for institution_id in session.scalars(select(Institution.id)):
        payable = balances.get((AccountKind.PAYABLE, institution_id), 0)
        if payable != int(outstanding.get(institution_id) or 0):
            problems.append(f"{institution_id}: payable {payable} != instructions not yet paid")
    counted = dict(
        session.execute(
            select(Lesson.batch_id, func.count())
            .where(Lesson.batch_id.is_not(None))
            .group_by(Lesson.batch_id)
        ).all()
    )
    taken = dict(
        session.execute(
            select(LogEntry.seq, func.sum(Posting.amount))
            .join(Posting, Posting.seq == LogEntry.seq)
            .join(Account, Account.id == Posting.account_id)
            .where(LogEntry.type == "settlement.batched", Account.code.like("releasable:%"))
            # Only the batches' entries are looked up below (issue 8: not a scan of the log).
            .where(LogEntry.seq.in_(select(SettlementBatch.seq)))
            .group_by(LogEntry.seq)
        ).all()
    )
    for batch in session.scalars(select(SettlementBatch)):
        if counted.get(batch.id, 0) != batch.lessons:
            problems.append(
                f"{batch.id}: lists {batch.lessons} lessons, {counted.get(batch.id, 0)} point at it"
            )
        if int(taken.get(batch.seq) or 0) != batch.gross_fen:
            problems.append(
                f"{batch.id}: took {int(taken.get(batch.seq) or 0)} from releasable, not {batch.gross_fen}"
            )
    misplaced = session.scalar(
        select(func.count())
        .select_from(Lesson)
        .join(SettlementBatch, SettlementBatch.id == Lesson.batch_id)
        .where(
            (Lesson.status != LessonStatus.CONFIRMED)
            | (Lesson.decided_seq <= SettlementBatch.after_seq)
            | (Lesson.decided_seq > SettlementBatch.through_seq)
        )
    )
    if misplaced:
        problems.append(
            f"{misplaced} settled lessons are not confirmed, or outside their batch's window"
        )
    return problems


def check_all(session: Session) -> list[str]:
    """Every escrow invariant over every contract and institution, settlement included."""
    balances = _balances(session)
    return (
        check_contracts(session, balances)
        + check_institutions(session, balances)
        + check_outflows(session)
        + check_settlement(session, balances)
    )
