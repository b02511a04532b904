"""Parents: their students, contracts, lessons, refunds and receipts.

A parent sees only their own family: every contract, lesson and student of another parent answers
404, exactly like one that does not exist (``ledger.escrow.scope``). Every write is recorded in the
log and answered with a signed receipt, so a parent can later prove what they did and when: that a
lesson was confirmed (money released), a refund asked for (the institution's answer window started
then) or a transfer declined.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Annotated, Any, TypeAlias

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import proofs
from api.auth import ParentPrincipal, reads_on_loop
from api.deps import AuthSession, LedgerDep, ReadSession
from api.ids import ID_PATTERN, IdField
from api.pagination import Cursor, Limit, Page, paginate
from api.pagination import decode as decode_cursor
from api.pagination import encode as encode_cursor
from api.problems import responses
from api.writes import Receipt, Tx, WriterDep, sign_receipt
from ledger.entities import (
    ConfirmedBy,
    Contract,
    ContractStatus,
    Institution,
    Lesson,
    LessonStatus,
    PayerType,
    ReceiptStatus,
    Refund,
    RefundKind,
    RefundStatus,
    Student,
)
from ledger.entities import Receipt as BankReceipt
from ledger.errors import NotFound
from ledger.escrow import contracts, lessons, parties, queries, refunds, scope, supervision
from ledger.escrow.contracts import MAX_CLASS_SIZE, MAX_LESSON_MINUTES, MAX_LESSONS, Terms
from ledger.escrow.queries import ContractSummary
from ledger.models import LogEntry, PersonalData
from ledger.money import JSON_SAFE_MAX

router = APIRouter(prefix="/v1/parent", tags=["parents"])

MAX_UNIT_PRICE_FEN = 100_000_000
"""¥1,000,000 per lesson: a sanity bound far above any regional price cap or charge limit (the
profiles' own limits are checked by the service and answered as ``rules/...`` problems)."""

Id: TypeAlias = IdField
ContractId = Annotated[
    str,
    Path(pattern=ID_PATTERN, max_length=64, examples=["ctr_9f86d081884c7d65"]),
]
LessonId = Annotated[
    str,
    Path(pattern=ID_PATTERN, max_length=64, examples=["les_2c26b46b68ffc68f"]),
]


# --- schemas -----------------------------------------------------------------------------------


class ParentStudent(BaseModel):
    """A pupil of the parent."""

    id: str = Field(examples=["stu_4e07408562bedb8b"])
    name: str | None = Field(
        description="The name the parent registered; null once the personal data was erased "
        "(the log never held it, only a salted commitment)",
        examples=["李明"],
    )
    registered_seq: int = Field(description="Seq of the log entry that registered the student")


class StudentRegistered(ParentStudent):
    """The registered student and the signed receipt of its log entry."""

    receipt: Receipt | None = Field(description="Signed proof of the registration entry")


class NewStudent(BaseModel):
    """A pupil to register under the calling parent."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "李明"}]})

    name: str = Field(min_length=1, max_length=200, description="Kept outside the log; erasable")


class ParentContract(BaseModel):
    """A lesson package with what is left of it."""

    id: str = Field(examples=["ctr_9f86d081884c7d65"])
    institution_id: str
    institution_name: str = Field(examples=["Sunrise Art School"])
    student_id: str
    subject: str = Field(description="Normalised (case, width, spaces)", examples=["art"])
    course_name: str = Field(examples=["Watercolour, autumn term"])
    status: ContractStatus
    lessons: int = Field(description="Lessons bought")
    unit_price_fen: int
    total_fen: int = Field(description="The prepayment the custody bank must receive")
    currency: str = Field(examples=["CNY"])
    start_date: date
    end_date: date
    class_size: int | None
    lesson_minutes: int
    lessons_delivered: int = Field(description="Reported and not voided")
    lessons_refunded: int
    lessons_reserved: int = Field(description="Held by refund requests awaiting an answer")
    lessons_remaining: int = Field(description="Not delivered and not refunded")
    value_remaining_fen: int = Field(
        description="Held in escrow for the undelivered lessons (0 until the bank reports payment)"
    )
    transferred_from: str | None = Field(
        description="The previous operator, when the contract moved to a successor"
    )
    created_seq: int
    paid_seq: int | None


class ContractCreated(ParentContract):
    """The signed contract, awaiting payment, and the signed receipt of its log entry."""

    receipt: Receipt | None = Field(description="Signed proof of the contract.created entry")


class NewContract(BaseModel):
    """The terms a parent signs; the institution's regional profile decides whether they are legal."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "institution_id": "ins_5feceb66ffc86f38",
                    "student_id": "stu_4e07408562bedb8b",
                    "subject": "art",
                    "course_name": "Watercolour, autumn term",
                    "lessons": 20,
                    "unit_price_fen": 15000,
                    "start_date": "2026-09-01",
                    "end_date": "2026-11-20",
                    "lesson_minutes": 45,
                }
            ]
        },
    )

    institution_id: Id
    student_id: Id = Field(description="One of the calling parent's students")
    subject: str = Field(min_length=1, max_length=64, description="Lesson limits are per subject")
    course_name: str = Field(min_length=1, max_length=200)
    lessons: int = Field(
        ge=1, le=MAX_LESSONS, description="The profile limits this (60 nationally)"
    )
    unit_price_fen: int = Field(ge=1, le=MAX_UNIT_PRICE_FEN, description="Price of one lesson, fen")
    start_date: date
    end_date: date
    class_size: int | None = Field(
        default=None, ge=1, le=MAX_CLASS_SIZE, description="Required for academic courses"
    )
    lesson_minutes: int = Field(default=45, ge=1, le=MAX_LESSON_MINUTES)


class ParentLesson(BaseModel):
    """A lesson the institution reported as delivered, and where it stands."""

    id: str = Field(examples=["les_2c26b46b68ffc68f"])
    contract_id: str
    delivered_at: AwareDatetime
    teacher_id: str
    price_fen: int = Field(description="The lesson's exact share of the contract value")
    status: LessonStatus
    confirm_by: AwareDatetime = Field(description="After this, silence confirms the lesson")
    confirmed_by: ConfirmedBy | None
    dispute_reason: str | None
    reported_seq: int
    decided_seq: int | None = Field(description="Seq of the entry that confirmed or voided it")


class LessonAnswered(ParentLesson):
    """The lesson after the parent's answer, and the signed receipt of it."""

    receipt: Receipt | None = Field(description="Signed proof of the confirmation or dispute")


class Dispute(BaseModel):
    """Why the parent says the lesson was not delivered as reported."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "the lesson was cancelled; nobody came"}]},
    )

    reason: str = Field(min_length=1, max_length=500)


class ParentRefund(BaseModel):
    """Money going back to the parent for undelivered lessons."""

    id: str = Field(examples=["rfd_d4735e3a265e16ee"])
    contract_id: str
    institution_id: str
    kind: RefundKind
    status: RefundStatus
    lessons: int
    amount_fen: int | None = Field(description="Fixed when approved")
    reason: str | None
    answer: str | None = Field(description="The institution's reason when it rejected it")
    before_start: bool = Field(description="Asked before the course started: a full refund")
    answer_by: AwareDatetime | None = Field(description="After this, silence approves")
    pay_by: AwareDatetime | None = Field(description="The bank must pay it by then")
    requested_seq: int
    decided_seq: int | None
    paid_seq: int | None


class RefundRecorded(ParentRefund):
    """The refund as recorded, and the signed receipt of its log entry."""

    receipt: Receipt | None = Field(description="Signed proof of the entry that recorded it")


class RefundAsk(BaseModel):
    """How many lessons to take back (all undelivered ones if omitted, and always before the
    course starts) and why."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"lessons": 5, "reason": "moving to another city"}]},
    )

    lessons: int | None = Field(default=None, ge=1, le=MAX_LESSONS)
    reason: str | None = Field(default=None, max_length=500)


class ContractDetail(BaseModel):
    """A contract with every lesson reported on it and every refund of it."""

    contract: ParentContract
    lessons: list[ParentLesson] = Field(description="In the order they were reported")
    refunds: list[ParentRefund] = Field(description="In the order they were asked for")


class ParentPayment(BaseModel):
    """Money the custody bank reported received for one of the parent's contracts."""

    id: str = Field(examples=["rcp_6b86b273ff34fce1"])
    contract_id: str
    bank_id: str
    bank_reference: str
    amount_fen: int
    payer: PayerType
    status: ReceiptStatus = Field(description="booked into escrow, or returned (loan-funded)")
    seq: int = Field(description="Seq of the log entry that recorded it")
    time: AwareDatetime = Field(description="When it was recorded")
    proof: Receipt = Field(description="Signed log position and hash of that entry")


# --- conversions -------------------------------------------------------------------------------


def _institution_names(session: Session, ids: Iterable[str]) -> dict[str, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    rows = session.execute(
        select(Institution.id, Institution.name).where(Institution.id.in_(wanted))
    )
    return {ident: name for ident, name in rows}


def _contracts_out(session: Session, found: Sequence[Contract]) -> list[ParentContract]:
    """Contracts with their remaining value (one balance query) and institution names."""
    names = _institution_names(session, (c.institution_id for c in found))
    return [
        _contract_out(summary, names[summary.contract.institution_id])
        for summary in queries.summaries(session, list(found))
    ]


def _contract_out(summary: ContractSummary, institution_name: str) -> ParentContract:
    c = summary.contract
    return ParentContract(
        id=c.id,
        institution_id=c.institution_id,
        institution_name=institution_name,
        student_id=c.student_id,
        subject=c.subject,
        course_name=c.course_name,
        status=c.status,
        lessons=c.lessons,
        unit_price_fen=c.unit_price_fen,
        total_fen=c.total_fen,
        currency=c.currency,
        start_date=c.start_date,
        end_date=c.end_date,
        class_size=c.class_size,
        lesson_minutes=c.lesson_minutes,
        lessons_delivered=c.lessons_delivered,
        lessons_refunded=c.lessons_refunded,
        lessons_reserved=c.lessons_reserved,
        lessons_remaining=summary.lessons_remaining,
        value_remaining_fen=summary.value_remaining.amount,
        transferred_from=c.transferred_from,
        created_seq=c.created_seq,
        paid_seq=c.paid_seq,
    )


def _lesson_out(lesson: Lesson) -> dict[str, Any]:
    return {
        "id": lesson.id,
        "contract_id": lesson.contract_id,
        "delivered_at": lesson.delivered_at,
        "teacher_id": lesson.teacher_id,
        "price_fen": lesson.price_fen,
        "status": lesson.status,
        "confirm_by": lesson.confirm_by,
        "confirmed_by": lesson.confirmed_by,
        "dispute_reason": lesson.dispute_reason,
        "reported_seq": lesson.reported_seq,
        "decided_seq": lesson.decided_seq,
    }


def _refund_out(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "contract_id": refund.contract_id,
        "institution_id": refund.institution_id,
        "kind": refund.kind,
        "status": refund.status,
        "lessons": refund.lessons,
        "amount_fen": refund.amount_fen,
        "reason": refund.reason,
        "answer": refund.answer,
        "before_start": refund.before_start,
        "answer_by": refund.answer_by,
        "pay_by": refund.pay_by,
        "requested_seq": refund.requested_seq,
        "decided_seq": refund.decided_seq,
        "paid_seq": refund.paid_seq,
    }


def _student_out(student: Student, data: PersonalData | None) -> dict[str, Any]:
    return {
        "id": student.id,
        "name": None if data is None else data.name,
        "registered_seq": student.registered_seq,
    }


# --- students ----------------------------------------------------------------------------------


@router.get(
    "/students",
    response_model=Page[ParentStudent],
    summary="The parent's students",
    responses=responses(401, 403, 422),
)
def list_students(
    principal: ParentPrincipal, session: ReadSession, cursor: Cursor = None, limit: Limit = 100
) -> Page[ParentStudent]:
    """The pupils registered under the calling parent, oldest first, with the names the parent
    gave. Names are personal data kept outside the log; an erased name shows as null."""
    page = paginate(
        session,
        select(Student).where(Student.parent_id == principal.id),
        Student.registered_seq,
        Student.id,
        cursor,
        limit,
        lambda student: student,
    )
    students: list[Student] = page.items
    data = {
        d.subject_id: d
        for d in session.scalars(
            select(PersonalData).where(PersonalData.subject_id.in_([s.id for s in students]))
        )
    }
    return Page[ParentStudent](
        items=[ParentStudent(**_student_out(s, data.get(s.id))) for s in students],
        next_cursor=page.next_cursor,
    )


@router.post(
    "/students",
    response_model=StudentRegistered,
    status_code=201,
    summary="Register a student",
    responses=responses(400, 401, 403, 409, 413, 422),
)
def register_student(
    principal: ParentPrincipal, writer: WriterDep, body: NewStudent
) -> JSONResponse:
    """Add a pupil to the calling parent's family, before signing a contract for them. The name
    is stored aside as erasable personal data; the log records only a salted commitment to it."""

    def work(tx: Tx) -> StudentRegistered:
        student = parties.register_student(
            tx.session, tx.ctx, parent_id=principal.id, name=body.name, actor=principal.actor
        )
        data = tx.session.get(PersonalData, student.id)
        return StudentRegistered(
            **_student_out(student, data), receipt=tx.receipt(student.registered_seq)
        )

    # The name is erasable personal data: the idempotency record must not keep a copy of it.
    return writer.run(
        principal, body, work, status=201, keep=lambda stored: {**stored, "name": None}
    )


# --- contracts ---------------------------------------------------------------------------------


@router.get(
    "/contracts",
    response_model=Page[ParentContract],
    summary="The parent's contracts with what remains of them",
    responses=responses(401, 403, 404, 422),
)
@reads_on_loop
async def list_contracts(
    principal: ParentPrincipal,
    session: AuthSession,
    student_id: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, max_length=64, description="Only this student's contracts"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[ParentContract]:
    """Every contract the parent signed, oldest first, with the lessons still to come and the value
    still held in escrow for them. Filtering by another family's student answers 404."""
    # issue 8: the balance read, run on the event loop rather than in the threadpool (two hops
    # per request, endpoint and response validation, were ~15% of its CPU), in the session the
    # token was looked up in. It blocks the loop only for short indexed reads: a read-only session
    # never waits for SQLite's write lock (WAL), nor for a PostgreSQL lock. Its connection goes
    # back to the pool when this returns, before any await (``AuthSession``).
    if student_id is not None:
        scope.student_of(session, principal.id, student_id)
    rows = queries.parent_contract_page(
        session,
        principal.id,
        student_id=student_id,
        after=None if cursor is None else decode_cursor(cursor),
        limit=limit + 1,
    )
    more = len(rows) > limit
    items = [
        ParentContract(
            **row._mapping,
            lessons_remaining=row.lessons - row.lessons_delivered - row.lessons_refunded,
        )
        for row in rows[:limit]
    ]
    last = items[-1] if more else None
    return Page[ParentContract](
        items=items,
        next_cursor=None if last is None else encode_cursor(last.created_seq, last.id),
    )


@router.get(
    "/contracts/{contract_id}",
    response_model=ContractDetail,
    summary="One contract with every lesson and refund",
    responses=responses(401, 403, 404, 422),
)
def get_contract(
    principal: ParentPrincipal, session: ReadSession, contract_id: ContractId
) -> ContractDetail:
    """The contract, each lesson the institution reported on it with its status (to confirm or
    dispute), and each refund of it: everything a parent needs to check their balance."""
    contract = scope.contract_of_parent(session, principal.id, contract_id)
    [summary] = _contracts_out(session, [contract])
    return ContractDetail(
        contract=summary,
        lessons=[
            ParentLesson(**_lesson_out(x)) for x in queries.contract_lessons(session, contract)
        ],
        refunds=[
            ParentRefund(**_refund_out(r)) for r in queries.contract_refunds(session, contract)
        ],
    )


@router.post(
    "/contracts",
    response_model=ContractCreated,
    status_code=201,
    summary="Sign a contract",
    responses=responses(400, 401, 403, 404, 409, 413, 422),
)
def create_contract(
    principal: ParentPrincipal, writer: WriterDep, body: NewContract
) -> JSONResponse:
    """Sign a lesson package for one of the parent's students. Every limit of the institution's
    regional profile is checked first (lessons, amount, months, price cap, the student's open
    balance, earliest collection); a refusal is a 422 ``rules/...`` problem naming the limit and
    the value. The contract then awaits the prepayment, which the custody bank reports."""

    def work(tx: Tx) -> ContractCreated:
        contract = contracts.create_contract(
            tx.session,
            tx.ctx,
            parent_id=principal.id,
            terms=Terms(
                institution_id=body.institution_id,
                student_id=body.student_id,
                subject=body.subject,
                course_name=body.course_name,
                lessons=body.lessons,
                unit_price_fen=body.unit_price_fen,
                start_date=body.start_date,
                end_date=body.end_date,
                class_size=body.class_size,
                lesson_minutes=body.lesson_minutes,
            ),
        )
        [out] = _contracts_out(tx.session, [contract])
        return ContractCreated(**out.model_dump(), receipt=tx.receipt(contract.created_seq))

    return writer.run(principal, body, work, status=201)


@router.post(
    "/contracts/{contract_id}/refunds",
    response_model=RefundRecorded,
    status_code=201,
    summary="Ask for undelivered lessons back",
    responses=responses(400, 401, 403, 404, 409, 413, 422),
)
def request_refund(
    principal: ParentPrincipal,
    writer: WriterDep,
    contract_id: ContractId,
    body: Annotated[RefundAsk | None, Body()] = None,
) -> JSONResponse:
    """Request a refund of some (or all) undelivered lessons of a paid contract; before the course
    starts it is always all of them, in full. The lessons are reserved at once; the institution
    must answer within the profile's window, and its silence approves. The receipt proves when
    the request was made."""
    ask = body or RefundAsk()

    def work(tx: Tx) -> RefundRecorded:
        refund = refunds.request_refund(
            tx.session,
            tx.ctx,
            parent_id=principal.id,
            contract_id=contract_id,
            lessons=ask.lessons,
            reason=ask.reason,
        )
        return RefundRecorded(**_refund_out(refund), receipt=tx.receipt(refund.requested_seq))

    return writer.run(principal, ask, work, status=201)


@router.post(
    "/contracts/{contract_id}/decline-transfer",
    response_model=RefundRecorded,
    status_code=201,
    summary="Decline the transfer to a successor and be refunded",
    responses=responses(400, 401, 403, 404, 409, 413, 422),
)
def decline_transfer(
    principal: ParentPrincipal, writer: WriterDep, contract_id: ContractId
) -> JSONResponse:
    """When a regulator moved the contract to a successor operator, the parent may refuse the new
    operator within the profile's window: every remaining lesson is refunded in full from the
    successor's escrow. Answers the approved refund it creates, with a receipt (money moves)."""

    def work(tx: Tx) -> RefundRecorded:
        refund = supervision.decline_transfer(
            tx.session, tx.ctx, parent_id=principal.id, contract_id=contract_id
        )
        return RefundRecorded(**_refund_out(refund), receipt=tx.receipt(refund.decided_seq))

    return writer.run(principal, None, work, status=201)


# --- lessons -----------------------------------------------------------------------------------


@router.post(
    "/lessons/{lesson_id}/confirm",
    response_model=LessonAnswered,
    summary="Confirm a lesson",
    responses=responses(400, 401, 403, 404, 409, 413, 422),
)
def confirm_lesson(
    principal: ParentPrincipal, writer: WriterDep, lesson_id: LessonId
) -> JSONResponse:
    """The parent confirms a reported (or earlier disputed) lesson: its money becomes releasable
    to the institution at the next settlement. The receipt proves the release was acknowledged."""

    def work(tx: Tx) -> LessonAnswered:
        lesson = lessons.confirm_lesson(
            tx.session, tx.ctx, parent_id=principal.id, lesson_id=lesson_id
        )
        return LessonAnswered(**_lesson_out(lesson), receipt=tx.receipt(lesson.decided_seq))

    return writer.run(principal, None, work)


@router.post(
    "/lessons/{lesson_id}/dispute",
    response_model=LessonAnswered,
    summary="Dispute a lesson",
    responses=responses(400, 401, 403, 404, 409, 413, 422),
)
def dispute_lesson(
    principal: ParentPrincipal, writer: WriterDep, lesson_id: LessonId, body: Dispute
) -> JSONResponse:
    """The parent says a reported lesson did not happen as reported, within the confirmation
    window: its money stays pending (not released) until the institution withdraws the lesson or
    a regulator resolves the dispute."""

    def work(tx: Tx) -> LessonAnswered:
        lesson = lessons.dispute_lesson(
            tx.session, tx.ctx, parent_id=principal.id, lesson_id=lesson_id, reason=body.reason
        )
        return LessonAnswered(**_lesson_out(lesson), receipt=tx.receipt())

    return writer.run(principal, body, work)


# --- refunds and receipts ----------------------------------------------------------------------


@router.get(
    "/refunds",
    response_model=Page[ParentRefund],
    summary="The parent's refunds",
    responses=responses(401, 403, 422),
)
def list_refunds(
    principal: ParentPrincipal, session: ReadSession, cursor: Cursor = None, limit: Limit = 100
) -> Page[ParentRefund]:
    """Every refund of the parent's contracts, oldest first, whoever started it (the parent, a
    regulator's order, a wind-down, a declined transfer), with its amount and deadlines."""
    return paginate(
        session,
        select(Refund)
        .join(Contract, Contract.id == Refund.contract_id)
        .where(Contract.parent_id == principal.id),
        Refund.requested_seq,
        Refund.id,
        cursor,
        limit,
        lambda refund: ParentRefund(**_refund_out(refund)),
    )


@router.get(
    "/receipts",
    response_model=Page[ParentPayment],
    summary="Payments the bank received for the parent's contracts",
    responses=responses(401, 403, 422),
)
def list_receipts(
    principal: ParentPrincipal,
    session: ReadSession,
    ledger: LedgerDep,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[ParentPayment]:
    """Each prepayment the custody bank reported for the parent's contracts, oldest first, with
    the log entry that recorded it and a signed proof of that entry: verifiable with the public
    key of ``GET /v1/audit/public-key``, it shows the payment is on the log."""
    page = paginate(
        session,
        select(BankReceipt)
        .join(Contract, Contract.id == BankReceipt.contract_id)
        .where(Contract.parent_id == principal.id),
        BankReceipt.seq,
        BankReceipt.id,
        cursor,
        limit,
        lambda receipt: receipt,
    )
    found: list[BankReceipt] = page.items
    entries: dict[int, tuple[bytes, datetime]] = {
        seq: (entry_hash, time)
        for seq, entry_hash, time in session.execute(
            select(LogEntry.seq, LogEntry.hash, LogEntry.time).where(
                LogEntry.seq.in_([r.seq for r in found])
            )
        )
    }
    return Page[ParentPayment](
        items=[
            ParentPayment(
                id=r.id,
                contract_id=r.contract_id,
                bank_id=r.bank_id,
                bank_reference=r.bank_reference,
                amount_fen=r.amount_fen,
                payer=r.payer,
                status=r.status,
                seq=r.seq,
                time=entries[r.seq][1],
                proof=sign_receipt(ledger.key, r.seq, entries[r.seq][0]),
            )
            for r in found
        ],
        next_cursor=page.next_cursor,
    )


# --- proofs --------------------------------------------------------------------------------------


@router.get(
    "/proofs/{seq}",
    response_model=proofs.InclusionBundle,
    summary="A self-contained inclusion proof of one of the family's log entries",
    responses=responses(401, 403, 404, 422),
)
def proof_bundle(
    parent: ParentPrincipal,
    ledger: LedgerDep,
    seq: Annotated[int, Path(ge=0, le=JSON_SAFE_MAX, description="The entry's seq", examples=[42])],
) -> proofs.InclusionBundle:
    """Proof, for keeping, that an entry about the family (a payment's receipt, a lesson report
    or confirmation, a refund step; the `seq` of a receipt) is in the log: the entry, its audit
    path and the latest signed checkpoint with the witnesses' cosignatures, in one JSON file that
    `escrow verify --proof FILE --log-key VKEY` checks offline. Another family's entry answers 404,
    like a missing one."""
    with ledger.readers() as session:
        if not proofs.concerns_parent(session, parent.id, seq):
            raise NotFound(f"no log entry {seq} of this parent", seq=seq)
    return proofs.inclusion_bundle(ledger, seq)
