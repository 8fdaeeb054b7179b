"""The data of a bench run: a public split (attackers' population data) and simulated
hospital shards, from the bundled data or the user's file.

* ``source = "bundled"``: :func:`forge_secure.plugins.data.bundled_splits` (breast cancer,
  Dirichlet label skew); ``"bundled-digits"``: the 8x8 digits for image bases.
* a CSV / ``.npz`` path: loaded with :func:`forge_secure.plugins.data.load_data` and cut the
  same way as the bundled data (public split, Dirichlet-skewed shards, test part, coin-flip
  pool), deterministically from ``split_seed``.

Each bench seed redraws every site's membership coin flips (a new ``membership_seed``
derived from the site's own and the bench seed), so seeds are independent repetitions of
the whole experiment, not only of the training noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from forge_secure.fileio import sha256_file
from forge_secure.plugins import data as pdata

from .config import DataSpec


@dataclass(frozen=True, eq=False)
class BenchData:
    public: pdata.Dataset
    sites: tuple[pdata.SiteShard, ...]
    digest: str

    def union_test(self) -> pdata.Dataset:
        test = self.sites[0].test
        for s in self.sites[1:]:
            test = test.concat(s.test, name="union/test")
        return test

    def for_seed(self, seed: int) -> tuple[pdata.SiteShard, ...]:
        """The sites with their membership coin flips redrawn for bench seed ``seed``."""
        out = []
        for s in self.sites:
            ms = int(np.random.SeedSequence([int(s.membership_seed), int(seed)]).generate_state(1, dtype=np.uint32)[0])
            out.append(dataclasses.replace(s, membership_seed=ms))
        return tuple(out)


def _digest(splits) -> str:
    h = hashlib.sha256()
    h.update(splits.public.digest().encode())
    for s in splits.sites:
        h.update(f"|{s.site}|{s.membership_seed}|{s.include_prob}|".encode())
        h.update(s.pool.digest().encode())
        h.update(s.test.digest().encode())
    return h.hexdigest()


def load_bench_data(spec: DataSpec) -> BenchData:
    if spec.source == "bundled":
        splits = pdata.bundled_splits(spec.n_sites, alpha=spec.alpha, seed=spec.split_seed)
    elif spec.source == "bundled-digits":
        splits = pdata.bundled_image_splits(spec.n_sites, alpha=spec.alpha, seed=spec.split_seed)
    else:
        ds = pdata.load_data(spec.source, label_column=spec.label_column)
        # the same cut as the bundled data (public split, Dirichlet shards, test part, pool)
        splits = pdata.split_dataset(
            ds,
            name=f"{ds.name}#{sha256_file(spec.source)[:12]}",
            n_sites=spec.n_sites,
            alpha=spec.alpha,
            seed=spec.split_seed,
            public_fraction=0.2,
            test_fraction=spec.test_fraction,
            include_prob=0.5,
            min_rows=20,
            min_per_class=2,
        )
    return BenchData(splits.public, tuple(splits.sites), _digest(splits))
