"""The CKKS operations of homomorphic Fusion on flat vectors (TenSEAL), shared by the
contribution, aggregation and decryption steps and by the benchmark."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...errors import ForgeIntegrityError
from .pack import pieces


def encrypt_vector(ctx, vec: np.ndarray, slots: int) -> list[bytes]:
    """Encrypt ``vec`` piece by piece (``slots`` values per ciphertext); serialized."""
    import tenseal as ts

    return [ts.ckks_vector(ctx, piece.tolist()).serialize() for piece in pieces(np.asarray(vec, dtype=np.float64), slots)]


def load_vectors(ctx, blobs: Sequence[bytes], what: str = "ciphertexts") -> list:
    import tenseal as ts

    out = []
    for i, b in enumerate(blobs):
        try:
            out.append(ts.ckks_vector_from(ctx, b))
        except Exception as e:  # TenSEAL raises ValueError on a bad stream
            raise ForgeIntegrityError(
                f"ciphertext {i} of {what} does not parse ({e})", fix="the file is corrupt; ask for it again", code="he.bad_ciphertexts"
            ) from None
    return out


def add_all(vector_lists: Sequence[list]) -> list:
    """Element-wise sum of several sites' ciphertext lists (public context suffices)."""
    total = list(vector_lists[0])
    for vecs in vector_lists[1:]:
        total = [a + b for a, b in zip(total, vecs, strict=True)]
    return total


def decrypt_vectors(vectors: Sequence, n: int) -> np.ndarray:
    """Decrypt (needs the secret key in the vectors' context) and cut to ``n`` values."""
    return np.concatenate([np.asarray(v.decrypt(), dtype=np.float64) for v in vectors])[:n]
