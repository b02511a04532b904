"""The stored Merkle levels: written with the entries, they give the same roots and proofs as the
definition, for every size, whatever the batch sizes of the appends."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from ledger import merkle
from ledger.merkle import MemoryTree
from ledger.merkle_store import StoredTree
from ledger.models import LogEntry, MerkleNode
from ledger.runtime import Ledger
from tests.ledger.entries import append, receipt

LESSON = 15_000


def _leaves(ledger: Ledger) -> list[bytes]:
    with ledger.readers() as session:
        return [bytes(h) for h in session.scalars(select(LogEntry.hash).order_by(LogEntry.seq))]


def test_stored_roots_and_proofs_equal_the_definition(ledger: Ledger) -> None:
    for batch in (1, 2, 3, 1, 5, 8, 1, 13, 2, 7):
        append(ledger, *(receipt("inst-1", f"ctr-{i}", LESSON) for i in range(batch)))
    leaves = _leaves(ledger)
    size = len(leaves)
    assert size == 44
    memory = MemoryTree(leaves)
    with ledger.readers() as session:
        stored = StoredTree(session)
        nodes = session.scalar(select(func.count()).select_from(MerkleNode))
        assert nodes == size - size.bit_count()
        for n in range(size + 1):
            assert stored.root(n) == memory.root(n)
        for n in (1, 2, 7, 16, 31, 44):
            for index in range(n):
                proof = stored.inclusion_proof(index, n)
                assert proof == merkle.inclusion_proof(memory, index, n)
                assert merkle.verify_inclusion(index, n, leaves[index], proof, memory.root(n))
            for old in range(1, n + 1):
                proof = stored.consistency_proof(old, n)
                assert merkle.verify_consistency(old, n, memory.root(old), memory.root(n), proof)


def test_merkle_nodes_are_append_only(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", LESSON))
    for statement in (
        "UPDATE merkle_nodes SET hash = hash",
        "DELETE FROM merkle_nodes",
    ):
        with pytest.raises(DBAPIError, match="append-only"), ledger.engine.begin() as conn:
            conn.execute(text(statement))


def test_a_missing_node_is_an_error_not_a_wrong_proof(ledger: Ledger) -> None:
    append(ledger, receipt("inst-1", "ctr-1", LESSON))
    with ledger.readers() as session, pytest.raises(LookupError, match="missing"):
        StoredTree(session)([(5, 0)])
