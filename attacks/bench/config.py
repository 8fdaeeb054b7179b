"""The bench configuration: one TOML file, validated into frozen dataclasses before any
work starts.

A configuration has six tables (every key optional except where noted; unknown keys and
unknown tables are refused, so a typo never silently falls back to a default)::

    [bench]     seeds = [0, 1]        # one CSV row per cell and seed
                confidence = 0.95     # for the t-intervals across seeds
    [data]      source = "bundled"    # or a CSV / .npz path (CSV needs label_column)
                label_column = "..."  # CSV only
                n_sites = 3           # simulated hospitals
                alpha = 0.5           # Dirichlet label skew of the site split
                split_seed = 0        # seed of the site split and membership coin flips
                test_fraction = 0.3   # user data only: share of each site kept as test set
    [training]  base, epochs, batch_size, lr, optimizer, delta, max_grad_norm, accountant, alpha_scale
    [canaries]  count = 64            # auditor-style canaries drawn per site (half inserted); 0 = none
                k_plus_fraction = 0.25, k_minus_fraction = 0.25   # one-run audit guesses
                p_target = 0.05       # 1 - confidence of the one-run lower bound
    [grid]      epsilon = [1, 8, "inf"]        # "inf" = no DP
                rank = [4]
                lora = ["lora", "ffa"]          # plain LoRA / FFA-LoRA (A frozen)
                merge = ["none", "mixture", <each Fusion method>]
                attack = ["lira", "rmia", "recon"]
    [attack.<name>]   settings of one attack (e.g. references = 4)
    [run]       workers = 2, ray = ""   # ray = "auto" or a cluster address

A cell is one point of the grid (epsilon, rank, lora, merge, attack); each cell runs once
per seed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge_secure.errors import ForgeConfigError, ForgeFileError

from . import registries

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

BUNDLED_NAME = "default"
#: data sources shipped with the toolkit: breast cancer (tabular, 2 classes) and the 8x8 digits
#: (images, 10 classes, for the ``vit-tiny`` base)
BUNDLED_SOURCES = ("bundled", "bundled-digits")
DEFAULT_CONFIG = Path(__file__).resolve().parent / "default_bench.toml"
LORA_KINDS = ("lora", "ffa")


def _err(where: str, message: str, fix: str, code: str = "bench.config") -> ForgeConfigError:
    return ForgeConfigError(f"bench config [{where}]: {message}", fix=fix, code=code)


def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise _err(where, f"unknown key {key!r}", f"use one of: {', '.join(sorted(allowed))}", "bench.config.unknown_key")


def _int(value: Any, where: str, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _err(where, f"{name} must be an integer >= {minimum}, got {value!r}", f"set {name} to an integer >= {minimum}")
    return value


def _float(value: Any, where: str, name: str, low: float = 0.0, high: float = math.inf, low_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise _err(where, f"{name} must be a number, got {value!r}", f"set {name} to a number")
    v = float(value)
    if (v <= low if low_open else v < low) or v > high:
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise _err(where, f"{name} must lie in {bound}, got {value!r}", f"set {name} inside {bound}")
    return v


def _str(value: Any, where: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _err(where, f"{name} must be a non-empty string, got {value!r}", f"set {name} to a string")
    return value


def parse_epsilon(value: Any, where: str = "grid") -> float:
    """A grid epsilon: a positive number, or ``"inf"`` (training without DP)."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity"):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) > 0 or math.isnan(float(value)):
        raise _err(where, f'epsilon must be a positive number or "inf", got {value!r}', 'write e.g. epsilon = [1, 8, "inf"]')
    return float(value)


def _unique(values: list, where: str, name: str) -> tuple:
    seen: list = []
    for v in values:
        if v in seen:
            raise _err(where, f"{name} lists {v!r} twice", f"remove the duplicate from {name}")
        seen.append(v)
    return tuple(seen)


@dataclass(frozen=True)
class DataSpec:
    source: str = "bundled"
    label_column: str | None = None
    n_sites: int = 3
    alpha: float = 0.5
    split_seed: int = 0
    test_fraction: float = 0.3

    def __post_init__(self) -> None:
        _str(self.source, "data", "source")
        _int(self.n_sites, "data", "n_sites", 1)
        _float(self.alpha, "data", "alpha")
        _int(self.split_seed, "data", "split_seed")
        _float(self.test_fraction, "data", "test_fraction", 0.0, 0.9)
        if self.source not in BUNDLED_SOURCES:
            path = Path(self.source)
            if not path.exists():
                raise ForgeFileError(
                    f"bench config [data]: source {self.source} does not exist",
                    fix='give an existing CSV or .npz file, or source = "bundled" or "bundled-digits"',
                    code="bench.data.missing",
                )
            if path.suffix.lower() == ".csv" and not self.label_column:
                raise _err("data", f"CSV source {self.source} needs label_column", 'name the label column, e.g. label_column = "diagnosis"')


@dataclass(frozen=True)
class TrainingSpec:
    base: str = "tabular-mlp"
    epochs: int = 5
    batch_size: int = 16
    lr: float = 0.1
    optimizer: str = "sgd"
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    alpha_scale: float = 2.0  # LoRA alpha = alpha_scale * rank

    def __post_init__(self) -> None:
        _str(self.base, "training", "base")
        _int(self.epochs, "training", "epochs", 1)
        _int(self.batch_size, "training", "batch_size", 1)
        _float(self.lr, "training", "lr")
        _str(self.optimizer, "training", "optimizer")
        if self.delta is not None:
            _float(self.delta, "training", "delta", 0.0, 1.0)
        _float(self.max_grad_norm, "training", "max_grad_norm")
        _str(self.accountant, "training", "accountant")
        _float(self.alpha_scale, "training", "alpha_scale")


@dataclass(frozen=True)
class CanarySpec:
    """Auditor-style canaries in every trained cell (:mod:`forge_secure.privacy.canaries`):
    ``count`` are drawn per site from a secret derived from the cell's seed, each inserted by
    a fair coin; the model is then audited with the one-run audit (Steinke, Nasr, Jagielski
    2023) exactly as ``audits/checks/canaries.py`` audits a site's plugin."""

    count: int = 0
    k_plus_fraction: float = 0.25
    k_minus_fraction: float = 0.25
    p_target: float = 0.05

    def __post_init__(self) -> None:
        _int(self.count, "canaries", "count")
        if self.count == 1:
            raise _err("canaries", "count must be 0 (no canaries) or at least 2, got 1", "set count = 0 or e.g. count = 64")
        _float(self.k_plus_fraction, "canaries", "k_plus_fraction", 0.0, 1.0, low_open=False)
        _float(self.k_minus_fraction, "canaries", "k_minus_fraction", 0.0, 1.0, low_open=False)
        if not 0 < self.k_plus_fraction + self.k_minus_fraction <= 1:
            raise _err("canaries", "k_plus_fraction + k_minus_fraction must lie in (0, 1]", "use e.g. 0.25 and 0.25")
        _float(self.p_target, "canaries", "p_target", 0.0, 0.5)
        if self.p_target >= 0.5:
            raise _err("canaries", f"p_target must be below 0.5, got {self.p_target!r}", "use e.g. p_target = 0.05")


@dataclass(frozen=True)
class GridSpec:
    epsilon: tuple[float, ...] = (1.0, 8.0, math.inf)
    rank: tuple[int, ...] = (4,)
    lora: tuple[str, ...] = ("lora", "ffa")
    merge: tuple[str, ...] = ("none", "mixture")
    attack: tuple[str, ...] = ("lira",)

    def __post_init__(self) -> None:
        for name in ("epsilon", "rank", "lora", "merge", "attack"):
            values = getattr(self, name)
            if not isinstance(values, tuple) or not values:
                raise _err(
                    "grid", f"{name} is empty, so the grid has no cells", f"list at least one value for {name}", "bench.config.empty_grid"
                )
            _unique(list(values), "grid", name)
        for e in self.epsilon:
            parse_epsilon(e)
        for r in self.rank:
            _int(r, "grid", "rank", 1)
        for kind in self.lora:
            if kind not in LORA_KINDS:
                raise _err("grid", f"unknown lora kind {kind!r}", f"use one of: {', '.join(LORA_KINDS)}", "bench.config.unknown_lora")
        for a in self.attack:
            if a not in registries.BENCH_ATTACKS:
                raise _err(
                    "grid",
                    f"unknown attack {a!r}",
                    f"use one of: {', '.join(registries.BENCH_ATTACKS.names())}",
                    "bench.config.unknown_attack",
                )
        if any(m not in registries.LIGHT_MERGES for m in self.merge):  # Fusion names need the merge package (torch)
            merges = registries.merge_registry()
            for m in self.merge:
                if m not in merges:
                    raise _err(
                        "grid", f"unknown merge method {m!r}", f"use one of: {', '.join(merges.names())}", "bench.config.unknown_merge"
                    )

    @property
    def size(self) -> int:
        return len(self.epsilon) * len(self.rank) * len(self.lora) * len(self.merge) * len(self.attack)


@dataclass(frozen=True)
class RunSpec:
    workers: int = 2
    ray: str | None = None

    def __post_init__(self) -> None:
        _int(self.workers, "run", "workers", 1)
        if self.ray is not None and not isinstance(self.ray, str):
            raise _err("run", f'ray must be an address string or "auto", got {self.ray!r}', 'write ray = "auto" or ray = "HOST:PORT"')


@dataclass(frozen=True)
class BenchConfig:
    seeds: tuple[int, ...] = (0, 1)
    confidence: float = 0.95
    data: DataSpec = field(default_factory=DataSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    canaries: CanarySpec = field(default_factory=CanarySpec)
    grid: GridSpec = field(default_factory=GridSpec)
    attacks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    run: RunSpec = field(default_factory=RunSpec)
    source: str = "<dataclass>"

    def __post_init__(self) -> None:
        if not isinstance(self.seeds, tuple) or not self.seeds:
            raise _err(
                "bench", "seeds is empty, so no cell would run", "list at least one seed, e.g. seeds = [0, 1]", "bench.config.empty_grid"
            )
        for s in self.seeds:
            _int(s, "bench", "seeds")
        _unique(list(self.seeds), "bench", "seeds")
        _float(self.confidence, "bench", "confidence", 0.0, 0.999)
        for name, settings in self.attacks.items():
            if name not in registries.BENCH_ATTACKS:
                raise _err(
                    f"attack.{name}",
                    f"unknown attack {name!r}",
                    f"use one of: {', '.join(registries.BENCH_ATTACKS.names())}",
                    "bench.config.unknown_attack",
                )
            registries.BENCH_ATTACKS.get(name).validate(dict(settings), where=f"attack.{name}")

    def attack_settings(self, name: str) -> dict[str, Any]:
        """The full settings of one attack: its defaults updated with the config's table."""
        spec = registries.BENCH_ATTACKS.get(name)
        merged = dict(spec.defaults)
        merged.update(self.attacks.get(name, {}))
        return merged

    def to_dict(self) -> dict[str, Any]:
        def enc(v: Any) -> Any:
            if isinstance(v, float) and math.isinf(v):
                return "inf"
            if isinstance(v, tuple):
                return [enc(x) for x in v]
            if isinstance(v, Mapping):
                return {k: enc(x) for k, x in v.items()}
            return v

        return {
            "bench": {"seeds": list(self.seeds), "confidence": self.confidence},
            "data": enc(dataclasses.asdict(self.data)),
            "training": enc(dataclasses.asdict(self.training)),
            "canaries": enc(dataclasses.asdict(self.canaries)),
            "grid": enc(dataclasses.asdict(self.grid)),
            "attack": {k: enc(dict(v)) for k, v in self.attacks.items()},
            "run": enc(dataclasses.asdict(self.run)),
        }


_TABLES = ("bench", "data", "training", "canaries", "grid", "attack", "run")


def _fields(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _as_list(value: Any, where: str, name: str) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [value]
    raise _err(where, f"{name} must be a list, got {value!r}", f"write {name} = [ ... ]")


def config_from_dict(doc: Mapping[str, Any], source: str = "<dict>") -> BenchConfig:
    """Validate a parsed TOML document into a :class:`BenchConfig`."""
    _check_keys(doc, _TABLES, "top level")
    for t in _TABLES:
        if t in doc and not isinstance(doc[t], Mapping):
            raise _err(t, f"{t} must be a table, got {doc[t]!r}", f"write it as [{t}] with keys below")
    bench = dict(doc.get("bench", {}))
    _check_keys(bench, ("seeds", "confidence"), "bench")
    data = dict(doc.get("data", {}))
    _check_keys(data, _fields(DataSpec), "data")
    training = dict(doc.get("training", {}))
    _check_keys(training, _fields(TrainingSpec), "training")
    canaries = dict(doc.get("canaries", {}))
    _check_keys(canaries, _fields(CanarySpec), "canaries")
    grid = dict(doc.get("grid", {}))
    _check_keys(grid, _fields(GridSpec), "grid")
    run = dict(doc.get("run", {}))
    _check_keys(run, _fields(RunSpec), "run")
    attacks = dict(doc.get("attack", {}))
    for name, table in attacks.items():
        if not isinstance(table, Mapping):
            raise _err(f"attack.{name}", f"settings must be a table, got {table!r}", f"write them as [attack.{name}]")

    if data.get("source", "bundled") not in BUNDLED_SOURCES and source not in ("<dict>", "<dataclass>"):
        p = Path(data["source"]).expanduser()
        if not p.is_absolute():  # relative to the config file, so a config travels with its data
            p = Path(source).resolve().parent / p
        data["source"] = str(p)
    grid_kwargs: dict[str, Any] = {}
    for name in _fields(GridSpec):
        if name in grid:
            values = _as_list(grid[name], "grid", name)
            if name == "epsilon":
                values = [parse_epsilon(v) for v in values]
            grid_kwargs[name] = tuple(values)
    seeds = tuple(_as_list(bench["seeds"], "bench", "seeds")) if "seeds" in bench else BenchConfig.seeds
    ray = run.get("ray") or None
    try:
        return BenchConfig(
            seeds=seeds,
            confidence=bench.get("confidence", 0.95),
            data=DataSpec(**data),
            training=TrainingSpec(**training),
            canaries=CanarySpec(**canaries),
            grid=GridSpec(**grid_kwargs),
            attacks={k: dict(v) for k, v in attacks.items()},
            run=RunSpec(workers=run.get("workers", RunSpec.workers), ray=ray),
            source=source,
        )
    except TypeError as e:  # a wrong type in a dataclass field
        raise _err("top level", str(e), "check the types of the values") from None


def load_config(path_or_name: str | Path | None = None) -> BenchConfig:
    """Read and validate a bench TOML file; ``None`` or ``"default"`` is the bundled one."""
    if path_or_name is None or str(path_or_name) == BUNDLED_NAME:
        path = DEFAULT_CONFIG
    else:
        path = Path(path_or_name)
    if not path.exists():
        raise ForgeFileError(
            f"bench config {path} does not exist",
            fix="give a TOML file, or --config default for the bundled one",
            code="bench.config.missing",
        )
    if path.is_dir():
        raise ForgeFileError(f"bench config {path} is a directory", fix="give the TOML file itself", code="bench.config.is_directory")
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ForgeConfigError(
            f"bench config {path} is not valid TOML ({e})",
            fix="fix the syntax; see attacks/bench/default_bench.toml for an example",
            code="bench.config.not_toml",
        ) from None
    if not doc:
        raise ForgeConfigError(
            f"bench config {path} is empty", fix="start from attacks/bench/default_bench.toml", code="bench.config.empty"
        )
    return config_from_dict(doc, source=str(path))
