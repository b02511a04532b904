"""The Merkle part of ``escrow verify``: every stored node is the hash of its two stored children.

Two ways to the same answer. ``check_nodes`` joins each node to its children in SQL and reports
every node that does not hold, and a count that differs from what the log's size implies.
``NodeStream`` proves the same thing while the replay streams the log (issue 8: the self-joins
were 15% of verify): each entry's stored hash completes the nodes above it, in order, so each
level's nodes are read in index order beside the log, and each is compared with the hash of the
stored children already seen, keeping only one pending left node per level. It only says whether
everything holds; if anything does not (a node missing, extra, out of place or wrong, a gap in
the log, a value that is not bytes), ``check_nodes`` runs to report exactly what, as before.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import aliased

from ledger import merkle
from ledger.models import LogEntry, MerkleNode
from ledger.verify_findings import Findings, ProblemKind

_NODE_PREFIX = merkle.NODE_PREFIX


def expected_nodes(entries: int) -> int:
    """Stored complete subtrees of a log of ``entries`` leaves: one per leaf, less one per set bit."""
    return entries - entries.bit_count()


def check_nodes(conn: Connection, entries: int, found: Findings) -> None:
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
    expected = expected_nodes(entries)
    if stored != expected:
        found.add(
            ProblemKind.MERKLE_MISMATCH,
            None,
            f"{stored} stored Merkle nodes, but a log of {entries} entries has {expected}",
        )


def _closed(level: int) -> Iterator[Any]:
    raise RuntimeError("the node stream is closed")


class NodeStream:
    """Checks the stored nodes level by level as the replay hands it the leaves, in seq order.

    ``level_rows(level)`` yields that level's stored ``(index, hash)`` rows in index order, from
    the first node the leaves handed in complete; a level's cursor is opened when its first node
    is due. ``holds`` turns false at the first thing that differs from an intact tree, and the
    stream then stops checking. A stream may start at leaf ``start`` > 0 (the second half of a
    parallel replay): a node whose left child lies before ``start`` is kept in ``deferred``, to
    be checked against the other half's ``pending`` nodes.
    """

    def __init__(self, level_rows: Callable[[int], Iterator[Any]], start: int = 0) -> None:
        self.level_rows = level_rows
        self.levels: list[Iterator[Any]] = []
        # Per level, the stored left node awaiting its sibling (None: not seen by this stream).
        self.pending: list[bytes | None] = [None] * 64
        self.deferred: list[tuple[int, bytes, bytes]] = []  # (left's level, right, stored parent)
        self.start = self.size = start
        self.holds = True

    def leaf(self, seq: int, value: object) -> None:
        """Take the stored hash of entry ``seq`` and check the nodes it completes."""
        if not self.holds:
            return
        if seq != self.size or type(value) is not bytes:
            self.holds = False
            return
        self.size += 1
        index, level, pending = seq, 0, self.pending
        while index & 1:
            index >>= 1
            level += 1
            if level > len(self.levels):
                self.levels.append(self.level_rows(level))
            row = next(self.levels[level - 1], None)
            if row is None or row[0] != index or type(row[1]) is not bytes:
                self.holds = False
                return
            left = pending[level - 1]
            if left is None:
                if not self.start:
                    self.holds = False
                    return
                self.deferred.append((level - 1, value, row[1]))
            elif row[1] != hashlib.sha256(_NODE_PREFIX + left + value).digest():
                self.holds = False
                return
            value = row[1]  # parents are checked against the stored children, as check_nodes does
        pending[level] = value

    def close(self) -> None:
        """Check that no level has nodes left over, and let go of the cursors."""
        self.holds = self.holds and all(next(rows, None) is None for rows in self.levels)
        self.levels = []
        self.level_rows = _closed

    def joins(self, before: NodeStream) -> bool:
        """True if this stream starts where ``before`` ended and its deferred nodes hold."""
        if self.start != before.size:
            return False
        for level, right, parent in self.deferred:
            left = before.pending[level]
            if left is None or parent != hashlib.sha256(_NODE_PREFIX + left + right).digest():
                return False
        return True


def all_nodes_hold(stored: int, *streams: NodeStream) -> bool:
    """True if the (closed) streams, in order, cover the log and every node held, and ``stored``
    (the number of nodes above the leaves) is what the log's size implies: no node elsewhere."""
    if not all(stream.holds for stream in streams):
        return False
    if any(not later.joins(earlier) for earlier, later in itertools.pairwise(streams)):
        return False
    return streams[0].start == 0 and stored == expected_nodes(streams[-1].size)
