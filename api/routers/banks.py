"""Custody banks: receipts, payout instructions and answers, refunds paid, balances.

A custody bank (托管银行) holds the dedicated escrow account of each institution it serves. It
reports the money that arrives (prepayments, risk deposits), reads the payouts and refunds the
ledger instructs, and reports each one executed or failed. It never moves escrow money on its own
initiative: every endpoint here reports a fact about money the ledger already accounts for. A bank
reaches only the institutions whose escrow it holds; anything else answers 404.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Literal, TypeAlias, cast

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from api.auth import BankPrincipal
from api.deps import ReadSession
from api.ids import ID_PATTERN, IdField, IdPath
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
from api.routers.reconciliation import (
    BreakResolved,
    ResolveBreak,
    StatementImported,
    StatementReportOut,
    StatementSummary,
    report_out,
    resolved,
)
from api.writes import Receipt, Tx, WriterDep, sign_receipt
from ledger.accounts import AccountKind
from ledger.entities import (
    Contract,
    Institution,
    InstitutionStatus,
    PayerType,
    Payout,
    PayoutStatus,
    ReceiptStatus,
    Refund,
    RefundKind,
    RefundStatus,
)
from ledger.errors import InvalidRequest, LedgerError
from ledger.escrow import contracts, queries, refunds, scope
from ledger.escrow.contracts import ReceiptOutcome
from ledger.log import Appended
from ledger.money import JSON_SAFE_MAX
from ledger.party_keys import PartyKind
from settlement import payouts, reconcile
from settlement.statement_tables import BankStatement
from settlement.statements import CSV_COLUMNS

router = APIRouter(prefix="/v1/bank", tags=["banks"])

MAX_BATCH = 1_000
MAX_DEPOSIT_FEN = 10_000_000_000
"""¥100 million: far above any risk deposit a regulator asks for, well inside the log's range."""

Id: TypeAlias = IdField
BankReference = Annotated[
    str,
    Field(
        pattern=ID_PATTERN,
        max_length=64,
        description="The bank's own reference for the movement (its transaction id)",
        examples=["NB20260901000123"],
    ),
]
Reason = Annotated[
    str,
    Field(min_length=1, max_length=500, examples=["beneficiary account closed"]),
]
PayoutId = Annotated[
    str, Path(pattern=ID_PATTERN, max_length=64, description="The end-to-end id of the payout")
]
RefundId: TypeAlias = IdPath
InstitutionId: TypeAlias = IdPath

_WRITE_ERRORS = responses(400, 401, 403, 404, 409, 413, 422)
_LIST_ERRORS = responses(401, 403, 422)
_ONE_ERRORS = responses(401, 403, 404, 422)


# --- receipts and risk deposits -------------------------------------------------------------


class ReceiptReport(BaseModel):
    """Money that arrived in an institution's escrow account for one contract."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "contract_id": "ctr_5add02cfab0d91bb",
                    "amount_fen": 300_000,
                    "bank_reference": "NB20260901000123",
                    "payer": "parent",
                }
            ]
        },
    )

    contract_id: Id = Field(description="The contract the payment is for")
    amount_fen: int = Field(
        ge=1,
        le=JSON_SAFE_MAX,
        description="What arrived, in fen; it must be the contract's whole prepayment "
        "(anything else answers 422 wrong-amount and books nothing)",
    )
    bank_reference: BankReference
    payer: PayerType = Field(
        description="Who paid; a lender's payment is not booked but recorded for return "
        "(loan-funded tuition is banned)"
    )
    signature: PartySignatureIn | None = Field(
        default=None,
        description="The bank's signature over this payment's message (docs/audit.md); required "
        "while the bank has an active key (POST /v1/bank/keys), stored in the log entry",
    )


class ReceiptBooking(BaseModel):
    """What the ledger made of a reported payment, and the signed proof of its log entry."""

    id: str = Field(examples=["rcp_0c1d2e3f40516273"])
    contract_id: str
    institution_id: str
    amount_fen: int
    payer: PayerType
    bank_reference: str
    status: ReceiptStatus = Field(
        description="booked: in escrow for the contract; returned: refused (a lender paid), "
        "the bank must send it back to the payer"
    )
    advance_fen: int = Field(
        description="Cost pre-allocation the booking released to the institution (0 if none)"
    )
    seq: int = Field(description="The log entry that recorded it")
    receipt: Receipt | None


class ReceiptBatch(BaseModel):
    """Up to 1,000 payments, booked together or not at all."""

    model_config = ConfigDict(extra="forbid")

    receipts: list[ReceiptReport] = Field(min_length=1, max_length=MAX_BATCH)


class ReceiptBatchResult(BaseModel):
    """Every payment of a batch, in the order sent; each has its own signed receipt."""

    count: int
    booked_fen: int = Field(description="Total booked into escrow (returned payments excluded)")
    returned: int = Field(description="How many were refused as loan-funded and must go back")
    receipts: list[ReceiptBooking]
    receipt: Receipt | None = Field(description="The batch's last log entry")


class RiskDepositReport(BaseModel):
    """An institution's risk deposit (风险保证金) paid into its escrow account."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "institution_id": "ins_5add02cfab0d91bb",
                    "amount_fen": 10_000_000,
                    "bank_reference": "NB20260901000456",
                }
            ]
        },
    )

    institution_id: Id
    amount_fen: int = Field(ge=1, le=MAX_DEPOSIT_FEN)
    bank_reference: BankReference


class RiskDepositBooking(BaseModel):
    """A lodged risk deposit; it backs the recovery of cost advances."""

    id: str = Field(examples=["dep_0c1d2e3f40516273"])
    institution_id: str
    amount_fen: int
    bank_reference: str
    seq: int
    receipt: Receipt | None


def _signed(tx: Tx, entry: Appended) -> Receipt:
    return sign_receipt(tx.key, entry.seq, entry.hash)


def _booking(tx: Tx, outcome: ReceiptOutcome) -> ReceiptBooking:
    booked = outcome.receipt
    contract = tx.session.get(Contract, booked.contract_id)
    assert contract is not None
    return ReceiptBooking(
        id=booked.id,
        contract_id=booked.contract_id,
        institution_id=contract.institution_id,
        amount_fen=booked.amount_fen,
        payer=booked.payer,
        bank_reference=booked.bank_reference,
        status=booked.status,
        advance_fen=contract.advance_fen if outcome.booked else 0,
        seq=outcome.entry.seq,
        receipt=_signed(tx, outcome.entry),
    )


def _book(tx: Tx, bank_id: str, report: ReceiptReport) -> ReceiptOutcome:
    return contracts.book_receipt(
        tx.session,
        tx.ctx,
        bank_id=bank_id,
        contract_id=report.contract_id,
        amount_fen=report.amount_fen,
        bank_reference=report.bank_reference,
        payer=report.payer,
        signature=signature_of(report.signature),
    )


@router.post(
    "/receipts",
    status_code=201,
    response_model=ReceiptBooking,
    summary="Report a prepayment received into escrow",
    responses=_WRITE_ERRORS,
)
def report_receipt(bank: BankPrincipal, body: ReceiptReport, writer: WriterDep) -> object:
    """The bank saw a family's prepayment arrive in an institution's escrow account.

    Booking it activates the contract (lessons may now be reported against it) and releases the
    profile's cost advance, if any. The amount must be the contract's whole prepayment
    (`wrong-amount`), the contract must await payment, and a bank reference is used once
    (`duplicate-bank-reference`). A lender's payment is answered `status: returned`: it is
    recorded, not booked, and the bank sends it back. A contract at an institution whose escrow
    this bank does not hold answers 404. While the bank has a signing key, the report must carry
    its `signature` (422 signature-required, invalid-signature).
    """

    def work(tx: Tx) -> ReceiptBooking:
        return _booking(tx, _book(tx, bank.id, body))

    return writer.run(bank, body, work, status=201)


@router.post(
    "/receipts/batch",
    status_code=201,
    response_model=ReceiptBatchResult,
    summary="Report up to 1,000 prepayments at once, all or nothing",
    responses=_WRITE_ERRORS,
)
def report_receipts(bank: BankPrincipal, body: ReceiptBatch, writer: WriterDep) -> object:
    """A bank's end-of-day statement of prepayments, in one transaction.

    Each payment is checked exactly as by `POST /v1/bank/receipts`. If any one is refused, none
    is booked: the problem names the refused payment (`index`, its position in `receipts`), so
    the file can be corrected and sent again with a new Idempotency-Key.
    """

    def work(tx: Tx) -> ReceiptBatchResult:
        bookings = []
        for index, report in enumerate(body.receipts):
            try:
                outcome = _book(tx, bank.id, report)
            except LedgerError as error:
                error.detail = f"receipts[{index}] ({report.bank_reference}): {error.detail}"
                error.context = {**error.context, "index": index}
                raise
            bookings.append(_booking(tx, outcome))
        return ReceiptBatchResult(
            count=len(bookings),
            booked_fen=sum(b.amount_fen for b in bookings if b.status is ReceiptStatus.BOOKED),
            returned=sum(1 for b in bookings if b.status is ReceiptStatus.RETURNED),
            receipts=bookings,
            receipt=tx.receipt(),
        )

    return writer.run(bank, body, work, status=201)


@router.post(
    "/risk-deposits",
    status_code=201,
    response_model=RiskDepositBooking,
    summary="Report an institution's risk deposit received into escrow",
    responses=_WRITE_ERRORS,
)
def lodge_risk_deposit(bank: BankPrincipal, body: RiskDepositReport, writer: WriterDep) -> object:
    """The institution paid its risk deposit (风险保证金) into its escrow account.

    The deposit stays in escrow, owed to the institution; when a refund makes a cost advance due
    that the institution's releasable money cannot cover, it is drawn on first. Bank references
    are shared with receipts: one reference, one movement of money.
    """

    def work(tx: Tx) -> RiskDepositBooking:
        deposit = contracts.lodge_risk_deposit(
            tx.session,
            tx.ctx,
            bank_id=bank.id,
            institution_id=body.institution_id,
            amount_fen=body.amount_fen,
            bank_reference=body.bank_reference,
        )
        return RiskDepositBooking(
            id=deposit.id,
            institution_id=deposit.institution_id,
            amount_fen=deposit.amount_fen,
            bank_reference=deposit.bank_reference,
            seq=deposit.seq,
            receipt=tx.receipt(deposit.seq),
        )

    return writer.run(bank, body, work, status=201)


# --- signing keys -------------------------------------------------------------------------------


@router.post(
    "/keys",
    status_code=201,
    response_model=PartyKeyRegistered,
    summary="Register the bank's receipt-signing key",
    responses=responses(400, 401, 403, 409, 413, 422),
)
def register_key(bank: BankPrincipal, body: PartyKeyIn, writer: WriterDep) -> object:
    """Register an Ed25519 public key: from now on every payment this bank reports must be
    signed with it (422 signature-required otherwise), and the signature is kept in the log, so
    anyone holding the log can prove the bank itself reported each payment.

    One key is active at a time: a new key revokes the previous one (both recorded in the log),
    and signatures made with the old key are refused from then on. Registering the active key
    again changes nothing; a key once revoked cannot come back (409).
    """

    def work(tx: Tx) -> PartyKeyRegistered:
        return register(tx, PartyKind.BANK, bank, body)

    return writer.run(bank, body, work, status=201)


@router.get(
    "/keys",
    response_model=Page[PartyKeyOut],
    summary="The bank's signing keys",
    responses=_LIST_ERRORS,
)
def list_bank_keys(
    bank: BankPrincipal, session: ReadSession, cursor: Cursor = None, limit: Limit = 100
) -> Page[PartyKeyOut]:
    """Every key the bank registered, oldest first, with the log entries that registered and
    revoked each: to check that no key was registered in its name that it does not hold."""
    return list_keys(session, PartyKind.BANK, bank.id, cursor, limit)


# --- payouts ----------------------------------------------------------------------------------


class PayoutInstruction(BaseModel):
    """One payout instruction: the same columns as the bank's payout file."""

    end_to_end_id: str = Field(description="The payout id; quote it when answering")
    instructed_on: date = Field(description="Business date of the run that issued it")
    settles: date = Field(description="Business date of the settlement it pays")
    bank_id: str
    debit_account: str = Field(description="The institution's escrow account at this bank")
    institution_id: str
    institution_name: str
    credit_account: str = Field(description="The institution's own settlement account")
    amount_fen: int
    amount: str = Field(description="The amount in yuan, as a decimal string", examples=["300.00"])
    currency: str = Field(examples=["CNY"])
    retry_of: str = Field(description="The failed payout this one instructs again; empty if none")
    batch_id: str
    status: PayoutStatus


class PayoutFile(BaseModel):
    """A bank's payout instructions with control totals."""

    bank_id: str
    instructed_on: date | None = Field(description="The instruction date asked for, if any")
    open_only: bool
    count: int
    total_fen: int
    payouts: list[PayoutInstruction]


class PayoutExecuted(BaseModel):
    """The bank paid the institution."""

    model_config = ConfigDict(extra="forbid")

    bank_reference: BankReference


class PayoutFailed(BaseModel):
    """The bank could not pay the institution."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"bank_reference": "RTN20260902000007", "reason": "account closed"}]
        },
    )

    bank_reference: BankReference
    reason: Reason


class PayoutAnswer(BaseModel):
    """A payout after the bank's answer."""

    id: str
    institution_id: str
    amount_fen: int
    instructed_on: date
    status: PayoutStatus
    bank_reference: str | None
    failure_reason: str | None
    answered_seq: int | None
    receipt: Receipt | None


def _answer(tx: Tx, payout: Payout) -> PayoutAnswer:
    return PayoutAnswer(
        id=payout.id,
        institution_id=payout.institution_id,
        amount_fen=payout.amount_fen,
        instructed_on=payout.instructed_on,
        status=payout.status,
        bank_reference=payout.bank_reference,
        failure_reason=payout.failure_reason,
        answered_seq=payout.answered_seq,
        receipt=tx.receipt(payout.answered_seq),
    )


@router.get(
    "/payouts",
    response_model=PayoutFile,
    summary="Payout instructions: one instruction date's file, or all still open",
    responses={
        **_LIST_ERRORS,
        200: {
            "description": "The instructions, as JSON or (format=csv) as the payout file",
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": ",".join(payouts.EXPORT_COLUMNS) + "\n",
                }
            },
        },
    },
)
def list_payouts(
    bank: BankPrincipal,
    session: ReadSession,
    on: Annotated[
        date | None,
        Query(
            alias="date",
            description="Instruction date (YYYY-MM-DD): the file of that day's run, which never "
            "grows once read",
        ),
    ] = None,
    open_only: Annotated[
        bool,
        Query(alias="open", description="Only instructions this bank has not answered yet"),
    ] = False,
    fmt: Annotated[
        Literal["json", "csv"],
        Query(alias="format", description="json (default) or csv (the payout file)"),
    ] = "json",
) -> object:
    """What the ledger instructs this bank to pay to institutions' own accounts.

    Give `date` for one run's file, `open=true` for everything not answered yet, or both; one of
    the two is required. `count` and `total_fen` are control totals for the file. Each instruction
    is answered with `POST /v1/bank/payouts/{id}/executed` or `/failed`; a failed one stays
    payable and the next settlement run instructs it again under a new end-to-end id.
    """
    if on is None and not open_only:
        raise InvalidRequest("give date=YYYY-MM-DD, open=true, or both", field="date")
    if fmt == "csv":
        text = payouts.export_csv(session, bank.id, on=on, open_only=open_only)
        return Response(text, media_type="text/csv; charset=utf-8")
    found = payouts.instructions(session, bank.id, on=on, open_only=open_only)
    # the rows of the bank's payout file itself, so JSON and CSV can never disagree
    rows = [PayoutInstruction.model_validate(row) for row in payouts._rows(session, found)]
    return PayoutFile(
        bank_id=bank.id,
        instructed_on=on,
        open_only=open_only,
        count=len(rows),
        total_fen=sum(r.amount_fen for r in rows),
        payouts=rows,
    )


@router.post(
    "/payouts/{payout_id}/executed",
    response_model=PayoutAnswer,
    summary="Report a payout executed",
    responses=_WRITE_ERRORS,
)
def payout_executed(
    bank: BankPrincipal, payout_id: PayoutId, body: PayoutExecuted, writer: WriterDep
) -> object:
    """The bank paid the institution: the amount leaves escrow (payable and escrow both fall).

    A payout is answered once; a second answer is 409. A payout instructed before a freeze may
    still be reported executed: the bank already acted on it.
    """

    def work(tx: Tx) -> PayoutAnswer:
        payout = payouts.execute_payout(
            tx.session,
            tx.ctx,
            bank_id=bank.id,
            payout_id=payout_id,
            bank_reference=body.bank_reference,
        )
        return _answer(tx, payout)

    return writer.run(bank, body, work)


@router.post(
    "/payouts/{payout_id}/failed",
    response_model=PayoutAnswer,
    summary="Report a payout failed",
    responses=_WRITE_ERRORS,
)
def payout_failed(
    bank: BankPrincipal, payout_id: PayoutId, body: PayoutFailed, writer: WriterDep
) -> object:
    """The bank could not pay the institution (closed account, wrong name, ...).

    No money moves: the amount stays payable in escrow and the next settlement run instructs it
    again under a new end-to-end id. A payout is answered once; a second answer is 409.
    """

    def work(tx: Tx) -> PayoutAnswer:
        payout = payouts.fail_payout(
            tx.session,
            tx.ctx,
            bank_id=bank.id,
            payout_id=payout_id,
            reason=body.reason,
            bank_reference=body.bank_reference,
        )
        return _answer(tx, payout)

    return writer.run(bank, body, work)


# --- refunds ------------------------------------------------------------------------------------


class RefundToPay(BaseModel):
    """A refund the bank pays (or paid) back to the payer by the original route."""

    id: str = Field(examples=["rfd_0c1d2e3f40516273"])
    contract_id: str
    institution_id: str
    kind: RefundKind
    status: RefundStatus
    lessons: int
    amount_fen: int = Field(description="What goes back to the payer")
    shortfall_fen: int = Field(
        description="Cost advance neither releasable money nor the risk deposit covered: escrow "
        "cannot pay the refund in full until it is recovered"
    )
    pay_by: datetime | None = Field(description="The payment deadline")
    overdue: bool = Field(description="The deadline passed unpaid (the regulator was alerted)")
    approved_seq: int | None = Field(description="The log entry that approved it")
    bank_reference: str | None = Field(description="The bank's reference, once paid")
    paid_seq: int | None

    @classmethod
    def of(cls, refund: Refund) -> RefundToPay:
        return cls(
            id=refund.id,
            contract_id=refund.contract_id,
            institution_id=refund.institution_id,
            kind=refund.kind,
            status=refund.status,
            lessons=refund.lessons,
            amount_fen=refund.amount_fen or 0,
            shortfall_fen=refund.shortfall_fen or 0,
            pay_by=refund.pay_by,
            overdue=refund.overdue_seq is not None,
            approved_seq=refund.decided_seq,
            bank_reference=refund.bank_reference,
            paid_seq=refund.paid_seq,
        )


class RefundPaid(BaseModel):
    """The bank returned the refund to the payer."""

    model_config = ConfigDict(extra="forbid")

    bank_reference: BankReference


class RefundFailed(BaseModel):
    """The bank could not return the refund to the payer."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"bank_reference": "RTN20260910000003", "reason": "card cancelled"}]
        },
    )

    bank_reference: BankReference
    reason: Reason


class RefundPayment(RefundToPay):
    """A refund after the bank's report of its payment."""

    receipt: Receipt | None


class RefundPaymentFailed(RefundToPay):
    """A refund the bank could not pay: still approved, still payable, the attempt recorded."""

    failure_bank_reference: str
    failure_reason: str
    failure_seq: int = Field(description="The log entry recording the failed attempt")
    receipt: Receipt | None


@router.get(
    "/refunds",
    response_model=Page[RefundToPay],
    summary="Refunds to pay at this bank's institutions",
    responses=_LIST_ERRORS,
)
def list_refunds(
    bank: BankPrincipal,
    session: ReadSession,
    status: Annotated[
        Literal["approved", "paid"],
        Query(description="approved: owed and not yet paid (default); paid: already paid"),
    ] = "approved",
    institution_id: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, max_length=64, description="Only this institution's"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[RefundToPay]:
    """Approved refunds the bank must pay back to parents from the escrow accounts it holds.

    Ordered by approval (the log entry that approved each), so a refund approved while paging
    appears on a later page. Each is reported with `POST /v1/bank/refunds/{id}/paid` or
    `/failed`; `overdue` marks those past their payment deadline.
    """
    query = (
        select(Refund)
        .join(Institution, Institution.id == Refund.institution_id)
        .where(Institution.bank_id == bank.id, Refund.status == RefundStatus(status))
    )
    if institution_id is not None:
        query = query.where(Refund.institution_id == institution_id)
    # approved and paid refunds always carry the seq of their approval, never null
    approved = cast(InstrumentedAttribute[int], Refund.decided_seq)
    return paginate(session, query, approved, Refund.id, cursor, limit, RefundToPay.of)


@router.post(
    "/refunds/{refund_id}/paid",
    response_model=RefundPayment,
    summary="Report a refund paid back to the payer",
    responses=_WRITE_ERRORS,
)
def refund_paid(
    bank: BankPrincipal, refund_id: RefundId, body: RefundPaid, writer: WriterDep
) -> object:
    """The bank returned an approved refund to the payer: the money leaves escrow.

    Only an approved refund is paid, once (409 otherwise); a refund at an institution whose
    escrow this bank does not hold answers 404.
    """

    def work(tx: Tx) -> RefundPayment:
        refund = refunds.pay_refund(
            tx.session,
            tx.ctx,
            bank_id=bank.id,
            refund_id=refund_id,
            bank_reference=body.bank_reference,
        )
        return RefundPayment(
            **RefundToPay.of(refund).model_dump(), receipt=tx.receipt(refund.paid_seq)
        )

    return writer.run(bank, body, work)


@router.post(
    "/refunds/{refund_id}/failed",
    response_model=RefundPaymentFailed,
    summary="Report a refund payment that failed",
    responses=_WRITE_ERRORS,
)
def refund_failed(
    bank: BankPrincipal, refund_id: RefundId, body: RefundFailed, writer: WriterDep
) -> object:
    """The bank could not return an approved refund to the payer (closed card, wrong name, ...).

    No money moves: the amount stays payable in escrow and the refund stays approved, with its
    deadline unchanged, so the bank pays it later with `/paid`. The attempt is recorded in the
    log with the bank's reference and reason, for the regulator and the parent.
    """

    def work(tx: Tx) -> RefundPaymentFailed:
        failure = refunds.refund_payment_failed(
            tx.session,
            tx.ctx,
            bank_id=bank.id,
            refund_id=refund_id,
            bank_reference=body.bank_reference,
            reason=body.reason,
        )
        return RefundPaymentFailed(
            **RefundToPay.of(failure.refund).model_dump(),
            failure_bank_reference=failure.bank_reference,
            failure_reason=failure.reason,
            failure_seq=failure.entry.seq,
            receipt=_signed(tx, failure.entry),
        )

    return writer.run(bank, body, work)


# --- escrow balances ----------------------------------------------------------------------------


class InstitutionEscrow(BaseModel):
    """One escrow account this bank holds, with the ledger's breakdown of the money in it.

    `escrow_fen` is the cash the account should hold; it equals pending + releasable + payable +
    refund payable + risk deposit + the contracts' undelivered value (liability), less advances.
    """

    id: str
    name: str
    district: str
    status: InstitutionStatus
    escrow_account: str = Field(description="The dedicated custody account at this bank")
    settlement_account: str = Field(description="The institution's own account for payouts")
    escrow_fen: int = Field(description="Cash the escrow account should hold: reconcile with it")
    liability_fen: int = Field(description="学生余量: value of every undelivered lesson")
    pending_fen: int = Field(description="Lessons delivered, awaiting the parent's confirmation")
    releasable_fen: int = Field(description="Confirmed, awaiting the next settlement run")
    payable_fen: int = Field(description="Settled, instructed to the bank, not yet paid")
    refund_payable_fen: int = Field(description="Approved refunds not yet paid to parents")
    risk_deposit_fen: int = Field(description="Risk deposit lodged, owed to the institution")
    risk_deposit_required_fen: int = Field(description="Risk deposit the institution must keep")
    advance_fen: int = Field(description="Cost advances paid out, repaid by future lessons")
    advance_due_fen: int = Field(description="Advances owed back now, not yet recovered")
    registered_seq: int


def _escrow(session: Session, institution: Institution) -> InstitutionEscrow:
    accounts = {k: m.amount for k, m in queries.institution_accounts(session, institution).items()}
    return InstitutionEscrow(
        id=institution.id,
        name=institution.name,
        district=institution.district,
        status=institution.status,
        escrow_account=institution.escrow_account,
        settlement_account=institution.settlement_account,
        escrow_fen=accounts.get(AccountKind.ESCROW, 0),
        liability_fen=queries.institution_liability(session, institution).amount,
        pending_fen=accounts.get(AccountKind.PENDING, 0),
        releasable_fen=accounts.get(AccountKind.RELEASABLE, 0),
        payable_fen=accounts.get(AccountKind.PAYABLE, 0),
        refund_payable_fen=accounts.get(AccountKind.REFUND_PAYABLE, 0),
        risk_deposit_fen=accounts.get(AccountKind.RISK_DEPOSIT, 0),
        risk_deposit_required_fen=institution.risk_deposit_fen,
        advance_fen=accounts.get(AccountKind.ADVANCE, 0),
        advance_due_fen=accounts.get(AccountKind.ADVANCE_DUE, 0),
        registered_seq=institution.registered_seq,
    )


@router.get(
    "/institutions",
    response_model=Page[InstitutionEscrow],
    summary="Escrow balances of every institution this bank holds",
    responses=_LIST_ERRORS,
)
def list_institutions(
    bank: BankPrincipal, session: ReadSession, cursor: Cursor = None, limit: Limit = 100
) -> Page[InstitutionEscrow]:
    """The escrow accounts this bank holds, with the balance the ledger expects in each.

    For daily reconciliation (对账): `escrow_fen` must match the account's actual balance at the
    bank, and the breakdown says whose money it is. Ordered by registration.
    """
    query = select(Institution).where(Institution.bank_id == bank.id)
    return paginate(
        session,
        query,
        Institution.registered_seq,
        Institution.id,
        cursor,
        limit,
        lambda institution: _escrow(session, institution),
    )


@router.get(
    "/institutions/{institution_id}",
    response_model=InstitutionEscrow,
    summary="Escrow balances of one institution this bank holds",
    responses=_ONE_ERRORS,
)
def get_institution(
    bank: BankPrincipal, session: ReadSession, institution_id: InstitutionId
) -> InstitutionEscrow:
    """One escrow account this bank holds; another bank's institution answers 404."""
    return _escrow(session, scope.institution_for_bank(session, bank.id, institution_id))


# --- reconciliation (对账) ------------------------------------------------------------------------

_STATEMENT_MEDIA = {
    "application/xml": "camt.053",
    "text/xml": "camt.053",
    "text/csv": "csv",
}
_STATEMENT_BODY = {
    "requestBody": {
        "required": True,
        "description": "The statement file itself, at most 1,000,000 bytes: ISO 20022 camt.053 "
        "(application/xml) or the documented CSV (text/csv); see docs/reconciliation.md",
        "content": {
            "application/xml": {"schema": {"type": "string"}},
            "text/csv": {
                "schema": {"type": "string"},
                "example": ",".join(CSV_COLUMNS)
                + "\nESC00001,CNY,2026-09-02,OPBD,1000.00,,,\n"
                + "ESC00001,CNY,2026-09-02,CRDT,3000.00,NB20260902000123,,ctr_5add02cfab0d91bb\n"
                + "ESC00001,CNY,2026-09-02,CLBD,4000.00,,,\n",
            },
        },
    }
}


class StatementFile(BaseModel):
    """What identifies an upload for its Idempotency-Key: the file's hash and its format."""

    sha256: str
    format: str


@dataclass(frozen=True)
class _Upload:
    data: bytes
    format: Literal["camt.053", "csv"]


async def _statement_upload(request: Request) -> _Upload:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    fmt = _STATEMENT_MEDIA.get(media)
    if fmt is None:
        raise HTTPException(
            415,
            "send the statement as application/xml (camt.053) or text/csv, "
            f"not {media[:60] or 'no content type'}",
        )
    data = await request.body()
    return _Upload(data, "camt.053" if fmt == "camt.053" else "csv")


StatementUpload = Annotated[_Upload, Depends(_statement_upload)]
StatementId: TypeAlias = IdPath
BreakId: TypeAlias = IdPath


@router.post(
    "/statements",
    status_code=201,
    response_model=StatementImported,
    summary="Upload an escrow account's daily statement and reconcile it",
    responses={
        **responses(400, 401, 403, 404, 409, 413, 415, 422),
        200: {"model": StatementImported, "description": "The same file was imported before"},
    },
    openapi_extra=_STATEMENT_BODY,
)
def import_statement(
    bank: BankPrincipal, writer: WriterDep, upload: StatementUpload, session: ReadSession
) -> object:
    """The daily statement (对账单) of one escrow account this bank holds, matched line by line
    with the ledger: receipts, risk deposits, executed payouts and paid refunds. The answer is the
    report: every line with its result and every break with its reason and signed amount,
    including a closing balance that differs from the ledger's escrow balance at the end of the
    business day.

    The same file again answers the stored report (200, `created: false`) and stores nothing. A
    malformed file (`statement-malformed`, `statement-inconsistent`), XML with a DTD or entities
    (`statement-unsafe-xml`), a currency other than CNY (`statement-currency`), a day not yet
    ended, or an oversized file (413) is refused and nothing is stored; an account this bank does
    not hold answers 404. One statement per account and day: another file for a day already
    imported is 409 (`statement-conflict`).
    """
    digest = hashlib.sha256(upload.data).hexdigest()
    known = session.scalar(
        select(BankStatement.id).where(
            BankStatement.bank_id == bank.id, BankStatement.file_sha256 == digest
        )
    )
    payload = StatementFile(sha256=digest, format=upload.format)

    def work(tx: Tx) -> StatementImported:
        outcome = reconcile.import_statement(
            tx.session, tx.ctx, bank_id=bank.id, data=upload.data, fmt=upload.format
        )
        report = report_out(reconcile.report(tx.session, outcome.statement))
        return StatementImported(
            **report.model_dump(),
            created=outcome.created,
            receipt=tx.receipt(outcome.statement.imported_seq),
        )

    return writer.run(bank, payload, work, status=200 if known else 201)


@router.get(
    "/statements",
    response_model=Page[StatementSummary],
    summary="Statements this bank imported",
    responses=_LIST_ERRORS,
)
def list_statements(
    bank: BankPrincipal,
    session: ReadSession,
    institution_id: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, max_length=64, description="Only this institution's"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[StatementSummary]:
    """Every statement this bank uploaded, in the order imported, with its balances against the
    ledger and its break count; `GET /v1/bank/statements/{id}` has the lines and breaks."""
    query = select(BankStatement).where(BankStatement.bank_id == bank.id)
    if institution_id is not None:
        query = query.where(BankStatement.institution_id == institution_id)
    return paginate(
        session,
        query,
        BankStatement.imported_seq,
        BankStatement.id,
        cursor,
        limit,
        StatementSummary.of,
    )


@router.get(
    "/statements/{statement_id}",
    response_model=StatementReportOut,
    summary="The reconciliation report of one statement",
    responses=_ONE_ERRORS,
)
def get_statement(
    bank: BankPrincipal, session: ReadSession, statement_id: StatementId
) -> StatementReportOut:
    """Every line with its result and every break with its reason, and whether each break is
    resolved; another bank's statement answers 404."""
    statement = reconcile.statement_for_bank(session, bank.id, statement_id)
    return report_out(reconcile.report(session, statement))


@router.post(
    "/breaks/{break_id}/resolve",
    response_model=BreakResolved,
    summary="Resolve a reconciliation break with a note",
    responses=_WRITE_ERRORS,
)
def resolve_break(
    bank: BankPrincipal, break_id: BreakId, body: ResolveBreak, writer: WriterDep
) -> object:
    """Close a break of one of this bank's statements with a note saying why (booked the next
    day, bank error corrected under reference X, ...). The note is a
    `reconciliation.break_resolved` log entry; nothing the import found is edited. A break is
    resolved once (409 after); another bank's break answers 404."""

    def work(tx: Tx) -> BreakResolved:
        view = reconcile.resolve_break(
            tx.session, tx.ctx, break_id=break_id, note=body.note, bank_id=bank.id
        )
        return resolved(tx, view)

    return writer.run(bank, body, work)
