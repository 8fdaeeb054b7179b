"""Auditor canaries for every data kind: drawn under the auditor's secret, shaped like the data,
half held back, sealed to the site and opened again unchanged (real keys, real bundles)."""

from __future__ import annotations

import numpy as np
import pytest

from forge_secure.errors import ForgeDataError
from forge_secure.plugins.data import Dataset
from forge_secure.privacy.canaries import all_canaries, included_canaries, issue_record, open_grant, write_grant


def _text_like() -> Dataset:
    rng = np.random.default_rng(0)
    ids = rng.choice(np.array([0, 101, 102, 2054, 2003, 7592, 30000]), size=(20, 12))
    return Dataset(ids, rng.integers(0, 2, 20), 2, "reports/site-1", "text")


@pytest.mark.parametrize("kind", ["tabular", "image", "text"])
def test_canaries_are_shaped_like_the_data_and_regenerate_from_the_record(kind):
    rng = np.random.default_rng(1)
    like = {
        "tabular": Dataset(rng.normal(size=(10, 5)), rng.integers(0, 2, 10), 2, "t", "tabular"),
        "image": Dataset(rng.uniform(size=(10, 1, 8, 8)), rng.integers(0, 10, 10), 10, "i", "image"),
        "text": _text_like(),
    }[kind]
    record = issue_record("site-1", 64, like)
    cset, mask = all_canaries(record)
    assert cset.shape == like.shape and cset.kind == kind and len(cset) == 64
    assert 0 < mask.sum() < 64 and record["included"] == int(mask.sum())
    again, mask2 = all_canaries(record)
    assert np.array_equal(again.X, cset.X) and np.array_equal(mask, mask2)
    assert set(np.unique(cset.y)) <= set(range(like.n_classes))
    if kind == "text":  # only token ids the data uses: valid for its tokenizer
        assert set(np.unique(cset.X).astype(int)) <= set(np.unique(like.X).astype(int))
        assert len(np.unique(cset.X)) > 3


def test_text_canaries_survive_the_grant(replay_tools, tmp_path):
    from forge_secure.crypto.keys import load_signing_key
    from forge_secure.crypto.trust import pin_root

    world = replay_tools.build(tmp_path, "text-canaries")
    pin_root(world["roster"])
    like = _text_like()
    record = issue_record(replay_tools.site, 32, like)
    grant = write_grant(
        record,
        signer=load_signing_key(world["keys"]["auditor"].signing),
        site_key=world["keys"][replay_tools.site].public,
        out=tmp_path / "text-grant.forge",
        roster=world["roster"],
    )
    meta, data = open_grant(grant, key=world["keys"][replay_tools.site].decryption, roster=world["roster"])
    want = included_canaries(record, like=like)
    assert data.kind == "text" and np.array_equal(data.X, want.X) and np.array_equal(data.y, want.y)
    assert meta["count"] == len(want)


def test_text_data_without_tokens_is_refused():
    empty = Dataset(np.zeros((0, 12)), np.zeros(0, dtype=np.int64), 2, "empty", "text")
    with pytest.raises(ForgeDataError, match="no tokens"):
        issue_record("site-1", 8, empty)
