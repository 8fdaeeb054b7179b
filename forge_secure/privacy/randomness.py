"""The randomness a DP guarantee rests on: secret, cryptographically strong, and replayable
by whoever holds the secret (and nobody else).

A training run draws a fresh 256-bit secret from the operating system (:func:`fresh_secret`).
Everything random in the run comes from it through :class:`SecretStream`, a deterministic
CSPRNG: the ChaCha20 keystream (RFC 8439, from ``cryptography``) of a key derived from the
secret and a domain label, so that the Poisson sampling, the Gaussian noise and the dropout
masks are independent streams. An auditor given the secret (in the sealed replay envelope,
:mod:`.replay`) re-runs the training bit for bit; a reader of ``forge.json`` sees only the
hiding commitment :func:`commit` (SHA-256 of a domain label and the secret).

Floating-point attacks on Gaussian sampling (Mironov 2012; Jin et al. 2022, "Are we there
yet? Timing and floating-point attacks on differential privacy systems") exploit the
low-order bits of one sampled normal. We do what Opacus's secure mode does
(``opacus.optimizers.optimizer._generate_noise``, after Holohan and Braghin 2021, section 5.1):
each noise coordinate is the sum of four independent standard normals divided by two, so
that an attack has to invert a sum of several draws. Each normal is the inverse normal CDF,
``sqrt(2) erfinv(2u - 1)`` in float64 (torch's vectorised ``erfinv``, twice as fast as
``scipy.special.ndtri`` here), of a uniform ``u`` with 53 random bits, offset by half a unit
so that it is never 0 or 1. Opacus's own secure mode draws float32 normals; these are float64.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os

import numpy as np

from ..errors import ForgeValueError

SECRET_BYTES = 32
GENERATOR = "forge-drbg/1 (ChaCha20 keystream per stream, SHA-256 key derivation)"
NOISE_RECIPE = "sum of 4 standard normals / 2 (Opacus secure-mode recipe); each sqrt(2) erfinv(2u - 1) of a 53-bit uniform u"
COMMITMENT_LABEL = b"forge-secret-commitment/1\x00"
#: the streams of one training run
SAMPLING, NOISE, DROPOUT = "poisson-sampling", "gaussian-noise", "dropout"


def fresh_secret() -> bytes:
    """256 bits from the operating system's CSPRNG."""
    return os.urandom(SECRET_BYTES)


def check_secret(secret: object) -> bytes:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_BYTES:
        raise ForgeValueError(
            f"a randomness secret must be {SECRET_BYTES} bytes, got {type(secret).__name__}"
            + (f" of {len(secret)} bytes" if isinstance(secret, (bytes, bytearray)) else ""),
            fix="leave the secret out (a fresh one is drawn from the OS) or pass 32 bytes",
            code="dp.secret",
        )
    return bytes(secret)


def commit(secret: bytes) -> str:
    """The hiding commitment to ``secret`` that forge.json publishes."""
    return hashlib.sha256(COMMITMENT_LABEL + check_secret(secret)).hexdigest()


def keyed_digest(secret: bytes, label: str, value: bytes | str) -> str:
    """HMAC-SHA256 of ``value`` under a key derived from ``secret``: a commitment to a low-entropy
    value (a data digest, a seed) that nobody without the secret can test guesses against."""
    if isinstance(value, str):
        value = value.encode()
    key = hashlib.sha256(b"forge-keyed-digest/1\x00" + label.encode() + b"\x00" + check_secret(secret)).digest()
    return hmac.new(key, value, hashlib.sha256).hexdigest()


def seed_from_label(label: str, seed: int) -> bytes:
    """A secret derived from public values: only for an auditor's or researcher's own
    reproducible experiments (reference models, benchmarks), never for a released plugin."""
    return hashlib.sha256(f"forge-public-seed/1|{label}|{int(seed)}".encode()).digest()


class SecretStream:
    """One deterministic CSPRNG stream: ChaCha20 keyed by SHA-256(label, secret), encrypting zeros.

    Numbers are consumed strictly in order, so drawing in blocks of any size gives the same
    sequence (a replay may draw differently sized blocks and still reproduce the run).
    """

    def __init__(self, secret: bytes, label: str):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

        key = hashlib.sha256(b"forge-drbg/1\x00" + label.encode() + b"\x00" + check_secret(secret)).digest()
        self._enc = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()
        self.label = label
        self.drawn = 0  # 64-bit words drawn so far

    def words(self, n: int) -> np.ndarray:
        """``n`` uniformly random uint64 words."""
        n = int(n)
        self.drawn += n
        return np.frombuffer(self._enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64, copy=False)

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms in (0, 1): 53 random bits, offset by half a unit."""
        return ((self.words(n) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    #: normals converted per pass: the keystream words and their floats stay in the CPU cache
    #: (one pass over a whole noise block of a larger model is memory-bound)
    CHUNK = 16384

    def _normals_into(self, out) -> None:
        """Fill the float64 tensor ``out`` with the next ``out.numel()`` standard normals, chunk
        by chunk (the keystream is consumed in order, so the chunking changes
        no number)."""
        import torch

        n = out.numel()
        self.drawn += n
        c = min(self.CHUNK, n)
        if c == 0:
            return
        words = torch.empty(c, dtype=torch.int64)
        raw = memoryview(words.numpy()).cast("B")  # type: ignore[arg-type]  # numpy declares ndarray.__buffer__ for Python >= 3.12 only
        zeros = bytes(8 * c)
        for s in range(0, n, c):
            k = min(c, n - s)
            w = words[:k]
            self._enc.update_into(zeros[: 8 * k] if k < c else zeros, raw[: 8 * k] if k < c else raw)
            x = out[s : s + k]
            x.copy_(w.bitwise_and_((1 << 53) - 1))  # the 53-bit integer m, exactly representable
            x.mul_(2.0**-52).add_(2.0**-53 - 1.0)  # 2u - 1, exactly: both steps are exact in float64
            x.erfinv_().mul_(math.sqrt(2.0))

    def normal(self, n: int):
        """``n`` standard normals as a float64 torch tensor: ``sqrt(2) erfinv(2u - 1)`` of
        53-bit uniforms ``u`` (computed as ``(m + 1/2) 2^-52 - 1`` for the 53-bit integer ``m``)."""
        import torch

        out = torch.empty(int(n), dtype=torch.float64)
        self._normals_into(out)
        return out

    def secure_normal(self, n: int):
        """``n`` standard normals (float64 torch tensor), each the sum of four draws divided by two
        (the same numbers as ``normal(4 n).view(-1, 4).sum(dim=1) / 2``, computed a chunk at a
        time so that the four draws are summed while they are in cache)."""
        import torch

        n = int(n)
        out = torch.empty(n, dtype=torch.float64)
        rows = max(1, self.CHUNK // 4)
        buf = torch.empty(4 * min(rows, n), dtype=torch.float64)
        for s in range(0, n, rows):
            k = min(rows, n - s)
            x = buf[: 4 * k]
            self._normals_into(x)
            torch.sum(x.view(k, 4), dim=1, out=out[s : s + k])
        return out.mul_(0.5)

    def torch_seed(self) -> int:
        """A 63-bit seed for a torch generator (dropout masks)."""
        return int(self.words(1)[0] >> np.uint64(1))


class PoissonSampler:
    """Poisson sampling for DP-SGD (every record independently with probability ``q`` at every
    step; Opacus's ``UniformWithReplacementSampler`` draws the same distribution) from a
    :class:`SecretStream`. Iterating yields one epoch of ``steps`` index lists."""

    def __init__(self, stream: SecretStream, n: int, q: float, steps: int):
        self.stream, self.n, self.q, self.steps = stream, int(n), float(q), int(steps)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        u = self.stream.uniform(self.n * self.steps).reshape(self.steps, self.n)
        for row in u < self.q:
            yield np.flatnonzero(row).tolist()


class NoiseSource:
    """Standard normal noise for DP-SGD from a :class:`SecretStream`, drawn ahead in blocks of
    up to 16 steps (one keystream call per block instead of one per step). The stream is
    consumed strictly in order, so the numbers do not depend on the block size."""

    def __init__(self, stream: SecretStream):
        import torch

        self.stream = stream
        self._pending = torch.empty(0, dtype=torch.float64)
        self._pos = 0

    def take(self, numel: int):
        """The next ``numel`` standard normals (a float64 torch tensor, a view of the block)."""
        import torch

        numel = int(numel)
        if self._pending.numel() - self._pos < numel:
            rows = max(1, min(16, (1 << 18) // max(1, numel)))
            fresh = self.stream.secure_normal(rows * numel)
            rest = self._pending[self._pos :]
            self._pending = torch.cat([rest, fresh]) if rest.numel() else fresh
            self._pos = 0
        out = self._pending[self._pos : self._pos + numel]
        self._pos += numel
        return out
