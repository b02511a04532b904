"""Reconciliation: statements parsed, matched line by line with the ledger, breaks resolved."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from ledger.errors import InvalidRequest, LedgerError, NotFound
from ledger.models import LogEntry
from settlement import reconcile
from settlement.reconcile import BreakAlreadyResolved, StatementConflict
from settlement.statement_tables import (
    BankStatement,
    BreakResolution,
    ReconciliationBreak,
    StatementLineRow,
)
from settlement.statements import (
    MAX_STATEMENT_BYTES,
    StatementCurrency,
    StatementInconsistent,
    StatementMalformed,
    StatementTooLarge,
    StatementUnsafeXml,
    amount_fen,
    parse,
    parse_camt053,
    parse_csv,
)
from tests.escrow.world import World
from tests.settlement.statement_files import (
    DAY,
    EXPECTED_BREAKS,
    EXPECTED_RESULTS,
    SHORT_FEN,
    STRANGER_FEN,
    Day,
    build_day,
    camt053,
    csv_statement,
)

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt><Stmt>
<Id>&lol4;</Id></Stmt></BkToCstmrStmt></Document>
"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt>
<Id>&xxe;</Id></Stmt></BkToCstmrStmt></Document>
"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Document SYSTEM "http://attacker.example/camt.dtd">
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"/>
"""


def _import(world: World, data: bytes, bank: str | None = None) -> reconcile.ImportOutcome:
    return world.do(reconcile.import_statement, bank_id=bank or world.bank, data=data)


def _report(world: World, statement_id: str) -> reconcile.StatementReport:
    with world.read() as session:
        statement = session.get(BankStatement, statement_id)
        assert statement is not None
        found = reconcile.report(session, statement)
        session.expunge_all()
        return found


def _counts(world: World) -> tuple[int, ...]:
    with world.read() as session:
        return tuple(
            int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (
                LogEntry,
                BankStatement,
                StatementLineRow,
                ReconciliationBreak,
                BreakResolution,
            )
        )


def _entries(world: World, type_: str) -> list[dict[str, Any]]:
    with world.read() as session:
        bodies = session.scalars(select(LogEntry.body).where(LogEntry.type == type_)).all()
        return [json.loads(body)["payload"] for body in bodies]


@pytest.fixture
def day(world: World) -> Day:
    return build_day(world)


# --- the day with one of each break ------------------------------------------------------------


def _assert_every_kind(world: World, day: Day, statement_id: str) -> None:
    found = _report(world, statement_id)
    assert [row.result.value for row in found.lines] == EXPECTED_RESULTS
    rows = {row.line_no: row for row in found.lines}
    assert rows[1].counterpart_id == day.matched_receipt.id
    assert rows[1].rule == "bank_reference"
    assert rows[2].ledger_amount_fen == day.short_receipt.amount_fen
    assert rows[3].counterpart_id == day.remitted_receipt.id
    assert rows[3].rule == "amount_and_contract"
    assert rows[4].counterpart_id == day.payout.id
    assert rows[4].rule == "end_to_end_id"
    assert rows[5].counterpart_id == day.refund_id
    assert rows[5].rule == "bank_reference"
    assert "already matched by line 4" in rows[7].reason
    breaks = {view.found.kind.value: view.found for view in found.breaks}
    assert set(breaks) == EXPECTED_BREAKS
    assert len(found.breaks) == 5
    assert breaks["amount_mismatch"].amount_fen == -SHORT_FEN
    assert breaks["unmatched_bank"].amount_fen == STRANGER_FEN
    assert breaks["unmatched_bank"].line_no == 6
    assert breaks["duplicate"].amount_fen == -day.payout.amount_fen
    assert breaks["unmatched_ledger"].counterpart_id == day.missing_receipt.id
    assert breaks["unmatched_ledger"].amount_fen == -day.missing_receipt.amount_fen
    difference = day.closing_fen - day.ledger_closing_fen
    assert breaks["balance_difference"].amount_fen == difference
    # the balance difference is exactly the line breaks here: every other line matched
    assert difference == sum(b.amount_fen for k, b in breaks.items() if k != "balance_difference")
    assert found.statement.ledger_closing_fen == day.ledger_closing_fen
    assert found.statement.opening_fen == day.opening_fen
    assert found.statement.business_date == DAY
    assert all(view.resolution is None for view in found.breaks)


def test_a_camt053_day_names_every_kind_of_break(world: World, day: Day) -> None:
    data = camt053(day)
    outcome = _import(world, data)
    assert outcome.created
    assert outcome.statement.format == "camt.053"
    assert outcome.statement.statement_ref == "STMT-20260902"
    _assert_every_kind(world, day, outcome.statement.id)
    (entry,) = _entries(world, reconcile.IMPORTED)
    assert entry["statement"] == outcome.statement.id
    assert entry["sha256"] == outcome.statement.file_sha256
    assert entry["size"] == len(data)
    assert entry["lines"] == 7
    assert entry["results"] == {
        "matched": 4,
        "unmatched_bank": 1,
        "amount_mismatch": 1,
        "duplicate": 1,
    }
    assert entry["breaks"]["unmatched_ledger"] == 1
    assert entry["breaks"]["balance_difference"] == 1
    assert "NB0902-0006" not in str(entry)  # counts and the hash, never the file


def test_the_same_day_as_csv_gives_the_same_report(world: World, day: Day) -> None:
    outcome = _import(world, csv_statement(day))
    assert outcome.statement.format == "csv"
    _assert_every_kind(world, day, outcome.statement.id)


def test_a_lump_sum_matches_nothing_yet_the_balance_agrees(world: World, day: Day) -> None:
    day.lines = [day.lines[i] for i in (0, 2, 3, 4)]
    day.lines[0].amount_fen += day.missing_receipt.amount_fen + day.short_receipt.amount_fen
    day.lines[0].bank_reference = "NB-LUMP"  # no longer the matched receipt's reference
    outcome = _import(world, camt053(day))
    found = _report(world, outcome.statement.id)
    # the lump sum matches nothing, both receipts are missing: the balance still agrees
    assert outcome.statement.closing_fen == day.ledger_closing_fen
    assert {v.found.kind.value for v in found.breaks} == {"unmatched_bank", "unmatched_ledger"}
    assert len(found.breaks) == 4  # the lump line, then three receipts the bank did not itemise


def test_importing_the_same_file_twice_changes_nothing(world: World, day: Day) -> None:
    data = camt053(day)
    first = _import(world, data)
    before = _counts(world)
    again = _import(world, data)
    assert not again.created
    assert again.statement.id == first.statement.id
    assert _counts(world) == before


def test_another_file_for_a_day_already_imported_is_refused(world: World, day: Day) -> None:
    _import(world, camt053(day))
    before = _counts(world)
    with pytest.raises(StatementConflict):
        _import(world, csv_statement(day))
    assert _counts(world) == before


def test_a_day_not_yet_ended_is_refused(world: World, day: Day) -> None:
    today = world.ctx.today()
    with pytest.raises(InvalidRequest, match="has ended"):
        _import(world, camt053(day, business_date=today, closing_fen=day.closing_fen))


# --- refusals: nothing stored ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d, data: b"<Document><BkToCstmrStmt>", StatementMalformed),
        (lambda d, data: data.replace(b"camt.053.001.08", b"camt.052.001.08"), StatementMalformed),
        (lambda d, data: camt053(d, currency="USD"), StatementCurrency),
        (lambda d, data: camt053(d, closing_fen=d.closing_fen + 1), StatementInconsistent),
        (lambda d, data: data.replace(b"<Ntry>", b"<Ntry><Ntry>", 1), StatementMalformed),
        (lambda d, data: BILLION_LAUGHS, StatementUnsafeXml),
        (lambda d, data: EXTERNAL_ENTITY, StatementUnsafeXml),
        (lambda d, data: EXTERNAL_DTD, StatementUnsafeXml),
        (lambda d, data: b" " * (MAX_STATEMENT_BYTES + 1), StatementTooLarge),
        (lambda d, data: camt053(d, account="ESC-nobody"), NotFound),
        (lambda d, data: b"", StatementMalformed),
    ],
    ids=[
        "malformed-xml",
        "not-camt053",
        "usd",
        "does-not-add-up",
        "nested-entries",
        "billion-laughs",
        "external-entity",
        "external-dtd",
        "oversized",
        "unknown-account",
        "empty",
    ],
)
def test_a_refused_file_stores_nothing(
    world: World, day: Day, mutate: Any, error: type[LedgerError]
) -> None:
    before = _counts(world)
    with pytest.raises(error):
        _import(world, mutate(day, camt053(day)))
    assert _counts(world) == before


def test_a_statement_of_an_account_another_bank_holds_is_not_found(world: World, day: Day) -> None:
    before = _counts(world)
    with pytest.raises(NotFound, match="no escrow account"):
        _import(world, camt053(day), bank=world.other_bank)
    with pytest.raises(NotFound):
        _import(world, csv_statement(day), bank=world.other_bank)
    assert _counts(world) == before


def test_unsafe_xml_is_refused_before_anything_is_read() -> None:
    for data in (BILLION_LAUGHS, EXTERNAL_ENTITY, EXTERNAL_DTD):
        with pytest.raises(StatementUnsafeXml):
            parse_camt053(data)


def test_amounts_are_exact_fen() -> None:
    assert amount_fen("1500", "x") == 150_000
    assert amount_fen("1500.5", "x") == 150_050
    assert amount_fen("0.01", "x") == 1
    assert amount_fen("-3.20", "x", signed=True) == -320
    for bad in ("1.005", "1e3", "-1", "1,5", "", "0.1.2", "１２"):
        with pytest.raises(StatementMalformed):
            amount_fen(bad, "x")


def test_csv_rules() -> None:
    header = (
        b"account,currency,booking_date,direction,amount,bank_reference,end_to_end_id,remittance\n"
    )
    good = header + (
        b"ESC1,CNY,2026-09-02,OPBD,10.00,,,\n"
        b'ESC1,CNY,2026-09-02,CRDT,5.5,R1,,"a, b"\n'
        b"ESC1,CNY,2026-09-02,CLBD,15.50,,,\n"
    )
    parsed = parse_csv(good)
    assert (parsed.opening_fen, parsed.closing_fen) == (1_000, 1_550)
    assert parsed.lines[0].remittance == "a, b"
    assert parsed.business_date == date(2026, 9, 2)
    assert parse(b"\xef\xbb\xbf" + good).format == "csv"
    refusals = {
        b"no header\n": StatementMalformed,
        good.replace(b"CRDT,5.5", b"CRDT,5.555"): StatementMalformed,
        good.replace(b"ESC1,CNY,2026-09-02,CRDT", b"ESC1,USD,2026-09-02,CRDT"): StatementCurrency,
        good.replace(b"ESC1,CNY,2026-09-02,CRDT", b"ESC2,CNY,2026-09-02,CRDT"): StatementMalformed,
        good.replace(b"CRDT,5.5", b"XFER,5.5"): StatementMalformed,
        good.replace(b"2026-09-02,CRDT", b"2026-09-01,CRDT"): StatementInconsistent,
        good.replace(b"ESC1,CNY,2026-09-02,OPBD,10.00,,,\n", b""): StatementMalformed,
        good.replace(b"R1", b"R\x001"): StatementMalformed,
        good + b"\xff\n": StatementMalformed,
    }
    for data, error in refusals.items():
        with pytest.raises(error):
            parse_csv(data)


# --- breaks are resolved by notes, never by edits -------------------------------------------


def test_resolving_a_break_writes_a_log_entry_and_shows_it_resolved(world: World, day: Day) -> None:
    outcome = _import(world, camt053(day))
    target = _report(world, outcome.statement.id).breaks[0].found
    note = "credited again on 3 Sep under NB0903-0001"
    view = world.do(reconcile.resolve_break, break_id=target.id, note=note, bank_id=world.bank)
    assert view.resolution is not None
    (entry,) = _entries(world, reconcile.RESOLVED)
    assert entry == {
        "break": target.id,
        "statement": outcome.statement.id,
        "institution": day.institution,
        "kind": target.kind.value,
        "amount": target.amount_fen,
        "note": note,
    }
    found = _report(world, outcome.statement.id)
    resolved = {v.found.id: v for v in found.breaks}[target.id]
    assert resolved.resolution is not None
    assert resolved.resolution.note == note
    assert resolved.resolution.actor == f"bank:{world.bank}"
    assert resolved.found.reason == target.reason  # the break itself is unchanged
    with pytest.raises(BreakAlreadyResolved):
        world.do(reconcile.resolve_break, break_id=target.id, note="again", bank_id=world.bank)
    other = found.breaks[1].found.id
    with pytest.raises(NotFound):
        world.do(reconcile.resolve_break, break_id=other, note="x", bank_id=world.other_bank)
    with pytest.raises(InvalidRequest):
        world.do(reconcile.resolve_break, break_id=other, note="  ", bank_id=world.bank)
    # school is in haishu: the haishu regulator may resolve it
    world.do(
        reconcile.resolve_break,
        break_id=other,
        note="inspected",
        regulator_id=world.district_regulator,
    )
    with world.read() as session:
        assert reconcile.open_break_count(session, day.institution) == 3


ACADEMY_CSV = (
    b"account,currency,booking_date,direction,amount,bank_reference,end_to_end_id,remittance\n"
    b"ESC-ningbo,CNY,2026-09-02,OPBD,0,,,\n"
    b"ESC-ningbo,CNY,2026-09-02,CRDT,1.00,NB-A1,,\n"
    b"ESC-ningbo,CNY,2026-09-02,CLBD,1.00,,,\n"
)


def test_breaks_are_scoped_to_the_regulators_district(world: World, day: Day) -> None:
    school = _import(world, camt053(day)).statement.id
    academy = _import(world, ACADEMY_CSV).statement.id  # yinzhou, not haishu

    def visible(regulator: str) -> set[str]:
        with world.read() as session:
            query = reconcile.open_breaks_query(session, regulator)
            return {b.statement_id for b in session.scalars(query)}

    assert visible(world.regulator) == {school, academy}
    assert visible(world.district_regulator) == {school}
    academy_break = _report(world, academy).breaks[0].found.id
    with pytest.raises(NotFound):
        world.do(
            reconcile.resolve_break,
            break_id=academy_break,
            note="x",
            regulator_id=world.district_regulator,
        )


def test_stored_statements_cannot_be_edited(world: World, day: Day) -> None:
    outcome = _import(world, camt053(day))
    with pytest.raises(DBAPIError), world.ledger.sessions.begin() as session:
        session.execute(
            text("UPDATE reconciliation_breaks SET amount_fen = 0 WHERE statement_id = :s"),
            {"s": outcome.statement.id},
        )
    with pytest.raises(DBAPIError), world.ledger.sessions.begin() as session:
        session.execute(text("DELETE FROM bank_statement_lines"))
