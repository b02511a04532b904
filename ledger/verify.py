"""Replay verification of the database: the check behind ``escrow verify``.

It assumes an attacker who could write to the database directly (triggers dropped, any value in any
column) and so trusts nothing but the stored entry bodies and the chain that links them. It streams
the log in seq order, in one consistent snapshot, and for every entry checks that:

- the seq is the next one (no gap), and the body names the same seq (no reordering);
- SHA-256(0x00 || body) equals the stored hash, and the body's ``prev_hash`` equals the previous
  entry's hash (no edit, insertion or deletion without a broken link);
- its time is not earlier than the previous entry's, and the query columns agree with the body;
- the postings balance per currency, and the posting rows equal the body's postings;
- replaying the postings keeps every non-negative account at or above zero.

At the end it compares every account row (balance, currency, first and last seq) with the account
rebuilt from the log, and checks the escrow invariants 3-5 of DESIGN.md (``ledger.escrow.invariants``):
each contract adds up to its prepayment, each escrow account equals what it owes, and money left
escrow only the lawful ways. Problems are reported in seq order; ``Report.ok`` is true only if there are
none. Data that cannot even be decoded is reported as a problem, never raised.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session, aliased

from ledger import merkle, rotation, verifier
from ledger.accounts import AccountCode
from ledger.checkpoints import SignedCheckpoint
from ledger.errors import LedgerError
from ledger.escrow.invariants import check_all
from ledger.log import LEAF_PREFIX, ZERO_HASH, format_time
from ledger.merkle_store import StoredTree
from ledger.models import Account, LogEntry, MerkleNode, Posting

_STREAM_BATCH = 5_000
# What decoding or comparing hostile column values can raise; reported, never propagated.
_DATA_ERRORS = (ValueError, TypeError, LookupError, ArithmeticError, AttributeError)


class ProblemKind(StrEnum):
    """What is wrong; each member names one way history can have been altered."""

    GAP = "gap"
    """Seqs are missing: entries were deleted."""
    OUT_OF_ORDER = "out_of_order"
    """A row holds an entry whose body names another seq: entries were swapped or renumbered."""
    HASH_MISMATCH = "hash_mismatch"
    """The stored hash is not SHA-256(0x00 || body): the body (or the hash) was edited."""
    BROKEN_LINK = "broken_link"
    """The entry's prev_hash is not the previous entry's hash: something before it changed."""
    TIME_BACKWARDS = "time_backwards"
    """The entry is dated before the entry preceding it."""
    MALFORMED = "malformed"
    """The body is not a well-formed entry, or stored data cannot be decoded."""
    COLUMN_MISMATCH = "column_mismatch"
    """A query column (type, actor, time) disagrees with the body."""
    UNBALANCED = "unbalanced"
    """The entry's postings do not sum to zero per currency."""
    POSTING_MISMATCH = "posting_mismatch"
    """The posting rows differ from the postings in the entry body."""
    NEGATIVE_BALANCE = "negative_balance"
    """Replaying the log takes an account that may not go negative below zero."""
    BALANCE_MISMATCH = "balance_mismatch"
    """A stored balance differs from the balance rebuilt from the log."""
    ACCOUNT_MISMATCH = "account_mismatch"
    """An account row is missing, extra, or disagrees with the account rebuilt from the log."""
    INVARIANT = "invariant"
    """An escrow invariant of DESIGN.md (3-5) fails: a contract, an institution or an outflow."""
    MERKLE_MISMATCH = "merkle_mismatch"
    """A stored Merkle node is not the hash of its two children, or nodes are missing or extra."""
    CHECKPOINT = "checkpoint"
    """A stored checkpoint is malformed, not signed by the log key, beyond the log, or its root
    is not the root of the log's first ``size`` entries."""


# Problems that are usually consequences of an altered entry, listed after the entry problems.
# An edited entry leaves both balances and the Merkle nodes above it wrong.
_ACCOUNT_LEVEL = frozenset(
    {
        ProblemKind.BALANCE_MISMATCH,
        ProblemKind.ACCOUNT_MISMATCH,
        ProblemKind.INVARIANT,
        ProblemKind.MERKLE_MISMATCH,
    }
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (seq and/or account), what kind, and a sentence for a human."""

    kind: ProblemKind
    seq: int | None
    detail: str
    account: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "seq": self.seq,
            "account": self.account,
            "detail": self.detail,
        }


@dataclass
class Report:
    """The outcome of a verification run."""

    entries: int = 0
    postings: int = 0
    accounts: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    problems_total: int = 0

    @property
    def ok(self) -> bool:
        return self.problems_total == 0

    @property
    def first(self) -> Problem | None:
        """The entry problem at the lowest seq, else the first account problem."""
        return self.problems[0] if self.problems else None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "postings": self.postings,
            "accounts": self.accounts,
            "seconds": round(self.seconds, 3),
            "problems_total": self.problems_total,
            "first_problem": self.first.to_json() if self.first else None,
            "problems": [p.to_json() for p in self.problems],
        }


class _Findings:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[Problem] = []
        self.total = 0

    def add(
        self, kind: ProblemKind, seq: int | None, detail: str, account: str | None = None
    ) -> None:
        self.total += 1
        if len(self.items) < self.limit:
            self.items.append(Problem(kind, seq, detail, account))


@dataclass(slots=True)
class _Rebuilt:
    """An account as the replay of the log builds it."""

    sign: int
    non_negative: bool
    currency: str
    opened_seq: int
    last_seq: int
    total: int = 0  # debit-positive sum of its postings

    @property
    def balance(self) -> int:
        return self.sign * self.total


def verify_database(
    engine: Engine,
    *,
    progress: Callable[[int], None] | None = None,
    max_problems: int = 100,
    invariants: bool = True,
) -> Report:
    """Replay the whole log in one consistent snapshot and report every problem found.

    ``invariants=False`` skips the escrow invariants 3-5, for logs that hold bare journal entries
    rather than escrow operations (the journal's own tests).
    """
    started = time.perf_counter()
    options: dict[str, Any] = {"escrow_read_only": True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    report = Report()
    found = _Findings(max_problems)
    with engine.connect().execution_options(**options) as conn, conn.begin():
        try:
            _Replay(conn, report, found, progress).run()
            _check_merkle(conn, report.entries, found)
            _check_checkpoints(conn, report.entries, found)
            if invariants:
                _check_invariants(conn, found)
        except _DATA_ERRORS as error:
            found.add(
                ProblemKind.MALFORMED,
                report.entries,
                f"verification stopped: stored data after seq {report.entries - 1} "
                f"cannot be decoded ({type(error).__name__}: {error})",
            )
    # Entry problems first, by seq: they say where history was altered. Account problems follow;
    # they are usually the consequence (a deleted entry leaves balances that no longer add up).
    found.items.sort(key=lambda p: (p.kind in _ACCOUNT_LEVEL, p.seq is None, p.seq or 0))
    report.problems = found.items
    report.problems_total = found.total
    report.seconds = time.perf_counter() - started
    return report


def _check_merkle(conn: Connection, entries: int, found: _Findings) -> None:
    """Every stored complete subtree is the hash of its two children, and there are as many as
    the log's size implies (one per leaf, less one per set bit of the size).

    With the leaves checked by the replay, this proves every node by induction, streaming and in
    constant memory: level 1 against the entries' hashes, each higher level against the one below.
    """
    parent, left, right = (aliased(MerkleNode) for _ in range(3))
    left_leaf, right_leaf = aliased(LogEntry), aliased(LogEntry)
    first = (
        select(parent.level, parent.index, parent.hash, left_leaf.hash, right_leaf.hash)
        .outerjoin(left_leaf, left_leaf.seq == parent.index * 2)
        .outerjoin(right_leaf, right_leaf.seq == parent.index * 2 + 1)
        .where(parent.level == 1)
    )
    higher = (
        select(parent.level, parent.index, parent.hash, left.hash, right.hash)
        .outerjoin(left, (left.level == parent.level - 1) & (left.index == parent.index * 2))
        .outerjoin(right, (right.level == parent.level - 1) & (right.index == parent.index * 2 + 1))
        .where(parent.level > 1)
    )
    stored = 0
    for query in (first, higher):
        for level, index, value, left_hash, right_hash in conn.execute(
            query.execution_options(yield_per=10_000)
        ):
            stored += 1
            seq = index << level
            if left_hash is None or right_hash is None:
                found.add(
                    ProblemKind.MERKLE_MISMATCH,
                    seq,
                    f"Merkle node ({level}, {index}) has no children: leaves {seq}.."
                    f"{seq + (1 << level) - 1} are not all in the log",
                )
            elif merkle.node_hash(bytes(left_hash), bytes(right_hash)) != bytes(value):
                found.add(
                    ProblemKind.MERKLE_MISMATCH,
                    seq,
                    f"Merkle node ({level}, {index}) over leaves {seq}..{seq + (1 << level) - 1} "
                    "is not the hash of its children",
                )
    expected = entries - entries.bit_count()
    if stored != expected:
        found.add(
            ProblemKind.MERKLE_MISMATCH,
            None,
            f"{stored} stored Merkle nodes, but a log of {entries} entries has {expected}",
        )


def _check_checkpoints(conn: Connection, entries: int, found: _Findings) -> None:
    """Every stored checkpoint is a well-formed note signed by a log key valid when it was issued
    (the genesis key until the overlap of the rotation that retires it ends, a rotated-in key for
    checkpoints covering its rotation entry: ``ledger.rotation``), within the log, with the root
    of the log's first ``size`` entries; and each is consistent with the one before (checked with
    a consistency proof, as a witness would). Rotation entries that do not hold (not announced by
    the old key, say) are reported, and the keys they name are not trusted."""
    with Session(bind=conn) as session:
        try:
            keys = rotation.chain(session)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            found.add(ProblemKind.CHECKPOINT, 0, f"the genesis entry's key is unusable: {error}")
            return
        if keys is None:
            return
        for seq, reason in keys.problems:
            found.add(ProblemKind.CHECKPOINT, seq, reason)
        tree = StoredTree(session)
        previous: tuple[int, bytes] | None = None
        for row in session.scalars(select(SignedCheckpoint).order_by(SignedCheckpoint.id)):
            where = f"checkpoint {row.id} (size {row.size})"
            try:
                note = verifier.Note.parse(row.note)
                body = verifier.Checkpoint.parse(note.body)
            except ValueError as error:
                found.add(ProblemKind.CHECKPOINT, None, f"{where} is malformed: {error}")
                continue
            valid, stale = rotation.signers(keys, note, row.size, row.issued_at)
            if not valid:
                found.add(
                    ProblemKind.CHECKPOINT,
                    None,
                    f"{where} is not signed by the log key"
                    + (
                        f" valid when it was issued (only by {stale[0].encode()}, retired then)"
                        if stale
                        else ""
                    ),
                )
            if (body.origin, body.size, body.root) != (keys.origin, row.size, row.root):
                found.add(ProblemKind.CHECKPOINT, None, f"{where}: its note and its row differ")
            if body.size > entries:
                found.add(
                    ProblemKind.CHECKPOINT, None, f"{where} is beyond the log's {entries} entries"
                )
                continue
            try:
                recomputed = tree.root(body.size)
            except LookupError as error:
                found.add(ProblemKind.CHECKPOINT, None, f"{where}: {error}")
                continue
            if recomputed != body.root:
                found.add(
                    ProblemKind.CHECKPOINT,
                    None,
                    f"{where} signs a root that is not the root of the log's first "
                    f"{body.size} entries",
                )
            elif previous is not None and previous[0] <= body.size:
                proof = tree.consistency_proof(previous[0], body.size)
                if not verifier.verify_consistency(
                    previous[0], body.size, previous[1], body.root, proof
                ):
                    found.add(
                        ProblemKind.CHECKPOINT, None, f"{where} is not consistent with the last"
                    )
            if recomputed == body.root:
                previous = (body.size, body.root)


def _check_invariants(conn: Connection, found: _Findings) -> None:
    with Session(bind=conn) as session:
        for problem in check_all(session):
            found.add(ProblemKind.INVARIANT, None, problem)


def count_entries(engine: Engine) -> int:
    """Number of stored entries (for a progress bar's total)."""
    with engine.connect().execution_options(escrow_read_only=True) as conn:
        return int(conn.execute(select(func.count()).select_from(LogEntry)).scalar_one())


class _Replay:
    def __init__(
        self,
        conn: Connection,
        report: Report,
        found: _Findings,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.conn = conn
        self.report = report
        self.found = found
        self.progress = progress
        self.codes: dict[int, str] = {}
        self.rebuilt: dict[str, _Rebuilt] = {}

    def run(self) -> None:
        account_rows = list(
            self.conn.execute(
                select(
                    Account.id,
                    Account.code,
                    Account.currency,
                    Account.balance,
                    Account.opened_seq,
                    Account.last_seq,
                )
            )
        )
        self.codes = {row.id: row.code for row in account_rows}
        self.report.accounts = len(account_rows)
        postings = self._postings_by_seq()
        pending = next(postings, None)
        expected, prev_hash, prev_time = 0, ZERO_HASH, ""
        entries = self.conn.execute(
            select(
                LogEntry.seq,
                LogEntry.time,
                LogEntry.type,
                LogEntry.actor,
                LogEntry.body,
                LogEntry.hash,
            )
            .order_by(LogEntry.seq)
            .execution_options(yield_per=_STREAM_BATCH)
        )
        for row in entries:
            seq = row.seq
            if seq != expected:
                missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                self.found.add(
                    ProblemKind.GAP, expected, f"entries {missing} are missing before seq {seq}"
                )
            expected = seq + 1
            stored_legs: list[Any] = []
            while pending is not None and pending[0] <= seq:
                if pending[0] < seq:
                    self._orphans(*pending)
                else:
                    stored_legs = pending[1]
                pending = next(postings, None)
            self.report.postings += len(stored_legs)
            self.report.entries += 1
            prev_hash, prev_time = self._entry(row, stored_legs, prev_hash, prev_time)
            if self.progress is not None and self.report.entries % _STREAM_BATCH == 0:
                self.progress(self.report.entries)
        while pending is not None:
            self._orphans(*pending)
            pending = next(postings, None)
        self._accounts(account_rows)
        if self.progress is not None:
            self.progress(self.report.entries)

    def _postings_by_seq(self) -> Iterator[tuple[int, list[Any]]]:
        rows = self.conn.execute(
            select(Posting.seq, Posting.account_id, Posting.amount, Posting.currency)
            .order_by(Posting.seq, Posting.id)
            .execution_options(yield_per=_STREAM_BATCH)
        )
        for seq, group in groupby(rows, key=lambda r: r.seq):
            yield seq, list(group)

    def _orphans(self, seq: int, rows: list[Any]) -> None:
        self.found.add(
            ProblemKind.POSTING_MISMATCH,
            seq,
            f"{len(rows)} posting rows belong to seq {seq}, which has no entry",
        )

    def _entry(
        self, row: Any, stored_legs: list[Any], prev_hash: bytes, prev_time: str
    ) -> tuple[bytes, str]:
        """Check one entry; return its hash and time for the next entry's checks."""
        seq, found = row.seq, self.found
        body, stored_hash = _as_bytes(row.body), _as_bytes(row.hash)
        digest = hashlib.sha256(LEAF_PREFIX + body).digest()
        if digest != stored_hash:
            found.add(
                ProblemKind.HASH_MISMATCH,
                seq,
                f"stored hash {stored_hash.hex()[:16]}… but the body hashes to "
                f"{digest.hex()[:16]}…",
            )
        entry = _parse(body)
        if entry is None:
            found.add(ProblemKind.MALFORMED, seq, "body is not a well-formed log entry")
            return digest, prev_time
        if entry["seq"] != seq:
            found.add(
                ProblemKind.OUT_OF_ORDER,
                seq,
                f"the entry stored at seq {seq} says it is entry {entry['seq']}: "
                "entries were reordered, renumbered or inserted",
            )
        if entry["prev_hash"] != prev_hash.hex():
            found.add(
                ProblemKind.BROKEN_LINK,
                seq,
                f"prev_hash {entry['prev_hash'][:16]}… does not match the previous entry's hash "
                f"{prev_hash.hex()[:16]}…",
            )
        if entry["time"] < prev_time:  # fixed-width UTC timestamps compare as text
            found.add(
                ProblemKind.TIME_BACKWARDS,
                seq,
                f"dated {entry['time']}, before the previous entry's {prev_time}",
            )
        if (entry["type"], entry["actor"], entry["time"]) != (
            row.type,
            row.actor,
            format_time(row.time),
        ):
            found.add(
                ProblemKind.COLUMN_MISMATCH, seq, "type, actor or time column differs from the body"
            )
        self._postings(seq, entry["postings"], stored_legs)
        return digest, max(prev_time, entry["time"])

    def _postings(self, seq: int, legs: list[dict[str, Any]], stored_legs: list[Any]) -> None:
        found = self.found
        totals: Counter[str] = Counter()
        for leg in legs:
            totals[leg["currency"]] += leg["amount"]
        if (
            (legs and len(legs) < 2)
            or any(totals.values())
            or any(not leg["amount"] for leg in legs)
        ):
            found.add(
                ProblemKind.UNBALANCED, seq, f"postings sum to {dict(totals)} instead of zero"
            )
        stored = sorted(
            (self.codes.get(r.account_id, f"<account id {r.account_id}>"), r.amount, r.currency)
            for r in stored_legs
        )
        in_body = sorted((leg["account"], leg["amount"], leg["currency"]) for leg in legs)
        if stored != in_body:
            found.add(
                ProblemKind.POSTING_MISMATCH,
                seq,
                f"posting rows {stored} differ from the entry's postings {in_body}",
            )
        touched: list[tuple[str, _Rebuilt]] = []
        for leg in legs:
            code = leg["account"]
            account = self.rebuilt.get(code)
            if account is None:
                try:
                    chart = AccountCode.parse(code).cls
                except LedgerError:
                    found.add(ProblemKind.MALFORMED, seq, f"posting to unknown account {code!r}")
                    continue
                account = _Rebuilt(
                    chart.type.normal_side.sign, chart.non_negative, leg["currency"], seq, seq
                )
                self.rebuilt[code] = account
            account.total += leg["amount"]
            account.last_seq = seq
            touched.append((code, account))
        for code, account in touched:
            if account.non_negative and account.balance < 0:
                found.add(
                    ProblemKind.NEGATIVE_BALANCE, seq, f"{code} falls to {account.balance}", code
                )

    def _accounts(self, rows: list[Any]) -> None:
        found = self.found
        seen: set[str] = set()
        for row in rows:
            seen.add(row.code)
            account = self.rebuilt.get(row.code)
            if account is None:
                found.add(
                    ProblemKind.ACCOUNT_MISMATCH,
                    None,
                    "an account row with no postings in the log",
                    row.code,
                )
                continue
            if row.balance != account.balance:
                found.add(
                    ProblemKind.BALANCE_MISMATCH,
                    account.last_seq,
                    f"stored balance {row.balance}, rebuilt from the log {account.balance}",
                    row.code,
                )
            stored = (row.currency, row.opened_seq, row.last_seq)
            rebuilt = (account.currency, account.opened_seq, account.last_seq)
            if stored != rebuilt:
                found.add(
                    ProblemKind.ACCOUNT_MISMATCH,
                    account.last_seq,
                    f"stored (currency, opened_seq, last_seq) {stored}, rebuilt {rebuilt}",
                    row.code,
                )
        for code in self.rebuilt.keys() - seen:
            found.add(
                ProblemKind.ACCOUNT_MISMATCH,
                self.rebuilt[code].opened_seq,
                "posted to in the log but has no account row",
                code,
            )


def _as_bytes(value: object) -> bytes:
    """Column value as bytes even if someone stored text in a binary column."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _parse(body: bytes) -> dict[str, Any] | None:
    """The entry as a dict, or None unless every field has the type the writer gives it."""
    try:
        entry = json.loads(body)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    try:
        well_formed = (
            type(entry["seq"]) is int
            and isinstance(entry["prev_hash"], str)
            and isinstance(entry["type"], str)
            and isinstance(entry["actor"], str)
            and isinstance(entry["time"], str)
            and isinstance(entry["postings"], list)
            and all(
                isinstance(leg, dict)
                and isinstance(leg["account"], str)
                and type(leg["amount"]) is int
                and isinstance(leg["currency"], str)
                for leg in entry["postings"]
            )
        )
    except KeyError:
        return None
    return entry if well_formed else None
