"""`forge train`, `forge eval`, `forge plugin show`, `forge ledger show` through the real CLI."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from tests.conftest import assert_clean_error as _assert_clean_error

HAVE_TRAIN = importlib.util.find_spec("forge_secure.privacy.train") is not None
needs_train = pytest.mark.skipif(not HAVE_TRAIN, reason="forge_secure.privacy.train (A2) not present yet")

SEED = 190620171122302157296455710945376257110  # a fixed 128-bit membership seed (a training seed must be >= 2**96)


@pytest.fixture
def forge(forge_inproc, tmp_path_factory, monkeypatch):
    """The `forge` command run in this process (tests/conftest.py), with a private FORGE_HOME."""
    monkeypatch.setenv("FORGE_HOME", str(tmp_path_factory.mktemp("cli-home")))
    return forge_inproc


def assert_clean_error(result, *words):
    """Exit 2, no traceback, the words named, and exactly one line of message."""
    _assert_clean_error(result, *words)
    lines = [ln for ln in (result.err + result.out).splitlines() if ln.strip()]
    assert len(lines) == 1, lines


def _nothing_written(tmp_path, allowed=()):
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in allowed)
    assert left == [], left


@pytest.fixture
def peft_plugin(tmp_path, monkeypatch):
    """A real PEFT plugin on tabular-mlp, written with save_plugin (no training needed)."""
    from peft import LoraConfig, get_peft_model

    from forge_secure.plugins.bases import fresh_copy, load_base
    from forge_secure.plugins.plugin import new_meta, save_plugin

    monkeypatch.setenv("FORGE_HOME", str(tmp_path / "home"))
    base = load_base("tabular-mlp")
    torch.manual_seed(0)
    model = get_peft_model(fresh_copy(base), LoraConfig(r=4, lora_alpha=8, target_modules=list(base.target_modules)))
    meta = new_meta(
        site="site-1",
        base=base,
        lora={"rank": 4, "alpha": 8, "targets": list(base.target_modules), "ffa": False},
        training={"epochs": 1},
        dp={"enabled": False, "epsilon": float("inf")},
        data={
            "name": "breast-cancer/site-1/train",
            "rows": 1,
            "membership": {"include_prob": 0.5, "pool_rows": 2, "seed_sha256": "0" * 64},
        },
    )
    return save_plugin(model, meta, tmp_path / "plugin")


def _csv(path, n_features, label="label", rows=6, seed=0):
    rng = np.random.default_rng(seed)
    header = [f"f{i}" for i in range(n_features)] + [label]
    lines = [",".join(header)]
    for i in range(rows):
        lines.append(",".join(f"{v:.4f}" for v in rng.normal(size=n_features)) + f",{i % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- bad input to train


def _train(forge_cli, tmp_path, *extra, data="bundled:site-1", base="tabular-mlp"):
    return forge_cli("train", "--site", "site-1", "--data", data, "--base", base, "--epsilon", "8", "--out", tmp_path / "out", *extra)


def test_train_unknown_base_lists_the_registry(forge_cli, tmp_path):
    r = _train(forge_cli, tmp_path, base="resnet-9000")
    assert_clean_error(r, "resnet-9000", "tabular-mlp", "vit-tiny")
    _nothing_written(tmp_path)


def test_train_csv_with_wrong_feature_count(forge, tmp_path):
    data = _csv(tmp_path / "narrow.csv", 12)
    r = _train(forge, tmp_path, data=data)
    assert_clean_error(r, "12 feature columns", "expects 30")
    _nothing_written(tmp_path, {"narrow.csv"})


def test_train_csv_missing_label_column(forge, tmp_path):
    data = _csv(tmp_path / "d.csv", 30, label="diagnosis")
    r = _train(forge, tmp_path, data=data)
    assert_clean_error(r, "no label column 'label'", "--label-column")
    _nothing_written(tmp_path, {"d.csv"})


@pytest.mark.parametrize("kind", ["missing", "empty", "not-csv", "directory", "bad-npz", "unknown-site"])
def test_train_bad_data_paths(forge, tmp_path, kind):
    target = tmp_path / "inputs"
    target.mkdir()
    if kind == "missing":
        data, words = target / "nope.csv", ("does not exist",)
    elif kind == "empty":
        data = target / "empty.csv"
        data.write_bytes(b"")
        words = ("is empty",)
    elif kind == "not-csv":
        data = target / "scan.png"
        data.write_bytes(b"\x89PNG\r\n")
        words = ("unsupported type", ".png")
    elif kind == "directory":
        data, words = target, ("is a directory",)
    elif kind == "bad-npz":
        data = target / "images.npz"
        np.savez(data, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros(4, np.int64))
        data.write_bytes(data.read_bytes()[:100])
        words = ("not a readable .npz",)
    else:
        data, words = "bundled:site-7", ("site-7", "site-1")
    r = _train(forge, tmp_path, data=data)
    assert_clean_error(r, *words)
    _nothing_written(tmp_path, {"inputs"})


def test_train_refuses_an_existing_plugin_before_any_work(forge, tmp_path, peft_plugin):
    before = {p.name: p.read_bytes() for p in peft_plugin.iterdir()}
    r = forge("train", "--site", "site-1", "--data", "bundled:site-1", "--epsilon", "8", "--out", peft_plugin)
    assert_clean_error(r, "already holds a plugin")
    assert {p.name: p.read_bytes() for p in peft_plugin.iterdir()} == before


def test_train_needs_exactly_one_privacy_choice(forge, tmp_path):
    r = forge("train", "--site", "site-1", "--data", "bundled:site-1", "--out", tmp_path / "o")
    assert r.code == 2 and "--epsilon" in r.err and "Traceback" not in r.err
    r = forge("train", "--site", "site-1", "--data", "bundled:site-1", "--out", tmp_path / "o", "--epsilon", "1", "--no-dp")
    assert r.code == 2 and "not allowed with" in r.err


# --------------------------------------------------------------------------- eval / plugin show on a PEFT plugin


def test_plugin_show_and_eval(forge, peft_plugin):
    r = forge("plugin", "show", peft_plugin, "--json")
    assert r.code == 0, r
    out = json.loads(r.out)
    assert out["verified"] is True and out["meta"]["site"] == "site-1"
    assert out["adapter_sha256"] == out["meta"]["adapter"]["sha256"]
    r = forge("plugin", "show", peft_plugin)
    assert r.code == 0 and "verified" in r.out and "epsilon = inf" in r.out
    r = forge("eval", peft_plugin, "--data", "bundled:site-1", "--json")
    assert r.code == 0, r
    ev = json.loads(r.out)
    assert ev["data"] == "breast-cancer/site-1/test"
    assert 0 <= ev["accuracy"] <= 1 and ev["accuracy_ci95"][0] <= ev["accuracy"] <= ev["accuracy_ci95"][1]
    assert 0 <= ev["roc_auc"] <= 1 and ev["roc_auc_ci95"][0] <= ev["roc_auc"] <= ev["roc_auc_ci95"][1]
    # LoRA B starts at zero: this untrained plugin predicts exactly like its base
    assert ev["accuracy"] == ev["base_accuracy"]


def test_eval_accuracy_matches_sklearn(forge, peft_plugin):
    from sklearn.metrics import accuracy_score, roc_auc_score

    from forge_secure.plugins.data import bundled_splits
    from forge_secure.plugins.plugin import load_plugin

    test = bundled_splits().sites[1].test
    p = load_plugin(peft_plugin).predict_proba(test.X)
    r = forge("eval", peft_plugin, "--data", "bundled:site-2/test", "--json")
    ev = json.loads(r.out)
    assert ev["accuracy"] == pytest.approx(accuracy_score(test.y, p.argmax(1)))
    assert ev["roc_auc"] == pytest.approx(roc_auc_score(test.y, p[:, 1]))


def test_eval_wrong_shape_data(forge, tmp_path, peft_plugin):
    data = _csv(tmp_path / "narrow.csv", 5)
    assert_clean_error(forge("eval", peft_plugin, "--data", data), "5 feature columns", "expects 30")


@pytest.mark.parametrize("command", [("plugin", "show"), ("eval",)])
def test_truncated_adapter_and_wrong_digest(forge, peft_plugin, command):
    extra = ("--data", "bundled:site-1") if command == ("eval",) else ()
    adapter = peft_plugin / "adapter_model.safetensors"
    good = adapter.read_bytes()
    adapter.write_bytes(good[: len(good) // 2])
    assert_clean_error(forge(*command, peft_plugin, *extra), "truncated or tampered")
    adapter.write_bytes(good)
    meta = json.loads((peft_plugin / "forge.json").read_text())
    meta["base"]["digest"] = "0" * 64
    (peft_plugin / "forge.json").write_text(json.dumps(meta))
    assert_clean_error(forge(*command, peft_plugin, *extra), "00000000", "same base model")
    (peft_plugin / "forge.json").write_text("{trunc")
    assert_clean_error(forge(*command, peft_plugin, *extra), "not valid json")


def test_plugin_show_json_error(forge, tmp_path):
    r = forge("plugin", "show", tmp_path / "nope", "--json")
    assert r.code == 2
    assert json.loads(r.out)["error"]["code"] == "plugin.missing"


# --------------------------------------------------------------------------- end to end with A2's train_plugin


@needs_train
def test_train_eval_show_ledger_end_to_end(forge, tmp_path):
    out = tmp_path / "p1"
    r = forge(
        "train",
        "--site",
        "site-1",
        "--data",
        "bundled:site-1",
        "--epsilon",
        "4",
        "--ffa",
        "--epochs",
        "3",
        "--out",
        out,
        "--budget",
        "5",
        "--json",
    )
    assert r.code == 0, r
    s = json.loads(r.out)
    assert s["dp"]["enabled"] is True and 0 < s["dp"]["epsilon"] <= 4.0 + 1e-6
    assert s["data"]["membership"]["pool_rows"] > s["rows"] > 0
    assert s["lora"]["ffa"] is True
    from forge_secure.plugins.data import bundled_splits, seed_sha256

    shard = bundled_splits().sites[0]
    assert s["data"]["membership"]["seed_sha256"] == seed_sha256(shard.membership_seed)
    assert s["rows"] == len(shard.train())
    # loads with PEFT as it is
    from peft import PeftModel

    from forge_secure.plugins.bases import fresh_copy, load_base

    PeftModel.from_pretrained(fresh_copy(load_base("tabular-mlp")), str(out))
    r = forge("plugin", "show", out)
    assert r.code == 0 and "verified" in r.out
    r = forge("eval", out, "--data", "bundled:site-1", "--json")
    assert r.code == 0 and json.loads(r.out)["rows"] == len(shard.test)
    r = forge("ledger", "show", "--site", "site-1", "--json")
    assert r.code == 0, r
    (led,) = json.loads(r.out)["ledgers"]
    assert led["releases"] == 1 and led["epsilon_spent"] == pytest.approx(s["dp"]["epsilon"], rel=1e-3)
    # a second training at epsilon 4 would pass the budget of 5: refused with the figures, nothing written
    r = forge("train", "--site", "site-1", "--data", "bundled:site-1", "--epsilon", "4", "--ffa", "--epochs", "3", "--out", tmp_path / "p2")
    assert_clean_error(r, "budget")
    assert not (tmp_path / "p2").exists()


@needs_train
def test_vectorised_bootstrap_auc_equals_sklearn():
    from sklearn.metrics import roc_auc_score

    from forge_secure.plugins.evaluate import auc_of_resamples

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    score = np.round(rng.normal(size=60) + y, 1)  # rounded: ties exercise the 1/2 rule
    idx = rng.integers(0, 60, size=(20, 60))
    got = auc_of_resamples(y, score, idx)
    want = [roc_auc_score(y[i], score[i]) for i in idx]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isnan(auc_of_resamples(np.zeros(5, int), score[:5], np.arange(5)[None]))[0]


@needs_train
def test_ledger_show_and_corrupt_ledger(forge, tmp_path):
    r = forge("ledger", "show", "--json")
    assert r.code == 0 and json.loads(r.out) == {"ledgers": []}
    r = forge(
        "train",
        "--site",
        "site-3",
        "--data",
        "bundled:site-3",
        "--noise-multiplier",
        "2",
        "--epochs",
        "1",
        "--out",
        tmp_path / "p",
        "--json",
    )
    assert r.code == 0, r
    eps = json.loads(r.out)["dp"]["epsilon"]
    r = forge("ledger", "show")
    assert r.code == 0 and "site-3" in r.out
    (led,) = json.loads(forge("ledger", "show", "--site", "site-3", "--json").out)["ledgers"]
    assert led["dataset"] == "breast-cancer/site-3" and led["epsilon_spent"] == pytest.approx(eps, rel=1e-3)
    assert json.loads(forge("ledger", "show", "--site", "site-1", "--json").out) == {"ledgers": []}
    for bad in ("0", "1.5"):  # no delta outside (0, 1) may report a spend (delta 0 used to print epsilon 0)
        assert_clean_error(forge("ledger", "show", "--delta", bad), "delta", bad)
    from pathlib import Path

    path = Path(led["path"])
    path.write_text(path.read_text()[:-15])
    assert_clean_error(forge("ledger", "show"), "corrupt")
    r = forge("train", "--site", "site-3", "--data", "bundled:site-3", "--noise-multiplier", "2", "--epochs", "1", "--out", tmp_path / "q")
    assert_clean_error(r, "corrupt")
    assert not (tmp_path / "q").exists()


@needs_train
def test_vit_tiny_on_a_medmnist_npz(forge, tmp_path):
    """Image path end to end: a MedMNIST-layout .npz of 8x8 digits, vit-tiny, q/v LoRA."""
    from forge_secure.plugins.data import bundled_image_splits

    s = bundled_image_splits()
    tr, te = s.sites[0].train(), s.sites[0].test
    to_u8 = lambda d: np.round(d.X[:, 0] * 255).astype(np.uint8)  # noqa: E731
    np.savez(
        tmp_path / "digits.npz",
        train_images=to_u8(tr),
        train_labels=tr.y[:, None],
        val_images=to_u8(te)[:4],
        val_labels=te.y[:4, None],
        test_images=to_u8(te),
        test_labels=te.y[:, None],
    )
    # site-1 holds 9 of the 10 digits: the shipped 10-class vit-tiny does not fit, and no base is trained at load time
    r = forge(
        "train",
        "--site",
        "site-1",
        "--data",
        tmp_path / "digits.npz",
        "--base",
        "vit-tiny",
        "--no-dp",
        "--epochs",
        "1",
        "--out",
        tmp_path / "vit",
    )
    assert_clean_error(r, "n_classes=9 is not shipped", "tools/make_bases.py vit-tiny --set n_classes=9 --out DIR")
    from forge_secure.plugins.base_builders import write_base

    write_base("vit-tiny", tmp_path / "vit9", n_classes=9, pretrain_steps=3)  # what that command does
    r = forge(
        "train",
        "--site",
        "site-1",
        "--data",
        tmp_path / "digits.npz",
        "--base",
        tmp_path / "vit9",
        "--no-dp",
        "--epochs",
        "1",
        "--rank",
        "2",
        "--out",
        tmp_path / "vit",
        "--json",
    )
    assert r.code == 0, r
    s = json.loads(r.out)
    assert s["base"]["name"] == str((tmp_path / "vit9").resolve())
    assert sorted(s["lora"]["targets"]) in (["q_proj", "v_proj"], ["query", "value"])
    r = forge("eval", tmp_path / "vit", "--data", tmp_path / "digits.npz", "--json")
    assert r.code == 0, r
    ev = json.loads(r.out)
    assert ev["rows"] == len(te) and 0 <= ev["roc_auc"] <= 1 and ev["data"].endswith("digits.npz:test")
    # tabular data into an image base is refused
    assert_clean_error(forge("eval", tmp_path / "vit", "--data", "bundled:site-1"), "takes image data")


def test_train_site_must_own_the_bundled_data(forge, tmp_path):
    r = forge("train", "--site", "site-2", "--data", "bundled:site-1", "--epsilon", "1", "--out", tmp_path / "o")
    assert_clean_error(r, "training set of site-1", "--site site-1")
    assert not (tmp_path / "o").exists()


@needs_train
def test_train_unreachable_epsilon_is_a_clean_error(forge, tmp_path):
    r = forge("train", "--site", "site-1", "--data", "bundled:site-1", "--epsilon", "0.01", "--epochs", "5", "--out", tmp_path / "o")
    assert_clean_error(r, "0.01", "cannot be reached")
    assert not (tmp_path / "o").exists()
    r = forge("train", "--site", "site-1", "--data", "bundled:site-1", "--epsilon", "0.01", "--out", tmp_path / "o", "--json")
    assert r.code == 2 and json.loads(r.out)["error"]["code"] == "dp.unreachable"


@needs_train
def test_train_own_csv_by_coin_flips_then_attack_candidates_check(forge, tmp_path):
    """`--membership-seed` on a user CSV: the training set is a coin-flip draw, forge.json
    commits to it, and the membership attack's candidate labelling accepts the seed (and
    refuses another)."""
    from attacks.membership.run import resolve_candidates
    from forge_secure.errors import ForgeValueError
    from forge_secure.plugins.data import draw_membership

    data = _csv(tmp_path / "own.csv", 30, rows=50)
    r = forge(
        "train",
        "--site",
        "site-1",
        "--data",
        data,
        "--no-dp",
        "--epochs",
        "1",
        "--membership-seed",
        str(SEED),
        "--out",
        tmp_path / "p",
        "--json",
    )
    assert r.code == 0, r
    meta = json.loads((tmp_path / "p" / "forge.json").read_text())
    mask = draw_membership(50, SEED, 0.5)
    assert meta["data"]["rows"] == int(mask.sum())
    assert meta["data"]["membership"]["pool_rows"] == 50
    cands = resolve_candidates(str(data), meta=meta, membership_seed=SEED)
    assert cands.provenance["commitment_checked"] and np.array_equal(cands.labels, mask.astype(np.int64))
    with pytest.raises(ForgeValueError) as e:
        resolve_candidates(str(data), meta=meta, membership_seed=SEED + 1)
    assert e.value.code == "attack.membership_mismatch"
    bad = forge("train", "--site", "site-1", "--data", data, "--no-dp", "--membership-seed", "-3", "--out", tmp_path / "q")
    assert_clean_error(bad, "-3", "--membership-seed")
    assert not (tmp_path / "q").exists()
    guessable = forge("train", "--site", "site-1", "--data", data, "--no-dp", "--membership-seed", "20261203", "--out", tmp_path / "q")
    assert_clean_error(guessable, "can be guessed", "secrets.randbits(128)")
    assert not (tmp_path / "q").exists()
