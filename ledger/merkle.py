"""The RFC 6962 / RFC 9162 Merkle tree over the log's leaf hashes: roots, proofs, verifiers.

No maintained Python library does this well, so it is written here, small and tested hard. The
tree is defined over leaf hashes (each log entry's ``hash`` already is SHA-256(0x00 || entry)):

- the empty tree's root is SHA-256 of nothing;
- a single leaf's root is its leaf hash;
- for n > 1 leaves, with k the largest power of two smaller than n,
  MTH(D[0:n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])).

Proofs are computed from **complete subtrees**: the hash of leaves [i·2^l, (i+1)·2^l) at level l.
Every hash the RFC's recursion needs is either such a node or a right edge that decomposes into
at most log2(n) of them, folded right to left. A ``Nodes`` source answers them (from memory for an
export, from the stored levels in the database), so a proof costs O(log n) node reads whatever
the tree size, and ``needed_nodes`` lets the database fetch them all in one query.

The verifiers (RFC 9162 sections 2.1.3.2 and 2.1.4.2) live in ``ledger.verifier``, the one module
a regulator reads to check an export offline; this module re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from ledger.verifier import (
    EMPTY_ROOT,
    HASH_SIZE,
    LEAF_PREFIX,
    MAX_SIZE,
    NODE_PREFIX,
    is_hash,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "MAX_SIZE",
    "NODE_PREFIX",
    "MemoryTree",
    "Nodes",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "needed_nodes",
    "node_hash",
    "parents_completed",
    "root",
    "verify_consistency",
    "verify_inclusion",
]


def _largest_power_of_two_below(n: int) -> int:
    """The k of the RFC's split: the largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def _blocks(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees (level, index) that make up leaves [start, end), left to right.

    ``start`` must be aligned as the RFC's recursion aligns it: a multiple of the largest power of
    two not above ``end - start``. The blocks are then that range's binary decomposition.
    """
    blocks = []
    while start < end:
        level = (end - start).bit_length() - 1
        size = 1 << level
        blocks.append((level, start >> level))
        start += size
    return blocks


class Nodes(Protocol):
    """A source of complete-subtree hashes."""

    def __call__(self, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The hashes of the complete subtrees (level, index) asked for."""
        ...


def _subtree(nodes: dict[tuple[int, int], bytes], start: int, end: int) -> bytes:
    blocks = _blocks(start, end)
    value = nodes[blocks[-1]]
    for block in reversed(blocks[:-1]):
        value = node_hash(nodes[block], value)
    return value


def _ranges_for_root(size: int) -> list[tuple[int, int]]:
    return [] if size == 0 else [(0, size)]


def _ranges_for_inclusion(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes make up the audit path PATH(index, D[0:size]), leaf side first."""
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def _ranges_for_consistency(old: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes make up PROOF(old, D[0:size]) (RFC 9162 2.1.4.1), in order."""
    ranges: list[tuple[int, int]] = []
    start, end, m, whole = 0, size, old, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                ranges.append((start, end))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            whole = False
    ranges.reverse()
    return ranges


def needed_nodes(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Every complete subtree the given ranges decompose into, each once."""
    seen: dict[tuple[int, int], None] = {}
    for start, end in ranges:
        for block in _blocks(start, end):
            seen[block] = None
    return list(seen)


def _check_size(size: int) -> None:
    if not 0 <= size <= MAX_SIZE:
        raise ValueError(f"tree size {size} out of range")


def root(nodes: Nodes, size: int) -> bytes:
    """MTH(D[0:size])."""
    _check_size(size)
    if size == 0:
        return EMPTY_ROOT
    ranges = _ranges_for_root(size)
    return _subtree(nodes(needed_nodes(ranges)), 0, size)


def inclusion_proof(nodes: Nodes, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]): the audit path proving leaf ``index`` is in the tree of ``size``."""
    _check_size(size)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    ranges = _ranges_for_inclusion(index, size)
    fetched = nodes(needed_nodes(ranges))
    return [_subtree(fetched, start, end) for start, end in ranges]


def consistency_proof(nodes: Nodes, old: int, size: int) -> list[bytes]:
    """PROOF(old, D[0:size]): the tree of size ``old`` is a prefix of the tree of ``size``."""
    _check_size(size)
    if not 0 <= old <= size:
        raise ValueError(f"old size {old} is not within 0..{size}")
    if old in (0, size):
        return []
    ranges = _ranges_for_consistency(old, size)
    fetched = nodes(needed_nodes(ranges))
    return [_subtree(fetched, start, end) for start, end in ranges]


class MemoryTree:
    """Complete subtrees kept in memory, level by level, as leaves are appended.

    The offline verifier and the tests use it; the database keeps the same levels in a table.
    Appending costs amortised one node hash per leaf.
    """

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append(self, leaf: bytes) -> None:
        if not is_hash(leaf):
            raise ValueError("a leaf hash is 32 bytes")
        self.levels[0].append(leaf)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            pair = self.levels[level][-2:]
            if len(self.levels) == level + 1:
                self.levels.append([])
            self.levels[level + 1].append(node_hash(pair[0], pair[1]))
            level += 1

    def __call__(self, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {(level, index): self.levels[level][index] for level, index in wanted}

    def root(self, size: int | None = None) -> bytes:
        return root(self, self.size if size is None else size)


def parents_completed(
    size: int, leaf: bytes, nodes: Callable[[int, int], bytes]
) -> list[tuple[int, int, bytes]]:
    """The complete subtrees that appending ``leaf`` as leaf number ``size`` completes.

    ``nodes(level, index)`` returns an existing node (the left siblings). The database stores
    what this returns in the same transaction as the entry, so proofs never recompute.
    """
    completed = []
    value, index, level = leaf, size, 0
    while index & 1:
        value = node_hash(nodes(level, index - 1), value)
        index >>= 1
        level += 1
        completed.append((level, index, value))
    return completed
