"""Reading a custody bank's daily statement: ISO 20022 camt.053 or the documented CSV.

A statement is the bank's word on one escrow account for one business day: the opening and closing
booked balances and every entry booked that day. Parsing checks the file on its own terms (size,
shape, currency, exact amounts, balances that add up) and hands matching a ``ParsedStatement``; it
reads nothing from the database. See docs/reconciliation.md for both formats.

XML is parsed with ``defusedxml`` and any DTD is refused outright: a statement never needs one,
and a DTD is how entity expansion ("billion laughs") and external entities get in. Amounts are
decimal strings turned exactly into integer fen; more than two decimals is an error, never rounded.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException  # type: ignore[import-untyped]
from defusedxml.ElementTree import fromstring  # type: ignore[import-untyped]

from ledger.errors import LedgerError
from ledger.money import JSON_SAFE_MAX

Format = Literal["camt.053", "csv"]
Direction = Literal["CRDT", "DBIT"]

MAX_STATEMENT_BYTES = 1_000_000
"""A statement file is refused above this size; it stays under the API's 1 MiB body limit."""
MAX_LINES = 10_000
"""Entries per statement: a daily statement of one escrow account is far below this."""
MAX_REFERENCE = 64
MAX_REMITTANCE = 500
CURRENCY = "CNY"
CAMT_NAMESPACE = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.053\.001\.0[2-8]$")
CSV_COLUMNS = (
    "account",
    "currency",
    "booking_date",
    "direction",
    "amount",
    "bank_reference",
    "end_to_end_id",
    "remittance",
)
_AMOUNT = re.compile(r"^(-?)([0-9]{1,16})(?:\.([0-9]+))?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_PROVIDED = "NOTPROVIDED"


class StatementMalformed(LedgerError):
    """The file is not a statement this service reads (syntax, shape, values)."""

    status = 422
    code = "statement-malformed"
    title = "Statement malformed"


class StatementUnsafeXml(LedgerError):
    """The XML carries a DTD, entity declarations or external references: refused unread."""

    status = 422
    code = "statement-unsafe-xml"
    title = "Unsafe XML refused"


class StatementTooLarge(LedgerError):
    """The file is over the size or line limit."""

    status = 413
    code = "statement-too-large"
    title = "Statement too large"


class StatementCurrency(LedgerError):
    """An account, balance or entry is in a currency other than CNY."""

    status = 422
    code = "statement-currency"
    title = "Statement currency not CNY"


class StatementInconsistent(LedgerError):
    """The opening balance plus the entries does not give the closing balance, or an entry was
    booked on another day than the statement's."""

    status = 422
    code = "statement-inconsistent"
    title = "Statement does not add up"


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One booked entry: money in (CRDT) or out (DBIT) of the escrow account."""

    line_no: int
    booking_date: date
    direction: Direction
    amount_fen: int
    bank_reference: str
    end_to_end_id: str
    remittance: str

    @property
    def signed_fen(self) -> int:
        """The entry's effect on the account's balance."""
        return self.amount_fen if self.direction == "CRDT" else -self.amount_fen


@dataclass(frozen=True, slots=True)
class ParsedStatement:
    """A statement as read from the file, checked for consistency but not against the ledger."""

    format: Format
    account: str
    currency: str
    business_date: date
    opening_fen: int
    closing_fen: int
    lines: tuple[StatementLine, ...]
    statement_ref: str
    """The bank's own id of the statement (camt ``Stmt/Id``); empty for CSV."""


def amount_fen(text: str, what: str, *, signed: bool = False) -> int:
    """A decimal amount in yuan ("1500", "1500.5", "1500.50") as exact integer fen."""
    match = _AMOUNT.match(text.strip())
    if match is None or (match.group(1) and not signed):
        raise StatementMalformed(f"{what}: {text[:40]!r} is not an amount like 1500.00")
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    if len(fraction) > 2:
        raise StatementMalformed(f"{what}: {text[:40]!r} has more than 2 decimals")
    fen = int(whole) * 100 + int(fraction.ljust(2, "0"))
    if fen > JSON_SAFE_MAX:
        raise StatementMalformed(f"{what}: {text[:40]!r} is out of range")
    return -fen if sign else fen


def _text(value: str | None, what: str, limit: int) -> str:
    value = (value or "").strip()
    if len(value) > limit:
        raise StatementMalformed(f"{what} is longer than {limit} characters")
    if _CONTROL.search(value):
        raise StatementMalformed(f"{what} contains control characters")
    return value


def _date(value: str | None, what: str) -> date:
    text = (value or "").strip()
    try:
        if "T" in text:
            return datetime.fromisoformat(text).date()
        return date.fromisoformat(text)
    except ValueError:
        raise StatementMalformed(f"{what}: {text[:40]!r} is not a date (YYYY-MM-DD)") from None


def _currency(value: str | None, what: str) -> str:
    currency = (value or "").strip()
    if currency != CURRENCY:
        raise StatementCurrency(
            f"{what} is in {currency[:8] or 'no currency'}; escrow accounts are in {CURRENCY}",
            currency=currency[:8],
        )
    return currency


def _check(
    fmt: Format,
    account: str,
    business_date: date,
    opening: int,
    closing: int,
    lines: list[StatementLine],
    statement_ref: str,
) -> ParsedStatement:
    if not account:
        raise StatementMalformed("the statement names no account")
    for line in lines:
        if line.booking_date != business_date:
            raise StatementInconsistent(
                f"line {line.line_no} was booked on {line.booking_date}; a daily statement of "
                f"{business_date} holds only that day's entries",
                line=line.line_no,
            )
    total = opening + sum(line.signed_fen for line in lines)
    if total != closing:
        raise StatementInconsistent(
            f"opening balance {opening} fen plus the entries gives {total} fen, "
            f"not the closing balance {closing} fen",
            opening_fen=opening,
            closing_fen=closing,
            computed_fen=total,
        )
    return ParsedStatement(
        fmt, account, CURRENCY, business_date, opening, closing, tuple(lines), statement_ref
    )


def _size(data: bytes) -> None:
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementTooLarge(
            f"the statement is {len(data)} bytes; the limit is {MAX_STATEMENT_BYTES}",
            limit=MAX_STATEMENT_BYTES,
        )
    if not data.strip():
        raise StatementMalformed("the statement is empty")


def sniff(data: bytes) -> Format:
    """camt.053 if the file starts (after a BOM and blanks) with ``<``, else CSV."""
    return "camt.053" if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") else "csv"


def parse(data: bytes, fmt: Format | None = None) -> ParsedStatement:
    """Read a statement file; ``fmt`` None guesses from the first character."""
    _size(data)
    fmt = fmt or sniff(data)
    return parse_camt053(data) if fmt == "camt.053" else parse_csv(data)


# --- camt.053 -----------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def _child(element: Element | None, *path: str) -> Element | None:
    """The first descendant along ``path`` of local names, whatever the namespace."""
    for name in path:
        if element is None:
            return None
        element = next((c for c in element if _local(c.tag) == name), None)
    return element


def _children(element: Element | None, name: str) -> list[Element]:
    return [] if element is None else [c for c in element if _local(c.tag) == name]


def _value(element: Element | None, *path: str) -> str:
    found = _child(element, *path)
    return "" if found is None or found.text is None else found.text.strip()


def _money(element: Element | None, what: str, *, signed: bool = False) -> int:
    """An ``Amt`` with its ``Ccy`` (and, for a balance, its own ``CdtDbtInd``)."""
    amount = _child(element, "Amt")
    if amount is None:
        raise StatementMalformed(f"{what} has no Amt")
    _currency(amount.get("Ccy"), what)
    fen = amount_fen(amount.text or "", what)
    indicator = _value(element, "CdtDbtInd")
    if indicator not in ("CRDT", "DBIT"):
        raise StatementMalformed(f"{what}: CdtDbtInd must be CRDT or DBIT, got {indicator[:8]!r}")
    if indicator == "DBIT" and not signed:
        return fen
    return -fen if indicator == "DBIT" else fen


def _booked_date(element: Element | None, what: str) -> date:
    return _date(_value(element, "Dt") or _value(element, "DtTm"), what)


def _parse_xml(data: bytes) -> Element:
    try:
        root: Element = fromstring(data, forbid_dtd=True)
    except DefusedXmlException as error:
        raise StatementUnsafeXml(
            f"the XML was refused unread ({type(error).__name__}): a statement needs no DTD, "
            "entity declaration or external reference"
        ) from None
    except ParseError as error:
        raise StatementMalformed(f"the XML is not well-formed: {error}") from None
    except (ValueError, UnicodeError) as error:  # e.g. an unknown encoding declaration
        raise StatementMalformed(f"the XML cannot be read: {error}") from None
    return root


def parse_camt053(data: bytes) -> ParsedStatement:
    """One ``BkToCstmrStmt/Stmt`` of camt.053.001.02 to .08 (the namespace decides nothing else)."""
    _size(data)
    root = _parse_xml(data)
    namespace = _namespace(root.tag)
    if _local(root.tag) != "Document" or not CAMT_NAMESPACE.match(namespace):
        raise StatementMalformed(
            "not a camt.053 statement: expected a Document in the namespace "
            "urn:iso:std:iso:20022:tech:xsd:camt.053.001.02 to .08"
        )
    statements = _children(_child(root, "BkToCstmrStmt"), "Stmt")
    if len(statements) != 1:
        raise StatementMalformed(
            f"a file holds exactly one Stmt (one account, one day); found {len(statements)}"
        )
    stmt = statements[0]
    account_element = _child(stmt, "Acct")
    account = _text(
        _value(account_element, "Id", "IBAN") or _value(account_element, "Id", "Othr", "Id"),
        "the account (Acct/Id/IBAN or Acct/Id/Othr/Id)",
        MAX_REFERENCE,
    )
    if _child(account_element, "Ccy") is not None:
        _currency(_value(account_element, "Ccy"), "the account")
    balances: dict[str, tuple[int, date]] = {}
    for balance in _children(stmt, "Bal"):
        kind = _value(balance, "Tp", "CdOrPrtry", "Cd")
        if kind in ("OPBD", "PRCD", "CLBD"):
            key = "CLBD" if kind == "CLBD" else "OPBD"
            if key in balances:
                raise StatementMalformed(f"more than one {key} balance")
            balances[key] = (
                _money(balance, f"the {kind} balance", signed=True),
                _booked_date(_child(balance, "Dt"), f"the {kind} balance date"),
            )
    if "OPBD" not in balances or "CLBD" not in balances:
        raise StatementMalformed("a statement needs an OPBD (or PRCD) and a CLBD balance")
    opening, _ = balances["OPBD"]
    closing, business_date = balances["CLBD"]
    entries = _children(stmt, "Ntry")
    if len(entries) > MAX_LINES:
        raise StatementTooLarge(f"{len(entries)} entries; the limit is {MAX_LINES}")
    lines: list[StatementLine] = []
    for entry in entries:
        status = _value(entry, "Sts", "Cd") or _value(entry, "Sts")
        if status and status != "BOOK":
            continue  # pending or informational: not part of the booked balance
        line_no = len(lines) + 1
        what = f"entry {line_no}"
        details = _children(_child(entry, "NtryDtls"), "TxDtls")
        if len(details) > 1:
            raise StatementMalformed(
                f"{what} is a batch of {len(details)} transactions; itemise them as entries"
            )
        tx = details[0] if details else None
        end_to_end = _value(tx, "Refs", "EndToEndId")
        information = _child(tx, "RmtInf")
        if information is None:
            information = _child(entry, "RmtInf")
        remittance = " ".join((u.text or "").strip() for u in _children(information, "Ustrd"))
        lines.append(
            StatementLine(
                line_no=line_no,
                booking_date=_booked_date(_child(entry, "BookgDt"), f"{what} booking date"),
                direction="CRDT" if _value(entry, "CdtDbtInd") == "CRDT" else "DBIT",
                amount_fen=_money(entry, what),
                bank_reference=_text(
                    _value(entry, "AcctSvcrRef") or _value(tx, "Refs", "AcctSvcrRef"),
                    f"{what} AcctSvcrRef",
                    MAX_REFERENCE,
                ),
                end_to_end_id=""
                if end_to_end == _NOT_PROVIDED
                else _text(end_to_end, f"{what} EndToEndId", MAX_REFERENCE),
                remittance=_text(remittance, f"{what} remittance", MAX_REMITTANCE),
            )
        )
    reference = _text(_value(stmt, "Id"), "Stmt/Id", MAX_REFERENCE)
    return _check("camt.053", account, business_date, opening, closing, lines, reference)


# --- CSV ----------------------------------------------------------------------------------------


def parse_csv(data: bytes) -> ParsedStatement:
    """The documented CSV: a header row, one OPBD and one CLBD balance row, then entries."""
    _size(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StatementMalformed("the CSV is not UTF-8") from None
    if "\x00" in text:
        raise StatementMalformed("the CSV contains NUL bytes")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as error:
        raise StatementMalformed(f"the CSV cannot be read: {error}") from None
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows or tuple(cell.strip() for cell in rows[0]) != CSV_COLUMNS:
        raise StatementMalformed(f"the first row must be the header {','.join(CSV_COLUMNS)}")
    if len(rows) - 3 > MAX_LINES:
        raise StatementTooLarge(f"{len(rows) - 3} entries; the limit is {MAX_LINES}")
    accounts: set[str] = set()
    balances: dict[str, tuple[int, date]] = {}
    lines: list[StatementLine] = []
    for number, row in enumerate(rows[1:], start=2):
        what = f"row {number}"
        if len(row) != len(CSV_COLUMNS):
            raise StatementMalformed(f"{what} has {len(row)} columns, not {len(CSV_COLUMNS)}")
        account, currency, booked, direction, amount, reference, end_to_end, remittance = row
        accounts.add(_text(account, f"{what} account", MAX_REFERENCE))
        _currency(currency, what)
        day = _date(booked, f"{what} booking_date")
        direction = direction.strip()
        if direction in ("OPBD", "CLBD"):
            if direction in balances:
                raise StatementMalformed(f"{what}: a second {direction} balance row")
            balances[direction] = (amount_fen(amount, what, signed=True), day)
            continue
        if direction not in ("CRDT", "DBIT"):
            raise StatementMalformed(
                f"{what}: direction must be CRDT, DBIT, OPBD or CLBD, got {direction[:8]!r}"
            )
        fen = amount_fen(amount, what)
        if fen == 0:
            raise StatementMalformed(f"{what}: an entry of 0")
        lines.append(
            StatementLine(
                line_no=len(lines) + 1,
                booking_date=day,
                direction="CRDT" if direction == "CRDT" else "DBIT",
                amount_fen=fen,
                bank_reference=_text(reference, f"{what} bank_reference", MAX_REFERENCE),
                end_to_end_id=_text(end_to_end, f"{what} end_to_end_id", MAX_REFERENCE),
                remittance=_text(remittance, f"{what} remittance", MAX_REMITTANCE),
            )
        )
    if len(accounts) != 1:
        raise StatementMalformed(f"every row must name the same account; found {len(accounts)}")
    if "OPBD" not in balances or "CLBD" not in balances:
        raise StatementMalformed("the CSV needs one OPBD and one CLBD balance row")
    opening, _ = balances["OPBD"]
    closing, business_date = balances["CLBD"]
    return _check("csv", accounts.pop(), business_date, opening, closing, lines, "")
