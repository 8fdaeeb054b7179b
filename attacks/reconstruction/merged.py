"""Redo a TIES, DARE or sequential (MedForge) merge with one site's plugin changed: the
release the informed adversary sees when the target is such a merge.

The informed adversary of Hayes, Mahloujifar and Balle (NeurIPS 2023) knows every training
record but one, and here also every other parent plugin of the merge and the merge's recipe
as ``forge.json`` records it (method, weights, and ``details``: TIES/DARE ``density``,
DARE's drop ``seed``, the SVD ``rank`` of non-FFA merges, the sequential merge's tuned
``(alpha, beta)`` per step). With those it can redo the whole merge for any hypothetical
version of the attacked site's plugin, by calling the merge code itself on tensors:

* ``ties`` (Yadav et al. 2023): :func:`forge_secure.merge.fusion.ties_merge`: trim to the
  density, elect signs, disjoint mean; non-linear in the site's tensors;
* ``dare`` (Yu et al. 2024): :func:`forge_secure.merge.fusion.dare_merge` with the recorded
  seed, so the very same drop masks, then rescale by 1 / density;
* ``sequential`` (MedForge after LoraHub, Huang et al. 2023):
  :func:`forge_secure.merge.fusion.sequential.combine` step by step in the recorded order
  with the recorded tuned scalars. The scalars are held fixed: they were tuned by nevergrad
  on DP synthetic data the adversary need not hold, and they are part of the released
  recipe. (Re-tuning them would be one more post-processing step of the same release.)

Every redo is compared in the space of the merged updates ``Delta W = s B A`` per target
module: the released factors of a non-FFA TIES/DARE merge come from an SVD whose singular
vectors may flip sign under a tiny change, while ``Delta W`` moves continuously. Before any
game the redo is checked against the released merge: redone with the site's own plugin it
must give the merged plugin (relative difference at most ``1e-4``), otherwise the parents
or the recorded recipe are not the ones the merge was made from (``recon.merge_redo``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from forge_secure.errors import ForgeDataError, ForgeValueError

from .gradients import LoraFunctional

REDO_METHODS = ("ties", "dare", "sequential")
"""Merges the informed adversary redoes from all parents (``exact``/``ffa``/``ffa-ckks`` are
handled by :class:`attacks.reconstruction.informed.MergeRelease` from the merged tensors alone)."""

REDO_TOLERANCE = 1e-4

_ADAPTER_SEGMENT = re.compile(r"\.(lora_[AB])\.[^.]+\.weight$")


def state_key(param_name: str) -> str:
    """PEFT parameter name (``...fc1.lora_A.default.weight``) -> saved state key (``...fc1.lora_A.weight``)."""
    return _ADAPTER_SEGMENT.sub(r".\1.weight", param_name)


def _sites(entries) -> str:
    return ", ".join(str(p.get("site")) for p in entries) or "(none recorded)"


def order_parents(merged_meta: dict, recipe, given: Sequence) -> list:
    """The merge's parents as :class:`forge_secure.plugins.PluginRecord`, in the merge's order
    (which matters to DARE's masks, the weights and the sequential order), matched by adapter
    digest against ``merged_meta["parents"]``. ``recipe`` is the attacked site's plugin,
    ``given`` the other parents (extra copies of the recipe are allowed)."""
    method = (merged_meta.get("merge") or {}).get("method")
    entries = [p for p in (merged_meta.get("parents") or []) if isinstance(p, dict)]
    by_digest = {pf.digest: pf for pf in [recipe, *given]}
    known = {p.get("digest") for p in entries}
    for pf in given:
        if pf.digest not in known:
            raise ForgeValueError(
                f"--parents {pf.path} (site {pf.site}) is not a parent of the merged plugin (its parents: {_sites(entries)})",
                fix="give the plugin directories the merge was made from",
                code="recon.parent_unknown",
            )
    missing = [p for p in entries if p.get("digest") not in by_digest]
    if missing:
        raise ForgeValueError(
            f"redoing the {method} merge needs every parent plugin; missing: site(s) {_sites(missing)}",
            fix=f"pass --parents with the plugin directories of {_sites(missing)} (the informed adversary knows the other sites' plugins)",
            code="recon.needs_parents",
        )
    return [by_digest[p["digest"]] for p in entries]


class MergeRedo:
    """``redo.deltas(site_params) -> {module: Delta W}``: the merged plugin's updates had the
    attacked site's trainable tensors been ``site_params`` (names of ``site_fn``), the other
    parents and the recipe fixed. ``redo.observed`` holds the released merge's updates."""

    score_space = "merged updates Delta W = s B A per target module"

    def __init__(self, merged_files, parents: Sequence, site_index: int, site_fn: LoraFunctional):
        merge = merged_files.meta.get("merge") or {}
        self.method = str(merge.get("method"))
        if self.method not in REDO_METHODS:
            raise ForgeValueError(f"MergeRedo redoes {', '.join(REDO_METHODS)} merges, not {self.method!r}", code="recon.merge_method")
        weights = merge.get("weights")
        if not isinstance(weights, list) or len(weights) != len(parents):
            raise ForgeValueError(
                f"the merged plugin {merged_files.path} records {weights!r} as weights for {len(parents)} parents",
                fix="attack a merge written by forge merge",
                code="recon.merge_weight",
            )
        self.weights = [float(w) for w in weights]
        self.details = dict(merge.get("details") or {})
        try:
            if self.method in ("ties", "dare"):
                self.density = float(self.details["density"])
                self.seed = int(self.details.get("seed", 0))
                self.rank = self.details.get("rank")
            else:
                self.steps = [(float(s["alpha"]), float(s["beta"])) for s in self.details["steps"]]
                if len(self.steps) != len(parents) - 1:
                    raise ValueError(f"{len(self.steps)} steps for {len(parents)} parents")
        except (KeyError, TypeError, ValueError) as e:
            raise ForgeValueError(
                f"the {self.method} merge's recorded settings are incomplete ({e.__class__.__name__}: {e})",
                fix="attack a merge written by forge merge",
                code="recon.merge_record",
            ) from None
        self.parents = list(parents)
        self.index = int(site_index)
        template = self.parents[self.index].adapter
        self.keys = {n: state_key(n) for n in site_fn.names}
        missing = [k for k in self.keys.values() if k not in template.state]
        if missing:
            raise ForgeDataError(f"the site plugin's adapter holds no tensor {missing[0]!r}", code="recon.update_mismatch")
        self.template = template
        self.site_state = {k: v.detach().double() for k, v in template.state.items()}
        self.observed = {m: d.double() for m, d in merged_files.adapter.deltas().items()}
        start = self.deltas(site_fn.params)
        if set(start) != set(self.observed):
            raise ForgeValueError("the redone merge targets other modules than the merged plugin", code="recon.merge_redo")
        num = sum(float(((start[m] - self.observed[m]) ** 2).sum()) for m in start)
        den = sum(float((d**2).sum()) for d in self.observed.values())
        self.redo_error = (num / den) ** 0.5 if den > 0 else num**0.5
        if not self.redo_error <= REDO_TOLERANCE:
            raise ForgeValueError(
                f"redoing the {self.method} merge from its {len(parents)} parents and the settings in {merged_files.path}/forge.json "
                f"does not give the merged plugin (relative difference {self.redo_error:.2e})",
                fix="give the very parent plugins the merge was made from; the merged forge.json may have been edited",
                code="recon.merge_redo",
            )

    # ---------------------------------------------------------------------- the redo
    def merged_adapter(self, site_params: Mapping[str, torch.Tensor]):
        """The merge's :class:`~forge_secure.merge.adapter.LoraAdapter` with the site's tensors replaced."""
        from forge_secure.merge.fusion import dare_merge, ties_merge
        from forge_secure.merge.fusion.sequential import combine

        state = dict(self.site_state)
        for n, k in self.keys.items():
            state[k] = site_params[n].detach().double()
        site = self.template.with_state(state)
        adapters = [site if i == self.index else p.adapter for i, p in enumerate(self.parents)]
        if self.method == "ties":
            return ties_merge(adapters, self.weights, density=self.density, rank=self.rank).adapter
        if self.method == "dare":
            return dare_merge(adapters, self.weights, density=self.density, seed=self.seed, rank=self.rank).adapter
        first = adapters[0]
        current = first.with_state({k: v.double() for k, v in first.state.items()}, name="merged", ffa=False)
        for (alpha, beta), nxt in zip(self.steps, adapters[1:], strict=True):
            current = combine(current, nxt, alpha, beta)
        return current

    def deltas(self, site_params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: d.double() for m, d in self.merged_adapter(site_params).deltas().items()}

    def distance(self, a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
        """Squared Frobenius distance summed over the target modules."""
        return float(sum(((a[m] - b[m]) ** 2).sum() for m in a))

    def record(self) -> dict:
        return {
            "method": self.method,
            "parents": [p.site for p in self.parents],
            "site_index": self.index,
            "weights": self.weights,
            "redo_relative_error": self.redo_error,
            "space": self.score_space,
            **(
                {"density": self.density, "seed": self.seed}
                if self.method in ("ties", "dare")
                else {"scalars": "held at the recorded tuned values"}
            ),
        }
