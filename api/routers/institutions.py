"""Institutions: lesson reports, refunds to answer, liability and settlements.

An institution token acts for exactly one institution (``principal.id``). Everything it reads or
changes is looked up within that institution: another institution's lesson, refund or settlement
batch answers 404, exactly like one that does not exist.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.auth import InstitutionPrincipal
from api.deps import ReadSession
from api.ids import ID_PATTERN, IdField
from api.pagination import Cursor, Limit, Page, paginate
from api.party_keys import (
    PartyKeyIn,
    PartyKeyOut,
    PartyKeyRegistered,
    PartySignatureIn,
    list_keys,
    register,
    signature_of,
)
from api.problems import responses
from api.writes import Receipt, Tx, WriterDep
from ledger.accounts import AccountKind
from ledger.entities import (
    ConfirmedBy,
    Contract,
    ContractStatus,
    InstitutionStatus,
    Lesson,
    LessonStatus,
    Payout,
    PayoutStatus,
    Refund,
    RefundKind,
    RefundStatus,
    SettlementBatch,
)
from ledger.errors import NotFound
from ledger.escrow import parties, queries, scope
from ledger.escrow import refunds as refund_ops
from ledger.escrow.lessons import MAX_BATCH, LessonReport, report_lessons, withdraw_lesson
from ledger.party_keys import PartyKind

router = APIRouter(prefix="/v1/institution", tags=["institutions"])

LessonId = Annotated[
    str,
    Path(pattern=ID_PATTERN, max_length=64, description="The lesson id the service gave (les_…)"),
]
RefundId = Annotated[
    str,
    Path(pattern=ID_PATTERN, max_length=64, description="The refund id (rfd_…)"),
]
BatchId = Annotated[
    str,
    Path(pattern=ID_PATTERN, max_length=64, description="The settlement batch id (stl_…)"),
]


# --- request bodies -------------------------------------------------------------------------------


class LessonReportIn(BaseModel):
    """One delivered lesson, as the institution's own system records it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "contract_id": "ctr_9f86d081884c7d65",
                    "ref": "2026-09-01-art-3B-0001",
                    "delivered_at": "2026-09-01T09:00:00+08:00",
                    "teacher_id": "T-017",
                }
            ]
        },
    )

    contract_id: IdField = Field(description="The contract the lesson was taught under")
    ref: IdField = Field(
        description="The institution's own id for the lesson; reporting it again (same contract, "
        "time and teacher) returns the lesson already recorded instead of a second one"
    )
    delivered_at: AwareDatetime = Field(
        description="When the lesson was taught, with a time zone; not in the future, not before "
        "the course started"
    )
    teacher_id: IdField = Field(description="The institution's id of the teacher who taught it")
    signature: PartySignatureIn | None = Field(
        default=None,
        description="The institution's signature over this lesson's message (docs/audit.md); "
        "required while it has an active key (POST /v1/institution/keys), stored in the log entry",
    )

    def to_report(self) -> LessonReport:
        return LessonReport(
            self.contract_id,
            self.ref,
            self.delivered_at,
            self.teacher_id,
            signature_of(self.signature),
        )


class LessonBatchIn(BaseModel):
    """Up to 1,000 delivered lessons, recorded all or none."""

    model_config = ConfigDict(extra="forbid")

    lessons: list[LessonReportIn] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} lessons; any refused lesson refuses the whole batch",
    )


class RejectRefundIn(BaseModel):
    """The institution's reason for refusing a refund request; the parent and regulator see it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"answer": "The lessons asked back were all delivered"}]},
    )

    answer: str = Field(min_length=1, max_length=500, description="Why the request is refused")


class SettlementAccountIn(BaseModel):
    """The institution's own bank account that future payouts should go to."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"account": "6222-0210-0112-3456"}]}
    )

    account: IdField = Field(description="Account number: 1-64 letters, digits or _.:-")


# --- responses ------------------------------------------------------------------------------------


class InstitutionLesson(BaseModel):
    """A reported lesson and where it stands."""

    id: str = Field(examples=["les_2c26b46b68ffc68f"])
    ref: str = Field(description="The institution's own id for the lesson")
    contract_id: str
    delivered_at: datetime
    teacher_id: str
    status: LessonStatus
    price_fen: int = Field(description="The lesson's exact share of the contract's value, fen")
    advance_fen: int = Field(description="Part of the price that repays the cost advance, fen")
    confirm_by: datetime = Field(description="After this, the parent's silence confirms it")
    confirmed_by: ConfirmedBy | None
    dispute_reason: str | None
    batch_id: str | None = Field(description="The settlement batch that paid it out, once settled")
    reported_seq: int = Field(description="Log entry that recorded the report")
    decided_seq: int | None = Field(description="Log entry that confirmed or voided it")

    @classmethod
    def of(cls, lesson: Lesson) -> InstitutionLesson:
        return cls(
            id=lesson.id,
            ref=lesson.ref,
            contract_id=lesson.contract_id,
            delivered_at=lesson.delivered_at,
            teacher_id=lesson.teacher_id,
            status=lesson.status,
            price_fen=lesson.price_fen,
            advance_fen=lesson.advance_fen,
            confirm_by=lesson.confirm_by,
            confirmed_by=lesson.confirmed_by,
            dispute_reason=lesson.dispute_reason,
            batch_id=lesson.batch_id,
            reported_seq=lesson.reported_seq,
            decided_seq=lesson.decided_seq,
        )


class LessonReported(BaseModel):
    """The lesson as recorded (now or by an earlier report of the same ref)."""

    lesson: InstitutionLesson
    created: bool = Field(description="False when the ref was already reported: nothing new")
    receipt: Receipt | None


class LessonBatchReported(BaseModel):
    """The batch's lessons in the order sent, each as recorded."""

    lessons: list[InstitutionLesson]
    created: int = Field(description="How many lessons this call recorded (the rest were repeats)")
    receipt: Receipt | None


class LessonWithdrawn(BaseModel):
    """The withdrawn lesson (voided: its money went back to the contract)."""

    lesson: InstitutionLesson
    receipt: Receipt | None


class InstitutionContract(BaseModel):
    """One of the institution's contracts with what is left of it."""

    id: str = Field(examples=["ctr_9f86d081884c7d65"])
    student_id: str
    subject: str
    course_name: str
    status: ContractStatus
    lessons: int
    unit_price_fen: int
    total_fen: int
    currency: str = Field(examples=["CNY"])
    start_date: date
    end_date: date
    lessons_delivered: int
    lessons_refunded: int
    lessons_reserved: int = Field(description="Held by refund requests awaiting an answer")
    lessons_remaining: int = Field(description="Neither delivered nor refunded")
    value_remaining_fen: int = Field(description="Escrowed value of the remaining lessons, fen")
    advance_fen: int = Field(description="Cost advance released up front, fen")
    advance_remaining_fen: int = Field(description="Advance not yet repaid by lessons, fen")
    transferred_from: str | None
    created_seq: int


class InstitutionRefund(BaseModel):
    """A refund of the institution's contract lessons."""

    id: str = Field(examples=["rfd_6b86b273ff34fce1"])
    contract_id: str
    kind: RefundKind
    status: RefundStatus
    lessons: int
    amount_fen: int | None = Field(description="Fixed when approved, fen")
    advance_due_fen: int | None = Field(description="Cost advance the refund makes owed back, fen")
    shortfall_fen: int | None = Field(description="Part of that advance nothing could cover, fen")
    reason: str | None
    answer: str | None = Field(description="The institution's reason for a rejection")
    before_start: bool
    answer_by: datetime | None = Field(description="After this, the institution's silence approves")
    pay_by: datetime | None
    overdue: bool = Field(description="Approved and still unpaid after pay_by")
    requested_seq: int
    decided_seq: int | None
    paid_seq: int | None

    @classmethod
    def of(cls, refund: Refund) -> InstitutionRefund:
        return cls(
            id=refund.id,
            contract_id=refund.contract_id,
            kind=refund.kind,
            status=refund.status,
            lessons=refund.lessons,
            amount_fen=refund.amount_fen,
            advance_due_fen=refund.advance_due_fen,
            shortfall_fen=refund.shortfall_fen,
            reason=refund.reason,
            answer=refund.answer,
            before_start=refund.before_start,
            answer_by=refund.answer_by,
            pay_by=refund.pay_by,
            overdue=refund.overdue_seq is not None and refund.status is RefundStatus.APPROVED,
            requested_seq=refund.requested_seq,
            decided_seq=refund.decided_seq,
            paid_seq=refund.paid_seq,
        )


class RefundDecision(BaseModel):
    """The refund after the institution's answer."""

    refund: InstitutionRefund
    receipt: Receipt | None


class InstitutionAccounts(BaseModel):
    """The institution's accounts of the money flow, fen (normal-side balances)."""

    escrow_fen: int = Field(description="Cash in the custody account at the bank")
    pending_fen: int = Field(description="Reported lessons awaiting confirmation")
    releasable_fen: int = Field(description="Confirmed lessons awaiting the next settlement")
    payable_fen: int = Field(description="Settled, awaiting the bank's payout")
    refund_payable_fen: int = Field(description="Approved refunds awaiting the bank")
    advance_fen: int = Field(description="Cost advances not yet repaid by lessons")
    advance_due_fen: int = Field(description="Advances owed back now (refunded lessons)")
    risk_deposit_fen: int = Field(description="Risk deposit lodged in escrow")


class InstitutionLiability(BaseModel):
    """学生余量: what the institution still owes its parents, and where its money stands."""

    institution_id: str
    status: InstitutionStatus
    liability_fen: int = Field(description="Value of every undelivered lesson of its contracts")
    currency: str = Field(examples=["CNY"])
    accounts: InstitutionAccounts


class SettlementPayout(BaseModel):
    """An instruction to the custody bank to pay settled money to the institution."""

    id: str = Field(
        description="End-to-end id the bank quotes back", examples=["e2e_1b4f0e9851971998"]
    )
    instructed_on: date
    settlement_account: str = Field(description="Where it was sent (the account at that time)")
    amount_fen: int
    status: PayoutStatus
    retry_of: str | None
    retried: bool = Field(description="Failed and taken over by a later instruction")
    bank_reference: str | None
    failure_reason: str | None
    instructed_seq: int
    answered_seq: int | None

    @classmethod
    def of(cls, payout: Payout) -> SettlementPayout:
        return cls(
            id=payout.id,
            instructed_on=payout.instructed_on,
            settlement_account=payout.settlement_account,
            amount_fen=payout.amount_fen,
            status=payout.status,
            retry_of=payout.retry_of,
            retried=payout.retried,
            bank_reference=payout.bank_reference,
            failure_reason=payout.failure_reason,
            instructed_seq=payout.instructed_seq,
            answered_seq=payout.answered_seq,
        )


class SettlementBatchOut(BaseModel):
    """One settlement batch: a business date's releasable money moved to payable."""

    id: str = Field(examples=["stl_d4735e3a265e16ee"])
    business_date: date
    lessons: int = Field(description="Confirmed lessons it covers")
    gross_fen: int = Field(description="Taken from releasable")
    netted_fen: int = Field(description="Part of it that repaid advances owed back")
    payable_fen: int = Field(description="What the institution is paid: gross less netted")
    after_seq: int = Field(description="The log window it covers starts after this seq")
    through_seq: int = Field(description="... and ends at this seq")
    seq: int = Field(description="Log entry that recorded the batch")
    payout_id: str | None = Field(description="The current payout instruction (the latest retry)")
    payout_status: PayoutStatus | None = Field(
        description="Status of the current instruction; null when nothing was payable"
    )


class SettlementBatchDetail(BaseModel):
    """A settlement batch with every payout instruction and a page of its lessons."""

    batch: SettlementBatchOut
    payouts: list[SettlementPayout] = Field(description="In the order instructed; retries follow")
    lessons: Page[InstitutionLesson] = Field(description="Its lessons; page with cursor and limit")


class SettlementAccountChanged(BaseModel):
    """Where future payouts (and retries of failed ones) will go."""

    institution_id: str
    settlement_account: str
    receipt: Receipt | None


# --- helpers --------------------------------------------------------------------------------------


def _batch_of_institution(session: Session, institution_id: str, batch_id: str) -> SettlementBatch:
    found = session.get(SettlementBatch, batch_id)
    if found is None or found.institution_id != institution_id:
        raise NotFound(f"no settlement batch {batch_id}")
    return found


def _payouts_by_batch(session: Session, batch_ids: list[str]) -> dict[str, list[Payout]]:
    found: dict[str, list[Payout]] = defaultdict(list)
    if batch_ids:
        for payout in session.scalars(
            select(Payout)
            .where(Payout.batch_id.in_(batch_ids))
            .order_by(Payout.instructed_seq, Payout.id)
        ):
            found[payout.batch_id].append(payout)
    return found


def _batch_out(batch: SettlementBatch, payouts: list[Payout]) -> SettlementBatchOut:
    current = payouts[-1] if payouts else None
    return SettlementBatchOut(
        id=batch.id,
        business_date=batch.business_date,
        lessons=batch.lessons,
        gross_fen=batch.gross_fen,
        netted_fen=batch.netted_fen,
        payable_fen=batch.payable_fen,
        after_seq=batch.after_seq,
        through_seq=batch.through_seq,
        seq=batch.seq,
        payout_id=None if current is None else current.id,
        payout_status=None if current is None else current.status,
    )


def _identity(row: Any) -> Any:
    return row


# --- lessons --------------------------------------------------------------------------------------


@router.post(
    "/lessons",
    response_model=LessonReported,
    status_code=201,
    summary="Report one delivered lesson",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def report_lesson(
    body: LessonReportIn, principal: InstitutionPrincipal, writer: WriterDep
) -> JSONResponse:
    """Record one lesson as delivered (消课): its share of the contract moves to pending until the
    parent confirms it, or stays silent for the confirmation window.

    Reporting a ref already reported (same contract, time and teacher) returns the lesson recorded
    the first time, with a receipt for that entry, and records nothing new; the same ref for a
    different lesson is refused (409 lesson-ref-conflict). Refused while the institution is frozen
    or closing (409 institution-not-active), for a lesson in the future or before the course
    started (422), and on a contract that is unpaid, ended or has no lesson left (409). While the
    institution has a signing key, the lesson must carry its `signature` (422 signature-required,
    invalid-signature); a repeat of a recorded ref is answered as before, signed or not.
    """

    def work(tx: Tx) -> LessonReported:
        size = tx.size_before
        [lesson] = report_lessons(
            tx.session, tx.ctx, institution_id=principal.id, reports=[body.to_report()]
        )
        created = lesson.reported_seq >= size
        return LessonReported(
            lesson=InstitutionLesson.of(lesson),
            created=created,
            receipt=tx.receipt(lesson.reported_seq),
        )

    return writer.run(principal, body, work, status=201)


@router.post(
    "/lessons/batch",
    response_model=LessonBatchReported,
    status_code=201,
    summary=f"Report up to {MAX_BATCH} delivered lessons at once",
    responses=responses(400, 401, 403, 404, 409, 413, 422),
)
def report_lesson_batch(
    body: LessonBatchIn, principal: InstitutionPrincipal, writer: WriterDep
) -> JSONResponse:
    """Record a day's lessons in one call, all or none: one refused lesson refuses the batch and
    the problem names it. Refs already reported come back as they were recorded, so a batch that
    timed out can simply be sent again; only the lessons not yet recorded are written.

    More than 1,000 lessons is a validation error (split the batch). Each lesson carries its own
    `signature` while the institution has a signing key, so each log entry can be verified alone.
    """

    def work(tx: Tx) -> LessonBatchReported:
        size = tx.size_before
        lessons = report_lessons(
            tx.session,
            tx.ctx,
            institution_id=principal.id,
            reports=[item.to_report() for item in body.lessons],
        )
        created = len({lesson.id for lesson in lessons if lesson.reported_seq >= size})
        return LessonBatchReported(
            lessons=[InstitutionLesson.of(lesson) for lesson in lessons],
            created=created,
            receipt=tx.receipt(max(lesson.reported_seq for lesson in lessons)),
        )

    return writer.run(principal, body, work, status=201)


@router.get(
    "/lessons",
    response_model=Page[InstitutionLesson],
    summary="The institution's reported lessons",
    responses=responses(401, 403, 422),
)
def list_lessons(
    principal: InstitutionPrincipal,
    session: ReadSession,
    status: Annotated[LessonStatus | None, Query(description="Only lessons in this state")] = None,
    contract_id: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, max_length=64, description="Only lessons of this contract"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[InstitutionLesson]:
    """Every lesson the institution reported, oldest report first, with its status: to follow
    which are still awaiting confirmation, which are disputed (and may be withdrawn), and which
    settlement batch paid each one out."""
    query = select(Lesson).where(Lesson.institution_id == principal.id)
    if status is not None:
        query = query.where(Lesson.status == status)
    if contract_id is not None:
        query = query.where(Lesson.contract_id == contract_id)
    return paginate(
        session, query, Lesson.reported_seq, Lesson.id, cursor, limit, InstitutionLesson.of
    )


@router.post(
    "/lessons/{lesson_id}/withdraw",
    response_model=LessonWithdrawn,
    summary="Withdraw a disputed lesson",
    responses=responses(400, 401, 403, 404, 409),
)
def withdraw(
    lesson_id: LessonId, principal: InstitutionPrincipal, writer: WriterDep
) -> JSONResponse:
    """Accept a parent's dispute: the lesson is voided and its money goes back to the contract,
    which has the lesson to deliver again (reported later under a new ref). Only a disputed lesson can be withdrawn
    (409 lesson-not-open otherwise); a dispute not withdrawn waits for the regulator."""

    def work(tx: Tx) -> LessonWithdrawn:
        lesson = withdraw_lesson(
            tx.session, tx.ctx, institution_id=principal.id, lesson_id=lesson_id
        )
        return LessonWithdrawn(
            lesson=InstitutionLesson.of(lesson), receipt=tx.receipt(lesson.decided_seq)
        )

    return writer.run(principal, None, work)


# --- signing keys ---------------------------------------------------------------------------------


@router.post(
    "/keys",
    response_model=PartyKeyRegistered,
    status_code=201,
    summary="Register the institution's lesson-signing key",
    responses=responses(400, 401, 403, 409, 413, 422),
)
def register_key(
    body: PartyKeyIn, principal: InstitutionPrincipal, writer: WriterDep
) -> JSONResponse:
    """Register an Ed25519 public key: from now on every lesson this institution reports must be
    signed with it (422 signature-required otherwise), and the signature is kept in the log, so
    anyone holding the log can prove the institution itself claimed each lesson.

    One key is active at a time: a new key revokes the previous one (both recorded in the log),
    and signatures made with the old key are refused from then on. Registering the active key
    again changes nothing; a key once revoked cannot come back (409).
    """

    def work(tx: Tx) -> PartyKeyRegistered:
        return register(tx, PartyKind.INSTITUTION, principal, body)

    return writer.run(principal, body, work, status=201)


@router.get(
    "/keys",
    response_model=Page[PartyKeyOut],
    summary="The institution's signing keys",
    responses=responses(401, 403, 422),
)
def keys(
    principal: InstitutionPrincipal,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[PartyKeyOut]:
    """Every key the institution registered, oldest first, with the log entries that registered
    and revoked each: to check that no key was registered in its name that it does not hold."""
    return list_keys(session, PartyKind.INSTITUTION, principal.id, cursor, limit)


# --- contracts ------------------------------------------------------------------------------------


@router.get(
    "/contracts",
    response_model=Page[InstitutionContract],
    summary="The institution's contracts with what remains of them",
    responses=responses(401, 403, 422),
)
def list_contracts(
    principal: InstitutionPrincipal,
    session: ReadSession,
    status: Annotated[
        ContractStatus | None, Query(description="Only contracts in this state")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[InstitutionContract]:
    """Every contract the institution holds, oldest first, with lessons and value still to be
    delivered: what it may still report lessons against, and what it owes if it stops teaching."""
    query = select(Contract).where(Contract.institution_id == principal.id)
    if status is not None:
        query = query.where(Contract.status == status)
    page = paginate(session, query, Contract.created_seq, Contract.id, cursor, limit, _identity)
    items = [
        InstitutionContract(
            id=s.contract.id,
            student_id=s.contract.student_id,
            subject=s.contract.subject,
            course_name=s.contract.course_name,
            status=s.contract.status,
            lessons=s.contract.lessons,
            unit_price_fen=s.contract.unit_price_fen,
            total_fen=s.contract.total_fen,
            currency=s.contract.currency,
            start_date=s.contract.start_date,
            end_date=s.contract.end_date,
            lessons_delivered=s.contract.lessons_delivered,
            lessons_refunded=s.contract.lessons_refunded,
            lessons_reserved=s.contract.lessons_reserved,
            lessons_remaining=s.lessons_remaining,
            value_remaining_fen=s.value_remaining.amount,
            advance_fen=s.contract.advance_fen,
            advance_remaining_fen=s.contract.advance_remaining_fen,
            transferred_from=s.contract.transferred_from,
            created_seq=s.contract.created_seq,
        )
        for s in queries.summaries(session, list(page.items))
    ]
    return Page[InstitutionContract](items=items, next_cursor=page.next_cursor)


# --- refunds --------------------------------------------------------------------------------------


@router.get(
    "/refunds",
    response_model=Page[InstitutionRefund],
    summary="Refunds of the institution's contracts",
    responses=responses(401, 403, 422),
)
def list_refunds(
    principal: InstitutionPrincipal,
    session: ReadSession,
    status: Annotated[RefundStatus | None, Query(description="Only refunds in this state")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[InstitutionRefund]:
    """Every refund of the institution's contracts, oldest request first. ``status=requested``
    lists the requests to answer: each has an ``answer_by`` after which silence approves it."""
    query = select(Refund).where(Refund.institution_id == principal.id)
    if status is not None:
        query = query.where(Refund.status == status)
    return paginate(
        session, query, Refund.requested_seq, Refund.id, cursor, limit, InstitutionRefund.of
    )


@router.post(
    "/refunds/{refund_id}/approve",
    response_model=RefundDecision,
    summary="Approve a parent's refund request",
    responses=responses(400, 401, 403, 404, 409),
)
def approve_refund(
    refund_id: RefundId, principal: InstitutionPrincipal, writer: WriterDep
) -> JSONResponse:
    """Agree to give the lessons back: the amount is fixed (their exact share of what remains of
    the contract) and becomes owed to the parent, for the bank to pay by ``pay_by``. Any cost
    advance those lessons carried becomes owed back by the institution. A request already
    answered (or approved by silence) is 409 refund-not-open."""

    def work(tx: Tx) -> RefundDecision:
        refund = refund_ops.approve_refund(
            tx.session, tx.ctx, institution_id=principal.id, refund_id=refund_id
        )
        return RefundDecision(
            refund=InstitutionRefund.of(refund), receipt=tx.receipt(refund.decided_seq)
        )

    return writer.run(principal, None, work)


@router.post(
    "/refunds/{refund_id}/reject",
    response_model=RefundDecision,
    summary="Reject a parent's refund request, with a reason",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def reject_refund(
    refund_id: RefundId,
    body: RejectRefundIn,
    principal: InstitutionPrincipal,
    writer: WriterDep,
) -> JSONResponse:
    """Refuse a request within the answer window; the reserved lessons are free again. The
    reason is logged, and the parent and the regulator see it. A request already answered (or
    approved by silence) is 409 refund-not-open."""

    def work(tx: Tx) -> RefundDecision:
        refund = refund_ops.reject_refund(
            tx.session,
            tx.ctx,
            institution_id=principal.id,
            refund_id=refund_id,
            reason=body.answer,
        )
        return RefundDecision(
            refund=InstitutionRefund.of(refund), receipt=tx.receipt(refund.decided_seq)
        )

    return writer.run(principal, body, work)


# --- money ----------------------------------------------------------------------------------------


@router.get(
    "/liability",
    response_model=InstitutionLiability,
    summary="Outstanding liability (学生余量) and account balances",
    responses=responses(401, 403, 404),
)
def liability(principal: InstitutionPrincipal, session: ReadSession) -> InstitutionLiability:
    """What the institution still owes its parents (the value of every undelivered lesson) and
    where its money is: in escrow, pending confirmation, releasable at the next settlement,
    payable by the bank, owed back as advances. The regulator's alerts read the same figures."""
    institution = scope.institution(session, principal.id)
    balances = queries.institution_accounts(session, institution)
    owed = queries.institution_liability(session, institution)
    accounts = InstitutionAccounts(
        **{
            name: balances[AccountKind(name.removesuffix("_fen"))].amount
            for name in InstitutionAccounts.model_fields
        }
    )
    return InstitutionLiability(
        institution_id=institution.id,
        status=institution.status,
        liability_fen=owed.amount,
        currency=owed.currency,
        accounts=accounts,
    )


@router.get(
    "/settlements",
    response_model=Page[SettlementBatchOut],
    summary="Settlement batches and their payout status",
    responses=responses(401, 403, 422),
)
def list_settlements(
    principal: InstitutionPrincipal,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[SettlementBatchOut]:
    """One batch per business date on which lessons were confirmed (T+1 by default): how much
    was settled, how much repaid advances, and whether the bank has paid it yet."""
    query = select(SettlementBatch).where(SettlementBatch.institution_id == principal.id)
    page = paginate(
        session, query, SettlementBatch.seq, SettlementBatch.id, cursor, limit, _identity
    )
    batches: list[SettlementBatch] = list(page.items)
    payouts = _payouts_by_batch(session, [b.id for b in batches])
    return Page[SettlementBatchOut](
        items=[_batch_out(b, payouts.get(b.id, [])) for b in batches],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/settlements/{batch_id}",
    response_model=SettlementBatchDetail,
    summary="One settlement batch with its payouts and lessons",
    responses=responses(401, 403, 404, 422),
)
def settlement_detail(
    batch_id: BatchId,
    principal: InstitutionPrincipal,
    session: ReadSession,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> SettlementBatchDetail:
    """Which lessons a batch paid for, and each payout instruction for it (a failed payout is
    retried under a new id): what the institution reconciles its bank statement against.
    ``cursor`` and ``limit`` page through the lessons."""
    batch = _batch_of_institution(session, principal.id, batch_id)
    payouts = _payouts_by_batch(session, [batch.id]).get(batch.id, [])
    lessons = paginate(
        session,
        select(Lesson).where(Lesson.batch_id == batch.id),
        Lesson.reported_seq,
        Lesson.id,
        cursor,
        limit,
        InstitutionLesson.of,
    )
    return SettlementBatchDetail(
        batch=_batch_out(batch, payouts),
        payouts=[SettlementPayout.of(p) for p in payouts],
        lessons=lessons,
    )


@router.post(
    "/settlement-account",
    response_model=SettlementAccountChanged,
    summary="Change the account payouts are sent to",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def change_settlement_account(
    body: SettlementAccountIn, principal: InstitutionPrincipal, writer: WriterDep
) -> JSONResponse:
    """Point future payouts, and retries of failed ones, at another of the institution's own
    accounts (after a merger or a change of bank, say). The change is logged with both accounts;
    instructions already sent keep the account they were sent to."""

    def work(tx: Tx) -> SettlementAccountChanged:
        institution = parties.change_settlement_account(
            tx.session,
            tx.ctx,
            institution_id=principal.id,
            account=body.account,
            actor=principal.actor,
        )
        return SettlementAccountChanged(
            institution_id=institution.id,
            settlement_account=institution.settlement_account,
            receipt=tx.receipt(),
        )

    return writer.run(principal, body, work)
