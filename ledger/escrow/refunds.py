"""Refunds (退费): requests, answers, silence, regulator orders, and payment by the bank.

A refund of k lessons takes the exact pro-rata share of what remains of the contract (before the
course starts, everything). Approval moves it from the contract to ``refund_payable``. Any cost
advance attributable to those lessons becomes ``advance_due`` and is recovered at once, as far as
possible, from the institution's releasable money and then its risk deposit; what neither covers
stays visible as ``advance_due`` and as the refund's ``shortfall``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import AccountKind
from ledger.allocation import portion
from ledger.entities import Contract, ContractStatus, Refund, RefundKind, RefundStatus
from ledger.errors import (
    AnswerWindowClosed,
    ContractNotActive,
    InvalidRequest,
    NoLessonsLeft,
    NotFound,
    RefundNotOpen,
)
from ledger.escrow import advances, inputs, scope
from ledger.escrow.context import Context
from ledger.escrow.contracts import contract_account, institution_account
from ledger.escrow.parties import new_id
from ledger.journal import Posting, balance
from ledger.log import Appended, format_time
from ledger.money import Money

AUTO_APPROVE_CHUNK = 1_000
LAST_INSTANT = timedelta(microseconds=1)


def _reason(reason: object, *, required: bool) -> str | None:
    return inputs.text(reason, "the reason", limit=500, required=required)


def _lessons_to_refund(ctx: Context, contract: Contract, lessons: object) -> int:
    """How many lessons: all available before the course starts, else the asked number (or all)."""
    if contract.status is not ContractStatus.ACTIVE:
        raise ContractNotActive(
            f"{contract.id} is {contract.status.value}; refunds are of paid, open contracts"
        )
    available = contract.lessons_available
    if available <= 0:
        raise NoLessonsLeft(f"{contract.id} has no undelivered lessons left to refund")
    if ctx.today() < contract.start_date or lessons is None:
        return available
    if type(lessons) is not int or not 0 < lessons <= available:
        raise InvalidRequest(f"{lessons!r:.20} lessons asked back; {available} can be refunded")
    return lessons


def request_refund(
    session: Session,
    ctx: Context,
    *,
    parent_id: str,
    contract_id: str,
    lessons: int | None = None,
    reason: str | None = None,
) -> Refund:
    """A parent asks for undelivered lessons back; the lessons are reserved until the answer."""
    ctx.lock(session)
    contract = scope.contract_of_parent(session, parent_id, contract_id)
    count = _lessons_to_refund(ctx, contract, lessons)
    policy = ctx.policy(contract.policy)
    now = ctx.now()
    refund = Refund(
        id=new_id("rfd"),
        contract_id=contract.id,
        institution_id=contract.institution_id,
        kind=RefundKind.REQUESTED,
        status=RefundStatus.REQUESTED,
        lessons=count,
        reason=_reason(reason, required=False),
        before_start=ctx.today() < contract.start_date,
        answer_by=ctx.deadline(now, policy.refund_answer_window),
        requested_seq=-1,
    )
    assert refund.answer_by is not None
    refund.requested_seq = ctx.record(
        session,
        "refund.requested",
        f"parent:{parent_id}",
        {
            "refund": refund.id,
            "contract": contract.id,
            "institution": contract.institution_id,
            "lessons": count,
            "before_start": refund.before_start,
            "answer_by": format_time(refund.answer_by),
            "reason": refund.reason,
        },
    ).seq
    contract.lessons_reserved += count
    session.add(refund)
    session.flush()
    return refund


def approve(
    session: Session,
    ctx: Context,
    refund: Refund,
    contract: Contract,
    *,
    actor: str,
    via: str,
    reserved: bool,
    effective: datetime | None = None,
) -> Refund:
    """Fix the amount, move it to refund_payable and recover any advance; one log entry.

    Shared by every road to an approved refund: the institution's answer, silence, a regulator's
    order, a wind-down and a declined transfer. ``reserved`` says whether the lessons were held by
    a request (and must be released from the reservation now).
    """
    institution_id = refund.institution_id
    if reserved:
        contract.lessons_reserved -= refund.lessons
    remaining = contract.lessons_remaining
    value = balance(session, contract_account(contract.id)).amount
    amount = portion(value, refund.lessons, remaining)
    advance_due = (
        portion(contract.advance_remaining_fen, refund.lessons, remaining)
        if contract.advance_remaining_fen
        else 0
    )
    contract.lessons_refunded += refund.lessons
    contract.advance_remaining_fen -= advance_due
    if contract.lessons_remaining == 0:
        contract.status = (
            ContractStatus.REFUNDED if contract.lessons_delivered == 0 else ContractStatus.COMPLETED
        )

    recovery = advances.recover(session, institution_id, advance_due)
    postings = [
        Posting.debit(contract_account(contract.id), Money(amount)),
        Posting.credit(
            institution_account(AccountKind.REFUND_PAYABLE, institution_id), Money(amount)
        ),
        *recovery.postings(),
    ]
    policy = ctx.policy(contract.policy)
    # The payout period is the one of the moment the refund was asked for: a request made before
    # the course started keeps the shorter before-start period even if answered after the start.
    window = (
        policy.refund_payout_before_start
        if refund.before_start
        else policy.refund_payout_after_start
    )
    # Approval by silence takes effect when the answer window closed, however late the sweep ran:
    # downtime must not lengthen the parent's wait for the money.
    refund.pay_by = ctx.deadline(effective or ctx.now(), window)
    entry = ctx.record(
        session,
        "refund.approved",
        actor,
        {
            "refund": refund.id,
            "contract": contract.id,
            "institution": institution_id,
            "kind": refund.kind.value,
            "via": via,
            "lessons": refund.lessons,
            "amount": amount,
            **recovery.facts(),
            "pay_by": format_time(refund.pay_by),
            "reason": refund.reason,
        },
        postings,
    )
    refund.status = RefundStatus.APPROVED
    refund.amount_fen = amount
    refund.advance_due_fen = advance_due
    refund.shortfall_fen = recovery.shortfall
    refund.decided_seq = entry.seq
    if refund.requested_seq < 0:
        refund.requested_seq = entry.seq
    session.flush()
    return refund


def _open_request(refund: Refund) -> None:
    if refund.status is not RefundStatus.REQUESTED:
        raise RefundNotOpen(f"{refund.id} is {refund.status.value}; it was already answered")


def _contract_of(session: Session, refund: Refund) -> Contract:
    contract = session.get(Contract, refund.contract_id)
    assert contract is not None
    return contract


def approve_refund(
    session: Session, ctx: Context, *, institution_id: str, refund_id: str
) -> Refund:
    """The institution approves a parent's request."""
    ctx.lock(session)
    refund = scope.refund_of_institution(session, institution_id, refund_id)
    _open_request(refund)
    return approve(
        session,
        ctx,
        refund,
        _contract_of(session, refund),
        actor=f"institution:{institution_id}",
        via="institution",
        reserved=True,
    )


def reject_refund(
    session: Session, ctx: Context, *, institution_id: str, refund_id: str, reason: str
) -> Refund:
    """The institution refuses a request, with a reason; the lessons are free again.

    Only inside the answer window: once it has passed, silence has approved the request, even if
    the sweep that records it has not run yet.
    """
    ctx.lock(session)
    refund = scope.refund_of_institution(session, institution_id, refund_id)
    _open_request(refund)
    if refund.answer_by is not None and ctx.now() >= refund.answer_by:
        raise AnswerWindowClosed(
            f"the answer window closed at {refund.answer_by.isoformat()}; "
            "silence approved the request",
            answer_by=refund.answer_by.isoformat(),
        )
    refund.answer = _reason(reason, required=True)
    contract = _contract_of(session, refund)
    refund.decided_seq = ctx.record(
        session,
        "refund.rejected",
        f"institution:{institution_id}",
        {"refund": refund.id, "contract": contract.id, "reason": refund.answer},
    ).seq
    refund.status = RefundStatus.REJECTED
    contract.lessons_reserved -= refund.lessons
    session.flush()
    return refund


def auto_approve_refunds(session: Session, ctx: Context, *, limit: int = AUTO_APPROVE_CHUNK) -> int:
    """Approve, by silence, every request whose answer window has passed; returns how many."""
    ctx.lock(session)
    due = list(
        session.scalars(
            select(Refund)
            .where(Refund.status == RefundStatus.REQUESTED, Refund.answer_by <= ctx.now())
            .order_by(Refund.answer_by, Refund.id)
            .limit(limit)
        )
    )
    for refund in due:
        approve(
            session,
            ctx,
            refund,
            _contract_of(session, refund),
            actor="system",
            via="silence",
            reserved=True,
            # the last instant of the window, still the window's last business day
            effective=None if refund.answer_by is None else refund.answer_by - LAST_INSTANT,
        )
    return len(due)


def ordered_refund(
    session: Session,
    ctx: Context,
    contract: Contract,
    *,
    kind: RefundKind,
    lessons: int | None,
    reason: str,
    actor: str,
) -> Refund:
    """A refund that needs no answer (regulator order, wind-down, declined transfer): approved now."""
    count = _lessons_to_refund(ctx, contract, lessons)
    refund = Refund(
        id=new_id("rfd"),
        contract_id=contract.id,
        institution_id=contract.institution_id,
        kind=kind,
        status=RefundStatus.REQUESTED,
        lessons=count,
        reason=reason,
        before_start=ctx.today() < contract.start_date,
        requested_seq=-1,
    )
    session.add(refund)
    return approve(session, ctx, refund, contract, actor=actor, via=kind.value, reserved=False)


def force_refund(
    session: Session,
    ctx: Context,
    *,
    regulator_id: str,
    contract_id: str,
    lessons: int | None,
    reason: str,
) -> Refund:
    """A regulator orders a refund (all remaining lessons unless a number is given)."""
    ctx.lock(session)
    contract = session.get(Contract, contract_id) if isinstance(contract_id, str) else None
    if contract is None:
        raise NotFound(f"no contract {contract_id}")
    scope.institution_for_regulator(session, regulator_id, contract.institution_id)
    return ordered_refund(
        session,
        ctx,
        contract,
        kind=RefundKind.FORCED,
        lessons=lessons,
        reason=inputs.required_text(reason, "the reason", limit=500),
        actor=f"regulator:{regulator_id}",
    )


def pay_refund(
    session: Session, ctx: Context, *, bank_id: str, refund_id: str, bank_reference: str
) -> Refund:
    """The bank reports an approved refund paid back to the payer: the money leaves escrow."""
    ctx.lock(session)
    refund = scope.refund_for_bank(session, bank_id, refund_id)
    if refund.status is not RefundStatus.APPROVED:
        raise RefundNotOpen(
            f"{refund.id} is {refund.status.value}; only an approved refund is paid"
        )
    bank_reference = inputs.code(bank_reference, "bank reference")
    assert refund.amount_fen is not None
    amount = Money(refund.amount_fen)
    postings = (
        [
            Posting.debit(
                institution_account(AccountKind.REFUND_PAYABLE, refund.institution_id), amount
            ),
            Posting.credit(institution_account(AccountKind.ESCROW, refund.institution_id), amount),
        ]
        if refund.amount_fen
        else []
    )
    refund.paid_seq = ctx.record(
        session,
        "refund.paid",
        f"bank:{bank_id}",
        {
            "refund": refund.id,
            "contract": refund.contract_id,
            "institution": refund.institution_id,
            "amount": refund.amount_fen,
            "bank_reference": bank_reference,
        },
        postings,
    ).seq
    refund.status = RefundStatus.PAID
    refund.bank_reference = bank_reference
    session.flush()
    return refund


@dataclass(frozen=True, slots=True)
class RefundPaymentFailure:
    """A bank's report that it could not pay an approved refund, and where the log recorded it."""

    refund: Refund
    entry: Appended
    bank_reference: str
    reason: str


def refund_payment_failed(
    session: Session,
    ctx: Context,
    *,
    bank_id: str,
    refund_id: str,
    bank_reference: str,
    reason: str,
) -> RefundPaymentFailure:
    """The bank reports it could not pay an approved refund (closed account, wrong name, ...).

    Nothing moves: the amount stays in ``refund_payable``, inside escrow, and the refund stays
    approved, so the bank pays it later (``pay_refund``) once the route is fixed; its payment
    deadline and any overdue flag are unchanged, because the parent still waits. The attempt is
    recorded (``refund.payment_failed``) with the bank's reference and reason, for the regulator
    and for the parent's record of why the money has not arrived.
    """
    ctx.lock(session)
    refund = scope.refund_for_bank(session, bank_id, refund_id)
    if refund.status is not RefundStatus.APPROVED:
        raise RefundNotOpen(
            f"{refund.id} is {refund.status.value}; only an approved refund can fail to be paid"
        )
    bank_reference = inputs.code(bank_reference, "bank reference")
    checked_reason = inputs.required_text(reason, "the failure reason", limit=500)
    entry = ctx.record(
        session,
        "refund.payment_failed",
        f"bank:{bank_id}",
        {
            "refund": refund.id,
            "contract": refund.contract_id,
            "institution": refund.institution_id,
            "amount": refund.amount_fen,
            "bank_reference": bank_reference,
            "reason": checked_reason,
        },
    )
    session.flush()
    return RefundPaymentFailure(refund, entry, bank_reference, checked_reason)


def mark_overdue_refunds(session: Session, ctx: Context, *, limit: int = AUTO_APPROVE_CHUNK) -> int:
    """Flag every approved refund still unpaid after its payout deadline; returns how many.

    Each gets one ``refund.overdue`` entry, once: the regulator sees it, and it stays flagged
    after it is finally paid.
    """
    ctx.lock(session)
    due = list(
        session.scalars(
            select(Refund)
            .where(
                Refund.status == RefundStatus.APPROVED,
                Refund.overdue_seq.is_(None),
                Refund.pay_by <= ctx.now(),
            )
            .order_by(Refund.pay_by, Refund.id)
            .limit(limit)
        )
    )
    for refund in due:
        assert refund.pay_by is not None
        refund.overdue_seq = ctx.record(
            session,
            "refund.overdue",
            "system",
            {
                "refund": refund.id,
                "contract": refund.contract_id,
                "institution": refund.institution_id,
                "amount": refund.amount_fen,
                "pay_by": format_time(refund.pay_by),
            },
        ).seq
    session.flush()
    return len(due)
