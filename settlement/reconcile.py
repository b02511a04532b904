"""Daily reconciliation (对账): a custody bank's statement against the ledger, line by line.

``import_statement`` reads the file (``settlement.statements``), finds the escrow account among the
institutions the bank holds, matches every line to the ledger, compares the closing balance with
the ledger's escrow balance at the end of that business day, and stores the statement, its lines
with their results and its breaks in one transaction with one ``statement.imported`` log entry
(the file's hash and the counts; never the file). The same file imported again answers the
statement already stored and writes nothing.

Matching (docs/reconciliation.md):

- a credit is a receipt by its bank reference (then a risk deposit by its bank reference), or else
  the receipt of a contract named in the remittance text with the same amount;
- a debit is an executed payout by its end-to-end id (the payout id), or a paid refund by its id
  as end-to-end id, or else a paid refund or executed payout by the bank's reference.

A line is ``matched``, ``amount_mismatch`` (found, other amount), ``duplicate`` (repeats an
earlier line, or claims a ledger item already claimed) or ``unmatched_bank``. Every ledger item of
the business day that no line claims is an ``unmatched_ledger`` break, and a closing balance that
differs from the ledger is a ``balance_difference`` break. Breaks are never edited: a resolution
(``resolve_break``) is its own row and log entry.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ledger.accounts import AccountKind
from ledger.entities import (
    Bank,
    Contract,
    Institution,
    Payout,
    PayoutStatus,
    Receipt,
    ReceiptStatus,
    Refund,
    RefundStatus,
    Regulator,
    RiskDeposit,
)
from ledger.errors import InvalidRequest, InvalidState, NotFound
from ledger.escrow import inputs
from ledger.escrow.context import Context
from ledger.escrow.contracts import institution_account
from ledger.escrow.parties import ALL_DISTRICTS, new_id
from ledger.escrow.queries import balance_as_of, seq_at
from settlement.engine import end_of
from settlement.statement_tables import (
    BankStatement,
    BreakKind,
    BreakResolution,
    CounterpartKind,
    LineResult,
    ReconciliationBreak,
    StatementLineRow,
)
from settlement.statements import Format, ParsedStatement, StatementLine, parse

IMPORTED = "statement.imported"
RESOLVED = "reconciliation.break_resolved"
MAX_NOTE = 1000
CONTRACT_REFERENCE = re.compile(r"\bctr_[0-9a-f]{16}\b")
_CLAIMING = (LineResult.MATCHED, LineResult.AMOUNT_MISMATCH)


class StatementConflict(InvalidState):
    """Another statement of the same account and business date was imported already."""

    code = "statement-conflict"
    title = "Statement already imported for that day"


class BreakAlreadyResolved(InvalidState):
    code = "break-already-resolved"
    title = "Break already resolved"


@dataclass(frozen=True, slots=True)
class Item:
    """A ledger item that moved money in or out of one escrow account."""

    kind: CounterpartKind
    id: str
    amount_fen: int
    inflow: bool


@dataclass
class ImportOutcome:
    """The stored statement, and whether this call created it (False: the same file again)."""

    statement: BankStatement
    created: bool


def _unmatched(reason: str) -> tuple[Item | None, str, str]:
    return None, "", reason


@dataclass
class _Matcher:
    session: Session
    bank_id: str
    institution_id: str
    claimed: dict[tuple[CounterpartKind, str], int] = field(default_factory=dict)
    seen: dict[tuple[str, str, str], int] = field(default_factory=dict)

    # --- finding counterparts -----------------------------------------------------------------

    def _receipt(self, receipt: Receipt) -> Item | None:
        contract = self.session.get(Contract, receipt.contract_id)
        if contract is None or self.institution_id not in (
            contract.institution_id,
            contract.transferred_from,
        ):
            return None
        return Item(CounterpartKind.RECEIPT, receipt.id, receipt.amount_fen, True)

    def credit(self, line: StatementLine) -> tuple[Item | None, str, str]:
        """(counterpart, rule, reason when there is none)."""
        if line.bank_reference:
            receipt = self.session.scalar(
                select(Receipt).where(
                    Receipt.bank_id == self.bank_id, Receipt.bank_reference == line.bank_reference
                )
            )
            if receipt is not None:
                if receipt.status is ReceiptStatus.RETURNED:
                    return _unmatched(
                        f"receipt {receipt.id} was returned to the payer (loan-funded): "
                        "the ledger never booked it into escrow"
                    )
                item = self._receipt(receipt)
                if item is not None:
                    return item, "bank_reference", ""
            deposit = self.session.scalar(
                select(RiskDeposit).where(
                    RiskDeposit.bank_id == self.bank_id,
                    RiskDeposit.bank_reference == line.bank_reference,
                    RiskDeposit.institution_id == self.institution_id,
                )
            )
            if deposit is not None:
                item = Item(CounterpartKind.RISK_DEPOSIT, deposit.id, deposit.amount_fen, True)
                return item, "bank_reference", ""
        candidates = []
        for contract_id in dict.fromkeys(CONTRACT_REFERENCE.findall(line.remittance)):
            for receipt in self.session.scalars(
                select(Receipt).where(
                    Receipt.contract_id == contract_id,
                    Receipt.bank_id == self.bank_id,
                    Receipt.status == ReceiptStatus.BOOKED,
                )
            ):
                item = self._receipt(receipt)
                if item is not None:
                    candidates.append(item)
        exact = [c for c in candidates if c.amount_fen == line.amount_fen]
        unclaimed = [c for c in exact if (c.kind, c.id) not in self.claimed]
        if unclaimed or exact:
            return (unclaimed or exact)[0], "amount_and_contract", ""
        if candidates:
            return candidates[0], "contract_reference", ""
        return None, "", "no receipt or risk deposit has this bank reference or contract reference"

    def debit(self, line: StatementLine) -> tuple[Item | None, str, str]:
        if line.end_to_end_id:
            payout = self.session.get(Payout, line.end_to_end_id)
            if (
                payout is not None
                and payout.bank_id == self.bank_id
                and payout.institution_id == self.institution_id
            ):
                if payout.status is not PayoutStatus.EXECUTED:
                    return _unmatched(
                        f"payout {payout.id} is {payout.status.value} in the ledger; "
                        "the bank shows it paid"
                    )
                return self._payout(payout), "end_to_end_id", ""
            refund = self.session.get(Refund, line.end_to_end_id)
            if refund is not None and refund.institution_id == self.institution_id:
                if refund.status is not RefundStatus.PAID:
                    return _unmatched(
                        f"refund {refund.id} is {refund.status.value} in the ledger; "
                        "the bank shows it paid"
                    )
                return self._refund(refund), "end_to_end_id", ""
        if line.bank_reference:
            refund = self.session.scalar(
                select(Refund).where(
                    Refund.bank_reference == line.bank_reference,
                    Refund.institution_id == self.institution_id,
                    Refund.status == RefundStatus.PAID,
                )
            )
            if refund is not None:
                return self._refund(refund), "bank_reference", ""
            payout = self.session.scalar(
                select(Payout).where(
                    Payout.bank_reference == line.bank_reference,
                    Payout.bank_id == self.bank_id,
                    Payout.institution_id == self.institution_id,
                    Payout.status == PayoutStatus.EXECUTED,
                )
            )
            if payout is not None:
                return self._payout(payout), "bank_reference", ""
        return None, "", "no executed payout or paid refund has this end-to-end id or reference"

    @staticmethod
    def _payout(payout: Payout) -> Item:
        return Item(CounterpartKind.PAYOUT, payout.id, payout.amount_fen, False)

    @staticmethod
    def _refund(refund: Refund) -> Item:
        return Item(CounterpartKind.REFUND, refund.id, refund.amount_fen or 0, False)

    # --- one line -----------------------------------------------------------------------------

    def _claimed_before(self, item: Item) -> str | None:
        """The earlier statement line that claimed ``item``, as text, if any."""
        found = self.session.execute(
            select(StatementLineRow.statement_id, StatementLineRow.line_no)
            .join(BankStatement, BankStatement.id == StatementLineRow.statement_id)
            .where(
                StatementLineRow.counterpart_id == item.id,
                StatementLineRow.counterpart_kind == item.kind,
                StatementLineRow.result.in_(_CLAIMING),
                BankStatement.bank_id == self.bank_id,
            )
            .limit(1)
        ).first()
        return None if found is None else f"statement {found[0]} line {found[1]}"

    def line(self, line: StatementLine) -> StatementLineRow:
        item, rule, reason = self.credit(line) if line.direction == "CRDT" else self.debit(line)
        key = (line.direction, line.bank_reference, line.end_to_end_id)
        repeated = self.seen.get(key) if (line.bank_reference or line.end_to_end_id) else None
        self.seen.setdefault(key, line.line_no)
        result = LineResult.UNMATCHED_BANK
        if item is not None:
            earlier = self.claimed.get((item.kind, item.id))
            before = None if earlier is not None else self._claimed_before(item)
            if earlier is not None:
                result = LineResult.DUPLICATE
                reason = f"{item.kind.value} {item.id} was already matched by line {earlier}"
            elif before is not None:
                result = LineResult.DUPLICATE
                reason = f"{item.kind.value} {item.id} was already matched by {before}"
            elif item.amount_fen != line.amount_fen:
                result = LineResult.AMOUNT_MISMATCH
                reason = (
                    f"{item.kind.value} {item.id} is {item.amount_fen} fen in the ledger; "
                    f"the bank shows {line.amount_fen} fen"
                )
                self.claimed[(item.kind, item.id)] = line.line_no
            else:
                result = LineResult.MATCHED
                reason = f"{item.kind.value} {item.id} by {rule.replace('_', ' ')}"
                self.claimed[(item.kind, item.id)] = line.line_no
        elif repeated is not None:
            result = LineResult.DUPLICATE
            reason = f"repeats line {repeated} (same direction and references)"
        return StatementLineRow(
            line_no=line.line_no,
            booking_date=line.booking_date,
            direction=line.direction,
            amount_fen=line.amount_fen,
            bank_reference=line.bank_reference,
            end_to_end_id=line.end_to_end_id,
            remittance=line.remittance,
            result=result,
            rule=rule or None,
            counterpart_kind=None if item is None else item.kind,
            counterpart_id=None if item is None else item.id,
            ledger_amount_fen=None if item is None else item.amount_fen,
            reason=reason[:500],
        )


def _day_items(
    session: Session, bank_id: str, institution_id: str, after: int, through: int
) -> list[Item]:
    """What the ledger recorded moving in or out of the escrow account in (after, through]."""
    receipts = session.scalars(
        select(Receipt)
        .join(Contract, Contract.id == Receipt.contract_id)
        .where(
            Receipt.bank_id == bank_id,
            Receipt.status == ReceiptStatus.BOOKED,
            Contract.institution_id == institution_id,
            Receipt.seq > after,
            Receipt.seq <= through,
        )
        .order_by(Receipt.seq)
    )
    deposits = session.scalars(
        select(RiskDeposit)
        .where(
            RiskDeposit.institution_id == institution_id,
            RiskDeposit.seq > after,
            RiskDeposit.seq <= through,
        )
        .order_by(RiskDeposit.seq)
    )
    payouts = session.scalars(
        select(Payout)
        .where(
            Payout.institution_id == institution_id,
            Payout.status == PayoutStatus.EXECUTED,
            Payout.answered_seq > after,
            Payout.answered_seq <= through,
        )
        .order_by(Payout.answered_seq)
    )
    refunds = session.scalars(
        select(Refund)
        .where(
            Refund.institution_id == institution_id,
            Refund.status == RefundStatus.PAID,
            Refund.amount_fen > 0,
            Refund.paid_seq > after,
            Refund.paid_seq <= through,
        )
        .order_by(Refund.paid_seq)
    )
    return [
        *(Item(CounterpartKind.RECEIPT, r.id, r.amount_fen, True) for r in receipts),
        *(Item(CounterpartKind.RISK_DEPOSIT, d.id, d.amount_fen, True) for d in deposits),
        *(Item(CounterpartKind.PAYOUT, p.id, p.amount_fen, False) for p in payouts),
        *(Item(CounterpartKind.REFUND, r.id, r.amount_fen or 0, False) for r in refunds),
    ]


def account_of_bank(session: Session, bank_id: str, account: str) -> Institution:
    """The institution whose escrow account ``account`` this bank holds; 404 otherwise."""
    found = list(
        session.scalars(
            select(Institution).where(
                Institution.bank_id == bank_id, Institution.escrow_account == account
            )
        )
    )
    if not found:
        raise NotFound(f"no escrow account {account} at this bank", account=account)
    if len(found) > 1:
        raise InvalidRequest(
            f"escrow account {account} is registered for {len(found)} institutions; "
            "it must name one",
            account=account,
        )
    return found[0]


def _signed(kind: BreakKind, row: StatementLineRow) -> int:
    """A line break's amount: what it makes the bank hold more (+) or less (-) than the ledger."""
    sign = 1 if row.direction == "CRDT" else -1
    if kind is BreakKind.AMOUNT_MISMATCH:
        return sign * (row.amount_fen - (row.ledger_amount_fen or 0))
    return sign * row.amount_fen


def import_statement(
    session: Session,
    ctx: Context,
    *,
    bank_id: str,
    data: bytes,
    fmt: Format | None = None,
    actor: str | None = None,
) -> ImportOutcome:
    """Parse, match and store one statement; the same file again answers the stored one."""
    ctx.lock(session)
    if not isinstance(bank_id, str) or session.get(Bank, bank_id) is None:
        raise NotFound(f"no bank {bank_id}")
    digest = hashlib.sha256(data).hexdigest()
    existing = session.scalar(
        select(BankStatement).where(
            BankStatement.bank_id == bank_id, BankStatement.file_sha256 == digest
        )
    )
    if existing is not None:
        return ImportOutcome(existing, False)
    parsed = parse(data, fmt)
    institution = account_of_bank(session, bank_id, parsed.account)
    other = session.scalar(
        select(BankStatement).where(
            BankStatement.institution_id == institution.id,
            BankStatement.business_date == parsed.business_date,
        )
    )
    if other is not None:
        raise StatementConflict(
            f"statement {other.id} of {parsed.account} for {parsed.business_date} was imported "
            "already (another file); resolve its breaks with a note instead of re-importing",
            statement=other.id,
        )
    if parsed.business_date >= ctx.today():
        raise InvalidRequest(
            f"the statement is for {parsed.business_date}; only a day that has ended "
            f"(before {ctx.today()}) can be reconciled",
            business_date=parsed.business_date.isoformat(),
        )
    return ImportOutcome(
        _store(session, ctx, bank_id, institution, parsed, digest, len(data), actor), True
    )


def _store(
    session: Session,
    ctx: Context,
    bank_id: str,
    institution: Institution,
    parsed: ParsedStatement,
    digest: str,
    size: int,
    actor: str | None,
) -> BankStatement:
    day = parsed.business_date
    after = seq_at(session, end_of(ctx, day - timedelta(days=1)), inclusive=False)
    through = seq_at(session, end_of(ctx, day), inclusive=False)
    ledger_closing = balance_as_of(
        session, institution_account(AccountKind.ESCROW, institution.id), seq=through
    ).amount
    matcher = _Matcher(session, bank_id, institution.id)
    rows = [matcher.line(line) for line in parsed.lines]
    statement_id = new_id("stm")
    pending: list[ReconciliationBreak] = []

    def add(kind: BreakKind, amount: int, reason: str, **where: object) -> None:
        pending.append(
            ReconciliationBreak(
                id=new_id("brk"),
                statement_id=statement_id,
                institution_id=institution.id,
                kind=kind,
                amount_fen=amount,
                reason=reason[:500],
                seq=-1,
                **where,
            )
        )

    for row in rows:
        if row.result is not LineResult.MATCHED:
            kind = BreakKind(row.result.value)
            add(
                kind,
                _signed(kind, row),
                f"line {row.line_no}: {row.reason}",
                line_no=row.line_no,
                counterpart_kind=row.counterpart_kind,
                counterpart_id=row.counterpart_id,
            )
    for item in _day_items(session, bank_id, institution.id, after, through):
        if (item.kind, item.id) in matcher.claimed:
            continue
        add(
            BreakKind.UNMATCHED_LEDGER,
            -item.amount_fen if item.inflow else item.amount_fen,
            f"{item.kind.value} {item.id} of {item.amount_fen} fen "
            f"({'into' if item.inflow else 'out of'} escrow on {day}) is not on the statement",
            counterpart_kind=item.kind,
            counterpart_id=item.id,
        )
    if parsed.closing_fen != ledger_closing:
        add(
            BreakKind.BALANCE_DIFFERENCE,
            parsed.closing_fen - ledger_closing,
            f"closing balance {parsed.closing_fen} fen; the ledger's escrow balance at the end "
            f"of {day} is {ledger_closing} fen",
        )
    results = {result.value: 0 for result in LineResult}
    for row in rows:
        results[row.result.value] += 1
    breaks = {kind.value: 0 for kind in BreakKind}
    for found in pending:
        breaks[found.kind.value] += 1
    seq = ctx.record(
        session,
        IMPORTED,
        actor or f"bank:{bank_id}",
        {
            "statement": statement_id,
            "bank": bank_id,
            "institution": institution.id,
            "account": parsed.account,
            "business_date": day.isoformat(),
            "format": parsed.format,
            "sha256": digest,
            "size": size,
            "opening": parsed.opening_fen,
            "closing": parsed.closing_fen,
            "ledger_closing": ledger_closing,
            "ledger_through_seq": through,
            "lines": len(rows),
            "results": results,
            "breaks": breaks,
        },
    ).seq
    statement = BankStatement(
        id=statement_id,
        bank_id=bank_id,
        institution_id=institution.id,
        account=parsed.account,
        business_date=day,
        format=parsed.format,
        statement_ref=parsed.statement_ref,
        file_sha256=digest,
        size_bytes=size,
        opening_fen=parsed.opening_fen,
        closing_fen=parsed.closing_fen,
        ledger_closing_fen=ledger_closing,
        ledger_through_seq=through,
        line_count=len(rows),
        break_count=len(pending),
        imported_seq=seq,
    )
    session.add(statement)
    session.flush()
    for row in rows:
        row.statement_id = statement_id
    for found in pending:
        found.seq = seq
    session.add_all(rows)
    session.add_all(pending)
    session.flush()
    return statement


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakView:
    """A break and, once resolved, its resolution."""

    found: ReconciliationBreak
    resolution: BreakResolution | None


@dataclass(frozen=True, slots=True)
class StatementReport:
    statement: BankStatement
    lines: list[StatementLineRow]
    breaks: list[BreakView]


def breaks_of(session: Session, found: Iterable[ReconciliationBreak]) -> list[BreakView]:
    found = list(found)
    resolutions = {
        r.break_id: r
        for r in session.scalars(
            select(BreakResolution).where(BreakResolution.break_id.in_([b.id for b in found]))
        )
    }
    return [BreakView(b, resolutions.get(b.id)) for b in found]


def report(session: Session, statement: BankStatement) -> StatementReport:
    """Every line with its result, every break with its reason and resolution."""
    lines = list(
        session.scalars(
            select(StatementLineRow)
            .where(StatementLineRow.statement_id == statement.id)
            .order_by(StatementLineRow.line_no)
        )
    )
    found = session.scalars(
        select(ReconciliationBreak)
        .where(ReconciliationBreak.statement_id == statement.id)
        .order_by(ReconciliationBreak.line_no.is_(None), ReconciliationBreak.line_no)
    )
    return StatementReport(statement, lines, breaks_of(session, found))


def statement_for_bank(session: Session, bank_id: str, statement_id: str) -> BankStatement:
    found = session.get(BankStatement, statement_id) if isinstance(statement_id, str) else None
    if found is None or found.bank_id != bank_id:
        raise NotFound(f"no statement {statement_id}")
    return found


def _visible_to_regulator(regulator: Regulator, institution: Institution) -> bool:
    return regulator.jurisdiction in (ALL_DISTRICTS, institution.district)


def break_for(
    session: Session, break_id: str, *, bank_id: str | None = None, regulator_id: str | None = None
) -> ReconciliationBreak:
    """A break the bank (whose statement it is) or the regulator (of its district) may see."""
    found = session.get(ReconciliationBreak, break_id) if isinstance(break_id, str) else None
    if found is not None:
        institution = session.get(Institution, found.institution_id)
        assert institution is not None
        if bank_id is not None:
            statement = session.get(BankStatement, found.statement_id)
            visible = statement is not None and statement.bank_id == bank_id
        else:
            regulator = session.get(Regulator, regulator_id) if regulator_id else None
            visible = regulator is not None and _visible_to_regulator(regulator, institution)
        if visible:
            return found
    raise NotFound(f"no break {break_id}")


def open_breaks_query(
    session: Session, regulator_id: str, *, institution_id: str | None = None
) -> Select[Any]:
    """Unresolved breaks of the regulator's institutions (all districts for ``*``)."""
    regulator = session.get(Regulator, regulator_id)
    if regulator is None:
        raise NotFound(f"no regulator {regulator_id}")
    resolved = select(BreakResolution.break_id)
    query = (
        select(ReconciliationBreak)
        .join(Institution, Institution.id == ReconciliationBreak.institution_id)
        .where(ReconciliationBreak.id.not_in(resolved))
    )
    if regulator.jurisdiction != ALL_DISTRICTS:
        query = query.where(Institution.district == regulator.jurisdiction)
    if institution_id is not None:
        query = query.where(ReconciliationBreak.institution_id == institution_id)
    return query


def open_break_count(session: Session, institution_id: str) -> int:
    """How many of an institution's breaks are still open (a risk signal)."""
    resolved = select(BreakResolution.break_id)
    return int(
        session.scalar(
            select(func.count())
            .select_from(ReconciliationBreak)
            .where(
                ReconciliationBreak.institution_id == institution_id,
                ReconciliationBreak.id.not_in(resolved),
            )
        )
        or 0
    )


def resolve_break(
    session: Session,
    ctx: Context,
    *,
    break_id: str,
    note: str,
    bank_id: str | None = None,
    regulator_id: str | None = None,
) -> BreakView:
    """Close a break with a note: a new row and a log entry; the break itself is not touched."""
    if (bank_id is None) == (regulator_id is None):
        raise InvalidRequest("a break is resolved by its bank or by a regulator")
    ctx.lock(session)
    found = break_for(session, break_id, bank_id=bank_id, regulator_id=regulator_id)
    checked = inputs.required_text(note, "the note", limit=MAX_NOTE)
    if session.get(BreakResolution, found.id) is not None:
        raise BreakAlreadyResolved(f"break {found.id} is resolved already")
    actor = f"bank:{bank_id}" if bank_id is not None else f"regulator:{regulator_id}"
    seq = ctx.record(
        session,
        RESOLVED,
        actor,
        {
            "break": found.id,
            "statement": found.statement_id,
            "institution": found.institution_id,
            "kind": found.kind.value,
            "amount": found.amount_fen,
            "note": checked,
        },
    ).seq
    resolution = BreakResolution(break_id=found.id, note=checked, actor=actor, seq=seq)
    session.add(resolution)
    session.flush()
    return BreakView(found, resolution)
