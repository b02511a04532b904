"""Regulators: institutions of their jurisdiction, supervision actions, the event log.

A regulator's token names the regulator; its jurisdiction (a district, or ``*`` for all) decides
what it reaches. An institution outside the jurisdiction answers 404 exactly like a missing one,
on reads and on every action (the services check it through ``ledger.escrow.scope``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.auth import RegulatorPrincipal
from api.deps import LedgerDep, ReadSession
from api.ids import ID_PATTERN
from api.log_view import Entry, scan
from api.pagination import Cursor, Limit, Page, decode, encode, paginate
from api.problems import responses
from api.writes import Receipt, Tx, WriterDep
from ledger import risk as risk_grading
from ledger.entities import (
    ConfirmedBy,
    Institution,
    InstitutionStatus,
    Lesson,
    LessonStatus,
    LicenceType,
    Refund,
    RefundKind,
    RefundStatus,
    Regulator,
)
from ledger.errors import InvalidRequest
from ledger.escrow import inputs, lessons, queries, refunds, scope, supervision
from ledger.escrow.parties import ALL_DISTRICTS
from ledger.models import LogEntry
from ledger.risk import Grade, RiskAlert, RiskGrade

router = APIRouter(prefix="/v1/regulator", tags=["regulators"])

TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.?$"
MAX_REFUND_LESSONS = 10_000
"""Far above any profile's lessons per contract; the service checks the real number left."""

InstitutionId = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        max_length=64,
        description="The institution's id",
        examples=["ins_3f2a9c1d0b7e4a61"],
    ),
]
ContractId = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        max_length=64,
        description="The contract's id",
        examples=["ctr_9f86d081884c7d65"],
    ),
]
LessonId = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        max_length=64,
        description="The lesson's id",
        examples=["les_1b4f0e9a2c3d5e67"],
    ),
]


# --- request bodies -------------------------------------------------------------------------


class ReasonBody(BaseModel):
    """Why the regulator acts; it is written to the log with the action."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "inspection after complaints from parents"}]},
    )

    reason: str = Field(min_length=1, max_length=500, description="Logged with the action")


class TransferBody(BaseModel):
    """A transfer of every open contract of one institution to a successor operator."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "from_institution_id": "ins_3f2a9c1d0b7e4a61",
                    "to_institution_id": "ins_7c1e2d3f4a5b6c7d",
                    "reason": "the operator is closing; a licensed successor takes the classes",
                }
            ]
        },
    )

    from_institution_id: str = Field(pattern=ID_PATTERN, max_length=64)
    to_institution_id: str = Field(pattern=ID_PATTERN, max_length=64)
    reason: str = Field(min_length=1, max_length=500)


class ForceRefundBody(BaseModel):
    """A regulator's refund order; all undelivered lessons unless a number is given."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"lessons": 5, "reason": "lessons cancelled without notice"},
                {"reason": "course discontinued"},
            ]
        },
    )

    lessons: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REFUND_LESSONS,
        description="Lessons to refund; omit for all that are left (always all before the start)",
    )
    reason: str = Field(min_length=1, max_length=500)


class ResolveBody(BaseModel):
    """The regulator's decision on a disputed lesson."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"decision": "institution", "note": "attendance sheet signed by the pupil"},
                {"decision": "parent", "note": "the teacher was absent"},
            ]
        },
    )

    decision: Literal["institution", "parent"] = Field(
        description="`institution`: the lesson is confirmed and releasable; `parent`: it is "
        "voided and its value goes back to the contract"
    )
    note: str = Field(min_length=1, max_length=500, description="Logged with the decision")


# --- responses ------------------------------------------------------------------------------


class InstitutionBalances(BaseModel):
    """The institution's accounts in the money flow (normal-side balances, fen)."""

    escrow_fen: int = Field(description="Cash in the custody account")
    pending_fen: int = Field(description="Reported lessons awaiting the parent's confirmation")
    releasable_fen: int = Field(description="Confirmed lessons waiting for settlement")
    payable_fen: int = Field(description="Settled, waiting for the bank to pay the institution")
    refund_payable_fen: int = Field(description="Approved refunds waiting for the bank")
    advance_fen: int = Field(description="Cost advance not yet repaid by delivered lessons")
    advance_due_fen: int = Field(description="Advance owed back now (refunded/transferred lessons)")
    risk_deposit_fen: int = Field(description="Risk deposit lodged in escrow")


class InstitutionView(BaseModel):
    """An institution as its regulator sees it: standing, balances and what it still owes."""

    id: str = Field(examples=["ins_3f2a9c1d0b7e4a61"])
    name: str
    district: str = Field(examples=["haishu"])
    licence: LicenceType
    status: InstitutionStatus
    bank_id: str
    policy: str = Field(description="Regional policy profile", examples=["ningbo"])
    is_new: bool = Field(description="In its first year: lower alert thresholds")
    successor_id: str | None = Field(description="Set once its contracts were transferred")
    risk_deposit_required_fen: int = Field(description="The risk deposit it must keep")
    balances: InstitutionBalances
    liability_fen: int = Field(
        description="学生余量: value of every undelivered lesson still owed to parents"
    )
    registered_seq: int


class RefundView(BaseModel):
    """A refund and where it stands."""

    id: str = Field(examples=["rfd_5e6f7a8b9c0d1e2f"])
    contract_id: str
    institution_id: str
    kind: RefundKind
    status: RefundStatus
    lessons: int
    amount_fen: int | None = Field(description="Fixed when approved")
    advance_due_fen: int | None
    shortfall_fen: int | None = Field(description="Advance neither releasable nor deposit covered")
    reason: str | None
    pay_by: datetime | None = Field(description="Deadline for the bank to pay it")
    requested_seq: int
    decided_seq: int | None
    paid_seq: int | None
    overdue_seq: int | None = Field(description="Set when the deadline passed unpaid")


class LessonView(BaseModel):
    """A lesson after the regulator's decision."""

    id: str
    contract_id: str
    institution_id: str
    status: LessonStatus
    confirmed_by: ConfirmedBy | None
    price_fen: int
    dispute_reason: str | None
    decided_seq: int | None


class SupervisionResult(BaseModel):
    """The institution after a status change, and the signed log position that records it."""

    institution: InstitutionView
    receipt: Receipt | None


class WindDownResult(BaseModel):
    """What a wind-down did: refunds of every undelivered lesson, unpaid contracts cancelled."""

    institution: InstitutionView
    refunds: list[RefundView]
    cancelled_contracts: list[str] = Field(description="Unpaid contracts cancelled")
    refunded_fen: int = Field(description="Total of the refunds approved by the wind-down")
    receipt: Receipt | None


class MovedContract(BaseModel):
    """A contract moved to the successor, with the escrow value that moved with it."""

    contract_id: str
    value_fen: int


class TransferResult(BaseModel):
    """A transfer: open requests honoured, unpaid contracts cancelled, the rest moved."""

    transfer_id: str = Field(examples=["trf_0a1b2c3d4e5f6a7b"])
    from_institution_id: str
    to_institution_id: str
    decline_by: datetime = Field(description="Parents may decline and be refunded until then")
    contracts: list[MovedContract]
    value_fen: int = Field(description="Escrow value moved to the successor")
    refunds: list[RefundView] = Field(description="Pending requests approved before the move")
    cancelled_contracts: list[str]
    receipt: Receipt | None


class RefundOrder(BaseModel):
    """The refund a regulator ordered (approved at once) and its receipt."""

    refund: RefundView
    receipt: Receipt | None


class Resolution(BaseModel):
    """The lesson as decided, and the receipt of the entry that moved its money."""

    lesson: LessonView
    receipt: Receipt | None


class LoggedPosting(BaseModel):
    """One leg of an entry: debit-positive amount on an account."""

    account: str = Field(examples=["escrow:ins_3f2a9c1d0b7e4a61"])
    amount: int = Field(description="Fen; debit positive, credit negative")
    currency: str = Field(examples=["CNY"])


class LogEvent(BaseModel):
    """A log entry decoded from its canonical body."""

    seq: int = Field(description="Position in the log (its Merkle leaf index)")
    time: datetime
    type: str = Field(examples=["lesson.confirmed"])
    actor: str = Field(examples=["parent:par_0123456789abcdef"])
    payload: dict[str, Any]
    postings: list[LoggedPosting]
    hash: str = Field(description="The entry's leaf hash, hex")
    institutions: list[str] = Field(
        description="The institutions the entry concerns (empty for system entries)"
    )


class EventPage(BaseModel):
    """One page of the log; ``resume_cursor`` lets a client that reached the end poll for more."""

    items: list[LogEvent]
    next_cursor: str | None = Field(
        description="Pass back as `cursor` for the next page; null once the end of the log (as it "
        "was when the request began) is reached"
    )
    resume_cursor: str = Field(
        description="Where this page stopped reading: pass it as `cursor` later to get only the "
        "entries appended since (equal to next_cursor while there is more)"
    )


# --- conversions ----------------------------------------------------------------------------


def institution_view(session: Session, institution: Institution) -> InstitutionView:
    accounts = {
        kind.value: money.amount
        for kind, money in queries.institution_accounts(session, institution).items()
    }
    return InstitutionView(
        id=institution.id,
        name=institution.name,
        district=institution.district,
        licence=institution.licence,
        status=institution.status,
        bank_id=institution.bank_id,
        policy=institution.policy,
        is_new=institution.is_new,
        successor_id=institution.successor_id,
        risk_deposit_required_fen=institution.risk_deposit_fen,
        balances=InstitutionBalances.model_validate(
            {f"{kind}_fen": amount for kind, amount in accounts.items()}
        ),
        liability_fen=queries.institution_liability(session, institution).amount,
        registered_seq=institution.registered_seq,
    )


def refund_view(refund: Refund) -> RefundView:
    return RefundView(
        id=refund.id,
        contract_id=refund.contract_id,
        institution_id=refund.institution_id,
        kind=refund.kind,
        status=refund.status,
        lessons=refund.lessons,
        amount_fen=refund.amount_fen,
        advance_due_fen=refund.advance_due_fen,
        shortfall_fen=refund.shortfall_fen,
        reason=refund.reason,
        pay_by=refund.pay_by,
        requested_seq=refund.requested_seq,
        decided_seq=refund.decided_seq,
        paid_seq=refund.paid_seq,
        overdue_seq=refund.overdue_seq,
    )


def lesson_view(lesson: Lesson) -> LessonView:
    return LessonView(
        id=lesson.id,
        contract_id=lesson.contract_id,
        institution_id=lesson.institution_id,
        status=lesson.status,
        confirmed_by=lesson.confirmed_by,
        price_fen=lesson.price_fen,
        dispute_reason=lesson.dispute_reason,
        decided_seq=lesson.decided_seq,
    )


def log_event(entry: Entry) -> LogEvent:
    return LogEvent(
        seq=entry.seq,
        time=entry.time,
        type=entry.type,
        actor=entry.actor,
        payload=entry.payload,
        postings=[LoggedPosting.model_validate(p) for p in entry.postings],
        hash=entry.hash.hex(),
        institutions=sorted(entry.institutions),
    )


# --- institutions ---------------------------------------------------------------------------


@router.get(
    "/institutions",
    response_model=Page[InstitutionView],
    summary="Institutions of the jurisdiction, with balances and liability",
    responses=responses(401, 403, 404, 422),
)
def list_institutions(
    principal: RegulatorPrincipal,
    session: ReadSession,
    status: Annotated[
        InstitutionStatus | None, Query(description="Only institutions in this status")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[InstitutionView]:
    """Every institution the regulator supervises (its district, or all for jurisdiction `*`),
    oldest registration first, each with its standing, its account balances and the value of the
    lessons it still owes parents: the overview a supervisor starts from. Filter by `status` to
    find, say, every frozen institution."""
    regulator = scope.regulator(session, principal.id)
    query = select(Institution)
    if regulator.jurisdiction != ALL_DISTRICTS:
        query = query.where(Institution.district == regulator.jurisdiction)
    if status is not None:
        query = query.where(Institution.status == status)
    return paginate(
        session,
        query,
        Institution.registered_seq,
        Institution.id,
        cursor,
        limit,
        lambda institution: institution_view(session, institution),
    )


@router.get(
    "/institutions/{institution_id}",
    response_model=InstitutionView,
    summary="One institution of the jurisdiction",
    responses=responses(401, 403, 404, 422),
)
def get_institution(
    principal: RegulatorPrincipal, session: ReadSession, institution_id: InstitutionId
) -> InstitutionView:
    """An institution's standing, balances and outstanding liability; 404 outside the
    jurisdiction, exactly as for an institution that does not exist."""
    institution = scope.institution_for_regulator(session, principal.id, institution_id)
    return institution_view(session, institution)


def _status_change(
    principal: RegulatorPrincipal,
    writer: WriterDep,
    body: ReasonBody,
    institution_id: str,
    change: Callable[..., Institution],
) -> JSONResponse:
    def work(tx: Tx) -> SupervisionResult:
        institution = change(
            tx.session,
            tx.ctx,
            regulator_id=principal.id,
            institution_id=institution_id,
            reason=body.reason,
        )
        return SupervisionResult(
            institution=institution_view(tx.session, institution), receipt=tx.receipt()
        )

    return writer.run(principal, body, work)


@router.post(
    "/institutions/{institution_id}/freeze",
    response_model=SupervisionResult,
    summary="Freeze an institution",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def freeze(
    principal: RegulatorPrincipal,
    writer: WriterDep,
    institution_id: InstitutionId,
    body: ReasonBody,
) -> JSONResponse:
    """Stop an active institution from trading while it is investigated: no new contracts, no
    lesson reports, no releases of money, until it is unfrozen. Parents' money stays in escrow.
    409 unless the institution is active."""
    return _status_change(principal, writer, body, institution_id, supervision.freeze)


@router.post(
    "/institutions/{institution_id}/unfreeze",
    response_model=SupervisionResult,
    summary="Unfreeze an institution",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def unfreeze(
    principal: RegulatorPrincipal,
    writer: WriterDep,
    institution_id: InstitutionId,
    body: ReasonBody,
) -> JSONResponse:
    """Let a frozen institution trade again. 409 unless it is frozen."""
    return _status_change(principal, writer, body, institution_id, supervision.unfreeze)


@router.post(
    "/institutions/{institution_id}/wind-down",
    response_model=WindDownResult,
    summary="Wind an institution down: refund every undelivered lesson",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def wind_down(
    principal: RegulatorPrincipal,
    writer: WriterDep,
    institution_id: InstitutionId,
    body: ReasonBody,
) -> JSONResponse:
    """Close an active or frozen institution under supervision. In one transaction: pending refund
    requests are approved, unpaid contracts cancelled, and every open contract is refunded in full
    for its undelivered lessons (each refund is then owed by the bank). Lessons already delivered
    keep their normal course. 409 if it is already winding down or closed."""

    def work(tx: Tx) -> WindDownResult:
        outcome = supervision.wind_down(
            tx.session,
            tx.ctx,
            regulator_id=principal.id,
            institution_id=institution_id,
            reason=body.reason,
        )
        return WindDownResult(
            institution=institution_view(tx.session, outcome.institution),
            refunds=[refund_view(r) for r in outcome.refunds],
            cancelled_contracts=[c.id for c in outcome.cancelled],
            refunded_fen=outcome.refunded_fen,
            receipt=tx.receipt(),
        )

    return writer.run(principal, body, work)


@router.post(
    "/transfers",
    response_model=TransferResult,
    status_code=201,
    summary="Approve a transfer of contracts to a successor",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def approve_transfer(
    principal: RegulatorPrincipal, writer: WriterDep, body: TransferBody
) -> JSONResponse:
    """Move every open contract of an institution, with its escrow value, to an active successor;
    the old institution closes. Pending refund requests are honoured first and unpaid contracts
    cancelled; parents may decline the successor until `decline_by` and get a full refund. Both
    institutions must be in the regulator's jurisdiction (404 otherwise)."""

    def work(tx: Tx) -> TransferResult:
        outcome = supervision.approve_transfer(
            tx.session,
            tx.ctx,
            regulator_id=principal.id,
            from_institution_id=body.from_institution_id,
            to_institution_id=body.to_institution_id,
            reason=body.reason,
        )
        transfer = outcome.transfer
        return TransferResult(
            transfer_id=transfer.id,
            from_institution_id=transfer.from_institution_id,
            to_institution_id=transfer.to_institution_id,
            decline_by=transfer.decline_by,
            contracts=[
                MovedContract(contract_id=c.contract_id, value_fen=c.value_fen)
                for c in outcome.contracts
            ],
            value_fen=outcome.value_fen,
            refunds=[refund_view(r) for r in outcome.refunds],
            cancelled_contracts=[c.id for c in outcome.cancelled],
            receipt=tx.receipt(),
        )

    return writer.run(principal, body, work, status=201)


# --- contracts and lessons ------------------------------------------------------------------


@router.post(
    "/contracts/{contract_id}/force-refund",
    response_model=RefundOrder,
    status_code=201,
    summary="Order a refund of a contract",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def force_refund(
    principal: RegulatorPrincipal,
    writer: WriterDep,
    contract_id: ContractId,
    body: ForceRefundBody,
) -> JSONResponse:
    """Order undelivered lessons of a contract refunded, without waiting for the institution: the
    refund is approved at once and owed by the bank by its deadline. Before the course starts the
    whole remainder is refunded whatever `lessons` says. 404 for a contract of an institution
    outside the jurisdiction; 409 if the contract is not active or nothing is left."""

    def work(tx: Tx) -> RefundOrder:
        refund = refunds.force_refund(
            tx.session,
            tx.ctx,
            regulator_id=principal.id,
            contract_id=contract_id,
            lessons=body.lessons,
            reason=body.reason,
        )
        return RefundOrder(refund=refund_view(refund), receipt=tx.receipt(refund.decided_seq))

    return writer.run(principal, body, work, status=201)


@router.post(
    "/lessons/{lesson_id}/resolve",
    response_model=Resolution,
    summary="Resolve a disputed lesson",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def resolve_dispute(
    principal: RegulatorPrincipal,
    writer: WriterDep,
    lesson_id: LessonId,
    body: ResolveBody,
) -> JSONResponse:
    """Settle a parent's dispute: for the institution the lesson is confirmed and becomes
    releasable; for the parent it is voided and its value returns to the contract. 409 unless the
    lesson is disputed."""

    def work(tx: Tx) -> Resolution:
        lesson = lessons.resolve_dispute(
            tx.session,
            tx.ctx,
            regulator_id=principal.id,
            lesson_id=lesson_id,
            for_institution=body.decision == "institution",
            note=body.note,
        )
        return Resolution(lesson=lesson_view(lesson), receipt=tx.receipt(lesson.decided_seq))

    return writer.run(principal, body, work)


# --- refunds --------------------------------------------------------------------------------


@router.get(
    "/refunds/overdue",
    response_model=Page[RefundView],
    summary="Refunds past their payout deadline and still unpaid",
    responses=responses(401, 403, 404, 422),
)
def overdue_refunds(
    principal: RegulatorPrincipal, session: ReadSession, cursor: Cursor = None, limit: Limit = 100
) -> Page[RefundView]:
    """Approved refunds the bank has not paid by their deadline, in the jurisdiction: the parents
    waiting longer than the rules allow. A refund appears once the deadline sweep flags it and
    leaves the list when it is paid. Ordered by when it was flagged."""
    regulator = scope.regulator(session, principal.id)
    found = sorted(
        queries.overdue_refunds(session, regulator), key=lambda r: (r.overdue_seq or 0, r.id)
    )
    if cursor is not None:
        position = decode(cursor)
        found = [r for r in found if (r.overdue_seq or 0, r.id) > position]
    page, more = found[:limit], len(found) > limit
    last = page[-1] if page else None
    return Page[RefundView](
        items=[refund_view(r) for r in page],
        next_cursor=encode(last.overdue_seq or 0, last.id) if more and last else None,
    )


# --- the event log --------------------------------------------------------------------------

_LOG_CURSOR = "log"


def _after(cursor: str | None) -> int:
    if cursor is None:
        return -1
    seq, ident = decode(cursor)
    if ident != _LOG_CURSOR:
        raise InvalidRequest("the cursor is not one this service issued", field="cursor")
    return seq


def _type_filter(event_type: str) -> Callable[[Select[Any]], Select[Any]]:
    """An exact type, or a family when it ends in a dot (``_`` in it is no LIKE wildcard)."""
    if event_type.endswith("."):
        return lambda query: query.where(LogEntry.type.startswith(event_type, autoescape=True))
    return lambda query: query.where(LogEntry.type == event_type)


def _visible(
    regulator: Regulator, session: Session, institution: str | None
) -> Callable[[Entry], bool]:
    """Whether a regulator may see an entry: every institution it concerns is supervised (so a
    district never sees an entry naming another district's institution), and system entries only
    for jurisdiction `*`; with ``institution``, only entries concerning that one."""
    if regulator.jurisdiction == ALL_DISTRICTS:
        mine = None
    else:
        mine = set(
            session.scalars(
                select(Institution.id).where(Institution.district == regulator.jurisdiction)
            )
        )

    def accept(entry: Entry) -> bool:
        if institution is not None and institution not in entry.institutions:
            return False
        if mine is None:
            return True
        return bool(entry.institutions) and entry.institutions <= mine

    return accept


@router.get(
    "/events",
    response_model=EventPage,
    summary="The event log of the jurisdiction, filtered and paged",
    responses=responses(401, 403, 404, 422),
)
def events(
    principal: RegulatorPrincipal,
    session: ReadSession,
    ledger: LedgerDep,
    institution: Annotated[
        str | None,
        Query(
            pattern=ID_PATTERN,
            max_length=64,
            description="Only entries concerning this institution (404 outside the jurisdiction)",
        ),
    ] = None,
    event_type: Annotated[
        str | None,
        Query(
            alias="type",
            pattern=TYPE_PATTERN,
            max_length=64,
            description="An exact type (`lesson.disputed`), or a prefix ending in a dot "
            "(`lesson.`) for a whole family",
            examples=["refund.overdue", "lesson."],
        ),
    ] = None,
    since: Annotated[
        AwareDatetime | None,
        Query(description="Only entries appended at or after this instant (with a time zone)"),
    ] = None,
    until: Annotated[
        AwareDatetime | None,
        Query(description="Only entries appended before this instant (with a time zone)"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> EventPage:
    """Log entries in seq order, each decoded from its canonical body (payload and postings) with
    its leaf hash, so a supervisor can follow what happened and check it against proofs.

    **Scope**: a district regulator sees only entries whose every concerned institution is in its
    district; an entry concerns the institutions its payload or postings name, or else those of the
    lessons, refunds and contracts it refers to (a contract's institution as of that entry, so
    history before a transfer stays with the old operator). System entries (genesis, banks,
    regulators, parents, tokens) are shown to jurisdiction `*` only. Each item lists the
    institutions it concerns.

    **Paging**: the cursor is a log position, so entries appended while paging are met on later
    pages and none is skipped or repeated. One request looks at no more than 5,000 log positions
    (`api.log_view.SCAN_LIMIT`): a page may hold fewer than `limit` items, even none, and still
    carry a `next_cursor`; keep following it until it is null (the end of the log as it was when
    the request began). To follow the log as it grows, poll later with `resume_cursor`."""
    regulator = scope.regulator(session, principal.id)
    if institution is not None:
        scope.institution_for_regulator(session, principal.id, institution)
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("since must be before until", field="since")
    after = _after(cursor)
    last = ledger.log.head(session).size - 1
    if since is not None:
        after = max(after, queries.seq_at(session, inputs.instant(since, "since"), inclusive=False))
    if until is not None:
        last = min(last, queries.seq_at(session, inputs.instant(until, "until"), inclusive=False))
    scanned = scan(
        session,
        after=after,
        last=last,
        limit=limit,
        accept=_visible(regulator, session, institution),
        type_filter=None if event_type is None else _type_filter(event_type),
    )
    return EventPage(
        items=[log_event(e) for e in scanned.entries],
        next_cursor=None if scanned.next_after is None else encode(scanned.next_after, _LOG_CURSOR),
        resume_cursor=encode(scanned.resume_after, _LOG_CURSOR),
    )


# --- risk grades and alerts -----------------------------------------------------------------

AlertId = Annotated[
    str,
    Path(
        pattern=ID_PATTERN,
        max_length=64,
        description="The alert's id",
        examples=["alr_5e0c3b9a7d2f4e18"],
    ),
]


class RiskReason(BaseModel):
    """One rule that fired: the signal's value against the profile's threshold, and its points."""

    rule: str = Field(examples=["refund_share"], description="The rule's key in the profile [risk]")
    value: int | str = Field(description="The signal's value (a status for the status rules)")
    threshold: int | None = Field(description="The profile's threshold; null for status rules")
    comparison: str = Field(examples=[">="], description="How value is compared with threshold")
    unit: str = Field(examples=["percent"], description="fen, percent, refunds, lessons, ...")
    points: int = Field(description="Points it added to the score")


class RiskSignals(BaseModel):
    """Every input of a grade, as of the end of the business date (money in fen)."""

    business_date: date
    through_seq: int = Field(description="The last log entry before the business date ended")
    licence: str
    status: str = Field(description="The institution's status at the end of the date")
    liability_fen: int = Field(description="学生余量: value of every undelivered lesson")
    escrow_fen: int
    advance_fen: int
    owed_out_fen: int = Field(description="Payable and refund_payable: escrow already owed out")
    coverage_percent: int | None = Field(
        description="(escrow - owed out) / (liability - advances); null when nothing is owed"
    )
    refunds_count: int
    refunds_fen: int
    refund_share_percent: int
    overdue_refunds: int
    overdue_refunds_fen: int
    open_disputes: int
    lessons_week: int
    lessons_baseline: int
    baseline_days: int
    lessons_week_percent: int | None = Field(
        description="This week's lessons against the usual week; null without enough history"
    )
    outflow_fen: int
    outflow_percent: int
    failed_payouts: int
    open_breaks: int


class RiskGradeView(BaseModel):
    """An institution's grade for one business date and why."""

    institution_id: str
    institution_name: str
    district: str
    business_date: date
    grade: Grade = Field(description="A green, B yellow, C orange, D red")
    score: int
    policy: str = Field(description="The profile whose [risk] table graded it")
    reasons: list[RiskReason]
    signals: RiskSignals
    seq: int = Field(description="The risk.graded log entry")


class RiskAlertView(BaseModel):
    """A grade that worsened into C or D, and whether a regulator has acknowledged it."""

    id: str
    institution_id: str
    institution_name: str
    business_date: date
    from_grade: Grade | None = Field(description="The previous grade; null for a first grade")
    to_grade: Grade
    reasons: list[RiskReason]
    raised_seq: int
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    note: str | None


class AcknowledgeBody(BaseModel):
    """What the regulator does about the alert; logged with the acknowledgement."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"note": "on-site inspection booked for Monday"}]},
    )

    note: str = Field(min_length=1, max_length=500)


class AcknowledgeResult(BaseModel):
    alert: RiskAlertView
    receipt: Receipt | None


def _institution(session: Session, institution_id: str) -> Institution:
    found = session.get(Institution, institution_id)
    assert found is not None
    return found


def risk_grade_view(session: Session, grade: RiskGrade) -> RiskGradeView:
    institution = _institution(session, grade.institution_id)
    return RiskGradeView(
        institution_id=institution.id,
        institution_name=institution.name,
        district=institution.district,
        business_date=grade.business_date,
        grade=grade.grade,
        score=grade.score,
        policy=grade.policy,
        reasons=[RiskReason.model_validate(r) for r in grade.reasons],
        signals=RiskSignals.model_validate(grade.signals),
        seq=grade.seq,
    )


def risk_alert_view(session: Session, alert: RiskAlert) -> RiskAlertView:
    return RiskAlertView(
        id=alert.id,
        institution_id=alert.institution_id,
        institution_name=_institution(session, alert.institution_id).name,
        business_date=alert.business_date,
        from_grade=alert.from_grade,
        to_grade=alert.to_grade,
        reasons=[RiskReason.model_validate(r) for r in alert.reasons],
        raised_seq=alert.raised_seq,
        acknowledged=alert.acknowledged_seq is not None,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
        note=alert.note,
    )


@router.get(
    "/risk",
    response_model=Page[RiskGradeView],
    summary="Current risk grades of the jurisdiction's institutions",
    responses=responses(401, 403, 404, 422),
)
def risk_grades(
    principal: RegulatorPrincipal,
    session: ReadSession,
    grade: Annotated[Grade | None, Query(description="Only institutions at this grade")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[RiskGradeView]:
    """Each supervised institution's latest grade (A green, B yellow, C orange, D red) with the
    rules that fired and every signal behind it: where to send inspectors first. Grades are
    computed every night after settlement for the business date that ended (`escrow risk` does it
    by hand); an institution not graded yet is absent. Filter with `grade=D` for the red list."""
    regulator = scope.regulator(session, principal.id)
    return paginate(
        session,
        risk_grading.current_grades_query(regulator, grade),
        RiskGrade.seq,
        RiskGrade.id,
        cursor,
        limit,
        lambda found: risk_grade_view(session, found),
    )


@router.get(
    "/risk/{institution_id}",
    response_model=Page[RiskGradeView],
    summary="One institution's risk grade history with reasons",
    responses=responses(401, 403, 404, 422),
)
def risk_history(
    principal: RegulatorPrincipal,
    session: ReadSession,
    institution_id: InstitutionId,
    since: Annotated[
        date | None, Query(description="Only business dates on or after this one")
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[RiskGradeView]:
    """Every grade of the institution, in the order it was graded (business date order for the
    nightly run), each with the rules that fired and the signals: how it got where it is. 404
    outside the jurisdiction, exactly as for an institution that does not exist."""
    institution = scope.institution_for_regulator(session, principal.id, institution_id)
    return paginate(
        session,
        risk_grading.history_query(institution, since),
        RiskGrade.seq,
        RiskGrade.id,
        cursor,
        limit,
        lambda found: risk_grade_view(session, found),
    )


@router.get(
    "/alerts",
    response_model=Page[RiskAlertView],
    summary="Risk alerts of the jurisdiction",
    responses=responses(401, 403, 404, 422),
)
def risk_alerts(
    principal: RegulatorPrincipal,
    session: ReadSession,
    acknowledged: Annotated[
        bool | None,
        Query(description="false: open alerts only; true: acknowledged ones only"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[RiskAlertView]:
    """Alerts raised when an institution's grade worsened into C (orange) or D (red), oldest
    first, with the reasons of that grade. `acknowledged=false` is the work queue."""
    regulator = scope.regulator(session, principal.id)
    return paginate(
        session,
        risk_grading.alerts_query(regulator, acknowledged),
        RiskAlert.raised_seq,
        RiskAlert.id,
        cursor,
        limit,
        lambda found: risk_alert_view(session, found),
    )


@router.post(
    "/alerts/{alert_id}/acknowledge",
    response_model=AcknowledgeResult,
    summary="Acknowledge a risk alert",
    responses=responses(400, 401, 403, 404, 409, 422),
)
def acknowledge_alert(
    principal: RegulatorPrincipal,
    writer: WriterDep,
    alert_id: AlertId,
    body: AcknowledgeBody,
) -> JSONResponse:
    """Take an alert off the open list, saying what is done about it; the acknowledgement (who,
    when, the note) is a log entry. 404 for an alert outside the jurisdiction; 409 if it was
    already acknowledged."""

    def work(tx: Tx) -> AcknowledgeResult:
        alert = risk_grading.acknowledge(
            tx.session, tx.ctx, regulator_id=principal.id, alert_id=alert_id, note=body.note
        )
        return AcknowledgeResult(
            alert=risk_alert_view(tx.session, alert), receipt=tx.receipt(alert.acknowledged_seq)
        )

    return writer.run(principal, body, work)
