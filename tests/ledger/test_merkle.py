"""The Merkle tree against RFC 6962's reference vectors and a naive definition, and its verifiers
against every kind of tampering."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import MemoryTree

# The eight classic test leaves of RFC 6962 implementations (certificate-transparency's
# merkle_tree_test), and the roots of their prefixes.
LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def naive_root(leaves: list[bytes]) -> bytes:
    """MTH straight from the RFC's definition, over leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return merkle.node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def _tree(size: int) -> MemoryTree:
    return MemoryTree(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size))


def test_the_empty_tree_is_the_hash_of_nothing() -> None:
    assert MemoryTree().root().hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_reference_roots_of_the_eight_classic_leaves() -> None:
    tree = MemoryTree(merkle.leaf_hash(leaf) for leaf in LEAVES)
    assert [tree.root(n).hex() for n in range(1, 9)] == ROOTS


def test_roots_match_the_definition_for_every_size_up_to_300() -> None:
    tree = _tree(300)
    for size in range(301):
        assert tree.root(size) == naive_root(tree.levels[0][:size])


def test_appending_completes_the_parents_the_levels_hold() -> None:
    tree = _tree(0)
    for n in range(70):
        leaf = merkle.leaf_hash(n.to_bytes(4, "big"))
        completed = merkle.parents_completed(
            n, leaf, lambda level, index: tree.levels[level][index]
        )
        tree.append(leaf)
        assert completed == [
            (level, index, tree.levels[level][index]) for level, index, _ in completed
        ]
        assert len(completed) == (n + 1 & -(n + 1)).bit_length() - 1


def test_proofs_use_at_most_log_n_nodes() -> None:
    tree = _tree(1_000)
    asked: list[int] = []

    def counting(wanted: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        asked.append(len(wanted))
        return tree(wanted)

    for index in (0, 1, 499, 511, 512, 998, 999):
        merkle.inclusion_proof(counting, index, 1_000)
    for old in (1, 2, 3, 511, 512, 513, 999):
        merkle.consistency_proof(counting, old, 1_000)
    assert max(asked) <= 2 * 10


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3_000), st.data())
def test_every_inclusion_proof_verifies_and_any_change_breaks_it(
    size: int, data: st.DataObject
) -> None:
    tree = _tree(size)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(tree, index, size)
    top = tree.root(size)
    leaf = tree.levels[0][index]
    assert merkle.verify_inclusion(index, size, leaf, proof, top)
    assert not merkle.verify_inclusion(index, size, leaf, proof, _flip(top, data))
    assert not merkle.verify_inclusion(index, size, _flip(leaf, data), proof, top)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        broken = [*proof]
        broken[position] = _flip(broken[position], data)
        assert not merkle.verify_inclusion(index, size, leaf, broken, top)
        assert not merkle.verify_inclusion(index, size, leaf, proof[:-1], top)
    assert not merkle.verify_inclusion(index, size, leaf, [*proof, top], top)
    other = index ^ (1 << data.draw(st.integers(0, 12)))
    if other != index and other < size:
        assert not merkle.verify_inclusion(other, size, leaf, proof, top)
    flipped = size ^ (1 << data.draw(st.integers(0, 12)))
    assert not merkle.verify_inclusion(index, flipped, leaf, proof, top) or (
        _inclusion_shape(index, size) == _inclusion_shape(index, flipped)
    )
    assert not merkle.verify_inclusion(size, size, leaf, proof, top)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 3_000), st.data())
def test_every_consistency_proof_verifies_and_any_change_breaks_it(
    size: int, data: st.DataObject
) -> None:
    tree = _tree(size)
    old = data.draw(st.integers(1, size))
    proof = merkle.consistency_proof(tree, old, size)
    old_root, new_root = tree.root(old), tree.root(size)
    assert merkle.verify_consistency(old, size, old_root, new_root, proof)
    assert not merkle.verify_consistency(old, size, _flip(old_root, data), new_root, proof)
    assert not merkle.verify_consistency(old, size, old_root, _flip(new_root, data), proof)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        broken = [*proof]
        broken[position] = _flip(broken[position], data)
        assert not merkle.verify_consistency(old, size, old_root, new_root, broken)
        assert not merkle.verify_consistency(old, size, old_root, new_root, proof[:-1])
    if old < size:
        assert not merkle.verify_consistency(old, size, old_root, new_root, [*proof, new_root])
    bit = 1 << data.draw(st.integers(0, 12))
    assert not merkle.verify_consistency(old ^ bit, size, old_root, new_root, proof)
    assert not merkle.verify_consistency(old, size ^ bit, old_root, new_root, proof) or (
        _consistency_shape(old, size) == _consistency_shape(old, size ^ bit)
    )


# A proof's hashes do not encode the tree size beyond its shape: which side each sibling is on.
# Two sizes with the same shape accept the same proof against the same root, as in every RFC 6962
# log; what binds the size to the root is the signed checkpoint that names both. Any size that
# changes the shape is refused here already.
def _inclusion_shape(index: int, size: int) -> list[bool] | None:
    if not 0 <= index < size:
        return None
    return [start < index for start, _ in merkle._ranges_for_inclusion(index, size)]


def _consistency_shape(old: int, size: int) -> list[bool] | None:
    if not 0 < old <= size:
        return None
    return [end <= old for _, end in merkle._ranges_for_consistency(old, size)]


def _flip(value: bytes, data: st.DataObject) -> bytes:
    bit = data.draw(st.integers(0, len(value) * 8 - 1))
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


def test_verifiers_refuse_malformed_input_without_raising() -> None:
    tree = _tree(10)
    top = tree.root()
    leaf = tree.levels[0][3]
    proof = merkle.inclusion_proof(tree, 3, 10)
    assert not merkle.verify_inclusion(-1, 10, leaf, proof, top)
    assert not merkle.verify_inclusion(3, 0, leaf, proof, top)
    assert not merkle.verify_inclusion(3, 10, leaf[:31], proof, top)
    assert not merkle.verify_inclusion(3, 10, leaf, [p + b"\x00" for p in proof], top)
    assert not merkle.verify_inclusion(3, 10, leaf, [b"\x00" * 32] * 100, top)
    assert not merkle.verify_inclusion(3, 1 << 70, leaf, proof, top)
    consistency = merkle.consistency_proof(tree, 4, 10)
    assert not merkle.verify_consistency(11, 10, top, top, consistency)
    assert not merkle.verify_consistency(4, 10, tree.root(4), top, [])
    assert not merkle.verify_consistency(4, 10, tree.root(4)[:5], top, consistency)
    assert merkle.verify_consistency(10, 10, top, top, [])
    assert not merkle.verify_consistency(10, 10, top, top, [top])
    assert merkle.verify_consistency(0, 10, merkle.EMPTY_ROOT, top, [])
    with pytest.raises(ValueError, match="not in a tree"):
        merkle.inclusion_proof(tree, 10, 10)
    with pytest.raises(ValueError, match="not within"):
        merkle.consistency_proof(tree, 11, 10)
