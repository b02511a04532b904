"""ORM models: the event log, the journal's postings and accounts, and personal data.

The log and postings tables are append-only (database triggers refuse UPDATE and DELETE, see the
foundation migration). Account balances are a projection of the postings, stored so reads are cheap
and checked by ``escrow verify`` against a full replay.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ledger.accounts import AccountCode, AccountKind, AccountType, NormalSide

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


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints predictably."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table(model: type[Base]) -> Table:
    """The Core table of a mapped class, for bulk statements that skip the ORM (issue 8).

    ``__table__`` is declared as a FromClause; every model here maps exactly one table.
    """
    found = model.__table__
    assert isinstance(found, Table)
    return found


class LogEntry(Base):
    """One event: the canonical JSON bytes that were hashed, and columns copied out for queries.

    The head of the log is simply the entry with the highest seq; there is no separate, editable
    head record to disagree with the entries.
    """

    __tablename__ = "log_entries"
    # "The last entry before an instant" (as-of queries, settlement cut-offs) is one probe of
    # (time, seq) read backwards.
    __table_args__ = (Index("ix_log_entries_time_seq", "time", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """Gapless position in the log, from 0; also the entry's leaf index in the Merkle tree."""
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    """When the entry was appended (UTC); never earlier than the entry before it."""
    type: Mapped[str] = mapped_column(String(64))
    """Event type, e.g. ``contract.created``; copied from the body for filtering."""
    actor: Mapped[str] = mapped_column(String(128))
    """Who caused the event (``role:id`` or ``system``); copied from the body for filtering."""
    body: Mapped[bytes] = mapped_column(LargeBinary)
    """RFC 8785 canonical JSON of the entry without its hash: exactly the bytes that were hashed."""
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    """SHA-256(0x00 || body): the RFC 6962 leaf hash, linked by the next entry's ``prev_hash``."""


class MerkleNode(Base):
    """The hash of a complete subtree of the log's Merkle tree: leaves [index·2^level, (index+1)·2^level).

    Written in the same transaction as the entry that completes it, append-only like the log. Level
    0 is not stored here: a leaf is its entry's ``hash``. With these, a root or a proof for any
    tree size needs O(log n) rows, never a pass over the leaves.
    """

    __tablename__ = "merkle_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column("idx", BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class Account(Base):
    """A ledger account. Kind, owner, type, normal side and sign rule all follow from its code.

    They are deliberately not stored: a column could be edited apart from the code, and the journal
    would then enforce a rule the chart of accounts never gave.
    """

    __tablename__ = "accounts"
    __table_args__ = (
        # Every kind in the chart is non-negative; a kind that may go negative needs a migration
        # that narrows this check to the other kinds.
        CheckConstraint("balance >= 0", name="non_negative"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(160), unique=True)
    """``kind:owner``, the name postings in the log use."""
    currency: Mapped[str] = mapped_column(String(3))
    """ISO 4217 code, fixed by the account's first posting."""
    balance: Mapped[int] = mapped_column(BigInteger)
    """Normal-side balance in minor units (positive = the account holds what its name says)."""
    opened_seq: Mapped[int] = mapped_column(BigInteger)
    """Seq of the entry whose postings created the account."""
    last_seq: Mapped[int] = mapped_column(BigInteger)
    """Seq of the last entry that moved the balance."""

    @property
    def parsed(self) -> AccountCode:
        return AccountCode.parse(self.code)

    @property
    def kind(self) -> AccountKind:
        return self.parsed.kind

    @property
    def owner_id(self) -> str:
        """The institution or contract the account belongs to."""
        return self.parsed.owner_id

    @property
    def type(self) -> AccountType:
        return self.parsed.cls.type

    @property
    def normal_side(self) -> NormalSide:
        return self.type.normal_side

    @property
    def non_negative(self) -> bool:
        return self.parsed.cls.non_negative


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


class PersonalData(Base):
    """Names and phone numbers, kept outside the log so they can be erased.

    The log refers to a person only by ``subject_id`` and, where a value must be committed to, by a
    salted SHA-256 commitment. Erasing clears the values and the salt: every hash in the log stays
    valid, and the commitment can no longer be tested against guesses.
    """

    __tablename__ = "personal_data"

    subject_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The opaque id the log uses for this person."""
    name: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(32))
    salt: Mapped[bytes | None] = mapped_column(LargeBinary(16))
    """Random per person; part of every commitment, erased with the data."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
