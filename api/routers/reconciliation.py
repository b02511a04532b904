"""Reconciliation breaks for regulators, and the report shapes the bank endpoints share.

A custody bank uploads each escrow account's daily statement (``POST /v1/bank/statements``, in
``api.routers.banks``); every difference with the ledger becomes a break with a reason. A
regulator sees the open breaks of the institutions it supervises here, and may close one with a
note, as the bank may: the note is a log entry, the break itself is never edited.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import RegulatorPrincipal
from api.deps import ReadSession
from api.ids import ID_PATTERN
from api.pagination import Cursor, Limit, Page, paginate
from api.problems import responses
from api.writes import Receipt, Tx, WriterDep
from settlement import reconcile
from settlement.reconcile import BreakView, StatementReport
from settlement.statement_tables import (
    BankStatement,
    BreakKind,
    CounterpartKind,
    LineResult,
    ReconciliationBreak,
    StatementLineRow,
)

router = APIRouter(prefix="/v1/regulator/breaks", tags=["regulators"])

BreakId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64, description="The break's id")]


class ResolveBreak(BaseModel):
    """Why a break needs no further action (or what was done about it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"note": "booked on 2 Sep, shown on the bank's statement of 3 Sep (NB0903-17)"}
            ]
        },
    )

    note: str = Field(min_length=1, max_length=reconcile.MAX_NOTE)


class ResolutionOut(BaseModel):
    """How a break was closed."""

    note: str
    actor: str = Field(description="Who resolved it (bank:<id> or regulator:<id>)")
    seq: int = Field(description="The reconciliation.break_resolved log entry")


class BreakOut(BaseModel):
    """A difference between a bank statement and the ledger."""

    id: str = Field(examples=["brk_0c1d2e3f40516273"])
    statement_id: str
    institution_id: str
    business_date: date
    kind: BreakKind = Field(
        description="unmatched_bank, unmatched_ledger, amount_mismatch, duplicate or "
        "balance_difference (docs/reconciliation.md)"
    )
    line_no: int | None = Field(description="The statement line, for line breaks")
    counterpart_kind: CounterpartKind | None
    counterpart_id: str | None = Field(description="The ledger item concerned, if any")
    amount_fen: int = Field(
        description="Signed: positive when the bank holds more than the ledger expects"
    )
    reason: str
    seq: int = Field(description="The statement.imported log entry that found it")
    status: Literal["open", "resolved"]
    resolution: ResolutionOut | None


class BreakResolved(BreakOut):
    """A break just resolved, with the signed receipt of the log entry."""

    receipt: Receipt | None


class StatementLineOut(BaseModel):
    """One booked entry of the statement and what matching made of it."""

    line_no: int
    booking_date: date
    direction: Literal["CRDT", "DBIT"] = Field(description="CRDT into escrow, DBIT out of it")
    amount_fen: int
    bank_reference: str
    end_to_end_id: str
    remittance: str
    result: LineResult
    rule: str | None = Field(
        description="How the counterpart was found: bank_reference, end_to_end_id, "
        "amount_and_contract or contract_reference"
    )
    counterpart_kind: CounterpartKind | None
    counterpart_id: str | None
    ledger_amount_fen: int | None
    reason: str


class StatementSummary(BaseModel):
    """An imported statement, its balances against the ledger, and its counts."""

    id: str = Field(examples=["stm_0c1d2e3f40516273"])
    bank_id: str
    institution_id: str
    account: str = Field(description="The escrow account the statement is of")
    business_date: date
    format: Literal["camt.053", "csv"]
    statement_ref: str = Field(description="The bank's statement id (camt.053 Stmt/Id)")
    file_sha256: str
    size_bytes: int
    opening_fen: int
    closing_fen: int
    ledger_closing_fen: int = Field(
        description="The ledger's escrow balance at the end of the business day (Asia/Shanghai)"
    )
    difference_fen: int = Field(description="closing_fen - ledger_closing_fen")
    ledger_through_seq: int = Field(description="The last log entry of the business day")
    line_count: int
    break_count: int
    imported_seq: int

    @classmethod
    def of(cls, statement: BankStatement) -> StatementSummary:
        return cls(
            id=statement.id,
            bank_id=statement.bank_id,
            institution_id=statement.institution_id,
            account=statement.account,
            business_date=statement.business_date,
            format="camt.053" if statement.format == "camt.053" else "csv",
            statement_ref=statement.statement_ref,
            file_sha256=statement.file_sha256,
            size_bytes=statement.size_bytes,
            opening_fen=statement.opening_fen,
            closing_fen=statement.closing_fen,
            ledger_closing_fen=statement.ledger_closing_fen,
            difference_fen=statement.closing_fen - statement.ledger_closing_fen,
            ledger_through_seq=statement.ledger_through_seq,
            line_count=statement.line_count,
            break_count=statement.break_count,
            imported_seq=statement.imported_seq,
        )


class StatementReportOut(StatementSummary):
    """The reconciliation report: every line with its result, every break with its reason."""

    results: dict[str, int] = Field(
        description="Lines per result (matched, unmatched_bank, amount_mismatch, duplicate)"
    )
    open_breaks: int
    lines: list[StatementLineOut]
    breaks: list[BreakOut]


class StatementImported(StatementReportOut):
    """The report of an upload; ``created`` false when the same file had been imported before."""

    created: bool
    receipt: Receipt | None


def line_out(row: StatementLineRow) -> StatementLineOut:
    return StatementLineOut(
        line_no=row.line_no,
        booking_date=row.booking_date,
        direction="CRDT" if row.direction == "CRDT" else "DBIT",
        amount_fen=row.amount_fen,
        bank_reference=row.bank_reference,
        end_to_end_id=row.end_to_end_id,
        remittance=row.remittance,
        result=row.result,
        rule=row.rule,
        counterpart_kind=row.counterpart_kind,
        counterpart_id=row.counterpart_id,
        ledger_amount_fen=row.ledger_amount_fen,
        reason=row.reason,
    )


def break_out(view: BreakView, business_date: date) -> BreakOut:
    found, resolution = view.found, view.resolution
    return BreakOut(
        id=found.id,
        statement_id=found.statement_id,
        institution_id=found.institution_id,
        business_date=business_date,
        kind=found.kind,
        line_no=found.line_no,
        counterpart_kind=found.counterpart_kind,
        counterpart_id=found.counterpart_id,
        amount_fen=found.amount_fen,
        reason=found.reason,
        seq=found.seq,
        status="open" if resolution is None else "resolved",
        resolution=None
        if resolution is None
        else ResolutionOut(note=resolution.note, actor=resolution.actor, seq=resolution.seq),
    )


def report_out(report: StatementReport) -> StatementReportOut:
    results = {result.value: 0 for result in LineResult}
    for row in report.lines:
        results[row.result.value] += 1
    day = report.statement.business_date
    return StatementReportOut(
        **StatementSummary.of(report.statement).model_dump(),
        results=results,
        open_breaks=sum(1 for b in report.breaks if b.resolution is None),
        lines=[line_out(row) for row in report.lines],
        breaks=[break_out(view, day) for view in report.breaks],
    )


def one_break_out(session: Session, found: ReconciliationBreak) -> BreakOut:
    statement = session.get(BankStatement, found.statement_id)
    assert statement is not None
    (view,) = reconcile.breaks_of(session, [found])
    return break_out(view, statement.business_date)


def resolved(tx: Tx, view: BreakView) -> BreakResolved:
    statement = tx.session.get(BankStatement, view.found.statement_id)
    assert statement is not None
    assert view.resolution is not None
    return BreakResolved(
        **break_out(view, statement.business_date).model_dump(),
        receipt=tx.receipt(view.resolution.seq),
    )


@router.get(
    "",
    response_model=Page[BreakOut],
    summary="Open reconciliation breaks of the jurisdiction's institutions",
    responses=responses(401, 403, 422),
)
def open_breaks(
    principal: RegulatorPrincipal,
    session: ReadSession,
    institution_id: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, max_length=64, description="Only this institution's"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[BreakOut]:
    """Every difference a custody bank's statement showed with the ledger that nobody has
    resolved yet, at the institutions the regulator supervises (its district, or all for `*`),
    oldest first. Money the bank does not show, or shows without a ledger record, is where a
    collapsing operator's escrow leaks first."""
    query = reconcile.open_breaks_query(session, principal.id, institution_id=institution_id)
    return paginate(
        session,
        query,
        ReconciliationBreak.seq,
        ReconciliationBreak.id,
        cursor,
        limit,
        lambda found: one_break_out(session, found),
    )


@router.get(
    "/{break_id}",
    response_model=BreakOut,
    summary="One reconciliation break, open or resolved",
    responses=responses(401, 403, 404, 422),
)
def get_break(principal: RegulatorPrincipal, session: ReadSession, break_id: BreakId) -> BreakOut:
    """A break and, once resolved, the note that closed it; 404 outside the jurisdiction."""
    found = reconcile.break_for(session, break_id, regulator_id=principal.id)
    return one_break_out(session, found)


@router.post(
    "/{break_id}/resolve",
    response_model=BreakResolved,
    summary="Resolve a reconciliation break with a note",
    responses=responses(400, 401, 403, 404, 409, 413, 422),
)
def resolve_break(
    principal: RegulatorPrincipal, break_id: BreakId, body: ResolveBreak, writer: WriterDep
) -> object:
    """Close a break with the regulator's note (after an inspection, say). The note is a
    `reconciliation.break_resolved` log entry; the break and the statement are not changed. A
    break is resolved once (409 after)."""

    def work(tx: Tx) -> BreakResolved:
        view = reconcile.resolve_break(
            tx.session, tx.ctx, break_id=break_id, note=body.note, regulator_id=principal.id
        )
        return resolved(tx, view)

    return writer.run(principal, body, work)
