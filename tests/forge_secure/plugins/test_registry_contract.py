"""The contract of :data:`forge_secure.plugins.bases.BASES`, run over every bundled base the way
scikit-learn's ``parametrize_with_checks`` runs every estimator (a new base is checked by
shipping it): it loads from its files with the pinned digest, frozen and in eval mode, maps a
batch of records of its input shape to finite logits over its classes, takes a PEFT LoRA
adapter on its default target modules, and refuses settings it was not built with by a
``ForgeError`` that says how to build them."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

from forge_secure.errors import ForgeError
from forge_secure.plugins.bases import (
    ASSETS,
    BASES,
    SHIPPED,
    directory_digest,
    fresh_copy,
    load_base,
)

NAMES = BASES.names()


def test_every_shipped_base_is_registered():
    assert NAMES == sorted(SHIPPED)


@pytest.mark.parametrize("name", NAMES)
def test_every_base_loads_from_its_pinned_files(name):
    base = BASES.get(name)()
    assert base is load_base(name)
    assert base.digest == SHIPPED[name] == directory_digest(ASSETS / name)[0]
    assert base.kind in ("tabular", "image", "text") and base.n_classes >= 2 and base.input_shape
    assert not base.model.training and not any(p.requires_grad for p in base.model.parameters())
    assert base.describe() == {"name": name, "digest": base.digest, "settings": base.settings}


@pytest.mark.parametrize("name", NAMES)
def test_every_base_gives_finite_logits_and_is_deterministic(name):
    base = BASES.get(name)()
    x = torch.rand((5, *base.input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = base.model(x), base.model(x)
    assert a.shape == (5, base.n_classes) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_every_base_takes_a_lora_adapter_on_its_default_targets(name):
    base = BASES.get(name)()
    model = get_peft_model(fresh_copy(base), LoraConfig(r=2, lora_alpha=4, target_modules=list(base.target_modules)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for target in base.target_modules:
        assert any(f".{target}.lora_A" in n for n in trainable), f"{name}: no LoRA on {target}"
    assert not any(p.requires_grad for p in base.model.parameters())  # the shared base is untouched


@pytest.mark.parametrize("name", NAMES)
def test_every_base_refuses_settings_it_was_not_built_with(name):
    base = BASES.get(name)()
    assert BASES.get(name)(**base.settings) is base  # its own settings are accepted
    key = min(base.settings)
    with pytest.raises(ForgeError) as e:
        BASES.get(name)(**{key: base.settings[key] + 1})
    assert e.value.code == "base.not_shipped" and "make_bases.py" in str(e.value)
    with pytest.raises(ForgeError) as e:
        BASES.get(name)(no_such_setting=1)
    assert e.value.code == "base.settings"
