"""ORM models: the event log, the journal's postings and accounts, and the log head.

The log and postings tables are append-only (database triggers refuse UPDATE and DELETE, see the
foundation migration). Account balances are a projection of the postings, stored so reads are cheap
and checked by ``escrow verify`` against a full replay.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from ledger.accounts import CHART, AccountKind, AccountType, NormalSide

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only aliases the rowid (and so autoincrements) for a column declared exactly INTEGER.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite has no time zone type; storing naive UTC there and attaching UTC on the way out keeps the
    Python side identical on both databases.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused; the ledger stores UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum_values(enum: type[Any]) -> list[str]:
    return [member.value for member in enum]


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints predictably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class LogHead(Base):
    """The single row that every writer locks first; it holds the size and hash of the log."""

    __tablename__ = "log_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    """Number of entries; the next entry gets ``seq = size``."""
    head_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    """Hash of entry ``size - 1``; 32 zero bytes while the log is empty."""
    last_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Time of the last entry; entry times never go backwards."""


class LogEntry(Base):
    """One event: the canonical JSON bytes that were hashed, and columns copied out for queries."""

    __tablename__ = "log_entries"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """Gapless position in the log, from 0; also the entry's leaf index in the Merkle tree."""
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    type: Mapped[str] = mapped_column(String(64))
    """Event type, e.g. ``contract.created``; copied from the body for filtering."""
    actor: Mapped[str] = mapped_column(String(128))
    """Who caused the event (``role:id`` or ``system``); copied from the body for filtering."""
    body: Mapped[bytes] = mapped_column(LargeBinary)
    """RFC 8785 canonical JSON of the entry without its hash: exactly the bytes that were hashed."""
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    """SHA-256(0x00 || body): the RFC 6962 leaf hash, linked by the next entry's ``prev_hash``."""

    postings: Mapped[list[Posting]] = relationship(
        back_populates="entry", lazy="raise", viewonly=True, order_by="Posting.id"
    )


class Account(Base):
    """A ledger account; its kind (from the chart) fixes type, normal side and sign rules."""

    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("NOT non_negative OR balance >= 0", name="non_negative"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(160), unique=True)
    """``kind:owner``, the name postings in the log use."""
    kind: Mapped[AccountKind] = mapped_column(
        Enum(
            AccountKind,
            native_enum=False,
            length=32,
            values_callable=_enum_values,
            create_constraint=True,
            name="account_kind",
        ),
        index=True,
    )
    currency: Mapped[str] = mapped_column(String(3))
    non_negative: Mapped[bool] = mapped_column(Boolean)
    """When true the balance may never go below zero; checked under the log-head lock."""
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    """Normal-side balance in minor units (positive = the account holds what its name says)."""
    opened_seq: Mapped[int] = mapped_column(BigInteger)
    """Seq of the entry whose postings created the account."""
    last_seq: Mapped[int] = mapped_column(BigInteger)
    """Seq of the last entry that moved the balance."""

    @property
    def type(self) -> AccountType:
        return CHART[self.kind].type

    @property
    def normal_side(self) -> NormalSide:
        return self.type.normal_side


class Posting(Base):
    """One leg of an entry: a debit-positive amount on one account. Append-only."""

    __tablename__ = "postings"
    __table_args__ = (
        Index("ix_postings_account_id_seq", "account_id", "seq"),
        CheckConstraint("amount <> 0", name="non_zero"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    seq: Mapped[int] = mapped_column(
        BigInteger,
        # Postings are written before their entry so that SQLite's insert trigger on the entry can
        # check the balance; the foreign key is therefore checked at commit.
        ForeignKey("log_entries.seq", deferrable=True, initially="DEFERRED"),
        index=True,
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    """Debit positive, credit negative; the postings of one entry sum to zero per currency."""
    currency: Mapped[str] = mapped_column(String(3))

    entry: Mapped[LogEntry] = relationship(back_populates="postings", lazy="raise")
    account: Mapped[Account] = relationship(lazy="raise")
