"""Replay verification of the database: the check behind ``escrow verify``.

It assumes an attacker who could write to the database directly (triggers dropped) and so trusts
nothing but the stored entry bodies and the chain that links them. It streams the log in seq order
(constant memory per entry), and for every entry:

- the seq is the next one (no gap) and the body says the same seq (no reordering);
- SHA-256(0x00 || body) equals the stored hash, and the body's ``prev_hash`` equals the previous
  entry's hash (no edit, insertion or deletion without a broken link);
- the columns copied out for queries agree with the body;
- the postings balance per currency, and the posting rows equal the body's postings;
- replaying the postings keeps every non-negative account at or above zero.

At the end it compares the rebuilt balance of every account with the stored one, and the log head
with the last entry. Problems are reported in seq order; ``Report.ok`` is true only if there are none.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import groupby
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from ledger.accounts import AccountCode
from ledger.errors import LedgerError
from ledger.log import LEAF_PREFIX, ZERO_HASH, format_time
from ledger.models import Account, LogEntry, LogHead, Posting

_STREAM_BATCH = 5_000


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
    MALFORMED = "malformed"
    """The body is not a well-formed entry."""
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
    """An account row is missing, extra, or disagrees with the chart of accounts."""
    HEAD_MISMATCH = "head_mismatch"
    """The log head does not describe the last entry."""


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
        """The problem at the lowest seq (account-level problems without a seq come last)."""
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


def _postings_by_seq(conn: Connection) -> Iterator[tuple[int, list[Any]]]:
    rows = conn.execute(
        select(Posting.seq, Posting.account_id, Posting.amount, Posting.currency)
        .order_by(Posting.seq, Posting.id)
        .execution_options(yield_per=_STREAM_BATCH)
    )
    for seq, group in groupby(rows, key=lambda r: r.seq):
        yield seq, list(group)


def verify_database(
    engine: Engine,
    *,
    progress: Callable[[int], None] | None = None,
    max_problems: int = 100,
) -> Report:
    """Replay the whole log in one consistent snapshot and report every problem found."""
    started = time.perf_counter()
    options: dict[str, Any] = {"escrow_read_only": True}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as conn, conn.begin():
        report = _verify(conn, progress, _Findings(max_problems))
    report.seconds = time.perf_counter() - started
    return report


def count_entries(engine: Engine) -> int:
    """Number of stored entries (for a progress bar's total)."""
    with engine.connect().execution_options(escrow_read_only=True) as conn:
        return int(conn.execute(select(func.count()).select_from(LogEntry)).scalar_one())


def _verify(conn: Connection, progress: Callable[[int], None] | None, found: _Findings) -> Report:
    report = Report()
    accounts = {
        row.id: row
        for row in conn.execute(
            select(
                Account.id,
                Account.code,
                Account.kind,
                Account.currency,
                Account.non_negative,
                Account.balance,
                Account.last_seq,
            )
        )
    }
    codes = {row.id: row.code for row in accounts.values()}
    sums: dict[str, int] = defaultdict(int)  # debit-positive sum per account code
    currencies: dict[str, str] = {}
    signs: dict[str, tuple[int, bool]] = {}  # code -> (normal-side sign, non_negative)

    postings = _postings_by_seq(conn)
    pending = next(postings, None)
    expected = 0
    prev_hash = ZERO_HASH
    entries = conn.execute(
        select(
            LogEntry.seq, LogEntry.time, LogEntry.type, LogEntry.actor, LogEntry.body, LogEntry.hash
        )
        .order_by(LogEntry.seq)
        .execution_options(yield_per=_STREAM_BATCH)
    )
    rows = iter(entries)
    while True:
        try:
            row = next(rows, None)
        except (ValueError, TypeError) as error:
            # A column holding something its type cannot decode (SQLite stores anything anywhere).
            found.add(
                ProblemKind.MALFORMED,
                expected,
                f"the row after seq {expected - 1} is unreadable: {error}",
            )
            break
        if row is None:
            break
        seq = row.seq
        body, stored_hash = _as_bytes(row.body), _as_bytes(row.hash)
        if seq != expected:
            missing = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            found.add(ProblemKind.GAP, expected, f"entries {missing} are missing before seq {seq}")
            expected = seq
        expected += 1

        rows_here: list[Any] = []
        while pending is not None and pending[0] <= seq:
            if pending[0] < seq:
                found.add(
                    ProblemKind.POSTING_MISMATCH,
                    pending[0],
                    f"{len(pending[1])} posting rows belong to seq {pending[0]}, which has no entry",
                )
            else:
                rows_here = pending[1]
            pending = next(postings, None)
        report.postings += len(rows_here)

        digest = hashlib.sha256(LEAF_PREFIX + body).digest()
        if digest != stored_hash:
            found.add(
                ProblemKind.HASH_MISMATCH,
                seq,
                f"stored hash {stored_hash.hex()[:16]}… but the body hashes to {digest.hex()[:16]}…",
            )
        entry = _parse(body)
        if entry is None:
            found.add(ProblemKind.MALFORMED, seq, "body is not a well-formed log entry")
            prev_hash = digest
            continue
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
        prev_hash = digest
        if (entry["type"], entry["actor"], entry["time"]) != (
            row.type,
            row.actor,
            format_time(row.time),
        ):
            found.add(
                ProblemKind.COLUMN_MISMATCH, seq, "type, actor or time column differs from the body"
            )

        legs = entry["postings"]
        totals: Counter[str] = Counter()
        for leg in legs:
            totals[leg["currency"]] += leg["amount"]
        if (legs and len(legs) < 2) or any(totals.values()):
            found.add(
                ProblemKind.UNBALANCED, seq, f"postings sum to {dict(totals)} instead of zero"
            )
        stored_legs = sorted(
            (codes.get(r.account_id, f"<account id {r.account_id}>"), r.amount, r.currency)
            for r in rows_here
        )
        body_legs = sorted((leg["account"], leg["amount"], leg["currency"]) for leg in legs)
        if stored_legs != body_legs:
            found.add(
                ProblemKind.POSTING_MISMATCH,
                seq,
                f"posting rows {stored_legs} differ from the entry's postings {body_legs}",
            )

        for leg in legs:
            code = leg["account"]
            sums[code] += leg["amount"]
            if code not in signs:
                try:
                    cls = AccountCode.parse(code).cls
                except LedgerError:
                    found.add(ProblemKind.MALFORMED, seq, f"posting to unknown account {code!r}")
                    signs[code] = (1, False)
                else:
                    signs[code] = (cls.type.normal_side.sign, cls.non_negative)
                currencies[code] = leg["currency"]
        for leg in legs:
            sign, non_negative = signs[leg["account"]]
            if non_negative and sign * sums[leg["account"]] < 0:
                found.add(
                    ProblemKind.NEGATIVE_BALANCE,
                    seq,
                    f"{leg['account']} falls to {sign * sums[leg['account']]}",
                    leg["account"],
                )
        report.entries += 1
        if progress is not None and report.entries % _STREAM_BATCH == 0:
            progress(report.entries)

    while pending is not None:
        found.add(
            ProblemKind.POSTING_MISMATCH,
            pending[0],
            f"{len(pending[1])} posting rows belong to seq {pending[0]}, which has no entry",
        )
        pending = next(postings, None)

    _check_accounts(accounts.values(), sums, currencies, found)
    report.accounts = len(accounts)
    head = conn.execute(select(LogHead.size, LogHead.head_hash)).one()
    if (head.size, head.head_hash) != (expected, prev_hash):
        found.add(
            ProblemKind.HEAD_MISMATCH,
            head.size,
            f"log head says size {head.size} ending in {head.head_hash.hex()[:16]}…, "
            f"the entries give size {expected} ending in {prev_hash.hex()[:16]}…",
        )
    if progress is not None:
        progress(report.entries)
    found.items.sort(key=lambda p: (p.seq is None, p.seq if p.seq is not None else 0))
    report.problems = found.items
    report.problems_total = found.total
    return report


def _check_accounts(
    rows: Any, sums: dict[str, int], currencies: dict[str, str], found: _Findings
) -> None:
    seen: set[str] = set()
    for row in rows:
        seen.add(row.code)
        try:
            parsed = AccountCode.parse(row.code)
        except LedgerError:
            found.add(ProblemKind.ACCOUNT_MISMATCH, None, "malformed account code", row.code)
            continue
        cls = parsed.cls
        if parsed.kind != row.kind or cls.non_negative != row.non_negative:
            found.add(
                ProblemKind.ACCOUNT_MISMATCH,
                row.last_seq,
                "kind or non-negative flag disagrees with the chart of accounts",
                row.code,
            )
        if row.code not in sums:
            found.add(
                ProblemKind.ACCOUNT_MISMATCH, None, "account has no postings in the log", row.code
            )
            continue
        rebuilt = cls.type.normal_side.sign * sums[row.code]
        if rebuilt != row.balance:
            found.add(
                ProblemKind.BALANCE_MISMATCH,
                row.last_seq,
                f"stored balance {row.balance}, rebuilt from the log {rebuilt}",
                row.code,
            )
        if currencies.get(row.code) != row.currency:
            found.add(
                ProblemKind.ACCOUNT_MISMATCH,
                row.last_seq,
                "currency differs from its postings",
                row.code,
            )
    for code in sums.keys() - seen:
        found.add(
            ProblemKind.ACCOUNT_MISMATCH, None, "posted to in the log but has no account row", code
        )


def _as_bytes(value: object) -> bytes:
    """Column value as bytes even if someone stored text in a binary column."""
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict):
        return None
    try:
        if not (
            isinstance(entry["seq"], int)
            and isinstance(entry["prev_hash"], str)
            and isinstance(entry["type"], str)
            and isinstance(entry["actor"], str)
            and isinstance(entry["time"], str)
            and isinstance(entry["postings"], list)
            and all(
                isinstance(leg["account"], str)
                and type(leg["amount"]) is int
                and isinstance(leg["currency"], str)
                for leg in entry["postings"]
            )
        ):
            return None
    except (KeyError, TypeError):
        return None
    return entry
