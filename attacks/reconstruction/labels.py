"""Labels for gradient inversion: given by the attacker, read off the update by the iDLG rule
(Zhao, Mopuri, Bilen, "iDLG: Improved Deep Leakage from Gradients", 2020), or searched."""

from __future__ import annotations

import numpy as np
import torch

from forge_secure.errors import ForgeValueError

from .gradients import Grads, LoraFunctional

LABEL_MODES = ("given", "search", "idlg")


def idlg_label(fn: LoraFunctional, target: Grads, n_classes: int) -> int | None:
    """The iDLG rule (Zhao et al. 2020) adapted to LoRA: for a batch of one and cross-entropy,
    the output gradient is g_c = p_c - 1[c = y], negative only for the true class. The output
    layer's grad_B rows are g_c times a shared vector, so the true class is the one row whose
    sign differs from all others. Needs at least three classes and a LoRA output layer;
    returns ``None`` when the rule cannot decide."""
    if n_classes < 3:
        return None
    for name in reversed(fn.names):
        if "lora_B" in name and target[name].shape[0] == n_classes:
            g = target[name].reshape(n_classes, -1)
            ref = g[torch.argmax(g.abs().sum(dim=1))]
            signs = torch.sign((g * ref).sum(dim=1))
            for s in (1.0, -1.0):
                odd = torch.nonzero(signs == s).flatten()
                if len(odd) == 1 and (signs == -s).sum() == n_classes - 1:
                    return int(odd[0])
            return None
    return None


def label_candidates(fn: LoraFunctional, target: Grads, batch_size: int, labels, n_classes: int | None, mode: str) -> list[np.ndarray]:
    """The label sets to try: the given labels; the iDLG label (batch of one); or, when iDLG cannot
    decide or ``mode`` is "search", every class in turn (batch of one), the attack keeping the one
    whose reconstruction matches the gradient best."""
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != batch_size:
            raise ForgeValueError(f"{len(labels)} labels for a batch of {batch_size}", code="recon.labels")
        return [labels]
    if mode == "given":
        raise ForgeValueError("label mode 'given' needs the batch's labels", fix="pass labels or use labels='search'", code="recon.labels")
    if batch_size != 1:
        raise ForgeValueError(
            f"label inference ({mode}) works for a batch of one, not {batch_size}",
            fix="pass the labels for larger batches",
            code="recon.labels",
        )
    if not n_classes or n_classes < 2:
        raise ForgeValueError("label inference needs the number of classes", code="recon.labels")
    if mode == "idlg":
        lab = idlg_label(fn, target, n_classes)
        if lab is not None:
            return [np.array([lab])]
    return [np.array([c]) for c in range(n_classes)]
