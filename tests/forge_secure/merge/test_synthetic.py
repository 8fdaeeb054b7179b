"""DP synthetic data (noisy class means of clipped embeddings): mechanism, accounting,
file format, and use for tuning."""

from __future__ import annotations

import numpy as np
import pytest

from forge_secure.errors import ForgeConfigError, ForgeDataError, ForgeFileError
from forge_secure.privacy.synthetic import SynthConfig, compute_epsilon, load_synthetic, make_synthetic, release_class_means, save_synthetic


@pytest.fixture(scope="module")
def site_data():
    from forge_secure.plugins.data import bundled_splits

    return bundled_splits().sites[0].train()


def test_release_is_a_gaussian_mechanism_with_sensitivity_c(base, site_data):
    # with almost no noise the release recovers the clipped class means exactly
    means, counts = release_class_means(base, site_data, sigma=1e-12, clip=1e3, space="input", rng=np.random.default_rng(0))
    for c in range(2):
        np.testing.assert_allclose(means[c], site_data.X[site_data.y == c].mean(0), rtol=1e-5, atol=1e-5)
        assert counts[c] == pytest.approx((site_data.y == c).sum(), rel=1e-6)
    # adding one record moves the (unnoised) release vector by at most C in L2
    from forge_secure.plugins.data import Dataset

    C = 2.0
    one = Dataset(X=site_data.X[:1] * 100, y=site_data.y[:1], n_classes=2, name="one", kind="tabular")
    m1, n1 = release_class_means(base, one, sigma=1e-12, clip=C, space="input", rng=np.random.default_rng(0))
    c = int(site_data.y[0])
    part = C / np.sqrt(2)
    vec = np.concatenate([m1[c] * n1[c], [n1[c] * part]])
    assert np.linalg.norm(vec) == pytest.approx(C, rel=1e-6)


def test_make_synthetic_records_its_privacy_and_round_trips(base, site_data, tmp_path):
    synth = make_synthetic(base, site_data, SynthConfig(target_epsilon=2.0, delta=1e-5, per_class=40, seed=1), site="site-1")
    rel = synth.meta["release"]
    assert rel["epsilon"] <= 2.0 + 1e-9 and rel["history"] == [[rel["noise_multiplier"], 1.0, 1]]
    assert rel["epsilon"] == pytest.approx(compute_epsilon([(rel["noise_multiplier"], 1.0, 1)], 1e-5), rel=1e-9)
    assert synth.dataset.X.shape[1] == 30 and set(np.unique(synth.dataset.y)) <= {0, 1}
    again = make_synthetic(base, site_data, SynthConfig(target_epsilon=2.0, delta=1e-5, per_class=40, seed=1), site="site-1")
    np.testing.assert_array_equal(again.dataset.X, synth.dataset.X)  # seeded
    path = save_synthetic(synth, tmp_path / "s.npz")
    loaded = load_synthetic(path)
    np.testing.assert_array_equal(loaded.dataset.X, synth.dataset.X)
    assert loaded.meta["release"]["epsilon"] == rel["epsilon"]
    with pytest.raises(ForgeFileError, match="exists"):
        save_synthetic(synth, path)


def test_head_space_fits_inputs_to_the_noisy_means(base, site_data):
    synth = make_synthetic(base, site_data, SynthConfig(noise_multiplier=0.5, space="head", per_class=10, steps=60, seed=0), site="site-1")
    assert synth.meta["space"] == "head" and np.isfinite(synth.dataset.X).all()


def test_bad_synthetic_inputs(tmp_path):
    with pytest.raises(ForgeConfigError, match="exactly one"):
        SynthConfig()
    with pytest.raises(ForgeConfigError, match="exactly one"):
        SynthConfig(noise_multiplier=1.0, target_epsilon=1.0)
    with pytest.raises(ForgeConfigError, match="clip"):
        SynthConfig(noise_multiplier=1.0, clip=0)
    with pytest.raises(ForgeConfigError, match="space"):
        SynthConfig(noise_multiplier=1.0, space="latent")
    with pytest.raises(ForgeFileError, match="does not exist"):
        load_synthetic(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ForgeDataError, match="not a forge synthetic"):
        load_synthetic(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", X=np.zeros((2, 3)), y=np.zeros(2), meta=np.frombuffer(b'{"format": "x"}', dtype=np.uint8))
    with pytest.raises(ForgeDataError, match="forge-synthetic/1"):
        load_synthetic(tmp_path / "other.npz")
    obj = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "pickled.npz", X=obj, y=obj, meta=obj)
    with pytest.raises(ForgeDataError, match="not a forge synthetic"):
        load_synthetic(tmp_path / "pickled.npz")  # object arrays would need pickle: refused


def test_release_is_charged_to_the_ledger_and_refused_over_budget(base, site_data, tmp_path):
    from forge_secure.errors import ForgeBudgetError
    from forge_secure.privacy.ledger import Ledger

    ledger = Ledger.open("site-1", "breast-cancer/site-1", 2.2, root=tmp_path / "ledgers")
    synth = make_synthetic(base, site_data, SynthConfig(target_epsilon=2.0, per_class=10), site="site-1", ledger=ledger)
    sigma = synth.meta["release"]["noise_multiplier"]
    assert ledger.history() == [(sigma, 1.0, 1)]
    with pytest.raises(ForgeBudgetError):
        make_synthetic(base, site_data, SynthConfig(target_epsilon=2.0, per_class=10), site="site-1", ledger=ledger)
    assert ledger.history() == [(sigma, 1.0, 1)]  # the refused release was not recorded


def test_forge_synth_command_and_tuning_with_it(tmp_path, capsys, make_plugin):
    import json

    from forge_secure.cli import main
    from forge_secure.merge import fusion_merge
    from forge_secure.plugins.plugin import load_plugin

    code = main(
        [
            "synth",
            "--data",
            "bundled:site-1",
            "--site",
            "site-1",
            "--epsilon",
            "1",
            "--budget",
            "10",
            "--per-class",
            "30",
            "--out",
            str(tmp_path / "s.npz"),
            "--json",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out
    info = json.loads(out.out)
    assert info["epsilon"] <= 1.0 + 1e-9 and info["ledger"] is True
    assert main(["synth", "--data", "bundled:site-1", "--site", "site-1", "--epsilon", "1", "--out", str(tmp_path / "s.npz")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["synth", "--data", "bundled:site-1", "--site", "site-1", "--sigma", "-1", "--out", str(tmp_path / "t.npz")]) == 2
    assert "noise multiplier" in capsys.readouterr().err and not (tmp_path / "t.npz").exists()
    plugins = [make_plugin(tmp_path / f"p{i}", 60 + i, ffa=True, site=f"site-{i + 1}") for i in range(2)]
    merged = load_plugin(fusion_merge(plugins, tmp_path / "tuned", method="ffa", tune_on=tmp_path / "s.npz", budget=10))
    assert merged.meta["merge"]["details"]["weight_source"] == "tuned on synthetic data"
    seq = load_plugin(fusion_merge(plugins, tmp_path / "seq", method="sequential", tune_on=tmp_path / "s.npz", budget=8))
    assert len(seq.meta["merge"]["details"]["steps"]) == 1
