"""Contracts and the money that pays for them: creation under the rules, receipts, risk deposits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import AccountKind, account_code
from ledger.allocation import advance_for
from ledger.entities import (
    Contract,
    ContractStatus,
    Institution,
    InstitutionStatus,
    LicenceType,
    PayerType,
    Receipt,
    ReceiptStatus,
    RiskDeposit,
)
from ledger.errors import (
    ContractNotAwaitingPayment,
    DuplicateBankReference,
    InstitutionNotActive,
    InvalidRequest,
    LoanFundedTuition,
    WrongAmount,
)
from ledger.escrow import inputs, rules, scope
from ledger.escrow.context import Context
from ledger.escrow.parties import new_id
from ledger.journal import Posting, balance
from ledger.log import Appended
from ledger.money import DEFAULT_CURRENCY, JSON_SAFE_MAX, Money
from ledger.party_keys import PartyKind, SignatureIn, check_signature, receipt_message

MAX_LESSON_MINUTES = 480
MAX_LESSONS = 10_000  # sanity bounds; the policy limits are far lower
MAX_CLASS_SIZE = 10_000


def contract_account(contract_id: str) -> str:
    return account_code(AccountKind.CONTRACT, contract_id)


def institution_account(kind: AccountKind, institution_id: str) -> str:
    return account_code(kind, institution_id)


@dataclass(frozen=True, slots=True)
class Terms:
    """What a parent signs: a course at an institution, for one of their students."""

    institution_id: str
    student_id: str
    subject: str
    course_name: str
    lessons: int
    unit_price_fen: int
    start_date: date
    end_date: date
    class_size: int | None = None
    lesson_minutes: int = 45


def _checked(terms: Terms, institution: Institution) -> Terms:
    """The terms with every field validated and the subject normalised for the limits."""
    class_size = (
        None
        if terms.class_size is None
        else inputs.integer(terms.class_size, "class size", high=MAX_CLASS_SIZE)
    )
    if institution.licence is LicenceType.ACADEMIC and class_size is None:
        raise InvalidRequest("an academic course needs its class size (price caps depend on it)")
    checked = replace(
        terms,
        subject=inputs.subject(terms.subject),
        course_name=inputs.required_text(terms.course_name, "course name"),
        lessons=inputs.integer(terms.lessons, "lessons", high=MAX_LESSONS),
        unit_price_fen=inputs.integer(terms.unit_price_fen, "unit price", high=JSON_SAFE_MAX),
        start_date=inputs.day(terms.start_date, "start date"),
        end_date=inputs.day(terms.end_date, "end date"),
        class_size=class_size,
        lesson_minutes=inputs.integer(
            terms.lesson_minutes, "lesson minutes", high=MAX_LESSON_MINUTES
        ),
    )
    if checked.end_date < checked.start_date:
        raise InvalidRequest(
            f"the course ends ({checked.end_date}) before it starts ({checked.start_date})"
        )
    return checked


def open_packages(
    session: Session, student_id: str, institution_id: str
) -> list[rules.OpenPackage]:
    """The student's contracts at the institution that still hold undelivered lessons."""
    contracts = session.scalars(
        select(Contract).where(
            Contract.student_id == student_id,
            Contract.institution_id == institution_id,
            Contract.status.in_([ContractStatus.AWAITING_PAYMENT, ContractStatus.ACTIVE]),
        )
    )
    packages = []
    for contract in contracts:
        paid = contract.status is ContractStatus.ACTIVE
        packages.append(
            rules.OpenPackage(
                subject=contract.subject,
                lessons_remaining=contract.lessons_remaining if paid else contract.lessons,
                value_remaining_fen=(
                    balance(session, contract_account(contract.id)).amount
                    if paid
                    else contract.total_fen
                ),
                start=contract.start_date,
                end=contract.end_date,
                paid=paid,
            )
        )
    return packages


def create_contract(session: Session, ctx: Context, *, parent_id: str, terms: Terms) -> Contract:
    """A parent signs a contract; every rule of the institution's profile is checked first."""
    ctx.lock(session)
    scope.student_of(session, parent_id, terms.student_id)
    institution = scope.institution(session, terms.institution_id)
    if institution.status is not InstitutionStatus.ACTIVE:
        raise InstitutionNotActive(
            f"{institution.id} is {institution.status.value}: it may not take new contracts"
        )
    terms = _checked(terms, institution)
    policy = ctx.policy(institution.policy)
    charge = rules.Charge(
        subject=terms.subject,
        lessons=terms.lessons,
        unit_price_fen=terms.unit_price_fen,
        start=terms.start_date,
        end=terms.end_date,
        licence=institution.licence,
        class_size=terms.class_size,
        lesson_minutes=terms.lesson_minutes,
    )
    rules.check_charge(policy, charge)
    packages = open_packages(session, terms.student_id, institution.id)
    rules.check_balance(policy, charge, packages, ctx.today())
    rules.check_collection(policy, charge, ctx.today(), packages)

    contract = Contract(
        id=new_id("ctr"),
        institution_id=institution.id,
        parent_id=parent_id,
        student_id=terms.student_id,
        subject=terms.subject,
        course_name=terms.course_name,
        lessons=terms.lessons,
        unit_price_fen=terms.unit_price_fen,
        total_fen=charge.amount_fen,
        currency=DEFAULT_CURRENCY,
        start_date=terms.start_date,
        end_date=terms.end_date,
        class_size=terms.class_size,
        lesson_minutes=terms.lesson_minutes,
        policy=policy.name,
        advance_bp=policy.advance_bp,
        status=ContractStatus.AWAITING_PAYMENT,
        lessons_delivered=0,
        lessons_refunded=0,
        lessons_reserved=0,
        advance_fen=0,
        advance_remaining_fen=0,
        created_seq=-1,
    )
    contract.created_seq = ctx.record(
        session,
        "contract.created",
        f"parent:{parent_id}",
        {
            "contract": contract.id,
            "institution": institution.id,
            "parent": parent_id,
            "student": terms.student_id,
            "subject": terms.subject,
            "course": terms.course_name,
            "lessons": terms.lessons,
            "unit_price": terms.unit_price_fen,
            "total": contract.total_fen,
            "currency": contract.currency,
            "start": terms.start_date.isoformat(),
            "end": terms.end_date.isoformat(),
            "class_size": terms.class_size,
            "lesson_minutes": terms.lesson_minutes,
            "policy": policy.name,
            "advance_bp": policy.advance_bp,
        },
    ).seq
    session.add(contract)
    session.flush()
    return contract


def cancel_contract(
    session: Session, ctx: Context, *, parent_id: str, contract_id: str
) -> Contract:
    """A parent withdraws from a contract that was never paid; no money moves."""
    ctx.lock(session)
    contract = scope.contract_of_parent(session, parent_id, contract_id)
    if contract.status is not ContractStatus.AWAITING_PAYMENT:
        raise ContractNotAwaitingPayment(
            f"{contract.id} is {contract.status.value}; only an unpaid contract can be cancelled"
        )
    ctx.record(session, "contract.cancelled", f"parent:{parent_id}", {"contract": contract.id})
    contract.status = ContractStatus.CANCELLED
    session.flush()
    return contract


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    """What became of a reported payment: booked into escrow, or marked for return."""

    receipt: Receipt
    entry: Appended

    @property
    def booked(self) -> bool:
        return self.receipt.status is ReceiptStatus.BOOKED


def _reference_unused(session: Session, bank_id: str, bank_reference: str) -> None:
    """A bank reference names one movement of money, of whatever kind, once per bank."""
    for table in (Receipt, RiskDeposit):
        if session.scalars(
            select(table.id).where(table.bank_id == bank_id, table.bank_reference == bank_reference)
        ).first():
            raise DuplicateBankReference(f"{bank_reference} was already reported by {bank_id}")


def book_receipt(
    session: Session,
    ctx: Context,
    *,
    bank_id: str,
    contract_id: str,
    amount_fen: int,
    bank_reference: str,
    payer: PayerType,
    signature: SignatureIn | None = None,
) -> ReceiptOutcome:
    """The custody bank reports the prepayment for a contract.

    A lender's payment is not booked: it is recorded as to be returned (loan-funded tuition is
    banned), whatever the state of the contract. Anything else that does not fit is refused and
    changes nothing. Booking activates the contract and releases its cost advance, if it has one.
    A bank that registered a signing key must sign the report (``receipt_message``); the signature
    is stored in the entry, booked or returned.
    """
    ctx.lock(session)
    bank_reference = inputs.code(bank_reference, "bank reference")
    amount_fen = inputs.integer(amount_fen, "amount", high=JSON_SAFE_MAX)
    payer = inputs.choice(payer, PayerType, "payer")
    signed = check_signature(
        session,
        PartyKind.BANK,
        bank_id,
        receipt_message(
            bank=bank_id,
            contract=contract_id,
            amount=amount_fen,
            bank_reference=bank_reference,
            payer=payer.value,
        ),
        signature,
        what=f"payment {bank_reference}",
    )
    _reference_unused(session, bank_id, bank_reference)
    contract = scope.contract_for_bank(session, bank_id, contract_id)
    institution = scope.institution(session, contract.institution_id)
    receipt = Receipt(
        id=new_id("rcp"),
        bank_id=bank_id,
        bank_reference=bank_reference,
        contract_id=contract.id,
        amount_fen=amount_fen,
        payer=payer,
        status=ReceiptStatus.BOOKED,
        seq=-1,
    )
    actor = f"bank:{bank_id}"
    facts = {
        "receipt": receipt.id,
        "contract": contract.id,
        "institution": institution.id,
        "amount": amount_fen,
        "bank_reference": bank_reference,
        "payer": payer.value,
    }
    if signed is not None:
        facts["signature"] = signed
    if payer is PayerType.LENDER:
        receipt.status = ReceiptStatus.RETURNED
        rule = LoanFundedTuition(
            "a lender paid this tuition; loan-funded tuition is refused and must be returned",
            limit="no lender",
            value=payer.value,
            profile=contract.policy,
        )
        entry = ctx.record(
            session, "receipt.returned", actor, {**facts, "rule": rule.code, "reason": rule.detail}
        )
        receipt.seq = entry.seq
        session.add(receipt)
        session.flush()
        return ReceiptOutcome(receipt, entry)
    if contract.status is not ContractStatus.AWAITING_PAYMENT:
        raise ContractNotAwaitingPayment(f"{contract.id} is {contract.status.value}")
    if amount_fen != contract.total_fen:
        raise WrongAmount(
            f"{Money(amount_fen)} received; the contract's prepayment is "
            f"{Money(contract.total_fen)}",
            expected=contract.total_fen,
            value=amount_fen,
        )
    if institution.status in (InstitutionStatus.WINDING_DOWN, InstitutionStatus.CLOSED):
        raise InstitutionNotActive(f"{institution.id} is {institution.status.value}")

    # A frozen institution gets no release of any kind, the up-front advance included; that
    # contract's advance is then forgone, and its lessons release in full as they are delivered.
    advance = (
        0
        if institution.status is InstitutionStatus.FROZEN
        else advance_for(contract.total_fen, contract.advance_bp)
    )
    postings = [
        Posting.debit(institution_account(AccountKind.ESCROW, institution.id), Money(amount_fen)),
        Posting.credit(contract_account(contract.id), Money(amount_fen)),
    ]
    if advance:
        postings += [
            Posting.debit(institution_account(AccountKind.ADVANCE, institution.id), Money(advance)),
            Posting.credit(
                institution_account(AccountKind.RELEASABLE, institution.id), Money(advance)
            ),
        ]
    entry = ctx.record(session, "receipt.booked", actor, {**facts, "advance": advance}, postings)
    receipt.seq = entry.seq
    contract.status = ContractStatus.ACTIVE
    contract.paid_seq = entry.seq
    contract.advance_fen = advance
    contract.advance_remaining_fen = advance
    session.add(receipt)
    session.flush()
    return ReceiptOutcome(receipt, entry)


def lodge_risk_deposit(
    session: Session,
    ctx: Context,
    *,
    bank_id: str,
    institution_id: str,
    amount_fen: int,
    bank_reference: str,
) -> RiskDeposit:
    """The bank reports the institution's risk deposit paid into escrow; it backs advance recovery."""
    ctx.lock(session)
    institution = scope.institution_for_bank(session, bank_id, institution_id)
    bank_reference = inputs.code(bank_reference, "bank reference")
    amount_fen = inputs.integer(amount_fen, "amount", high=JSON_SAFE_MAX)
    _reference_unused(session, bank_id, bank_reference)
    deposit = RiskDeposit(
        id=new_id("dep"),
        bank_id=bank_id,
        bank_reference=bank_reference,
        institution_id=institution.id,
        amount_fen=amount_fen,
        seq=-1,
    )
    deposit.seq = ctx.record(
        session,
        "risk_deposit.lodged",
        f"bank:{bank_id}",
        {
            "deposit": deposit.id,
            "institution": institution.id,
            "amount": amount_fen,
            "bank_reference": bank_reference,
        },
        [
            Posting.debit(
                institution_account(AccountKind.ESCROW, institution.id), Money(amount_fen)
            ),
            Posting.credit(
                institution_account(AccountKind.RISK_DEPOSIT, institution.id), Money(amount_fen)
            ),
        ],
    ).seq
    session.add(deposit)
    session.flush()
    return deposit
