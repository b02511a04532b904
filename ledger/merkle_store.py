"""The Merkle tree of the stored log: roots and proofs from the stored levels, in one query each.

Leaves are the entries' ``hash`` column; complete subtrees above them are ``merkle_nodes`` rows,
written with the entry that completes them. ``ledger.merkle`` says which (level, index) nodes a
root or proof needs; this module fetches exactly those, so the cost does not grow with the log.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from ledger import merkle
from ledger.models import LogEntry, MerkleNode


class StoredTree:
    """A ``merkle.Nodes`` source over one session's view of the database."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __call__(self, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        found: dict[tuple[int, int], bytes] = {}
        leaves = [index for level, index in wanted if level == 0]
        inner = [(level, index) for level, index in wanted if level > 0]
        if leaves:
            rows = self.session.execute(
                select(LogEntry.seq, LogEntry.hash).where(LogEntry.seq.in_(leaves))
            )
            found.update({(0, seq): bytes(value) for seq, value in rows})
        if inner:
            nodes = self.session.execute(
                select(MerkleNode.level, MerkleNode.index, MerkleNode.hash).where(
                    tuple_(MerkleNode.level, MerkleNode.index).in_(inner)
                )
            )
            found.update({(level, index): bytes(value) for level, index, value in nodes})
        missing = [node for node in wanted if node not in found]
        if missing:
            raise LookupError(f"Merkle nodes missing from the database: {missing[:5]}")
        return found

    def root(self, size: int) -> bytes:
        return merkle.root(self, size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(self, index, size)

    def consistency_proof(self, old: int, size: int) -> list[bytes]:
        return merkle.consistency_proof(self, old, size)
