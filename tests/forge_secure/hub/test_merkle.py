"""RFC 9162 Merkle tree: the published test tree of RFC 6962 / certificate-transparency,
and every inclusion and consistency proof of trees up to 33 leaves, checked by the RFC's
verification algorithms; tampered proofs fail."""

from __future__ import annotations

import hashlib

import pytest

from forge_secure.hub import merkle as m

# the 8 leaves of RFC 6962's test tree (certificate-transparency's merkle test data)
LEAVES = [bytes.fromhex(x) for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
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
HASHES = [m.leaf_hash(x) for x in LEAVES]


def test_hashing_is_rfc9162():
    assert m.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert m.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert m.root([]) == hashlib.sha256(b"").digest()


def test_roots_of_the_reference_tree():
    assert [m.root(HASHES[:n]).hex() for n in range(1, 9)] == ROOTS


def test_reference_inclusion_and_consistency_proofs():
    assert [p.hex() for p in m.inclusion_proof(0, HASHES)] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    assert [p.hex() for p in m.consistency_proof(6, HASHES)] == [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ]
    assert m.consistency_proof(8, HASHES) == []


def _leaves(n: int) -> list[bytes]:
    return [m.leaf_hash(f"entry {i}".encode()) for i in range(n)]


@pytest.mark.parametrize("n", list(range(1, 34)))
def test_every_inclusion_proof_verifies_and_tampering_fails(n):
    leaves = _leaves(n)
    r = m.root(leaves)
    for i in range(n):
        proof = m.inclusion_proof(i, leaves)
        m.verify_inclusion(leaves[i], i, n, proof, r)
        with pytest.raises(m.ProofError):
            m.verify_inclusion(m.leaf_hash(b"other"), i, n, proof, r)
        if n > 1:
            with pytest.raises(m.ProofError):
                m.verify_inclusion(leaves[i], (i + 1) % n, n, proof, r)
        if proof:
            bad = list(proof)
            bad[-1] = bytes(32)
            with pytest.raises(m.ProofError):
                m.verify_inclusion(leaves[i], i, n, bad, r)
            with pytest.raises(m.ProofError):
                m.verify_inclusion(leaves[i], i, n, proof + [bytes(32)], r)
    with pytest.raises(m.ProofError):
        m.verify_inclusion(leaves[0], n, n, [], r)


@pytest.mark.parametrize("n", list(range(1, 34)))
def test_every_consistency_proof_verifies_and_forks_fail(n):
    leaves = _leaves(n)
    new_root = m.root(leaves)
    forked = list(leaves)
    for old in range(1, n + 1):
        proof = m.consistency_proof(old, leaves)
        m.verify_consistency(old, n, m.root(leaves[:old]), new_root, proof)
        # a history rewritten inside the old prefix: its old root is no longer consistent
        forked[old - 1] = m.leaf_hash(b"rewritten")
        with pytest.raises(m.ProofError) as e:
            m.verify_consistency(old, n, m.root(leaves[:old]), m.root(forked), m.consistency_proof(old, forked))
        assert e.value.code == "log.fork"
        forked[old - 1] = leaves[old - 1]
        if proof:
            with pytest.raises(m.ProofError):
                m.verify_consistency(old, n, m.root(leaves[:old]), new_root, proof[:-1])
    with pytest.raises(m.ProofError) as e:
        m.verify_consistency(n + 1, n, new_root, new_root, [])
    assert e.value.code == "log.rollback"


def test_tree_of_a_growing_log_equals_the_rfc_definitions():
    """merkle.Tree (complete subtrees remembered, O(log n) per root or proof) gives exactly the
    roots and proofs of the recursive definitions, for every size up to 140 as leaves are
    appended (so subtrees of 16, 32 and 64 leaves are remembered and reused), and the
    reference tree's roots."""
    tree = m.Tree([])
    for h in HASHES:
        tree.leaves.append(h)
    assert [tree.root(n).hex() for n in range(1, 9)] == ROOTS and tree.root(0) == m.root([])
    tree, leaves = m.Tree([]), _leaves(140)
    for n in range(1, 141):
        tree.leaves.append(leaves[n - 1])
        d = leaves[:n]
        assert tree.root(n) == m.root(d)
        assert [tree.inclusion_proof(i, n) for i in range(n)] == [m.inclusion_proof(i, d) for i in range(n)]
        assert [tree.consistency_proof(k, n) for k in range(1, n + 1)] == [m.consistency_proof(k, d) for k in range(1, n + 1)]
    assert (0, 128) in tree._memo and all(size >= m.Tree.MEMO and size & (size - 1) == 0 for _, size in tree._memo)
    assert [tree.root(k) for k in (1, 17, 64, 100)] == [m.root(leaves[:k]) for k in (1, 17, 64, 100)]  # older sizes, after growth
    for bad in (lambda: tree.root(141), lambda: tree.inclusion_proof(140, 140), lambda: tree.consistency_proof(0, 10)):
        with pytest.raises(m.ProofError):
            bad()
