"""train_plugin with real Opacus and PEFT: the DP record, FFA, utility, refusals."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forge_secure.errors import ForgeFileError, ForgeValueError
from forge_secure.privacy import TrainConfig, ffa_matrix, train_plugin
from forge_secure.privacy.randomness import commit, fresh_secret, seed_from_label
from forge_secure.privacy.train import plan_privacy


def _opacus_epsilon(dp):
    from opacus.accountants import create_accountant

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc = create_accountant(dp["accountant"])
        acc.history = [(dp["noise_multiplier"], dp["sample_rate"], dp["steps"])]
        return acc.get_epsilon(delta=dp["delta"])


@pytest.fixture(scope="module")
def dp_plugin(tab_base, tab_train, tab_shard, tmp_path_factory):
    out = tmp_path_factory.mktemp("plugins") / "dp"
    cfg = TrainConfig(noise_multiplier=1.3, epochs=6, seed=5)
    return train_plugin(cfg, tab_train, site="site-1", base=tab_base, commitment={"membership": tab_shard.commitment()}, out=out)


def test_forge_json_epsilon_is_opacus_recomputation(dp_plugin, tab_train):
    meta = json.loads((dp_plugin.path / "forge.json").read_text())
    dp = meta["dp"]
    n = len(tab_train)
    assert dp["enabled"] and dp["accountant"] == "prv" and dp["max_grad_norm"] == 1.0
    assert dp["sample_rate"] == pytest.approx(32 / n)
    assert dp["steps"] == 6 * math.ceil(n / 32)
    assert dp["delta"] == pytest.approx(min(1e-5, 1 / n**2)) and dp["delta"] * n <= 0.01
    assert dp["epsilon"] == pytest.approx(_opacus_epsilon(dp), rel=1e-9)
    assert meta["data"]["rows"] == n and meta["data"]["membership"]["pool_rows"] > n
    assert meta["lora"]["ffa"] is False and meta["training"]["sampling"] == "poisson"


def test_plugin_loads_with_peft_and_forge(dp_plugin, tab_base, tab_train):
    from peft import PeftModel

    from forge_secure.plugins import fresh_copy, load_plugin

    X = torch.tensor(tab_train.X[:10])
    peft_model = PeftModel.from_pretrained(fresh_copy(tab_base), str(dp_plugin.path))
    with torch.no_grad():
        assert torch.allclose(peft_model(X), dp_plugin.model(X), atol=1e-6)
    loaded = load_plugin(dp_plugin.path, tab_base)
    assert np.allclose(loaded.logits(tab_train.X[:10]), dp_plugin.logits(tab_train.X[:10]))


@pytest.mark.parametrize("dp", [True, False])
def test_identical_arguments_give_different_plugins_and_forge_json_cannot_regenerate_them(tab_base, tab_train, dp):
    """The noise and the sampling come from a fresh OS secret: two runs with identical arguments
    (the training seed included) differ, and forge.json holds only commitments."""
    cfg = TrainConfig(noise_multiplier=1.0, epochs=2, seed=11) if dp else TrainConfig(no_dp=True, epochs=2, seed=11)
    a = train_plugin(cfg, tab_train, site="site-1", base=tab_base)
    b = train_plugin(cfg, tab_train, site="site-1", base=tab_base)
    sa, sb = a.adapter_state(), b.adapter_state()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if "lora_B" in k)
    assert a.secret != b.secret and len(a.secret) == 32
    text = json.dumps(a.meta)
    assert a.secret.hex() not in text and "digest" not in a.meta["data"]
    rnd = a.meta["dp"]["randomness"]
    assert rnd["source"] == "os" and rnd["secret_commitment"] == commit(a.secret) != commit(b.secret)
    # the published training seed replays nothing: training with a secret derived from it differs
    c = train_plugin(cfg, tab_train, site="site-1", base=tab_base, secret=seed_from_label("training", 11))
    assert any(not torch.equal(sa[k], c.adapter_state()[k]) for k in sa if "lora_B" in k)
    assert c.meta["dp"]["randomness"]["source"] == "supplied"


def test_the_secret_replays_a_run_bit_for_bit(tab_base, tab_train):
    cfg = TrainConfig(noise_multiplier=1.0, epochs=2, seed=11, dropout=0.1)
    a = train_plugin(cfg, tab_train, site="site-1", base=tab_base)
    b = train_plugin(cfg, tab_train, site="site-1", base=tab_base, secret=a.secret)
    sa, sb = a.adapter_state(), b.adapter_state()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.meta["data"]["commitment"] == b.meta["data"]["commitment"]
    with pytest.raises(ForgeValueError) as e:
        train_plugin(cfg, tab_train, site="site-1", base=tab_base, secret=b"short")
    assert e.value.code == "dp.secret"


def test_ffa_plugin_a_is_its_derivation_and_only_b_changes(tab_base, tab_train):
    cfg = TrainConfig(noise_multiplier=1.0, epochs=3, ffa=True, ffa_seed=7)
    plugin = train_plugin(cfg, tab_train, site="site-2", base=tab_base)
    state = plugin.adapter_state()
    a_keys = sorted(k for k in state if "lora_A" in k)
    b_keys = sorted(k for k in state if "lora_B" in k)
    assert len(a_keys) == len(b_keys) == len(tab_base.target_modules)
    for k in a_keys:
        module = k.split("base_model.model.", 1)[1].split(".lora_A", 1)[0]
        assert torch.equal(state[k], ffa_matrix(tab_base.digest, 7, module, tuple(state[k].shape)))
    assert all(state[k].abs().sum() > 0 for k in b_keys)  # B started at 0 and moved
    # another site with the same public seed gets the same A, a different seed another one
    other = train_plugin(dataclasses.replace(cfg, seed=1), tab_train, site="site-3", base=tab_base).adapter_state()
    assert all(torch.equal(state[k], other[k]) for k in a_keys)
    assert not torch.equal(ffa_matrix(tab_base.digest, 8, "fc1", (8, 30)), ffa_matrix(tab_base.digest, 7, "fc1", (8, 30)))
    assert plugin.meta["lora"]["ffa_seed"] == 7


def test_no_dp_fits_training_set_better_than_epsilon_1(tab_base, tab_train):
    def train_loss(plugin):
        with torch.no_grad():
            logits = torch.tensor(plugin.logits(tab_train.X))
        return F.cross_entropy(logits, torch.tensor(tab_train.y)).item()

    free = train_plugin(TrainConfig(no_dp=True, epochs=10), tab_train, site="site-1", base=tab_base)
    private = train_plugin(TrainConfig(target_epsilon=1.0, epochs=10, accountant="rdp"), tab_train, site="site-1", base=tab_base)
    assert free.meta["dp"]["epsilon"] == "inf" and free.meta["dp"]["enabled"] is False
    assert private.meta["dp"]["epsilon"] <= 1.0
    assert train_loss(free) < train_loss(private)


def test_from_meta_reproduces_the_recipe(dp_plugin):
    cfg = TrainConfig.from_meta(dp_plugin.meta)
    assert cfg.noise_multiplier == dp_plugin.meta["dp"]["noise_multiplier"] and cfg.target_epsilon is None
    assert (cfg.epochs, cfg.seed, cfg.rank, cfg.ffa) == (6, 5, 8, False)
    assert cfg.delta == dp_plugin.meta["dp"]["delta"]
    with pytest.raises(ForgeValueError):
        TrainConfig.from_meta({"kind": "merged"})


@pytest.mark.parametrize(
    "kwargs,word",
    [
        ({}, "none given"),
        ({"no_dp": True, "noise_multiplier": 1.0}, "no_dp"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"no_dp": True, "rank": 0}, "rank"),
        ({"no_dp": True, "lr": float("nan")}, "lr"),
        ({"no_dp": True, "accountant": "x"}, "prv"),
        ({"no_dp": True, "epochs": 1.5}, "epochs"),
        ({"target_epsilon": 1.0, "delta": 2.0}, "delta"),
    ],
)
def test_config_validation(kwargs, word):
    with pytest.raises(ForgeValueError) as e:
        TrainConfig(**kwargs)
    assert word in str(e.value)


def test_delta_must_be_below_one_over_n(tab_train):
    with pytest.raises(ForgeValueError) as e:
        plan_privacy(TrainConfig(noise_multiplier=1.0, delta=0.5), len(tab_train))
    assert e.value.code == "dp.delta" and "1/n" in str(e.value)


def test_unreachable_target_refused_before_training(tab_base, tab_train, tmp_path):
    with pytest.raises(ForgeValueError) as e:
        train_plugin(
            TrainConfig(target_epsilon=0.001, epochs=200, accountant="rdp", delta=1e-6),
            tab_train,
            site="site-1",
            base=tab_base,
            out=tmp_path / "p",
        )
    assert e.value.code == "dp.unreachable"
    assert not (tmp_path / "p").exists()


def test_existing_output_refused_before_training(dp_plugin, tab_base, tab_train):
    with pytest.raises(ForgeFileError):
        train_plugin(TrainConfig(noise_multiplier=1.0, epochs=1), tab_train, site="site-1", base=tab_base, out=dp_plugin.path)


def test_wrong_data_refused(tab_base, tab_train):
    from forge_secure.errors import ForgeDataError
    from forge_secure.plugins import Dataset

    bad = Dataset(np.zeros((10, 7), np.float32), np.zeros(10, np.int64), 2, "bad", "tabular")
    with pytest.raises(ForgeDataError):
        train_plugin(TrainConfig(no_dp=True, epochs=1), bad, site="site-1", base=tab_base)
    with pytest.raises(ForgeValueError) as e:
        train_plugin(TrainConfig(no_dp=True, epochs=1, targets=("nope",)), tab_train, site="site-1", base=tab_base)
    assert "fc1" in str(e.value)


def test_dp_step_adds_calibrated_noise(tab_base, tab_train):
    """One DP step on an empty batch leaves only the noise: N(0, (sigma C / expected batch)^2)."""
    from forge_secure.privacy import build_lora_model
    from forge_secure.privacy.train import TrainingRun

    cfg = TrainConfig(noise_multiplier=2.0, max_grad_norm=0.5, ffa=True, accountant="rdp")
    model, _ = build_lora_model(tab_base, cfg)
    plan = plan_privacy(cfg, len(tab_train))
    run = TrainingRun(model, torch.tensor(tab_train.X), torch.tensor(tab_train.y), cfg, plan, secret=fresh_secret())
    run._step([])
    noise = torch.cat([p.grad.flatten() for p in run.clipper.parameters])
    expected = 2.0 * 0.5 / (plan.n * plan.sample_rate)
    assert noise.numel() > 500
    assert abs(noise.std().item() / expected - 1) < 0.1 and abs(noise.mean().item()) < 0.2 * expected
    assert run.history == [(2.0, plan.sample_rate, 1)]
    run.close()
