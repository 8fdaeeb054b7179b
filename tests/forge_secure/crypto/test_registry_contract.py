"""The contracts of the crypto registries, run over every entry the way scikit-learn's
``parametrize_with_checks`` runs every estimator (a new algorithm is checked by registering it),
with the real ``cryptography`` primitives:

- :data:`SIGNATURES`: keys come from the random source only (a seed gives one key), keys and
  signatures have the registered sizes, a signature verifies, and a flipped bit anywhere (or
  another key, or a truncated input) is simply invalid;
- :data:`KEMS`: a data key wrapped to a public key unwraps with its private key, the wrapped
  size is the registered one, and another key, other ``info`` or a flipped bit are refused;
  a public key of the wrong size is refused.
"""

from __future__ import annotations

import os

import pytest
from cryptography.exceptions import InvalidTag

from forge_secure.crypto._primitives import KEMS, SIGNATURES, hpke_unwrap, hpke_wrap


def _seeded(seed: int):
    """A deterministic random source (tests only: keys in use come from os.urandom)."""
    import hashlib

    counter = [0]

    def random(n: int) -> bytes:
        counter[0] += 1
        return hashlib.shake_256(b"%d/%d" % (seed, counter[0])).digest(n)

    return random


def _flip(data: bytes, i: int) -> bytes:
    b = bytearray(data)
    b[i] ^= 1
    return bytes(b)


@pytest.mark.parametrize("name", SIGNATURES.names())
def test_every_signature_algorithm_signs_and_verifies_only_what_was_signed(name):
    alg = SIGNATURES.get(name)
    assert alg.name == name
    key, other = alg.generate(os.urandom), alg.generate(os.urandom)
    pub = alg.public_raw(key)
    assert len(pub) == alg.public_bytes
    msg = b"forge-secure contract"
    sig = alg.sign(key, msg)
    assert len(sig) == alg.signature_bytes
    assert alg.verify(pub, sig, msg)
    assert not alg.verify(pub, sig, msg + b"!")
    assert not alg.verify(pub, _flip(sig, 0), msg) and not alg.verify(pub, _flip(sig, len(sig) - 1), msg)
    assert not alg.verify(alg.public_raw(other), sig, msg)
    assert not alg.verify(pub[:-1], sig, msg) and not alg.verify(pub, sig[:-1], msg) and not alg.verify(b"", b"", msg)


@pytest.mark.parametrize("name", SIGNATURES.names())
def test_every_signature_key_is_fixed_by_its_random_bytes(name):
    alg = SIGNATURES.get(name)
    a, b, c = alg.generate(_seeded(1)), alg.generate(_seeded(1)), alg.generate(_seeded(2))
    assert alg.public_raw(a) == alg.public_raw(b) != alg.public_raw(c)


@pytest.mark.parametrize("name", KEMS.names())
def test_every_kem_wraps_a_data_key_to_its_recipient_only(name):
    kem = KEMS.get(name)
    assert kem.name == name
    parts, other = kem.generate(os.urandom), kem.generate(os.urandom)
    assert set(parts) == set(kem.components)
    pub = kem.public_raw(parts)
    data_key, info = os.urandom(32), b"forge-secure contract"
    wrapped = hpke_wrap(kem, pub, data_key, info)
    assert len(wrapped) == kem.wrapped_bytes()
    assert hpke_unwrap(kem, parts, wrapped, info) == data_key
    for bad in (
        lambda: hpke_unwrap(kem, other, wrapped, info),
        lambda: hpke_unwrap(kem, parts, wrapped, info + b"!"),
        lambda: hpke_unwrap(kem, parts, _flip(wrapped, len(wrapped) - 1), info),
    ):
        with pytest.raises(InvalidTag):
            bad()
    with pytest.raises(ValueError):
        kem.public_from_raw(pub[:-1])


@pytest.mark.parametrize("name", KEMS.names())
def test_every_kem_key_is_fixed_by_its_random_bytes(name):
    kem = KEMS.get(name)
    a, b, c = kem.generate(_seeded(1)), kem.generate(_seeded(1)), kem.generate(_seeded(2))
    assert kem.public_raw(a) == kem.public_raw(b) != kem.public_raw(c)
