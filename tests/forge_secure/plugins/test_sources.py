"""From --data to a training set with its commitment; canaries; base/data compatibility."""

from __future__ import annotations

import numpy as np
import pytest

from forge_secure.errors import ForgeDataError, ForgeValueError
from forge_secure.plugins.data import bundled_image_splits, bundled_splits, seed_sha256
from forge_secure.plugins.sources import base_kwargs_for, canary_set, check_compatible, prepare_training_data

SEED = 190620171122302157296455710945376257110  # a fixed 128-bit membership seed (a training seed must be >= 2**96)


def test_bundled_training_data_and_commitment():
    td = prepare_training_data("bundled:site-3")
    shard = bundled_splits().site("site-3")
    assert td.data.digest() == shard.train().digest()
    assert td.test.digest() == shard.test.digest() and td.site == "site-3"
    assert td.ledger_dataset == "breast-cancer/site-3"
    assert td.commitment["membership"] == shard.commitment()
    assert td.commitment["canaries"] == {"count": 0, "seed_sha256": None}
    with pytest.raises(ForgeValueError, match="not a site's training set"):
        prepare_training_data("bundled:site-3/test")
    with pytest.raises(ForgeValueError, match="not a site's training set"):
        prepare_training_data("bundled:public")


def test_canaries_appended_by_fair_coins():
    plain = prepare_training_data("bundled:site-1")
    td = prepare_training_data("bundled:site-1", canaries=40, canary_seed=11)
    canaries, mask = canary_set(40, plain.data, 11)
    assert np.array_equal(td.canary_mask, mask) and 0 < mask.sum() < 40
    n = len(plain.data)
    assert len(td.data) == n + mask.sum()
    np.testing.assert_array_equal(td.data.X[:n], plain.data.X)
    np.testing.assert_array_equal(td.data.X[n:], canaries.X[mask])
    assert td.commitment["canaries"] == {"count": 40, "include_prob": 0.5, "seed_sha256": seed_sha256(11)}
    assert td.ledger_dataset == plain.ledger_dataset  # canaries do not change which patients are protected
    with pytest.raises(ForgeValueError, match="seed"):
        prepare_training_data("bundled:site-1", canaries=3)


def test_user_file_training_data(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,0\n3,4,1\n")
    td = prepare_training_data(str(p))
    assert td.commitment["membership"] is None and td.test is None
    assert td.ledger_dataset == str(p.resolve())


def test_check_compatible(tabular_base):
    good = bundled_splits().public
    check_compatible(tabular_base, good)
    with pytest.raises(ForgeDataError, match="29 feature columns, base tabular-mlp expects 30"):
        check_compatible(tabular_base, good.__class__(good.X[:, :29], good.y, 2, "narrow", "tabular"))
    with pytest.raises(ForgeDataError, match="takes tabular data"):
        check_compatible(tabular_base, bundled_image_splits().public)
    with pytest.raises(ForgeDataError, match="label 2"):
        check_compatible(tabular_base, good.__class__(good.X[:3], [0, 1, 2], 3, "three", "tabular"))


def test_vit_settings_follow_the_data():
    digits = bundled_image_splits().public
    assert base_kwargs_for("vit-tiny", digits) == {}
    rgb = digits.__class__(np.zeros((2, 3, 28, 28)), [0, 1], 2, "rgb", "image")
    assert base_kwargs_for("vit-tiny", rgb) == {"image_size": 28, "num_channels": 3, "patch_size": 4, "n_classes": 2}
    assert base_kwargs_for("tabular-mlp", bundled_splits().public) == {}


def test_user_file_coin_flip_membership(tmp_path):
    from forge_secure.plugins.data import draw_membership

    p = tmp_path / "d.csv"
    rows = "\n".join(f"{i},{i * 2},{i % 2}" for i in range(60))
    p.write_text("a,b,label\n" + rows + "\n")
    whole = prepare_training_data(str(p))
    td = prepare_training_data(str(p), membership_seed=SEED, include_prob=0.5)
    mask = draw_membership(60, SEED, 0.5)
    assert 0 < mask.sum() < 60 and len(td.data) == mask.sum()
    np.testing.assert_array_equal(td.data.X, whole.data.X[mask])
    assert td.commitment["membership"] == {"include_prob": 0.5, "pool_rows": 60, "seed_sha256": seed_sha256(SEED)}
    assert td.ledger_dataset == whole.ledger_dataset  # the same patients, whatever the draw
    for bad in (-1, 1.5, True):
        with pytest.raises(ForgeValueError) as e:
            prepare_training_data(str(p), membership_seed=bad)
        assert e.value.code == "data.membership_seed"
    # forge.json publishes sha256(seed): a seed someone could enumerate (a date, a small number) is refused
    for guessable in (0, 7, 20261203, 2**96 - 1):
        with pytest.raises(ForgeValueError) as e:
            prepare_training_data(str(p), membership_seed=guessable)
        assert e.value.code == "data.membership_seed" and "can be guessed" in str(e.value) and "secrets.randbits(128)" in e.value.fix
    assert prepare_training_data(str(p), membership_seed=2**96).commitment["membership"]["pool_rows"] == 60
    with pytest.raises(ForgeValueError) as e:
        prepare_training_data(str(p), membership_seed=SEED, include_prob=1.0)
    assert e.value.code == "data.include_prob"
    with pytest.raises(ForgeValueError) as e:
        prepare_training_data("bundled:site-1", membership_seed=3)
    assert e.value.code == "data.membership_seed" and "Drop --membership-seed" in str(e.value)
