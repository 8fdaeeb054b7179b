"""What a tabular record looks like to the reconstruction attacks: which columns are continuous
(and their bounds and spread, taken from the population prior) and which columns form one-hot
groups of a categorical feature.

A *logical* feature is either one continuous column or one categorical group; success is
judged per logical feature (TabLeak, Vero et al. 2023: categorical exact, continuous within a
stated fraction of the feature's standard deviation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from forge_secure.errors import ForgeDataError, ForgeValueError


@dataclass(frozen=True)
class FeatureSpec:
    """Column layout of a tabular record.

    ``categorical`` lists one-hot groups as tuples of column indices; every other column is
    continuous, bounded by ``lower``/``upper`` and with spread ``std`` (all per column, from
    the population prior). Validated on construction.
    """

    n_columns: int
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    std: tuple[float, ...]
    categorical: tuple[tuple[int, ...], ...] = ()
    names: tuple[str, ...] = ()
    continuous: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        d = self.n_columns
        if not isinstance(d, int) or d < 1:
            raise ForgeValueError(f"a record needs at least one column, got n_columns={d!r}", code="recon.spec")
        for what in ("lower", "upper", "std"):
            if len(getattr(self, what)) != d:
                raise ForgeValueError(
                    f"feature spec {what} has {len(getattr(self, what))} entries for {d} columns",
                    fix="give one value per column",
                    code="recon.spec",
                )
        seen: set[int] = set()
        for group in self.categorical:
            if len(group) < 2:
                raise ForgeValueError(
                    f"categorical group {group!r} has fewer than two columns",
                    fix="a one-hot group lists the columns of every category (at least two)",
                    code="recon.spec",
                )
            for c in group:
                if not (0 <= c < d):
                    raise ForgeValueError(f"categorical column {c} is outside 0..{d - 1}", code="recon.spec")
                if c in seen:
                    raise ForgeValueError(f"column {c} is in two categorical groups", code="recon.spec")
                seen.add(c)
        if self.names and len(self.names) != d:
            raise ForgeValueError(f"{len(self.names)} names for {d} columns", fix="give one name per column", code="recon.spec")
        cont = tuple(i for i in range(d) if i not in seen)
        for i in cont:
            if not (self.upper[i] > self.lower[i]):
                raise ForgeValueError(
                    f"column {i}: upper bound {self.upper[i]} is not above lower bound {self.lower[i]}", code="recon.spec"
                )
        object.__setattr__(self, "continuous", cont)

    @property
    def n_features(self) -> int:
        """Number of logical features (continuous columns plus categorical groups)."""
        return len(self.continuous) + len(self.categorical)

    def feature_names(self) -> list[str]:
        names = list(self.names) if self.names else [f"x{i}" for i in range(self.n_columns)]
        out = [names[i] for i in self.continuous]
        for group in self.categorical:
            out.append("/".join(names[c] for c in group))
        return out

    @classmethod
    def from_prior(
        cls,
        prior: np.ndarray,
        categorical: tuple[tuple[int, ...], ...] | list = (),
        *,
        margin: float = 0.05,
        names: tuple[str, ...] | list = (),
    ) -> FeatureSpec:
        """Bounds (the prior's range widened by ``margin`` of it on each side) and standard
        deviations from population records ``prior`` of shape (n, d)."""
        prior = np.asarray(prior, dtype=np.float64)
        if prior.ndim != 2 or len(prior) < 2:
            raise ForgeDataError(
                f"the population prior must be a table of at least two records, got shape {prior.shape}",
                fix="pass tabular population records (n, d)",
                code="recon.prior",
            )
        if not np.isfinite(prior).all():
            raise ForgeDataError("the population prior holds NaN or infinite values", fix="clean the data", code="recon.prior")
        lo, hi = prior.min(axis=0), prior.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        lo, hi = lo - margin * span, hi + margin * span
        std = prior.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        groups = tuple(tuple(int(c) for c in g) for g in categorical)
        spec = cls(prior.shape[1], tuple(map(float, lo)), tuple(map(float, hi)), tuple(map(float, std)), groups, tuple(names))
        for g in groups:
            block = prior[:, list(g)]
            if not (np.isin(block, (0.0, 1.0)).all() and np.allclose(block.sum(axis=1), 1.0)):
                raise ForgeDataError(
                    f"columns {g} are not one-hot in the prior",
                    fix="name as categorical groups only columns that hold exactly one 1 per record",
                    code="recon.prior",
                )
        return spec

    def decode(self, records: np.ndarray) -> np.ndarray:
        """Logical features (n, n_features): continuous values, then category indices."""
        records = np.asarray(records, dtype=np.float64)
        cols = [records[:, list(self.continuous)]] if self.continuous else []
        for g in self.categorical:
            cols.append(np.argmax(records[:, list(g)], axis=1)[:, None].astype(np.float64))
        return np.concatenate(cols, axis=1) if cols else np.zeros((len(records), 0))

    def project(self, records: np.ndarray) -> np.ndarray:
        """Snap categorical groups to one-hot and clip continuous columns to their bounds."""
        out = np.array(records, dtype=np.float64, copy=True)
        lo, hi = np.asarray(self.lower), np.asarray(self.upper)
        c = list(self.continuous)
        out[:, c] = np.clip(out[:, c], lo[c], hi[c])
        for g in self.categorical:
            idx = np.argmax(out[:, list(g)], axis=1)
            out[:, list(g)] = 0.0
            out[np.arange(len(out)), np.asarray(g)[idx]] = 1.0
        return out
