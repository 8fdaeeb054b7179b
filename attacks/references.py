"""Reference models for membership attacks: training with the target's recipe, and a cache.

A reference model is trained exactly like the target (same base, LoRA settings, training
and DP settings, read from the target's ``forge.json`` through
``forge_secure.privacy.TrainConfig.from_meta``), but on a random half of the attacker's
data, so that the attack can compare the target with models known to have (IN) or not
have (OUT) seen each candidate record (Carlini et al. 2022, Sec. 4; Zarifzadeh et al. 2024).

Splits (:func:`reference_masks`). References come in complementary pairs: reference 2k is
trained on a random half H_k of the candidates, reference 2k+1 on the complement, so every
candidate is IN for exactly half of an even number of references (the balanced design of
Carlini et al.'s code). Each reference is topped up with random population records to the
target's training-set size (``data.rows`` of its forge.json): a reference trained on more
records than the target takes more steps, reaches larger margins, and then mis-calibrates
the attack (measured here: LiRA fell below chance with references 1.5x the target's size).
The split of reference i depends only on ``(seed, i)``, not on how many references are
asked for, so the cache is reused when the count grows. Offline, references train on
population records only (no candidate is ever IN: the offline threat model).

Cache. Each trained reference's logits (on candidates and population) are stored as
safetensors under ``forge_home()/cache/references/<key>.safetensors``. The key is the
sha256 of canonical JSON over everything the reference depends on: the target's recipe
(``base``, ``lora``, ``training``, ``dp`` sections of ``forge.json``), the base digest, the
digests of the candidate and population data, the mode (online/offline), the seed and the
index, and the toolkit version. A changed target recipe or data therefore never reuses a
stale entry. An entry that fails to load or does not match is ignored and retrained.
No pickle is involved: arrays only, via ``safetensors.numpy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forge_secure import __version__
from forge_secure.errors import ForgeConfigError, ForgeValueError
from forge_secure.fileio import atomic_output, canonical_json, sha256_bytes
from forge_secure.home import cache_dir

CACHE_FORMAT = "forge-mia-reference/1"
RECIPE_SECTIONS = ("base", "lora", "training", "dp")


@dataclass(frozen=True)
class ReferenceSet:
    """Logits of R reference models and which records each was trained on.

    ``candidate_logits`` (R, n, C) float64, ``in_mask`` (R, n) bool; ``population_logits``
    (R, m, C) and ``population_in_mask`` (R, m), or None without population data.
    ``keys`` are the cache keys; ``cached`` / ``trained`` count how each was obtained.
    """

    candidate_logits: np.ndarray
    in_mask: np.ndarray
    population_logits: np.ndarray | None = None
    population_in_mask: np.ndarray | None = None
    keys: tuple[str, ...] = ()
    cached: int = 0
    trained: int = 0
    online: bool = True
    seed: int = 0

    @property
    def count(self) -> int:
        return int(self.in_mask.shape[0])

    def summary(self) -> dict:
        return {
            "count": self.count,
            "mode": "online" if self.online else "offline",
            "seed": self.seed,
            "cached": self.cached,
            "trained": self.trained,
            "in_per_candidate": {
                "min": int(self.in_mask.sum(0).min()) if self.in_mask.size else 0,
                "max": int(self.in_mask.sum(0).max()) if self.in_mask.size else 0,
            },
            "cache_keys": list(self.keys),
        }


def _canon(obj: Any) -> Any:
    """JSON-able copy with floats as their repr (canonical JSON holds no floats)."""
    if isinstance(obj, float):
        return repr(obj)
    if isinstance(obj, dict):
        return {str(k): _canon(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    return obj


def recipe_of(meta: dict) -> dict:
    """The parts of a plugin's ``forge.json`` that reference training depends on."""
    if not isinstance(meta, dict):
        raise ForgeConfigError(f"plugin metadata must be a JSON object, got {type(meta).__name__}", code="attack.recipe")
    missing = [k for k in RECIPE_SECTIONS if k not in meta]
    if missing:
        raise ForgeConfigError(
            f"the target's forge.json lacks the recipe section(s) {', '.join(missing)}",
            fix="attack a plugin trained by forge train, or give --recipe PLUGIN_DIR with the recipe to use for references",
            code="attack.recipe",
        )
    return {k: meta[k] for k in RECIPE_SECTIONS}


def reference_masks(
    n_candidates: int, n_population: int, count: int, *, seed: int, online: bool = True, train_rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """IN masks ``(count, n_candidates)`` and ``(count, n_population)`` (see the module doc).

    Online: reference 2k trains on a random half H_k of the candidates and reference 2k+1 on
    the complement, so every candidate is IN for exactly half of an even number of
    references; each is topped up with random population records to ``train_rows``
    records (the target's training-set size; default half of candidates + population), so
    that references see as many records, and take as many DP-SGD steps at the same sample
    rate, as the target. Offline: ``train_rows`` random population records (at most all but
    one), and no candidate is ever IN. Reference i's split depends only on ``(seed, i)``.
    """
    if count < 0 or n_candidates < 0 or n_population < 0:
        raise ForgeValueError("counts must be non-negative", code="attack.references")
    if train_rows is None:
        train_rows = (n_candidates + n_population) // 2 if online else n_population // 2
    cand = np.zeros((count, n_candidates), dtype=bool)
    pop = np.zeros((count, n_population), dtype=bool)
    for i in range(count):
        pair = np.random.default_rng([int(seed), i // 2, 0x5EED])
        own = np.random.default_rng([int(seed), i, 0x70F])
        if online:
            half = np.zeros(n_candidates, dtype=bool)
            half[pair.permutation(n_candidates)[: n_candidates // 2]] = True
            cand[i] = ~half if i % 2 == 1 else half
            k = int(np.clip(train_rows - cand[i].sum(), 0, n_population))
        else:
            k = int(np.clip(train_rows, 1, max(n_population - 1, 1)))
        if k and n_population:
            pop[i, own.permutation(n_population)[:k]] = True
    return cand, pop


def reference_seed(seed: int, index: int) -> int:
    """The training seed of reference ``index`` (distinct from the split seed)."""
    return int(np.random.SeedSequence([int(seed), int(index), 0x7EA1]).generate_state(1)[0])


def cache_key(
    recipe: dict,
    base_digest: str,
    candidates_digest: str,
    population_digest: str | None,
    *,
    online: bool,
    seed: int,
    index: int,
    context: dict | None = None,
) -> str:
    """sha256 over everything a reference model depends on (see the module docstring);
    ``context`` is extra identity, e.g. the mixture a reference plugin is placed into."""
    doc = {
        "context": _canon(context),
        "format": CACHE_FORMAT,
        "toolkit_version": __version__,
        "recipe": _canon(recipe),
        "base_digest": base_digest,
        "candidates": candidates_digest,
        "population": population_digest,
        "mode": "online" if online else "offline",
        "seed": int(seed),
        "index": int(index),
    }
    return sha256_bytes(canonical_json(doc))


def _cache_path(key: str, root: str | Path | None) -> Path:
    return (Path(root) if root is not None else cache_dir("references")) / f"{key}.safetensors"


def _load_cached(path: Path, key: str, n_eval: int, in_mask: np.ndarray) -> np.ndarray | None:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            logits = f.get_tensor("logits")
            mask = f.get_tensor("in_mask")
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError):
        return None
    if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
        return None
    if logits.ndim != 2 or logits.shape[0] != n_eval or not np.all(np.isfinite(logits)):
        return None
    if mask.shape != in_mask.shape or not np.array_equal(mask.astype(bool), in_mask):
        return None
    return logits.astype(np.float64)


def _store(path: Path, key: str, logits: np.ndarray, in_mask: np.ndarray) -> None:
    from safetensors.numpy import save

    data = save(
        {"logits": np.ascontiguousarray(logits, dtype=np.float64), "in_mask": in_mask.astype(np.uint8)},
        metadata={"key": key, "format": CACHE_FORMAT},
    )
    with atomic_output(path) as f:
        f.write(data)


# --------------------------------------------------------------------------- training (worker side)

_BASES: dict[tuple[str, str], Any] = {}


def _base_for(recipe: dict):
    """Load (once per process) the recipe's base and check its digest."""
    from forge_secure.plugins.bases import load_base
    from forge_secure.plugins.record import check_base

    name, digest = recipe["base"]["name"], recipe["base"]["digest"]
    memo = _BASES.get((name, digest))
    if memo is not None:
        return memo
    base = load_base(name)
    check_base(recipe, base.digest, name, where="the target")  # plugin.base_mismatch, as everywhere
    _BASES[(name, digest)] = base
    return base


def train_one_reference(task: dict) -> np.ndarray:
    """Train one reference model and return its logits on ``task["eval_X"]`` (float64).

    Top level so worker processes (spawn) and Ray can import it. ``task`` holds the recipe,
    the training arrays, the evaluation arrays and the training seed. The recipe is the
    target's (``TrainConfig.from_meta``, DP included), with the reference's seed and its
    secret derived from that seed (the auditor's experiment is reproducible).
    """
    from forge_secure.plugins.data import Dataset
    from forge_secure.privacy import train_plugin

    from .reference_batch import reference_config, reference_secret

    recipe = task["recipe"]
    config = reference_config(recipe, int(task["seed"]))
    base = _base_for(recipe)
    data = Dataset(task["X"], task["y"], int(task["n_classes"]), f"reference-{task['index']}", task["kind"])
    plugin = train_plugin(config, data, site=f"reference-{task['index']}", base=base, secret=reference_secret(int(task["seed"])))
    model = plugin
    mixture = task.get("mixture")
    if mixture:  # a Mixture target: the same mixture with the attacked component replaced
        from forge_secure.fileio import sha256_file
        from forge_secure.merge.mixture import load_mixture

        mix_path = Path(mixture["path"])
        if sha256_file(mix_path / "mixture.json") != mixture["sha256"]:
            raise ForgeValueError(f"mixture {mix_path} changed while reference models were trained", code="attack.target_changed")
        model = load_mixture(mix_path, base)
        model.plugins[int(mixture["component"])] = plugin
    return np.asarray(model.logits(task["eval_X"]), dtype=np.float64)


def train_reference_batch(task: dict) -> np.ndarray:
    """Train a batch of references at once (:mod:`attacks.reference_batch`) and return their
    logits on ``task["eval_X"]``, (R, N, C) float64. ``task["masks"]`` (R, pool) selects each
    reference's training records from ``task["X"]`` / ``task["y"]``; top level for workers."""
    from .reference_batch import train_batched

    X, y = task["X"], task["y"]
    sets = [(X[m], y[m]) for m in np.asarray(task["masks"], dtype=bool)]
    return train_batched(task["recipe"], _base_for(task["recipe"]), sets, [int(s) for s in task["seeds"]], task["eval_X"])


# --------------------------------------------------------------------------- orchestration


def train_references(
    meta: dict,
    candidates,
    population=None,
    *,
    count: int,
    seed: int = 0,
    online: bool = True,
    workers: int | None = None,
    ray: str | None = None,
    cache: bool = True,
    cache_root: str | Path | None = None,
    base_digest: str | None = None,
    mixture: dict | None = None,
    batch: bool | None = None,
) -> ReferenceSet:
    """Train (or load from the cache) ``count`` reference models with the recipe in ``meta``.

    ``candidates`` / ``population`` are :class:`forge_secure.plugins.data.Dataset`; offline
    mode needs population data (references never see the candidates). Training runs through
    :func:`forge_secure.parallel.run_tasks`. ``batch`` (default: whenever the recipe allows,
    see :func:`attacks.reference_batch.why_not_batched`) trains the references that are not
    cached together in one pass per worker (:mod:`attacks.reference_batch`), the same models
    as one at a time; ``workers`` (default 1, in this process: measured fastest, see
    docs/benchmarks.md) splits them over persistent local workers, ``ray`` over a Ray cluster.
    """
    from forge_secure.parallel import run_tasks

    recipe = recipe_of(meta)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ForgeValueError(
            f"reference count {count!r} must be a non-negative integer", fix="use e.g. --references 16", code="attack.references"
        )
    if not online and (population is None or len(population) < 2):
        raise ForgeValueError(
            "offline reference models are trained on population data only, and none was given",
            fix="give --population (e.g. bundled:public), or use --online",
            code="attack.population_missing",
        )
    if population is not None and (population.kind != candidates.kind or population.shape != candidates.shape):
        raise ForgeValueError(
            f"population {population.name!r} {population.shape} does not match the candidates {candidates.name!r} {candidates.shape}",
            fix="give population records of the same kind and columns as the candidates",
            code="attack.population_shape",
        )
    digest = base_digest or recipe["base"].get("digest")
    n, m = len(candidates), (len(population) if population is not None else 0)
    rows = (meta.get("data") or {}).get("rows")
    rows = int(rows) if isinstance(rows, int) and rows > 1 else None
    in_mask, pop_mask = reference_masks(n, m, count, seed=seed, online=online, train_rows=rows)
    pool_X = candidates.X if population is None else np.concatenate([candidates.X, population.X])
    pool_y = candidates.y if population is None else np.concatenate([candidates.y, population.y])
    n_classes = max(candidates.n_classes, population.n_classes if population is not None else 0)
    eval_X = pool_X
    cand_digest = candidates.digest()
    pop_digest = population.digest() if population is not None else None

    logits: list[np.ndarray | None] = [None] * count
    keys: list[str] = []
    tasks: list[dict] = []
    todo: list[int] = []
    for i in range(count):
        key = cache_key(recipe, digest, cand_digest, pop_digest, online=online, seed=seed, index=i, context=mixture)
        keys.append(key)
        full_mask = np.concatenate([in_mask[i], pop_mask[i]])
        hit = _load_cached(_cache_path(key, cache_root), key, n + m, full_mask) if cache else None
        if hit is not None:
            logits[i] = hit
            continue
        train_sel = full_mask
        if train_sel.sum() < 2:
            raise ForgeValueError(
                f"reference {i} would train on {int(train_sel.sum())} records",
                fix="give more candidate or population records",
                code="attack.too_little_data",
            )
        tasks.append(
            {
                "recipe": recipe,
                "mask": train_sel,
                "X": pool_X[train_sel],
                "y": pool_y[train_sel],
                "n_classes": n_classes,
                "kind": candidates.kind,
                "eval_X": eval_X,
                "seed": reference_seed(seed, i),
                "index": i,
                "mixture": mixture,
            }
        )
        todo.append(i)
    if tasks:
        from .reference_batch import reference_config, why_not_batched

        reason = why_not_batched(reference_config(recipe, 0), mixture)
        if batch and reason:
            raise ForgeValueError(
                f"reference models cannot be trained batched here: {reason}", fix="train them one at a time", code="attack.references"
            )
        if batch is None:
            batch = reason is None
        if batch:
            parts = _batch_tasks(
                tasks, pool_X, pool_y, workers if not ray else (workers or 2), per_pass=references_per_pass(_base_for(recipe))
            )
            results = [
                r
                for out in run_tasks(
                    train_reference_batch, parts, workers=workers or 1, ray=ray, description="training reference models (batched)"
                )
                for r in out
            ]
        else:
            results = run_tasks(train_one_reference, tasks, workers=workers or 1, ray=ray, description="training reference models")
        for i, out in zip(todo, results, strict=True):
            if out.shape[0] != n + m or not np.all(np.isfinite(out)):
                raise ForgeValueError(f"reference model {i} produced unusable logits (shape {out.shape})", code="attack.reference_failed")
            logits[i] = out
            if cache:
                _store(_cache_path(keys[i], cache_root), keys[i], out, np.concatenate([in_mask[i], pop_mask[i]]))
    filled = [x for x in logits if x is not None]
    if len(filled) != count:  # every reference is cached or trained above
        raise RuntimeError(f"{count - len(filled)} reference models produced no logits")
    C = filled[0].shape[1] if count else max(n_classes, 2)
    stacked = np.stack(filled) if count else np.zeros((0, n + m, C))
    return ReferenceSet(
        candidate_logits=stacked[:, :n],
        in_mask=in_mask,
        population_logits=stacked[:, n:] if population is not None else None,
        population_in_mask=pop_mask if population is not None else None,
        keys=tuple(keys),
        cached=count - len(tasks),
        trained=len(tasks),
        online=online,
        seed=seed,
    )


#: references trained in one batched pass x the base's parameters: the pass holds every
#: reference's activations at once, which grow with the base (64 MiniLM references in one pass,
#: 22.7 M parameters, went over 20 GB and were killed by the kernel; 6 per pass peaked at 5.5 GB resident).
#: The toy bases (thousands to a few hundred thousand parameters) are never split.
PASS_BUDGET = 150_000_000


def references_per_pass(base) -> int:
    """How many references one batched pass may train on ``base`` (see :data:`PASS_BUDGET`)."""
    params = sum(p.numel() for p in base.model.parameters())
    return max(1, PASS_BUDGET // max(1, params))


def _batch_tasks(tasks: list[dict], pool_X: np.ndarray, pool_y: np.ndarray, workers: int | None, per_pass: int | None = None) -> list[dict]:
    """The one-reference tasks grouped into one batched task per worker (in order), each of at
    most ``per_pass`` references (a worker then takes several in turn)."""
    k = max(1, min(int(workers or 1), len(tasks)))
    if per_pass:
        k = max(k, -(-len(tasks) // int(per_pass)))
    bounds = np.linspace(0, len(tasks), k + 1).astype(int)
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        chunk = tasks[a:b]
        out.append(
            {
                "recipe": chunk[0]["recipe"],
                "X": pool_X,
                "y": pool_y,
                "masks": np.stack([t["mask"] for t in chunk]),
                "seeds": [t["seed"] for t in chunk],
                "eval_X": chunk[0]["eval_X"],
            }
        )
    return out
