"""The cell runner: what one worker does for one training group (epsilon, rank, lora, seed).

1. train each site's plugin with :func:`forge_secure.privacy.train_plugin` on its coin-flip
   training set (cached as plugin directories);
2. per merge method, build the target model (:mod:`attacks.bench.models`), measure utility
   (accuracy and ROC AUC on the union of the sites' test sets) and its logits on the
   candidate records (the sites' pools; members = the coin-flip training sets) and on the
   population (the public split);
3. membership attacks (LiRA, RMIA from :mod:`attacks.membership`): reference models are the
   whole pipeline again (train every site's plugin with the same recipe on a random half of
   its pool, merge the same way). References come in complementary pairs, so with R even
   every candidate is IN for exactly R/2 of them (Carlini et al. 2022). They are shared by
   every attack of the group and cached one by one, so more references reuse the old ones;
4. metrics from :mod:`attacks.metrics`: ROC AUC, TPR at 1 % and 0.1 % FPR (with the FPR
   reached), and the empirical epsilon lower bound (Clopper-Pearson, threshold chosen on a
   held-out half; Jagielski et al. 2020), flagged when above the claimed epsilon;
5. reconstruction (:mod:`attacks.reconstruction`): the informed adversary's success rate
   with its Clopper-Pearson interval, the baseline 1/prior and the ReRo bound;
6. with ``[canaries] count > 0``: each site's target plugin trains on its coin-flip set plus
   the included half of ``count`` auditor-style canaries
   (:func:`forge_secure.privacy.canaries.issue_record`, a secret derived from the seed and
   the site), and every row carries the one-run audit (Steinke, Nasr, Jagielski 2023) of
   the cell's model on all canaries of its sites, scored and judged as
   ``audits/checks/canaries.py`` does (:func:`audits.checks.canaries.canary_scores`,
   :func:`attacks.metrics.one_run_audit`); every empirical epsilon carries its ceiling, the
   largest bound a perfect attack could show on that sample.

Each (cell, seed) result is written to the cache atomically as soon as it is known, so an
interrupted run loses at most the cells in flight.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forge_secure.errors import ForgeDataError
from forge_secure.numbers import decode, encode
from forge_secure.plugins import data as pdata

from . import grid as G
from .cache import BenchCache
from .config import BenchConfig
from .data import BenchData, load_bench_data
from .registries import BENCH_ATTACKS, MERGE_NONE

MODEL_STAGE = "model"
REFERENCE_STAGE = "reference"


def derive_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (numpy SeedSequence), for every random draw."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, dtype=np.uint32)[0] >> 1)


@dataclass(frozen=True)
class GroupTask:
    """One unit of work for a worker (picklable)."""

    config: BenchConfig
    group: G.TrainGroup
    cells: tuple[G.Cell, ...]
    cache_root: str
    data_digest: str


def run_group(task: GroupTask) -> dict[str, Any]:
    """Compute every listed cell of one training group; return counts for the run log
    (cells computed, plugins trained, and the group's wall and CPU seconds in its worker)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = _GroupRunner(task).run()
    out["wall_seconds"] = time.perf_counter() - wall
    out["cpu_seconds"] = time.process_time() - cpu
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def utility(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, ROC AUC) of a model's logits; multi-class AUC is one-vs-rest."""
    from sklearn.metrics import roc_auc_score

    p = _softmax(np.asarray(logits, dtype=np.float64))
    acc = float((p.argmax(axis=1) == y).mean())
    try:
        auc = (
            float(roc_auc_score(y, p[:, 1]))
            if p.shape[1] == 2
            else float(roc_auc_score(y, p, multi_class="ovr", labels=list(range(p.shape[1]))))
        )
    except ValueError:  # one class only in the test set
        auc = math.nan
    return acc, auc


def _claimed(meta: dict) -> tuple[float, float, str]:
    """(epsilon, delta, accountant) of a plugin's DP record (epsilon inf without DP)."""
    from forge_secure.plugins.plugin import meta_epsilon

    dp = meta.get("dp", {}) or {}
    delta = dp.get("delta")
    delta = float(delta) if isinstance(delta, (int, float)) and not isinstance(delta, bool) else math.nan
    return meta_epsilon(meta), delta, str(dp.get("accountant", "none")) if dp.get("enabled") else "none"


class _GroupRunner:
    def __init__(self, task: GroupTask):
        self.task = task
        self.config = task.config
        self.group = task.group
        self.cache = BenchCache(task.cache_root)
        self.data: BenchData = load_bench_data(self.config.data)
        if self.data.digest != task.data_digest:
            raise ForgeDataError(
                "the bench data changed while the run was being planned",
                fix="rerun forge bench; do not edit the data file during a run",
                code="bench.data_changed",
            )
        self.sites = self.data.for_seed(self.group.seed)
        self.trained = 0
        self._dp: tuple[float, float] | None = None
        self._base = None
        self._models: dict[tuple[str, int | None], dict[str, np.ndarray]] = {}
        self.train_key = G.train_key(self.config, self.group, task.data_digest)

    # ------------------------------------------------------------------ training
    @property
    def base(self):
        if self._base is None:
            from forge_secure.plugins.bases import load_base

            self._base = load_base(self.config.training.base)
        return self._base

    def dp_plan(self) -> tuple[float, float] | None:
        """(noise multiplier, delta) shared by every plugin of a DP group, or None without DP.

        The noise multiplier is calibrated once per group with the configured accountant
        (:func:`forge_secure.privacy.plan_privacy`) for the target epsilon at the smallest
        site training set, so every site's own accounted epsilon (recorded in its
        forge.json, reported as the claim) is at most about the grid's epsilon. Reference
        models reuse it: they follow the target's recipe, as in LiRA (Carlini et al. 2022).
        Delta is the config's, or default_delta(n) = min(1e-5, 1/n^2) for the largest pool, below 1/n for every set.
        """
        if math.isinf(self.group.epsilon):
            return None
        if self._dp is None:
            from forge_secure.privacy import TrainConfig, default_delta, plan_privacy

            t = self.config.training
            delta = t.delta if t.delta is not None else default_delta(max(len(s.pool) for s in self.sites))
            key = G.digest({"stage": "dp-plan", "train": self.train_key, "delta": delta})
            hit = self.cache.load_arrays("dp-plan", key)
            if hit is not None:
                self._dp = (float(hit["sigma"]), float(hit["delta"]))
            else:
                n = min(int(s.members().sum()) for s in self.sites)
                cfg = TrainConfig(
                    base=t.base,
                    rank=self.group.rank,
                    epochs=t.epochs,
                    batch_size=t.batch_size,
                    lr=t.lr,
                    optimizer=t.optimizer,
                    target_epsilon=self.group.epsilon,
                    delta=delta,
                    max_grad_norm=t.max_grad_norm,
                    accountant=t.accountant,
                )
                plan = plan_privacy(cfg, n)
                assert plan.noise_multiplier is not None  # a target epsilon: DP on
                self._dp = (float(plan.noise_multiplier), float(delta))
                self.cache.store_arrays("dp-plan", key, sigma=np.array(self._dp[0]), delta=np.array(delta), n=np.array(n))
        return self._dp

    def train_config(self, site_index: int, ref: int | None):
        from forge_secure.privacy import TrainConfig

        t, g = self.config.training, self.group
        seed = derive_seed(g.seed, site_index, -1 if ref is None else ref, 7)
        kwargs: dict[str, Any] = dict(
            base=t.base,
            rank=g.rank,
            alpha=t.alpha_scale * g.rank,
            ffa=g.lora == "ffa",
            ffa_seed=0,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.lr,
            optimizer=t.optimizer,
            seed=seed,
            max_grad_norm=t.max_grad_norm,
            accountant=t.accountant,
        )
        dp = self.dp_plan()
        if dp is None:
            kwargs["no_dp"] = True
        else:
            kwargs["noise_multiplier"], kwargs["delta"] = dp
        return TrainConfig(**kwargs)

    def ref_mask(self, site_index: int, ref: int) -> np.ndarray:
        """Reference ``ref``'s training half of one site's pool: pairs (2p, 2p+1) are complements."""
        pool = self.sites[site_index].pool
        half = pdata.draw_membership(len(pool), derive_seed(self.group.seed, site_index, ref // 2, 11), 0.5)
        return half if ref % 2 == 0 else ~half

    # ------------------------------------------------------------------ canaries
    def canary_record(self, site_index: int) -> dict | None:
        """The auditor's record of site ``site_index``'s canaries in this group, or None.

        The secret is derived from the bench seed and the site: a benchmark is the
        researcher's own experiment, and a rerun must regenerate the same canaries. Every
        epsilon and LoRA kind of one seed gets the same canaries, so rows differ only in
        the training, not in the canary draw."""
        count = self.config.canaries.count
        if count == 0:
            return None
        from forge_secure.privacy.canaries import issue_record
        from forge_secure.privacy.randomness import seed_from_label

        site = self.sites[site_index]
        secret = seed_from_label("forge-bench-canaries", derive_seed(self.group.seed, site_index, 31))
        return issue_record(site.site, count, site.pool, secret=secret)

    def training_set(self, site_index: int) -> tuple[pdata.Dataset, dict]:
        """A target plugin's training set (coin-flip members plus the included canaries)
        and the data commitment recorded in its forge.json."""
        site = self.sites[site_index]
        train, commitment = site.train(), {"membership": site.commitment()}
        record = self.canary_record(site_index)
        if record is not None:
            from forge_secure.privacy.canaries import included_canaries

            train = train.concat(included_canaries(record, like=site.pool), name=train.name)
            commitment["canaries"] = {"count": record["included"], "issuer": "bench", "grant_id": record["grant_id"]}
        return train, commitment

    def all_canaries(self, merge: str):
        """(Dataset of every canary of the model's sites, inclusion mask), or None."""
        from forge_secure.privacy.canaries import all_canaries

        parts = [all_canaries(r) for r in (self.canary_record(i) for i in self.model_sites(merge)) if r is not None]
        if not parts:
            return None
        data, mask = parts[0]
        for d, m in parts[1:]:
            data, mask = data.concat(d, name="canaries"), np.concatenate([mask, m])
        return data, mask

    def site_plugin(self, site_index: int, ref: int | None) -> Path:
        from forge_secure.plugins.plugin import load_plugin
        from forge_secure.privacy import train_plugin

        key = self.train_key if ref is None else G.reference_key(self.config, self.group, self.task.data_digest, ref)
        site = self.sites[site_index]
        out = self.cache.plugin_dir(key, site.site)
        with self.cache.lock(f"{key}-{site.site}"):
            if out.exists():
                try:
                    load_plugin(out, self.base)
                    return out
                except Exception:  # a damaged cache entry: retrain it
                    self.cache.discard_plugin(key, site.site)
            if ref is None:
                train, commitment = self.training_set(site_index)
            else:
                train = site.pool.subset(self.ref_mask(site_index, ref), name=f"{site.pool.name}#ref{ref}")
                commitment = None
            from forge_secure.privacy.randomness import seed_from_label

            config = self.train_config(site_index, ref)
            # a benchmark is the researcher's own experiment: its plugins' sampling and noise come
            # from a secret derived from the cell's seed, so a rerun (or a repaired cache entry)
            # trains the same plugin
            train_plugin(
                config,
                train,
                site=site.site,
                base=self.base,
                commitment=commitment,
                out=out,
                secret=seed_from_label("forge-bench-plugin", config.seed),
            )
            self.trained += 1
        return out

    # ------------------------------------------------------------------ models
    def model_sites(self, merge: str) -> list[int]:
        return [0] if merge == MERGE_NONE else list(range(len(self.sites)))

    def candidates(self, merge: str) -> tuple[pdata.Dataset, np.ndarray]:
        idx = self.model_sites(merge)
        pool = self.sites[idx[0]].pool
        members = [self.sites[idx[0]].members()]
        for i in idx[1:]:
            pool = pool.concat(self.sites[i].pool, name="union/pool")
            members.append(self.sites[i].members())
        return pool, np.concatenate(members)

    def model_arrays(self, cell: G.Cell, ref: int | None) -> dict[str, np.ndarray]:
        """Logits of the target (ref None) or of reference ``ref`` on candidates, population
        and (target only) the union test set, plus the claimed epsilon; cached on disk."""
        mkey = G.model_key(self.config, cell, self.group.seed, self.task.data_digest)
        key = mkey if ref is None else G.digest({"model": mkey, "reference": ref})
        stage = MODEL_STAGE if ref is None else REFERENCE_STAGE
        hit = self._models.get((cell.merge, ref)) or self.cache.load_arrays(stage, key)
        if hit is not None:
            self._models[(cell.merge, ref)] = hit
            return hit
        from forge_secure.plugins.plugin import load_plugin

        from .models import build_model

        idx = self.model_sites(cell.merge)
        dirs = [self.site_plugin(i, ref) for i in idx]
        plugins = [load_plugin(d, self.base) for d in dirs]
        model = build_model(
            cell.merge, dirs, self.base, seed=derive_seed(self.group.seed, 13), tune_X=self.data.public.X, tune_y=self.data.public.y
        )
        cand, members = self.candidates(cell.merge)
        arrays: dict[str, np.ndarray] = {
            "candidates": model.logits(cand.X),
            "population": model.logits(self.data.public.X),
        }
        claims = [_claimed(p.meta) for p in plugins]
        if ref is None:
            arrays["test"] = model.logits(self.data.union_test().X)
            arrays["members"] = members
            canaries = self.all_canaries(cell.merge)
            if canaries is not None:
                from audits.checks.canaries import canary_scores

                cset, cmask = canaries
                arrays["canary_scores"] = canary_scores(model, cset)
                arrays["canary_mask"] = cmask
                arrays["canary_correct"] = model.logits(cset.X).argmax(axis=1) == cset.y
            arrays["claimed_epsilon"] = np.array(max(c[0] for c in claims))
            arrays["delta"] = np.array(max(c[1] for c in claims))
            arrays["accountant"] = np.array(claims[0][2])
            arrays["dp_records"] = np.array(  # per site: noise multiplier, sample rate, steps
                [
                    [float(dp.get("noise_multiplier") or 0.0), float(dp.get("sample_rate") or 0.0), float(dp.get("steps") or 0)]
                    for dp in ((p.meta.get("dp") or {}) for p in plugins)
                ]
            )
        else:
            arrays["in_mask"] = np.concatenate([self.ref_mask(i, ref) for i in idx])
        self.cache.store_arrays(stage, key, **arrays)
        self._models[(cell.merge, ref)] = arrays
        return arrays

    # ------------------------------------------------------------------ attacks
    def membership_row(self, cell: G.Cell, target: dict[str, np.ndarray]) -> dict[str, Any]:
        from attacks import metrics
        from attacks.membership import make_attack

        s = self.config.attack_settings(cell.attack)
        R = int(s["references"])
        refs = [self.model_arrays(cell, k) for k in range(R)]
        cand, members = self.candidates(cell.merge)
        labels = cand.y
        n_pop = min(int(s.get("population", len(self.data.public))), len(self.data.public))
        options = {k: v for k, v in s.items() if k not in ("references", "population")}
        attack = make_attack(cell.attack, **options)
        fit_kwargs: dict[str, Any] = {}
        score_kwargs: dict[str, Any] = {}
        if attack.needs_population:
            fit_kwargs = dict(
                population_reference_logits=np.stack([r["population"][:n_pop] for r in refs]),
                population_labels=self.data.public.y[:n_pop],
                population_in_mask=np.zeros((R, n_pop), dtype=bool),  # references never train on the public split
            )
            score_kwargs = dict(population_target_logits=target["population"][:n_pop])
        attack.fit(np.stack([r["candidates"] for r in refs]), labels, np.stack([r["in_mask"].astype(bool) for r in refs]), **fit_kwargs)
        scores = attack.score(target["candidates"], labels, **score_kwargs)
        y = members.astype(np.int64)
        claimed = float(target["claimed_epsilon"])
        delta = float(target["delta"])
        at1 = metrics.tpr_at_fpr(scores, y, 0.01)
        at01 = metrics.tpr_at_fpr(scores, y, 0.001)
        d = 0.0 if math.isnan(delta) else delta
        emp = metrics.split_clopper_pearson_epsilon(scores, y, delta=d, seed=derive_seed(self.group.seed, 17))
        return {
            "attack_auc": metrics.roc_auc(scores, y),
            "tpr_at_1pct_fpr": at1.tpr,
            "fpr_reached_1pct": at1.fpr_reached,
            "tpr_at_0.1pct_fpr": at01.tpr,
            "empirical_epsilon": float(emp["epsilon_lb"]),
            # the largest bound a perfect attack could show on the evaluation half
            "empirical_ceiling": metrics.clopper_pearson_epsilon_ceiling(int(emp["members"]), int(emp["non_members"]), delta=d),
            "above_claim": bool(float(emp["epsilon_lb"]) > claimed + 1e-9),
            "n_members": int(y.sum()),
            "n_nonmembers": int((y == 0).sum()),
            "references": R,
        }

    def canary_row(self, target: dict[str, np.ndarray]) -> dict[str, Any]:
        """The one-run audit of the cell's model on its sites' canaries, with its ceiling."""
        if "canary_scores" not in target:
            return {}
        from attacks.metrics import one_run_audit, one_run_epsilon_ceiling

        spec = self.config.canaries
        scores, mask = np.asarray(target["canary_scores"], dtype=float), np.asarray(target["canary_mask"], dtype=bool)
        correct = np.asarray(target["canary_correct"], dtype=bool)
        m = int(mask.size)
        delta = float(target["delta"])
        delta = 0.0 if math.isnan(delta) else delta
        k_plus, k_minus = int(round(spec.k_plus_fraction * m)), int(round(spec.k_minus_fraction * m))
        audit = one_run_audit(scores, mask.astype(int), k_plus=k_plus, k_minus=k_minus, delta=delta, p_target=spec.p_target)
        ceiling = one_run_epsilon_ceiling(audit["guesses"], m=m, delta=delta, p_target=spec.p_target)
        claimed = float(target["claimed_epsilon"])
        return {
            "canary_epsilon": float(audit["epsilon_lb"]),
            "canary_ceiling": float(ceiling),
            "canary_m": m,
            "canary_guesses": int(audit["guesses"]),
            "canary_correct": int(audit["correct"]),
            "canary_acc_in": float(correct[mask].mean()) if mask.any() else math.nan,
            "canary_acc_out": float(correct[~mask].mean()) if (~mask).any() else math.nan,
            "canary_above_claim": bool(float(audit["epsilon_lb"]) > claimed + 1e-9),
        }

    def recon_row(self, cell: G.Cell, target: dict[str, np.ndarray]) -> dict[str, Any]:
        from .recon import informed_adversary_row

        return informed_adversary_row(self, cell, target, self.config.attack_settings(cell.attack))

    # ------------------------------------------------------------------ driver
    def run(self) -> dict[str, Any]:
        done = []
        for cell in self.task.cells:
            key = G.cell_key(self.config, cell, self.group.seed, self.task.data_digest)
            t0 = time.perf_counter()
            target = self.model_arrays(cell, None)
            test = self.data.union_test()
            acc, auc = utility(target["test"], test.y)
            row: dict[str, Any] = {
                **{k: getattr(cell, k) for k in ("epsilon", "rank", "lora", "merge", "attack")},
                "seed": self.group.seed,
                "claimed_epsilon": float(target["claimed_epsilon"]),
                "delta": float(target["delta"]),
                "accountant": str(target["accountant"]),
                "accuracy": acc,
                "utility_auc": auc,
            }
            if BENCH_ATTACKS.get(cell.attack).kind == "membership":
                row.update(self.membership_row(cell, target))
            else:
                row.update(self.recon_row(cell, target))
            row.update(self.canary_row(target))
            row["seconds"] = time.perf_counter() - t0
            row["cell_key"] = key
            self.cache.store_result(key, _jsonable_row(row))
            done.append(key)
        return {"group": self.group, "computed": done, "trained": self.trained}


def _jsonable_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
            v = encode(v)
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def row_from_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if v in ("inf", "-inf", "nan") and k not in ("lora", "merge", "attack", "accountant", "cell_key"):
            v = decode(v)
        out[k] = v
    return out
