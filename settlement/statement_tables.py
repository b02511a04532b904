"""Bank statements, their lines, the breaks reconciliation found, and how breaks were resolved.

All four are written once and never edited: an import writes the statement, its lines (each with
its match result) and its breaks in the transaction of its ``statement.imported`` log entry; a
resolution is a new row in its own table, written with its ``reconciliation.break_resolved``
entry. A break's state (open or resolved) is whether a resolution row exists for it.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.entities import ID, string_enum
from ledger.models import Base


class LineResult(StrEnum):
    """What matching made of one statement line."""

    MATCHED = "matched"
    """A ledger item with the same reference and amount."""
    UNMATCHED_BANK = "unmatched_bank"
    """The bank shows money the ledger has no record of (or not in that state)."""
    AMOUNT_MISMATCH = "amount_mismatch"
    """The ledger item was found, with another amount."""
    DUPLICATE = "duplicate"
    """The line repeats an earlier line, or a ledger item already matched."""


class BreakKind(StrEnum):
    """Why a break exists."""

    UNMATCHED_BANK = "unmatched_bank"
    UNMATCHED_LEDGER = "unmatched_ledger"
    """A receipt, deposit, executed payout or paid refund of that day the bank never shows."""
    AMOUNT_MISMATCH = "amount_mismatch"
    DUPLICATE = "duplicate"
    BALANCE_DIFFERENCE = "balance_difference"
    """The closing balance differs from the ledger's escrow balance at the end of the day."""


class CounterpartKind(StrEnum):
    """The kind of ledger item a line was matched to."""

    RECEIPT = "receipt"
    RISK_DEPOSIT = "risk_deposit"
    PAYOUT = "payout"
    REFUND = "refund"


class BankStatement(Base):
    """One imported daily statement of one escrow account."""

    __tablename__ = "bank_statements"
    __table_args__ = (
        UniqueConstraint("bank_id", "file_sha256"),
        UniqueConstraint("institution_id", "business_date"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    bank_id: Mapped[str] = mapped_column(ForeignKey("banks.id"))
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    account: Mapped[str] = mapped_column(String(64))
    business_date: Mapped[date] = mapped_column(Date)
    format: Mapped[str] = mapped_column(String(16))
    statement_ref: Mapped[str] = mapped_column(String(64))
    """The bank's own id of the statement (camt.053 Stmt/Id); empty for CSV."""
    file_sha256: Mapped[str] = mapped_column(String(64))
    """The same file imported again answers this statement and stores nothing."""
    size_bytes: Mapped[int] = mapped_column(Integer)
    opening_fen: Mapped[int] = mapped_column(BigInteger)
    closing_fen: Mapped[int] = mapped_column(BigInteger)
    ledger_closing_fen: Mapped[int] = mapped_column(BigInteger)
    """The ledger's escrow balance at the end of the business day (Asia/Shanghai)."""
    ledger_through_seq: Mapped[int] = mapped_column(BigInteger)
    """The last log entry of the business day: what the ledger side was read at."""
    line_count: Mapped[int] = mapped_column(Integer)
    break_count: Mapped[int] = mapped_column(Integer)
    imported_seq: Mapped[int] = mapped_column(BigInteger, index=True)


class StatementLineRow(Base):
    """One booked entry of a statement and its match result."""

    __tablename__ = "bank_statement_lines"
    __table_args__ = (Index("ix_bank_statement_lines_counterpart", "counterpart_id"),)

    statement_id: Mapped[str] = mapped_column(ForeignKey("bank_statements.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    booking_date: Mapped[date] = mapped_column(Date)
    direction: Mapped[str] = mapped_column(String(4))
    """CRDT (into escrow) or DBIT (out of escrow)."""
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    bank_reference: Mapped[str] = mapped_column(String(64))
    end_to_end_id: Mapped[str] = mapped_column(String(64))
    remittance: Mapped[str] = mapped_column(String(500))
    result: Mapped[LineResult] = mapped_column(string_enum(LineResult, "statement_line_result"))
    rule: Mapped[str | None] = mapped_column(String(32))
    """How the counterpart was found: bank_reference, end_to_end_id, contract_reference."""
    counterpart_kind: Mapped[CounterpartKind | None] = mapped_column(
        string_enum(CounterpartKind, "statement_counterpart_kind")
    )
    counterpart_id: Mapped[str | None] = mapped_column(String(64))
    ledger_amount_fen: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(500))


class ReconciliationBreak(Base):
    """A difference between the bank and the ledger, with its reason and signed amount."""

    __tablename__ = "reconciliation_breaks"
    __table_args__ = (
        Index("ix_reconciliation_breaks_institution_id_seq", "institution_id", "seq"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    statement_id: Mapped[str] = mapped_column(ForeignKey("bank_statements.id"), index=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    kind: Mapped[BreakKind] = mapped_column(string_enum(BreakKind, "reconciliation_break_kind"))
    line_no: Mapped[int | None] = mapped_column(Integer)
    """The statement line, for the kinds that have one."""
    counterpart_kind: Mapped[CounterpartKind | None] = mapped_column(
        string_enum(CounterpartKind, "break_counterpart_kind")
    )
    counterpart_id: Mapped[str | None] = mapped_column(String(64))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    """Signed: positive when the bank holds more than the ledger expects, negative when less."""
    reason: Mapped[str] = mapped_column(String(500))
    seq: Mapped[int] = mapped_column(BigInteger)
    """The import's log entry."""


class BreakResolution(Base):
    """How a break was closed: a note, who wrote it, and the log entry that recorded it."""

    __tablename__ = "reconciliation_break_resolutions"

    break_id: Mapped[str] = mapped_column(ForeignKey("reconciliation_breaks.id"), primary_key=True)
    note: Mapped[str] = mapped_column(String(1000))
    actor: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(BigInteger)
