"""The escrow domain as tables: parties, contracts, lessons, refunds, receipts and transfers.

These are projections of the event log: every change to them is made by a service in the same
transaction as the log entry that records it, and the entry's payload carries what is needed to
rebuild them. Money columns are integer fen. Names and phone numbers are not here: people appear
only by their opaque ids (see ``ledger.privacy``).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.models import Base, UTCDateTime

ID = String(40)


def string_enum(enum: type[StrEnum], name: str, *, length: int = 24) -> Enum:
    """A portable enum column: a short string with a CHECK constraint listing the values."""
    return Enum(
        enum,
        native_enum=False,
        length=length,
        values_callable=lambda e: [m.value for m in e],
        create_constraint=True,
        name=name,
        validate_strings=True,
    )


class LicenceType(StrEnum):
    """Whether an institution teaches school subjects; academic courses face price caps."""

    ACADEMIC = "academic"
    """学科类: school subjects (Chinese, maths, English, ...)."""
    NON_ACADEMIC = "non_academic"
    """非学科类: arts, sports, technology, ..."""


class InstitutionStatus(StrEnum):
    """Where an institution stands with its regulator."""

    ACTIVE = "active"
    """Trading normally."""
    FROZEN = "frozen"
    """No new contracts, no lesson reports, no releases, until a regulator unfreezes it."""
    WINDING_DOWN = "winding_down"
    """Closing under supervision: every open contract has been refunded in full."""
    CLOSED = "closed"
    """No longer trading; its contracts were transferred to a successor or refunded."""


class ContractStatus(StrEnum):
    """The life of a lesson package."""

    AWAITING_PAYMENT = "awaiting_payment"
    """Signed; the bank has not reported the prepayment yet."""
    ACTIVE = "active"
    """Paid; lessons are being delivered."""
    COMPLETED = "completed"
    """Every lesson has been delivered (some may still await confirmation) or refunded."""
    REFUNDED = "refunded"
    """Every lesson was refunded; none was delivered."""
    CANCELLED = "cancelled"
    """Ended before it was ever paid."""


class LessonStatus(StrEnum):
    """A reported lesson, from report to confirmation (or voiding)."""

    REPORTED = "reported"
    """Delivered according to the institution; the parent has not answered yet."""
    CONFIRMED = "confirmed"
    """Confirmed by the parent, by silence past the window, or by a regulator: releasable."""
    DISPUTED = "disputed"
    """The parent disputes it; it stays pending until withdrawn or resolved."""
    VOIDED = "voided"
    """Withdrawn by the institution or resolved for the parent; its value went back to the contract."""


class ConfirmedBy(StrEnum):
    """Who or what confirmed a lesson."""

    PARENT = "parent"
    SILENCE = "silence"
    """The confirmation window passed without an answer."""
    REGULATOR = "regulator"
    """A regulator resolved a dispute for the institution."""


class RefundKind(StrEnum):
    """Why a refund exists."""

    REQUESTED = "requested"
    """A parent asked for it; the institution answers (or silence approves)."""
    FORCED = "forced"
    """A regulator ordered it."""
    WIND_DOWN = "wind_down"
    """The institution is being wound down: everything undelivered goes back."""
    TRANSFER_DECLINED = "transfer_declined"
    """The parent declined the transfer of the contract to a successor operator."""


class RefundStatus(StrEnum):
    """A refund from request to payment."""

    REQUESTED = "requested"
    """Awaiting the institution's answer; the lessons are reserved."""
    APPROVED = "approved"
    """Owed: the amount sits in refund_payable until the bank pays it."""
    REJECTED = "rejected"
    """Refused by the institution with a reason; the lessons are free again."""
    PAID = "paid"
    """The bank reports the money returned to the payer."""


class ReceiptStatus(StrEnum):
    """What happened to money a bank reported."""

    BOOKED = "booked"
    """Booked into escrow for its contract."""
    RETURNED = "returned"
    """Refused (loan-funded tuition): the bank must send it back to the payer."""


class PayerType(StrEnum):
    """Who paid a prepayment; lenders are refused (培训贷 ban for school pupils)."""

    PARENT = "parent"
    GUARDIAN = "guardian"
    LENDER = "lender"
    """A loan company or consumer-credit product paying on the family's behalf."""


class Bank(Base):
    """A custody bank (托管银行) holding escrow accounts."""

    __tablename__ = "banks"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    registered_seq: Mapped[int] = mapped_column(BigInteger)


class Regulator(Base):
    """An education bureau or supervising authority with a jurisdiction."""

    __tablename__ = "regulators"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    jurisdiction: Mapped[str] = mapped_column(String(64))
    """A district code, or ``*`` for every district."""
    registered_seq: Mapped[int] = mapped_column(BigInteger)


class Institution(Base):
    """A training institution (培训机构) and its dedicated custody account."""

    __tablename__ = "institutions"
    __table_args__ = (CheckConstraint("risk_deposit_fen >= 0", name="risk_deposit_non_negative"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    licence: Mapped[LicenceType] = mapped_column(string_enum(LicenceType, "licence_type"))
    district: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[InstitutionStatus] = mapped_column(
        string_enum(InstitutionStatus, "institution_status")
    )
    bank_id: Mapped[str] = mapped_column(ForeignKey("banks.id"), index=True)
    escrow_account: Mapped[str] = mapped_column(String(64))
    """Number of the dedicated custody account (预收费资金托管专户) at the bank."""
    settlement_account: Mapped[str] = mapped_column(String(64))
    """The institution's own account, where settled lesson money is paid."""
    is_new: Mapped[bool] = mapped_column(Boolean)
    """In its first year: lower alert thresholds apply."""
    risk_deposit_fen: Mapped[int] = mapped_column(BigInteger)
    """Risk deposit (风险保证金) the institution must keep; what it has lodged is an account."""
    policy: Mapped[str] = mapped_column(String(64))
    """Name of the regional policy profile its contracts fall under."""
    successor_id: Mapped[str | None] = mapped_column(ForeignKey("institutions.id"))
    """Set when its contracts were transferred to another operator."""
    registered_seq: Mapped[int] = mapped_column(BigInteger)


class Parent(Base):
    """A parent (家长); name and phone live in ``personal_data`` under the same id."""

    __tablename__ = "parents"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    registered_seq: Mapped[int] = mapped_column(BigInteger)


class Student(Base):
    """A pupil; a parent may have several. The name lives in ``personal_data``."""

    __tablename__ = "students"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    parent_id: Mapped[str] = mapped_column(ForeignKey("parents.id"), index=True)
    registered_seq: Mapped[int] = mapped_column(BigInteger)


class Contract(Base):
    """A lesson package (合同/课包): lessons bought at a price, released one lesson at a time.

    The value still owed to the parent is the balance of the ``contract:<id>`` account. Lesson
    prices, refund amounts and advance shares are cut from what remains with exact integer
    arithmetic (see ``ledger.allocation``), so that delivered + pending + refunded + remaining
    always equals the prepaid amount to the fen.
    """

    __tablename__ = "contracts"
    __table_args__ = (
        CheckConstraint("lessons > 0", name="lessons_positive"),
        CheckConstraint("unit_price_fen > 0", name="unit_price_positive"),
        CheckConstraint(
            "total_fen = lessons * unit_price_fen", name="total_is_lessons_times_price"
        ),
        CheckConstraint("end_date >= start_date", name="ends_after_start"),
        CheckConstraint(
            "lessons_delivered >= 0 AND lessons_refunded >= 0 AND lessons_reserved >= 0 "
            "AND lessons_delivered + lessons_refunded + lessons_reserved <= lessons",
            name="lesson_counts",
        ),
        CheckConstraint("advance_remaining_fen >= 0", name="advance_remaining_non_negative"),
        Index("ix_contracts_student_id_institution_id", "student_id", "institution_id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    parent_id: Mapped[str] = mapped_column(ForeignKey("parents.id"), index=True)
    student_id: Mapped[str] = mapped_column(ForeignKey("students.id"))
    subject: Mapped[str] = mapped_column(String(64))
    """The subject, normalised (case, width, spaces); lesson limits on a balance apply per subject."""
    course_name: Mapped[str] = mapped_column(String(200))
    lessons: Mapped[int] = mapped_column(Integer)
    unit_price_fen: Mapped[int] = mapped_column(BigInteger)
    total_fen: Mapped[int] = mapped_column(BigInteger)
    """The prepayment the bank must report: lessons × unit price."""
    currency: Mapped[str] = mapped_column(String(3))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    class_size: Mapped[int | None] = mapped_column(Integer)
    """Pupils per class; required for academic courses (price caps depend on it)."""
    lesson_minutes: Mapped[int] = mapped_column(Integer)
    policy: Mapped[str] = mapped_column(String(64))
    """The profile the contract was signed under. Its limits were checked then; its windows apply
    as each deadline is set."""
    advance_bp: Mapped[int] = mapped_column(Integer)
    """The profile's cost-advance rate at signing, fixed for this contract whatever changes later."""
    status: Mapped[ContractStatus] = mapped_column(string_enum(ContractStatus, "contract_status"))
    lessons_delivered: Mapped[int] = mapped_column(Integer)
    """Reported and not voided (pending or confirmed)."""
    lessons_refunded: Mapped[int] = mapped_column(Integer)
    lessons_reserved: Mapped[int] = mapped_column(Integer)
    """Held by refund requests awaiting an answer; no lesson may be reported against them."""
    advance_fen: Mapped[int] = mapped_column(BigInteger)
    """Cost pre-allocation released up front when the contract was paid."""
    advance_remaining_fen: Mapped[int] = mapped_column(BigInteger)
    """Part of the advance not yet repaid by delivered lessons or made due by refunds."""
    transferred_from: Mapped[str | None] = mapped_column(ForeignKey("institutions.id"))
    created_seq: Mapped[int] = mapped_column(BigInteger)
    paid_seq: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def lessons_remaining(self) -> int:
        """Lessons not delivered and not refunded (reserved ones included)."""
        return self.lessons - self.lessons_delivered - self.lessons_refunded

    @property
    def lessons_available(self) -> int:
        """Lessons that may still be reported or asked back."""
        return self.lessons_remaining - self.lessons_reserved


class Lesson(Base):
    """A lesson the institution reports as delivered (消课)."""

    __tablename__ = "lessons"
    __table_args__ = (
        UniqueConstraint("institution_id", "ref"),
        # settlement takes the lessons confirmed in a window of the log, institution by institution
        Index("ix_lessons_institution_id_decided_seq", "institution_id", "decided_seq"),
        # the sweep takes due lessons in (confirm_by, id) order: read off the index, never sorted
        Index("ix_lessons_status_confirm_by_id", "status", "confirm_by", "id"),
        CheckConstraint(
            "price_fen > 0 AND advance_fen >= 0 AND advance_fen <= price_fen", name="shares"
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    ref: Mapped[str] = mapped_column(String(64))
    """The institution's own id for the lesson; reporting it again is idempotent."""
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"), index=True)
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    teacher_id: Mapped[str] = mapped_column(String(64))
    price_fen: Mapped[int] = mapped_column(BigInteger)
    """The lesson's exact share of the contract value."""
    advance_fen: Mapped[int] = mapped_column(BigInteger)
    """The part of the price that repays the cost advance instead of going to pending."""
    status: Mapped[LessonStatus] = mapped_column(string_enum(LessonStatus, "lesson_status"))
    confirm_by: Mapped[datetime] = mapped_column(UTCDateTime)
    """End of the confirmation window; after it, silence confirms."""
    confirmed_by: Mapped[ConfirmedBy | None] = mapped_column(
        string_enum(ConfirmedBy, "confirmed_by")
    )
    dispute_reason: Mapped[str | None] = mapped_column(String(500))
    reported_seq: Mapped[int] = mapped_column(BigInteger)
    decided_seq: Mapped[int | None] = mapped_column(BigInteger)
    """Seq of the entry that confirmed or voided it."""
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("settlement_batches.id"), index=True)
    """The settlement batch that released it to the institution."""

    @property
    def pending_fen(self) -> int:
        """What the lesson puts into pending (and later releases): price less its advance share."""
        return self.price_fen - self.advance_fen


class Refund(Base):
    """Money going back to a parent for undelivered lessons."""

    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("lessons > 0", name="lessons_positive"),
        Index("ix_refunds_status_answer_by", "status", "answer_by"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"), index=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    kind: Mapped[RefundKind] = mapped_column(string_enum(RefundKind, "refund_kind"))
    status: Mapped[RefundStatus] = mapped_column(string_enum(RefundStatus, "refund_status"))
    lessons: Mapped[int] = mapped_column(Integer)
    amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    """Fixed when approved: the lessons' exact share of what remains of the contract."""
    advance_due_fen: Mapped[int | None] = mapped_column(BigInteger)
    """Advance attributable to the refunded lessons, now owed back by the institution."""
    shortfall_fen: Mapped[int | None] = mapped_column(BigInteger)
    """Part of that advance neither releasable money nor the risk deposit could cover."""
    reason: Mapped[str | None] = mapped_column(String(500))
    """Why it was asked for: the parent's text, the regulator's order, the wind-down, ..."""
    answer: Mapped[str | None] = mapped_column(String(500))
    """The institution's reason when it rejects the request."""
    before_start: Mapped[bool] = mapped_column(Boolean)
    """Asked for before the course started: full refund, and the shorter payout window."""
    answer_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """End of the institution's answer window; after it, silence approves."""
    pay_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Deadline for the bank to pay an approved refund."""
    bank_reference: Mapped[str | None] = mapped_column(String(64))
    requested_seq: Mapped[int] = mapped_column(BigInteger)
    decided_seq: Mapped[int | None] = mapped_column(BigInteger)
    paid_seq: Mapped[int | None] = mapped_column(BigInteger)
    overdue_seq: Mapped[int | None] = mapped_column(BigInteger)
    """Set when the payout deadline passed with the refund unpaid: the regulator sees it."""


class Receipt(Base):
    """Money a custody bank reports as received into an escrow account."""

    __tablename__ = "receipts"
    __table_args__ = (UniqueConstraint("bank_id", "bank_reference"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[str] = mapped_column(ForeignKey("banks.id"))
    bank_reference: Mapped[str] = mapped_column(String(64))
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    payer: Mapped[PayerType] = mapped_column(string_enum(PayerType, "payer_type"))
    status: Mapped[ReceiptStatus] = mapped_column(string_enum(ReceiptStatus, "receipt_status"))
    seq: Mapped[int] = mapped_column(BigInteger)


class Transfer(Base):
    """A regulator-approved transfer (转让) of an institution's open contracts to a successor."""

    __tablename__ = "transfers"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    from_institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    to_institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    decline_by: Mapped[datetime] = mapped_column(UTCDateTime)
    """Parents may decline and be refunded until then."""
    approved_seq: Mapped[int] = mapped_column(BigInteger)


class TransferredContract(Base):
    """A contract moved by a transfer, and whether its parent declined."""

    __tablename__ = "transferred_contracts"

    transfer_id: Mapped[str] = mapped_column(ForeignKey("transfers.id"), primary_key=True)
    contract_id: Mapped[str] = mapped_column(ForeignKey("contracts.id"), primary_key=True)
    value_fen: Mapped[int] = mapped_column(BigInteger)
    """Escrow value that moved with the contract."""
    declined_seq: Mapped[int | None] = mapped_column(BigInteger)


class RiskDeposit(Base):
    """A risk deposit (风险保证金) the custody bank reports lodged in an institution's escrow."""

    __tablename__ = "risk_deposits"
    __table_args__ = (
        UniqueConstraint("bank_id", "bank_reference"),
        CheckConstraint("amount_fen > 0", name="amount_positive"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[str] = mapped_column(ForeignKey("banks.id"))
    bank_reference: Mapped[str] = mapped_column(String(64))
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)


class PayoutStatus(StrEnum):
    """A payout instruction, from issue to the bank's answer."""

    INSTRUCTED = "instructed"
    """Sent to the custody bank; the money is still in escrow (payable)."""
    EXECUTED = "executed"
    """The bank paid the institution: the money left escrow."""
    FAILED = "failed"
    """The bank could not pay; the amount stays payable and the next run instructs it again."""


class SettlementBatch(Base):
    """One institution's settlement for one business date (T+1 by default).

    It covers a window of the log: the entries after the previous batch's window, up to the last
    entry before the business date ended. The money that became releasable in that window (and
    is still releasable) moves to payable; cost advances owed back are netted first. Batches
    exist only for dates on which something became releasable.
    """

    __tablename__ = "settlement_batches"
    __table_args__ = (
        UniqueConstraint("institution_id", "business_date"),
        CheckConstraint(
            "gross_fen >= 0 AND netted_fen >= 0 AND netted_fen <= gross_fen", name="amounts"
        ),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    business_date: Mapped[date] = mapped_column(Date, index=True)
    gross_fen: Mapped[int] = mapped_column(BigInteger)
    """Taken from releasable."""
    netted_fen: Mapped[int] = mapped_column(BigInteger)
    """Part of it that repaid advances owed back (advance_due) instead of going to payable."""
    lessons: Mapped[int] = mapped_column(Integer)
    """How many confirmed lessons it covers."""
    after_seq: Mapped[int] = mapped_column(BigInteger)
    """The window starts after this seq (the previous batch's ``through_seq``, or -1)."""
    through_seq: Mapped[int] = mapped_column(BigInteger)
    """The window ends here: the last log entry before the business date ended."""
    released_fen: Mapped[int] = mapped_column(BigInteger)
    """All money that had become releasable up to ``through_seq`` (net of all but settlements)."""
    settled_fen: Mapped[int] = mapped_column(BigInteger)
    """All money settled for the institution up to and including this batch."""
    seq: Mapped[int] = mapped_column(BigInteger)

    @property
    def payable_fen(self) -> int:
        return self.gross_fen - self.netted_fen


class Payout(Base):
    """An instruction to the custody bank to pay settled money to the institution's own account."""

    __tablename__ = "payouts"
    __table_args__ = (
        CheckConstraint("amount_fen > 0", name="amount_positive"),
        Index("ix_payouts_bank_id_instructed_on", "bank_id", "instructed_on"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    """The end-to-end id the bank quotes back; unique across all payouts."""
    batch_id: Mapped[str] = mapped_column(ForeignKey("settlement_batches.id"), index=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    bank_id: Mapped[str] = mapped_column(ForeignKey("banks.id"))
    instructed_on: Mapped[date] = mapped_column(Date)
    """The business date of the run that issued it: the bank's file for that day lists it."""
    settlement_account: Mapped[str] = mapped_column(String(64))
    escrow_account: Mapped[str] = mapped_column(String(64))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[PayoutStatus] = mapped_column(string_enum(PayoutStatus, "payout_status"))
    retry_of: Mapped[str | None] = mapped_column(ForeignKey("payouts.id"))
    retried: Mapped[bool] = mapped_column(Boolean)
    """A failed payout that a later instruction has taken over."""
    bank_reference: Mapped[str | None] = mapped_column(String(64))
    """The bank's own reference for its answer (executed or failed)."""
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    instructed_seq: Mapped[int] = mapped_column(BigInteger)
    answered_seq: Mapped[int | None] = mapped_column(BigInteger)
