"""Grid expansion and the content keys of the bench's on-disk cache.

A :class:`Cell` is one point of the grid (epsilon, rank, lora, merge, attack); it runs
once per seed. Work is grouped in three stages, each keyed by a sha256 over exactly the
settings it depends on (plus the toolkit version and the data digest), so a changed
setting reruns only what it touches:

* ``train_key``  - the site plugins (and reference plugins) of (epsilon, rank, lora, seed);
* ``model_key``  - the merged model and its utility: ``train_key`` + merge method;
* ``cell_key``   - one CSV row: ``model_key`` + the attack and its settings.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from forge_secure import __version__
from forge_secure.fileio import canonical_json
from forge_secure.numbers import encode

from .config import BenchConfig


@dataclass(frozen=True, order=True)
class Cell:
    epsilon: float
    rank: int
    lora: str
    merge: str
    attack: str

    @property
    def ffa(self) -> bool:
        return self.lora == "ffa"

    def label(self) -> str:
        eps = "inf" if math.isinf(self.epsilon) else f"{self.epsilon:g}"
        return f"eps={eps} r={self.rank} {self.lora} {self.merge} {self.attack}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["epsilon"] = "inf" if math.isinf(self.epsilon) else self.epsilon
        return d


@dataclass(frozen=True, order=True)
class TrainGroup:
    """The unit of work handed to a worker: everything sharing the same site plugins."""

    epsilon: float
    rank: int
    lora: str
    seed: int


def expand_grid(config: BenchConfig) -> list[Cell]:
    """Every cell of the grid, in a stable order (epsilon, rank, lora, merge, attack)."""
    g = config.grid
    return [Cell(*t) for t in itertools.product(g.epsilon, g.rank, g.lora, g.merge, g.attack)]


def runs(config: BenchConfig) -> list[tuple[Cell, int]]:
    """(cell, seed) pairs: one CSV row each."""
    return [(c, s) for c in expand_grid(config) for s in config.seeds]


def group_runs(pairs: Iterable[tuple[Cell, int]]) -> dict[TrainGroup, list[Cell]]:
    groups: dict[TrainGroup, list[Cell]] = {}
    for cell, seed in pairs:
        groups.setdefault(TrainGroup(cell.epsilon, cell.rank, cell.lora, seed), []).append(cell)
    return dict(sorted(groups.items()))


def _plain(obj: Any) -> Any:
    """Make ``obj`` canonical-JSON-able: floats become their repr (``inf`` -> ``"inf"``)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return encode(obj, text=True)  # the one codec: repr, or "inf"
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return str(obj)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(_plain(obj))).hexdigest()


def _base(config: BenchConfig, data_digest: str) -> dict[str, Any]:
    d = config.data
    return {
        "toolkit": __version__,
        "data": {
            "digest": data_digest,
            "n_sites": d.n_sites,
            "alpha": d.alpha,
            "split_seed": d.split_seed,
            "test_fraction": d.test_fraction,
        },
        "training": asdict(config.training),
        "canaries": config.canaries.count,  # the canaries inserted change the trained plugins
    }


def train_key(config: BenchConfig, group: TrainGroup, data_digest: str) -> str:
    return digest(
        {
            "stage": "train",
            **_base(config, data_digest),
            "epsilon": group.epsilon,
            "rank": group.rank,
            "lora": group.lora,
            "seed": group.seed,
        }
    )


def reference_key(config: BenchConfig, group: TrainGroup, data_digest: str, index: int) -> str:
    """Reference plugins: the target's recipe on the index-th random half of the candidates."""
    return digest({"stage": "reference", "train": train_key(config, group, data_digest), "index": index})


def model_key(config: BenchConfig, cell: Cell, seed: int, data_digest: str) -> str:
    group = TrainGroup(cell.epsilon, cell.rank, cell.lora, seed)
    return digest({"stage": "model", "train": train_key(config, group, data_digest), "merge": cell.merge})


def cell_key(config: BenchConfig, cell: Cell, seed: int, data_digest: str) -> str:
    return digest(
        {
            "stage": "cell",
            "model": model_key(config, cell, seed, data_digest),
            "attack": cell.attack,
            "settings": config.attack_settings(cell.attack),
            "audit": asdict(config.canaries),
        }
    )
