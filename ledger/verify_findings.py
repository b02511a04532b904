"""What ``escrow verify`` reports: the kinds of problem, each finding, and the run's report.

Kept apart from ``ledger.verify`` so that the replay (``ledger.verify_replay``) and the Merkle check
(``ledger.verify_merkle``) can add findings without importing the module that drives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


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
ACCOUNT_LEVEL = frozenset(
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


class Findings:
    """Every problem counted; the first ``limit`` kept, in the order they were found."""

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
