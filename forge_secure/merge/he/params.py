"""CKKS parameters for homomorphic Fusion (Cheon, Kim, Kim and Song, ASIACRYPT 2017),
checked against the 128-bit classical security caps of the HE standard (Albrecht et al.
2018, as enforced by SEAL): at most 109 / 218 / 438 / 881 coefficient-modulus bits for
N = 4096 / 8192 / 16384 / 32768.

Fusion needs only encryption, additions and decryption, so the default modulus is one
60-bit data prime plus the 40-bit special prime SEAL keeps for key switching: a ciphertext
then carries 2 polynomials x N coefficients x 8 bytes for N/2 values, 32 bytes per value
(8x fp32), with errors around 1e-10 at scale 2^40 (measured in benchmarks/bench_he_fusion.py).
Values must stay below ``capacity`` = 2^(data bits - scale bits - 1) in magnitude.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ...errors import ForgeConfigError

SECURITY_CAP_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class HEParams:
    """CKKS settings; validated on construction."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40)
    scale_bits: int = 40
    max_abs: float = 1.0e4  # per-value bound a site checks on w_i * B_i before encrypting

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(int(b) for b in self.coeff_mod_bit_sizes))
        N = self.poly_modulus_degree
        if N not in SECURITY_CAP_BITS:
            raise ForgeConfigError(
                f"poly_modulus_degree {N} is not supported", fix=f"use one of {sorted(SECURITY_CAP_BITS)}", code="he.params"
            )
        bits = self.coeff_mod_bit_sizes
        if len(bits) < 2 or any(not 20 <= b <= 60 for b in bits):
            raise ForgeConfigError(
                f"coefficient modulus {list(bits)} needs at least two primes of 20-60 bits", fix="use e.g. [60, 40]", code="he.params"
            )
        if sum(bits) > SECURITY_CAP_BITS[N]:
            raise ForgeConfigError(
                f"coefficient modulus {list(bits)} has {sum(bits)} bits, above the 128-bit security cap {SECURITY_CAP_BITS[N]} for N={N}",
                fix="use fewer or smaller primes, or a larger N",
                code="he.params",
            )
        if not 20 <= self.scale_bits < self.data_bits:
            raise ForgeConfigError(
                f"scale 2^{self.scale_bits} does not fit the data modulus of {self.data_bits} bits",
                fix="use scale_bits 40 with [60, 40]",
                code="he.params",
            )
        if not (self.max_abs > 0 and self.max_abs < self.capacity):
            raise ForgeConfigError(f"max_abs {self.max_abs} must be positive and below the capacity {self.capacity}", code="he.params")

    @property
    def data_bits(self) -> int:
        """Bits of the modulus a fresh ciphertext lives in (all primes but the special one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def capacity(self) -> float:
        """Largest magnitude a decrypted value may have without wrapping around."""
        return float(2 ** (self.data_bits - self.scale_bits - 1))

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def max_contributions(self) -> int:
        return int(self.capacity // self.max_abs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["coeff_mod_bit_sizes"] = list(self.coeff_mod_bit_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HEParams:
        try:
            return cls(int(d["poly_modulus_degree"]), tuple(d["coeff_mod_bit_sizes"]), int(d["scale_bits"]), float(d["max_abs"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ForgeConfigError(
                f"CKKS parameters {d!r} are incomplete or malformed ({e})",
                fix="regenerate the keys with `forge he keygen`",
                code="he.params",
            ) from None
