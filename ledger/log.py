"""The hash-chained event log.

Every state change is one entry. An entry's body is the RFC 8785 canonical JSON of
``{seq, time, type, actor, payload, postings, prev_hash}``; its hash is SHA-256(0x00 || body), which
is also the RFC 6962 leaf hash, so a Merkle tree can be built over the stored hashes unchanged. The
body is stored byte for byte: verification hashes what was hashed, without re-encoding.

Writers serialize on the log lock: ``EventLog.lock`` must be the first thing a write transaction does
(PostgreSQL: a transaction advisory lock that the database triggers take too; on SQLite the
``BEGIN IMMEDIATE`` of every write session already holds the database write lock). Postings,
balances and entries are then written in the same transaction, so they commit together or not at
all. The head is the last entry; there is no separate head record to tamper with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from ledger import canonical, merkle, merkle_store
from ledger.clock import Clock
from ledger.errors import ClockBehindLog, InvalidEvent, LedgerError
from ledger.journal import Journal, Posting, check_balanced
from ledger.models import LogEntry, MerkleNode, table
from ledger.money import JSON_SAFE_MAX

LEAF_PREFIX = merkle.LEAF_PREFIX
leaf_hash = merkle.leaf_hash
"""RFC 6962 leaf hash of an entry body: SHA-256(0x00 || body)."""
LOG_LOCK_KEY = (
    7310295963299966055  # b"escrowlg"; the triggers of the foundation migration use it too
)
# A clock this far behind the last entry is wrong, not merely stepped back by NTP.
MAX_CLOCK_LAG = timedelta(minutes=10)
ZERO_HASH = bytes(32)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_ACTOR = re.compile(r"^(system|[a-z][a-z_]*:[A-Za-z0-9][A-Za-z0-9_.:-]*)$")
_MAX_DEPTH = 16


def format_time(when: datetime) -> str:
    """The fixed-width UTC timestamp used inside entries (microseconds, ``Z``)."""
    return when.astimezone(UTC).strftime(TIME_FORMAT)


@dataclass(frozen=True, slots=True)
class Event:
    """A state change to append: what happened, who did it, the facts, and the money it moves."""

    type: str
    actor: str
    payload: Mapping[str, Any]
    postings: Sequence[Posting] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an event landed: its seq, hash and time. The basis of every receipt."""

    seq: int
    hash: bytes
    time: datetime

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()


@dataclass(frozen=True, slots=True)
class Head:
    """The log's size and last hash; a new entry gets ``seq = size`` and links to ``hash``."""

    size: int
    hash: bytes
    last_time: datetime | None


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(
            f"payload text at {path} is not valid Unicode (lone surrogate)"
        ) from None


def _json_value(value: Any, path: str, depth: int, odd_keys: list[str]) -> Any:
    """Return ``value`` as plain JSON types, refusing what cannot be logged exactly.

    The result holds exact ``str``/``int``/``bool``/``None``/``dict``/``list`` values only (enum
    members become their values), so the canonical encoder can take its fast path; keys that are
    not ASCII, the one thing that path cannot order, are collected in ``odd_keys``.
    """
    if depth > _MAX_DEPTH:
        raise InvalidEvent(f"payload nested deeper than {_MAX_DEPTH} levels at {path}")
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        _check_text(value, path)
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if abs(value) > JSON_SAFE_MAX:
            raise InvalidEvent(
                f"payload integer at {path} exceeds the log's exact range ±{JSON_SAFE_MAX}"
            )
        return int(value)
    if isinstance(value, float):
        raise InvalidEvent(f"payload value at {path} is a float; amounts are integer fen")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEvent(f"payload key {key!r} at {path} is not a string")
            _check_text(key, path)
            if not key.isascii():
                odd_keys.append(key)
            out[str.__str__(key)] = _json_value(item, f"{path}.{key}", depth + 1, odd_keys)
        return out
    if isinstance(value, list | tuple):
        return [
            _json_value(item, f"{path}[{i}]", depth + 1, odd_keys) for i, item in enumerate(value)
        ]
    raise InvalidEvent(f"payload value at {path} has type {type(value).__name__}, not JSON")


def _check_event(event: Event) -> tuple[dict[str, Any], bool]:
    """The event's payload as plain JSON, and whether its entry can take the canonical fast path."""
    if len(event.type) > 64 or not _EVENT_TYPE.match(event.type):
        raise InvalidEvent(
            f"event type {event.type!r} is not dotted lower-case (e.g. lesson.reported)"
        )
    if len(event.actor) > 128 or not _ACTOR.match(event.actor):
        raise InvalidEvent(f"actor {event.actor!r} is not 'system' or 'role:id'")
    check_balanced(event.postings)
    odd_keys: list[str] = []
    payload: dict[str, Any] = _json_value(event.payload, "payload", 0, odd_keys)
    return payload, not odd_keys


_HELD = "escrow.log.held_head"
_HEAD = select(LogEntry.seq, LogEntry.hash, LogEntry.time).order_by(LogEntry.seq.desc()).limit(1)


class EventLog:
    """Appends events to the log; the single way state changes enter the database."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def head(self, session: Session) -> Head:
        """The head as of this session's view: size, last hash, last time (no lock taken)."""
        row = session.execute(_HEAD).one_or_none()
        if row is None:
            return Head(0, ZERO_HASH, None)
        return Head(row.seq + 1, row.hash, row.time)

    def lock(self, session: Session) -> Head:
        """Take the log lock for the rest of the transaction and return the head.

        PostgreSQL: a transaction-scoped advisory lock, the same one the database triggers take,
        so even raw SQL writers queue behind it. SQLite: write sessions begin IMMEDIATE and so
        already hold the database's write lock. Call this before reading anything a write decision
        depends on: under READ COMMITTED every later statement then sees all transactions that
        committed before the lock was granted.

        Once a transaction holds the lock only its own appends move the head, so the head is kept
        with the transaction (``append_many`` advances it) and a second call reads nothing: a
        single-lesson report asked for the head four times (issue 8).
        """
        held = self.held_head(session)
        if held is not None:
            return held
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(LOG_LOCK_KEY)))
        head = self.head(session)
        self._keep(session, head)
        return head

    @staticmethod
    def held_head(session: Session) -> Head | None:
        """The head as this transaction, holding the lock, has left it; None without the lock.

        Kept in ``session.info`` beside the root transaction it belongs to (a strong reference, so
        a later transaction can never be mistaken for it). Appends inside a savepoint advance it
        like any other; whoever rolls a savepoint back must call ``forget_head``, since the
        rollback takes entries back without telling the log.
        """
        kept = session.info.get(_HELD)
        if kept is None:
            return None
        transaction, head = kept
        return head if transaction is session.get_transaction() else None

    @staticmethod
    def forget_head(session: Session) -> None:
        """Drop the kept head (after a savepoint rollback): the next ``lock`` reads it again."""
        session.info.pop(_HELD, None)

    @staticmethod
    def _keep(session: Session, head: Head) -> None:
        session.info[_HELD] = (session.get_transaction(), head)

    def current(self, session: Session) -> Head:
        """The head: as this transaction left it if it holds the lock, else read."""
        return self.held_head(session) or self.head(session)

    def append(self, session: Session, event: Event) -> Appended:
        """Append one event (see ``append_many``)."""
        return self.append_many(session, [event])[0]

    def append_many(self, session: Session, events: Sequence[Event]) -> list[Appended]:
        """Append events in order as one all-or-nothing batch, within the caller's transaction.

        Each event becomes one entry with consecutive seqs; its postings move balances in the same
        transaction. Any refused event (invalid, unbalanced, overdrawing) fails the whole batch
        before anything is written. Only flushes; the caller's unit of work commits.
        """
        if not events:
            return []
        payloads = []
        for index, event in enumerate(events):
            try:
                payloads.append(_check_event(event))
            except LedgerError as error:
                if len(events) > 1:
                    error.context["index"] = index
                raise
        head = self.lock(session)
        now = self.clock.now()
        if head.last_time is not None and head.last_time - now > MAX_CLOCK_LAG:
            raise ClockBehindLog(
                f"the clock says {format_time(now)} but the log's last entry is dated "
                f"{format_time(head.last_time)}; refusing to stamp entries with a stale time",
            )
        # Entry times never go backwards: a small clock step back takes the last entry's time.
        time = now if head.last_time is None or now >= head.last_time else head.last_time
        time_text = format_time(time)

        journal = Journal(session)
        journal.load(p.account for event in events for p in event.postings)
        appended: list[Appended] = []
        entry_rows: list[dict[str, Any]] = []
        prev = head.hash
        for index, (event, (payload, plain)) in enumerate(zip(events, payloads, strict=True)):
            seq = head.size + index
            try:
                journal.apply(seq, event.postings)
            except LedgerError as error:
                if len(events) > 1:
                    error.context["index"] = index
                raise
            # Type and actor match ASCII patterns, postings hold ASCII codes and safe integers, and
            # _json_value proved the payload plain unless it has non-ASCII keys (issue 8: the
            # second walk of every payload cost 6% of a lesson report).
            encode = canonical.dumps_plain if plain else canonical.dumps
            body = encode(
                {
                    "seq": seq,
                    "time": time_text,
                    "type": str.__str__(event.type),
                    "actor": str.__str__(event.actor),
                    "payload": payload,
                    "postings": [p.to_json() for p in event.postings],
                    "prev_hash": prev.hex(),
                }
            )
            digest = leaf_hash(body)
            entry_rows.append(
                {
                    "seq": seq,
                    "time": time,
                    "type": event.type,
                    "actor": event.actor,
                    "body": body,
                    "hash": digest,
                }
            )
            appended.append(Appended(seq, digest, time))
            prev = digest

        journal.write()  # postings before entries: SQLite's entry trigger checks their balance
        # Core inserts on the tables: the ORM's bulk path costs more than the rows (issue 8).
        session.execute(insert(table(LogEntry)), entry_rows)
        nodes = self._merkle_nodes(session, head, [a.hash for a in appended])
        if nodes:
            session.execute(insert(table(MerkleNode)), nodes)
        last = appended[-1]
        self._keep(session, Head(last.seq + 1, last.hash, last.time))
        return appended

    @staticmethod
    def _merkle_nodes(session: Session, head: Head, leaves: list[bytes]) -> list[dict[str, Any]]:
        """The complete subtrees the new leaves complete, to store with them.

        Only the frontier of the tree so far can gain a right sibling: the last node of each level
        whose bit is set in the size. It is read in one query (the level-0 one is the head).
        """
        size = head.size
        wanted = [
            (level, (size >> level) - 1)
            for level in range(1, size.bit_length())
            if size >> level & 1
        ]
        frontier: dict[tuple[int, int], bytes] = {}
        if size & 1:
            frontier[(0, size - 1)] = head.hash
        if wanted:
            frontier.update(merkle_store.read_nodes(session.connection(), wanted))
        completed: list[dict[str, Any]] = []
        for offset, leaf in enumerate(leaves):
            seq = size + offset
            for level, index, value in merkle.parents_completed(
                seq, leaf, lambda level, index: frontier[(level, index)]
            ):
                frontier[(level, index)] = value
                completed.append({"level": level, "idx": index, "hash": value})  # column names
            frontier[(0, seq)] = leaf
        return completed
