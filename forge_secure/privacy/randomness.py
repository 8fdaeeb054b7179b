"""The randomness a DP guarantee rests on: secret, cryptographically strong, and replayable
by whoever holds the secret (and nobody else).

A training run draws a fresh 256-bit secret from the operating system (:func:`fresh_secret`).
Everything random in the run comes from it through :class:`SecretStream`, a deterministic
CSPRNG: the keystream of a stream cipher keyed by SHA-256 of a domain label and the secret, so
that the Poisson sampling, the Gaussian noise and the dropout masks are independent streams.
An auditor given the secret (in the sealed replay envelope, :mod:`.replay`) re-runs the
training bit for bit; a reader of ``forge.json`` sees only the hiding commitment :func:`commit`
(SHA-256 of a domain label and the secret).

Floating-point attacks on Gaussian sampling (Mironov 2012; Jin et al. 2022, "Are we there
yet? Timing and floating-point attacks on differential privacy systems") exploit the
low-order bits of one sampled normal. We do what Opacus's secure mode does
(``opacus.optimizers.optimizer._generate_noise``, after Holohan and Braghin 2021, section 5.1):
each noise coordinate is the sum of four independent standard normals divided by two, so
that an attack has to invert a sum of several draws, and every draw comes from a CSPRNG.

Two generators (:data:`GENERATORS`), named in ``forge.json`` so that a replay uses the one the
run used:

* ``forge-drbg/2`` (the default since the noise became the largest cost of a small model's DP
  step): AES-256-CTR keystream; each normal is ``sqrt(2) erfinv(v)`` computed in float32 of
  ``v = (2j + 1) 2^-24`` for a uniform 24-bit integer ``j`` (exact in float32, symmetric, never
  0 or +-1), the precision of the float32 gradients the noise is added to and of Opacus's own
  secure mode (float32 normals); about a third of ``forge-drbg/1``'s cost (``benchmarks/bench_dp_overhead.py``).
* ``forge-drbg/1``: ChaCha20 keystream; each normal ``sqrt(2) erfinv(2u - 1)`` in float64 of a
  53-bit uniform ``u``, cast to float32 when added. Kept to replay the plugins it trained and for
  the auditor's canary draws (which must re-derive identically from an auditor's secret).

The Poisson sampling and the dropout seed take 64-bit words from either keystream (53-bit
uniforms).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from typing import Any

import numpy as np

from ..errors import ForgeValueError

SECRET_BYTES = 32
GENERATOR_V1 = "forge-drbg/1 (ChaCha20 keystream per stream, SHA-256 key derivation)"
GENERATOR_V2 = "forge-drbg/2 (AES-256-CTR keystream per stream, SHA-256 key derivation)"
#: generator name (as forge.json records it) -> its noise recipe
GENERATORS = {
    GENERATOR_V1: "sum of 4 standard normals / 2 (Opacus secure-mode recipe); each sqrt(2) erfinv(2u - 1) of a 53-bit uniform u",
    GENERATOR_V2: "sum of 4 standard normals / 2 (Opacus secure-mode recipe); each sqrt(2) erfinv(v) in float32 "
    "of v = (2j + 1) 2^-24 for a uniform 24-bit integer j; in groups of 4096 outputs, output i of a group sums words "
    "i, 4096 + i, 8192 + i, 12288 + i of the group's 16384",
}
#: what a new training run uses
GENERATOR = GENERATOR_V2
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


def is_generator(name: object) -> bool:
    """Whether ``name`` (from a forge.json, so of any JSON type) is a generator this toolkit implements."""
    return isinstance(name, str) and name in GENERATORS


def check_generator(name: object) -> str:
    """``name`` if it is a generator this toolkit implements (:data:`GENERATORS`)."""
    if not is_generator(name):
        raise ForgeValueError(
            f"unknown randomness generator {str(name)[:80]!r}",
            fix=f"this toolkit implements {', '.join(sorted(GENERATORS))}; re-train with forge train",
            code="dp.generator",
        )
    return str(name)


class SecretStream:
    """One deterministic CSPRNG stream: the keystream of ``generator``'s cipher keyed by
    SHA-256(label, secret), encrypting zeros.

    Numbers are consumed strictly in order, so drawing in blocks of any size gives the same
    sequence (a replay may draw differently sized blocks and still reproduce the run).
    """

    def __init__(self, secret: bytes, label: str, generator: str = GENERATOR):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self.generator = check_generator(generator)
        version = generator.split(" ", 1)[0].encode()  # b"forge-drbg/1" or b"forge-drbg/2": the key's domain label
        key = hashlib.sha256(version + b"\x00" + label.encode() + b"\x00" + check_secret(secret)).digest()
        if generator == GENERATOR_V1:
            self._enc = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()
        else:
            self._enc = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
        self.label = label
        self.drawn = 0  # numbers drawn so far
        self._spare: Any = None  # forge-drbg/2: outputs of the last group not yet asked for (a torch tensor)
        self._bufs: Any = None  # forge-drbg/2: the conversion buffers, kept between calls

    def words(self, n: int) -> np.ndarray:
        """``n`` uniformly random uint64 words (from either generator's keystream)."""
        n = int(n)
        self.drawn += n
        return np.frombuffer(self._enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64, copy=False)

    def uniform(self, n: int) -> np.ndarray:
        """``n`` float64 uniforms in (0, 1): 53 random bits, offset by half a unit."""
        return ((self.words(n) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    #: normals converted per pass: the keystream words and their floats stay in the CPU cache
    #: (one pass over a whole noise block of a larger model is memory-bound)
    CHUNK = 16384
    #: the same for forge-drbg/2's float32 normals (fewer, larger passes: its conversion is cheaper
    #: per number, so the fixed cost of each operation weighs more)
    CHUNK_F32 = 65536

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
        53-bit uniforms ``u`` (computed as ``(m + 1/2) 2^-52 - 1`` for the 53-bit integer ``m``).
        Not the DP noise of ``forge-drbg/2`` (:meth:`secure_normal` is)."""
        import torch

        out = torch.empty(int(n), dtype=torch.float64)
        self._normals_into(out)
        return out

    def secure_normal(self, n: int):
        """``n`` standard normals, each the sum of four draws divided by two (the generator's
        recipe, :data:`GENERATORS`): a float32 torch tensor for ``forge-drbg/2``, float64 for
        ``forge-drbg/1``."""
        if self.generator == GENERATOR_V2:
            return self._secure_normal_f32(int(n))
        return self._secure_normal_f64(int(n))

    #: forge-drbg/2 draws its normals in groups of this many outputs (4 x as many keystream words)
    GROUP = 4096

    def _secure_normal_f32(self, n: int):
        """``forge-drbg/2``. The keystream is read in groups of ``4 GROUP`` little-endian signed
        32-bit words; each word's top 24 bits are a uniform integer ``j`` in [-2^23, 2^23) (an
        arithmetic shift), ``v = j 2^-23 + 2^-24 = (2j + 1) 2^-24`` (both steps exact in float32)
        and its normal is ``sqrt(2) erfinv(v)``. Output ``i`` of a group is the sum of the normals
        of words ``i``, ``GROUP + i``, ``2 GROUP + i`` and ``3 GROUP + i`` of that group, added in
        that order, halved (computed as ``sum of four erfinv(v) / sqrt(2)``): four planes, so that
        the sums run over contiguous memory. Outputs of a group not yet asked for wait in the
        stream for the next call, so the numbers do not depend on how they are drawn."""
        import torch

        spare = self._spare
        have = 0 if spare is None else spare.numel()
        if spare is not None and n <= have:
            self._spare = spare[n:]
            return spare[:n]
        G = self.GROUP
        groups = -(-(n - have) // G)
        per = max(1, self.CHUNK_F32 // (4 * G))  # groups converted per pass (in cache)
        fresh = torch.empty(groups * G, dtype=torch.float32)
        bufs = self._bufs
        if bufs is None or bufs[0].numel() < min(per, groups) * 4 * G:  # kept: a fresh large buffer costs page faults
            words = torch.empty(min(per, groups) * 4 * G, dtype=torch.int32)
            raw = memoryview(words.numpy()).cast("B")  # type: ignore[arg-type]  # numpy declares ndarray.__buffer__ for Python >= 3.12 only
            bufs = self._bufs = (words, raw, torch.empty(words.numel(), dtype=torch.float32), memoryview(bytes(len(raw))))
        words, raw, x, zeros = bufs
        self.drawn += 4 * G * groups
        for g in range(0, groups, per):
            k = min(per, groups - g)
            w, xs = words[: 4 * G * k], x[: 4 * G * k]
            self._enc.update_into(zeros[: 16 * G * k], raw[: 16 * G * k])
            xs.copy_(w.bitwise_right_shift_(8))  # j, exactly representable
            xs.mul_(2.0**-23).add_(2.0**-24).erfinv_()
            planes = xs.view(k, 4, G)
            torch.add(planes[:, 0], planes[:, 1], out=fresh[g * G : (g + k) * G].view(k, G)).add_(planes[:, 2]).add_(planes[:, 3])
        fresh.mul_(math.sqrt(0.5))
        out = fresh if spare is None or not have else torch.cat([spare, fresh])
        self._spare = out[n:]
        return out[:n]

    def _secure_normal_f64(self, n: int):
        """``forge-drbg/1``: float64, the same numbers as ``normal(4 n).view(-1, 4).sum(dim=1) / 2``,
        computed a chunk at a time so that the four draws are summed while they are in cache."""
        import torch

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
        self._pos = self._size = 0

    def take(self, numel: int):
        """The next ``numel`` standard normals (a view of the block: float32 for ``forge-drbg/2``,
        float64 for ``forge-drbg/1``). Called once per DP step: the common case is one slice."""
        pos = self._pos
        end = pos + numel
        if end > self._size:
            self._refill(int(numel))
            pos, end = 0, numel
        self._pos = end
        return self._pending[pos:end]

    def _refill(self, numel: int) -> None:
        import torch

        rows = max(1, min(16, (1 << 18) // max(1, numel)))
        fresh = self.stream.secure_normal(rows * numel)
        rest = self._pending[self._pos :]
        self._pending = torch.cat([rest, fresh]) if rest.numel() else fresh
        self._pos, self._size = 0, self._pending.numel()
