"""Packing adapter tensors into CKKS ciphertexts and ciphertexts into one file.

One CKKS ciphertext holds N/2 values, so the ``B`` tensors of a plugin are flattened in a
fixed order (sorted names; the ``layout``) into one vector, cut into ``slots``-sized pieces
and encrypted piece by piece. The ciphertext file is a magic line followed by
length-prefixed TenSEAL serialisations (8-byte big-endian length, then the bytes): no pickle.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ...errors import ForgeIntegrityError
from ...fileio import atomic_output

MAGIC = b"FORGE-CKKS/1\n"
_LEN = struct.Struct(">Q")
MAX_CIPHERTEXT_BYTES = 1 << 28


def make_layout(state: Mapping[str, torch.Tensor], keys: Sequence[str]) -> list[list]:
    return [[k, list(state[k].shape)] for k in sorted(keys)]


def flatten(state: Mapping[str, torch.Tensor], layout: Sequence[Sequence]) -> np.ndarray:
    return np.concatenate([state[k].detach().double().reshape(-1).numpy() for k, _ in layout]) if layout else np.zeros(0)


def n_values(layout: Sequence[Sequence]) -> int:
    return int(sum(int(np.prod(shape)) for _, shape in layout))


def unflatten(vec: np.ndarray, layout: Sequence[Sequence], dtype=torch.float32) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for k, shape in layout:
        n = int(np.prod(shape))
        out[k] = torch.from_numpy(np.ascontiguousarray(vec[i : i + n])).reshape(shape).to(dtype)
        i += n
    return out


def pieces(vec: np.ndarray, slots: int) -> Iterator[np.ndarray]:
    for i in range(0, max(len(vec), 1), slots):
        yield vec[i : i + slots]


def write_ciphertexts(path: Path, blobs: Sequence[bytes]) -> None:
    with atomic_output(path) as f:
        f.write(MAGIC)
        for b in blobs:
            f.write(_LEN.pack(len(b)))
            f.write(b)


def read_ciphertexts(path: Path, expected: int) -> list[bytes]:
    """The serialized ciphertexts of ``path``; refuses a truncated or padded file."""
    if not path.is_file():
        raise ForgeIntegrityError(f"{path} is missing", fix="copy the whole contribution directory", code="he.missing_ciphertexts")
    out = []
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ForgeIntegrityError(
                f"{path} is not a forge ciphertext file", fix="give the directory written by `forge he encrypt`", code="he.bad_ciphertexts"
            )
        for i in range(expected):
            head = f.read(_LEN.size)
            if len(head) != _LEN.size:
                raise ForgeIntegrityError(
                    f"{path} is truncated: {i} of {expected} ciphertexts", fix="copy the contribution again", code="he.truncated"
                )
            (n,) = _LEN.unpack(head)
            if n > MAX_CIPHERTEXT_BYTES:
                raise ForgeIntegrityError(
                    f"{path}: ciphertext {i} claims {n} bytes", fix="the file is corrupt; copy it again", code="he.bad_ciphertexts"
                )
            blob = f.read(n)
            if len(blob) != n:
                raise ForgeIntegrityError(
                    f"{path} is truncated inside ciphertext {i}", fix="copy the contribution again", code="he.truncated"
                )
            out.append(blob)
        if f.read(1):
            raise ForgeIntegrityError(
                f"{path} holds more than the {expected} ciphertexts its forge.json lists",
                fix="the file was tampered with; ask the site to resend",
                code="he.bad_ciphertexts",
            )
    return out
