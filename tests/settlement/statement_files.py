"""A reconciliation day built with the test world, and its statement as camt.053 and as CSV.

``build_day`` makes business date 2 September 2026 at world.school hold one of every kind of
line and break, from real ledger operations: receipts booked that day, a settlement of 1 September
executed by the bank, a refund paid. ``statement_lines`` is what the bank's statement of that day
shows; ``camt053`` and ``csv_statement`` write it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import select

from ledger.accounts import AccountKind
from ledger.entities import Institution, Payout, Receipt
from ledger.escrow import refunds
from ledger.escrow.contracts import institution_account
from ledger.escrow.queries import balance_as_of, seq_at
from settlement.engine import end_of
from tests.escrow.world import World

DAY = date(2026, 9, 2)
SHORT_FEN = 100
"""The bank shows one receipt 1 yuan short: the amount mismatch."""
STRANGER_FEN = 12_345
"""A credit nobody in the ledger knows: the unmatched bank line."""


@dataclass
class Line:
    direction: str
    amount_fen: int
    bank_reference: str = ""
    end_to_end_id: str = ""
    remittance: str = ""


@dataclass
class Day:
    """The ledger side of the day, and what each statement line is meant to come out as."""

    account: str
    institution: str
    opening_fen: int
    ledger_closing_fen: int
    matched_receipt: Receipt
    short_receipt: Receipt
    remitted_receipt: Receipt
    missing_receipt: Receipt
    payout: Payout
    refund_id: str
    refund_reference: str
    refund_fen: int
    lines: list[Line] = field(default_factory=list)

    @property
    def closing_fen(self) -> int:
        return self.opening_fen + sum(
            line.amount_fen if line.direction == "CRDT" else -line.amount_fen for line in self.lines
        )


def _receipt(world: World, contract_id: str) -> Receipt:
    with world.read() as session:
        found = session.scalars(select(Receipt).where(Receipt.contract_id == contract_id)).one()
        session.expunge(found)
        return found


def _escrow_at_end_of(world: World, institution: str, day: date) -> int:
    with world.read() as session:
        through = seq_at(session, end_of(world.ctx, day), inclusive=False)
        code = institution_account(AccountKind.ESCROW, institution)
        return balance_as_of(session, code, seq=through).amount


def build_day(world: World) -> Day:
    """1 Sep: contracts paid, lessons confirmed. 2 Sep: settlement paid out, a refund paid, four
    receipts booked. The clock ends on 3 Sep, when 2 Sep can be reconciled."""
    school = world.school
    settled = world.paid_contract(school, lessons=10, subject="art")
    for lesson in world.report(settled, 2):
        world.confirm(lesson.id)
    refunded = world.paid_contract(school, lessons=10, subject="music")
    world.advance_clock(days=1)  # 2 Sep, 09:00 Shanghai
    world.settle(institutions=[school])
    world.execute_payouts(school)
    refund = world.approve(world.request_refund(refunded))
    world.do(refunds.pay_refund, bank_id=world.bank, refund_id=refund.id, bank_reference="RFD-77")
    matched = _receipt(world, world.paid_contract(school, lessons=4, subject="chess"))
    short = _receipt(world, world.paid_contract(school, lessons=6, subject="dance"))
    remitted = _receipt(world, world.paid_contract(school, lessons=8, subject="swim"))
    missing = _receipt(world, world.paid_contract(school, lessons=3, subject="go"))
    with world.read() as session:
        payout = session.scalars(select(Payout).where(Payout.institution_id == school)).one()
        session.expunge(payout)
        account = session.get(Institution, school)
        assert account is not None
        escrow_account = account.escrow_account
    refund_fen = world.get(type(refund), refund.id).amount_fen or 0
    world.advance_clock(days=1)  # 3 Sep: 2 Sep has ended
    day = Day(
        account=escrow_account,
        institution=school,
        opening_fen=_escrow_at_end_of(world, school, DAY - timedelta(days=1)),
        ledger_closing_fen=_escrow_at_end_of(world, school, DAY),
        matched_receipt=matched,
        short_receipt=short,
        remitted_receipt=remitted,
        missing_receipt=missing,
        payout=payout,
        refund_id=refund.id,
        refund_reference="RFD-77",
        refund_fen=refund_fen,
    )
    day.lines = [
        # 1 matched: a receipt by its bank reference
        Line("CRDT", matched.amount_fen, matched.bank_reference, "", "tuition chess"),
        # 2 amount_mismatch: a receipt by its bank reference, 1 yuan short
        Line("CRDT", short.amount_fen - SHORT_FEN, short.bank_reference, "", "tuition dance"),
        # 3 matched: the bank's own reference, the contract named in the remittance
        Line("CRDT", remitted.amount_fen, "NB0902-0003", "", f"学费 {remitted.contract_id}"),
        # 4 matched: the payout by its end-to-end id
        Line("DBIT", payout.amount_fen, "NB0902-0004", payout.id, "settlement"),
        # 5 matched: the refund by the bank reference reported when it was paid
        Line("DBIT", refund_fen, "RFD-77", "", "refund"),
        # 6 unmatched_bank: nobody in the ledger knows this credit
        Line("CRDT", STRANGER_FEN, "NB0902-0006", "", "unknown payer"),
        # 7 duplicate: the payout again
        Line("DBIT", payout.amount_fen, "NB0902-0007", payout.id, "settlement"),
    ]
    # the fifth receipt of the day (missing) is on no line: unmatched_ledger
    return day


def _yuan(fen: int) -> str:
    return str(Decimal(fen).scaleb(-2).quantize(Decimal("0.01")))


CAMT_NS = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"


def camt053(
    day: Day,
    *,
    namespace: str = CAMT_NS,
    currency: str = "CNY",
    closing_fen: int | None = None,
    account: str | None = None,
    business_date: date = DAY,
) -> bytes:
    """The day's statement as an ISO 20022 camt.053 document."""
    closing = day.closing_fen if closing_fen is None else closing_fen

    def balance(code: str, fen: int) -> str:
        indicator = "CRDT" if fen >= 0 else "DBIT"
        return (
            f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
            f'<Amt Ccy="{currency}">{_yuan(abs(fen))}</Amt><CdtDbtInd>{indicator}</CdtDbtInd>'
            f"<Dt><Dt>{business_date.isoformat()}</Dt></Dt></Bal>"
        )

    entries = "".join(
        f'<Ntry><Amt Ccy="{currency}">{_yuan(line.amount_fen)}</Amt>'
        f"<CdtDbtInd>{line.direction}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>"
        f"<BookgDt><Dt>{business_date.isoformat()}</Dt></BookgDt>"
        f"<ValDt><Dt>{business_date.isoformat()}</Dt></ValDt>"
        f"<AcctSvcrRef>{line.bank_reference}</AcctSvcrRef>"
        f"<BkTxCd><Prtry><Cd>{'RCDT' if line.direction == 'CRDT' else 'ICDT'}</Cd></Prtry></BkTxCd>"
        f"<NtryDtls><TxDtls><Refs><EndToEndId>{line.end_to_end_id or 'NOTPROVIDED'}"
        f"</EndToEndId></Refs><RmtInf><Ustrd>{line.remittance}</Ustrd></RmtInf></TxDtls></NtryDtls>"
        f"</Ntry>"
        for line in day.lines
    )
    document = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="{namespace}"><BkToCstmrStmt>'
        f"<GrpHdr><MsgId>NB{business_date:%Y%m%d}-1</MsgId>"
        f"<CreDtTm>{business_date + timedelta(days=1)}T06:00:00+08:00</CreDtTm></GrpHdr>"
        f"<Stmt><Id>STMT-{business_date:%Y%m%d}</Id>"
        f"<CreDtTm>{business_date + timedelta(days=1)}T06:00:00+08:00</CreDtTm>"
        f"<Acct><Id><Othr><Id>{account or day.account}</Id></Othr></Id><Ccy>{currency}</Ccy></Acct>"
        f"{balance('OPBD', day.opening_fen)}{balance('CLBD', closing)}{entries}"
        f"</Stmt></BkToCstmrStmt></Document>\n"
    )
    return document.encode()


def csv_statement(day: Day, *, account: str | None = None) -> bytes:
    """The day's statement in the documented CSV format."""
    account = account or day.account
    rows = [
        "account,currency,booking_date,direction,amount,bank_reference,end_to_end_id,remittance"
    ]
    rows.append(f"{account},CNY,{DAY},OPBD,{_yuan(day.opening_fen)},,,")
    rows += [
        f"{account},CNY,{DAY},{line.direction},{_yuan(line.amount_fen)},{line.bank_reference},"
        f'{line.end_to_end_id},"{line.remittance}"'
        for line in day.lines
    ]
    rows.append(f"{account},CNY,{DAY},CLBD,{_yuan(day.closing_fen)},,,")
    return ("\n".join(rows) + "\n").encode()


EXPECTED_RESULTS = [
    "matched",
    "amount_mismatch",
    "matched",
    "matched",
    "matched",
    "unmatched_bank",
    "duplicate",
]
EXPECTED_BREAKS = {
    "amount_mismatch",
    "unmatched_bank",
    "duplicate",
    "unmatched_ledger",
    "balance_difference",
}
