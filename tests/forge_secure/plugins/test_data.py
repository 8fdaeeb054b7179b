"""Bundled splits, coin-flip membership, CSV / npz loaders and canaries."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from forge_secure.errors import ForgeDataError, ForgeError, ForgeFileError, ForgeValueError
from forge_secure.plugins.data import (
    Dataset,
    bundled_image_splits,
    bundled_splits,
    draw_membership,
    load_data,
    make_canaries,
    seed_sha256,
)


def _rows(X):
    return {r.tobytes() for r in np.asarray(X)}


def test_bundled_split_partitions_the_data_and_standardises_on_public_only():
    from sklearn.datasets import load_breast_cancer

    s = bundled_splits()
    parts = [s.public] + [p for shard in s.sites for p in (shard.pool, shard.test)]
    assert sum(len(p) for p in parts) == len(load_breast_cancer().target) == 569
    seen = set()
    for p in parts:  # disjoint
        rows = _rows(p.X)
        assert not rows & seen
        seen |= rows
    np.testing.assert_allclose(s.public.X.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(s.public.X.std(axis=0), 1, atol=1e-4)
    raw = load_breast_cancer().data
    # the same affine map (public statistics) was applied to every part
    restored = s.sites[0].test.X[0] * s.std + s.mean
    assert np.isclose(restored, raw, rtol=1e-4, atol=1e-4).all(axis=1).any()
    for shard in s.sites:
        assert set(np.unique(shard.test.y)) == {0, 1}
        assert shard.pool.name.endswith(f"{shard.site}/pool")


def test_bundled_split_is_deterministic_and_seed_dependent():
    a = bundled_splits.__wrapped__()
    b = bundled_splits.__wrapped__()
    c = bundled_splits.__wrapped__(seed=1)
    assert [x.pool.digest() for x in a.sites] == [x.pool.digest() for x in b.sites]
    assert a.public.digest() == b.public.digest()
    assert [x.pool.digest() for x in a.sites] != [x.pool.digest() for x in c.sites]


def test_dirichlet_alpha_controls_label_skew():
    skewed = bundled_splits.__wrapped__(alpha=0.5)
    iid = bundled_splits.__wrapped__(alpha=1000.0)

    def spread(s):
        fr = [np.concatenate([x.pool.y, x.test.y]).mean() for x in s.sites]
        return max(fr) - min(fr)

    assert spread(skewed) > 0.3
    assert spread(iid) < 0.1


def test_membership_is_independent_coin_flips():
    m = draw_membership(20000, seed=7)
    assert m.dtype == bool and np.array_equal(m, draw_membership(20000, seed=7))
    assert not np.array_equal(m, draw_membership(20000, seed=8))
    # fraction within a 99.9 % binomial interval; neighbours uncorrelated (independence)
    lo, hi = stats.binom.interval(0.999, len(m), 0.5)
    assert lo <= m.sum() <= hi
    r = np.corrcoef(m[:-1], m[1:])[0, 1]
    assert abs(r) < 4 / np.sqrt(len(m))
    q = draw_membership(20000, seed=7, include_prob=0.2)
    assert lo <= q.sum() * 2.5 <= hi * 1.1
    with pytest.raises(ForgeValueError, match="include_prob"):
        draw_membership(5, seed=0, include_prob=1.5)


def test_site_train_and_holdout_split_the_pool():
    shard = bundled_splits().sites[0]
    mask = shard.members()
    assert np.array_equal(mask, draw_membership(len(shard.pool), shard.membership_seed, shard.include_prob))
    train, hold = shard.train(), shard.holdout()
    assert len(train) + len(hold) == len(shard.pool)
    assert not _rows(train.X) & _rows(hold.X)
    assert train.name == "breast-cancer/site-1/train"
    c = shard.commitment()
    assert c["pool_rows"] == len(shard.pool) and c["seed_sha256"] == seed_sha256(shard.membership_seed)
    assert c["seed_sha256"] != str(shard.membership_seed)


def test_load_bundled_specs():
    s = bundled_splits()
    assert load_data("bundled:site-2").digest() == s.sites[1].train().digest()
    assert load_data("bundled:site-2/test").digest() == s.sites[1].test.digest()
    assert load_data("bundled:public").digest() == s.public.digest()
    with pytest.raises(ForgeValueError, match="site-1, site-2, site-3"):
        load_data("bundled:site-9")
    with pytest.raises(ForgeValueError, match="train, test, holdout, pool"):
        load_data("bundled:site-1/everything")


def test_image_splits_shape():
    s = bundled_image_splits()
    x = s.sites[0].train()
    assert x.kind == "image" and x.X.shape[1:] == (1, 8, 8) and x.X.dtype == np.float32
    assert 0.0 <= x.X.min() and x.X.max() <= 1.0 and x.n_classes == 10
    assert load_data("bundled-digits:site-1").digest() == x.digest()


def test_dataset_validates_and_digests():
    X = np.zeros((3, 2))
    d = Dataset(X, [0, 1, 1], 2, "t", "tabular")
    assert d.X.dtype == np.float32 and d.y.dtype == np.int64 and not d.X.flags.writeable
    assert d.subset([0, 2]).digest() != d.digest()
    assert d.subset(np.array([True, True, True])).digest() == d.digest()
    with pytest.raises(ForgeDataError, match="labels"):
        Dataset(X, [0, 1, 2], 2, "t", "tabular")
    with pytest.raises(ForgeDataError, match="3 records but 2 labels"):
        Dataset(X, [0, 1], 2, "t", "tabular")
    with pytest.raises(ForgeDataError, match="NaN"):
        Dataset(np.full((1, 2), np.nan), [0], 2, "t", "tabular")
    with pytest.raises(ForgeDataError, match="dimensions"):
        Dataset(np.zeros((3, 2)), [0, 0, 0], 2, "t", "image")


# ---------------------------------------------------------------- CSV


def _write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return path


def test_csv_roundtrip(tmp_path):
    p = _write_csv(tmp_path / "d.csv", ["a", "outcome", "b"], [[0.5, 1, 2], [1.5, 0, -1], [2.5, 2, 0]])
    d = load_data(p, label_column="outcome")
    assert d.feature_names == ("a", "b") and d.kind == "tabular"
    np.testing.assert_array_equal(d.X, [[0.5, 2], [1.5, -1], [2.5, 0]])
    np.testing.assert_array_equal(d.y, [1, 0, 2])
    assert d.n_classes == 3


@pytest.mark.parametrize(
    "header,rows,match,code",
    [
        (["a", "b"], [[1, 0]], "no label column 'label'", "data.no_label_column"),
        (["a", "label"], [["x", 0]], "column 'a' is not numeric", "data.non_numeric"),
        (["a", "label"], [[1.0, 0.5]], "not non-negative integers", "data.labels"),
        (["a", "label"], [[1.0, "yes"]], "label column 'label' is not numeric", "data.labels"),
        (["a", "label"], [[1.0]], "line 2 has 1 fields", "data.ragged"),
        (["a", "label"], [], "no records", "data.empty"),
        (["label"], [[1]], "no feature columns", "data.shape"),
    ],
)
def test_csv_bad_inputs(tmp_path, header, rows, match, code):
    p = _write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(ForgeDataError, match=match) as e:
        load_data(p)
    assert e.value.code == code


def test_bad_paths(tmp_path):
    with pytest.raises(ForgeFileError, match="does not exist"):
        load_data(tmp_path / "nope.csv")
    with pytest.raises(ForgeFileError, match="is a directory"):
        load_data(tmp_path)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ForgeDataError, match="is empty"):
        load_data(tmp_path / "empty.csv")
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(ForgeDataError, match="unsupported type"):
        load_data(tmp_path / "x.parquet")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ForgeDataError, match="not a UTF-8"):
        load_data(tmp_path / "bin.csv")


# ---------------------------------------------------------------- npz (MedMNIST layout)


def _medmnist(path, channels=None, n=6, size=5, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, size, size) + ((channels,) if channels else ())
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 4, size=(n, 1)).astype(np.int64)
    np.savez(path, **arrays)
    return arrays


@pytest.mark.parametrize("channels", [None, 3])
def test_npz_medmnist_layout(tmp_path, channels):
    arrays = _medmnist(tmp_path / "m.npz", channels)
    d = load_data(tmp_path / "m.npz")
    c = channels or 1
    assert d.kind == "image" and d.X.shape == (6, c, 5, 5) and d.X.dtype == np.float32
    img = arrays["train_images"][2]
    expect = (img[None] if channels is None else np.transpose(img, (2, 0, 1))) / 255.0
    np.testing.assert_allclose(d.X[2], expect, rtol=1e-6)
    np.testing.assert_array_equal(d.y, arrays["train_labels"][:, 0])
    t = load_data(f"{tmp_path / 'm.npz'}:test")
    np.testing.assert_array_equal(t.y, arrays["test_labels"][:, 0])
    assert d.n_classes == t.n_classes


def test_npz_bad_inputs(tmp_path):
    _medmnist(tmp_path / "m.npz")
    raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ForgeDataError, match="not a readable .npz") as e:
        load_data(tmp_path / "trunc.npz")
    assert e.value.code == "data.npz_corrupt"
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ForgeDataError, match="not a readable .npz"):
        load_data(tmp_path / "text.npz")
    np.savez(tmp_path / "keys.npz", images=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ForgeDataError, match="lacks train_images, train_labels"):
        load_data(tmp_path / "keys.npz")
    np.savez(tmp_path / "obj.npz", train_images=np.array([{"a": 1}], dtype=object), train_labels=np.array([0]))
    with pytest.raises(ForgeDataError, match="not a readable .npz"):
        load_data(tmp_path / "obj.npz")
    np.savez(tmp_path / "dtype.npz", train_images=np.full((2, 3, 3), 7.0), train_labels=np.array([0, 1]))
    with pytest.raises(ForgeDataError, match="dtype float64"):
        load_data(tmp_path / "dtype.npz")
    np.savez(tmp_path / "shape.npz", train_images=np.zeros((2, 3), np.uint8), train_labels=np.array([0, 1]))
    with pytest.raises(ForgeDataError, match="shape"):
        load_data(tmp_path / "shape.npz")
    with pytest.raises(ForgeValueError, match="train, val, test"):
        load_data(f"{tmp_path / 'm.npz'}:holdout")


def test_canaries_are_out_of_distribution_and_seeded():
    like = bundled_splits().public
    c = make_canaries(50, like, seed=3)
    assert c.X.shape == (50, 30) and c.kind == "tabular"
    assert np.abs(c.X).min() >= 4.0  # at least 4 public standard deviations out in every feature
    assert np.abs(like.X).mean() < 1.0
    assert set(np.unique(c.y)) <= {0, 1} and len(np.unique(c.y)) == 2
    assert c.digest() == make_canaries(50, like, seed=3).digest() != make_canaries(50, like, seed=4).digest()
    img = make_canaries(4, bundled_image_splits().public, seed=0)
    assert img.X.shape == (4, 1, 8, 8) and img.y.max() < 10
    with pytest.raises(ForgeError):
        make_canaries(-1, like, seed=0)
