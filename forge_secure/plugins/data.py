"""Data sets: the bundled clinical data split into simulated hospitals, and user files.

Bundled tabular data
--------------------
scikit-learn's Wisconsin breast-cancer data (569 biopsies, 30 real-valued features,
labels 0 = malignant, 1 = benign; it ships inside scikit-learn, nothing is downloaded).
:func:`bundled_splits` cuts it, deterministically from ``seed``, into

1. a **public split** (``public_fraction``, default 20 %, stratified): the base model is
   pretrained on it, and attackers later use it as population data;
2. ``n_sites`` **site shards** with a non-IID label skew: for every class ``c`` a vector
   ``p_c ~ Dirichlet(alpha * 1_N)`` is drawn and that class's rows are dealt to the sites in
   those proportions (Hsu, Qi and Brown 2019, "Measuring the effects of non-identical data
   distribution for federated visual classification"). Draws are repeated (same generator,
   so still deterministic) until every shard has at least ``min_rows`` rows and
   ``min_per_class`` rows of each class;
3. each shard is split (stratified) into a fixed **test** part (``test_fraction``, never
   trained on, used for utility) and a candidate **pool**. The training set is drawn from
   the pool by independent coin flips (:func:`draw_membership`, probability
   ``include_prob``, default 1/2) from the site's recorded ``membership_seed``; the rest of
   the pool is the **holdout**. Independent inclusion is what makes later membership
   audits statistically valid (Steinke, Nasr and Jagielski 2023).

All features are standardised with the mean and standard deviation of the **public split
only**, so no site statistic leaks into the shared preprocessing.

:func:`bundled_image_splits` does the same on scikit-learn's 8x8 handwritten digits
(1,797 images, 10 classes), as ``(n, 1, 8, 8)`` float32 in [0, 1], for the image path.

User data (:func:`load_data`)
-----------------------------
- ``bundled:site-1`` (that site's coin-flip training set), ``bundled:site-1/test``,
  ``/holdout``, ``/pool``, ``bundled:public``; ``bundled-digits:...`` likewise for images.
- A CSV file with a header and a named label column (``label_column``, default
  ``label``): every other column is a numeric feature, taken as it is (scale it like the
  base expects: the built-in ``tabular-mlp`` expects the bundled features standardised
  with the public split's statistics, see :func:`bundled_splits`); labels are integers
  ``0..C-1``.
- A NumPy ``.npz`` in the MedMNIST layout (``train_images``, ``train_labels``,
  ``val_images``, ``val_labels``, ``test_images``, ``test_labels``); ``file.npz`` is the
  train split, ``file.npz:test`` (or ``:val``) another one. Images ``(n, H, W)`` or
  ``(n, H, W, C)`` uint8 become float32 ``(n, C, H, W)`` in [0, 1]. Loaded with
  ``allow_pickle=False``.
- The same ``.npz`` layout with ``train_input_ids`` (``val_input_ids``, ``test_input_ids``)
  instead of images: **text** records, ``(n, L)`` non-negative integer token ids of the
  base's tokenizer, padded with its pad id (``forge_secure.plugins.text`` writes them).

Text data (kind ``text``) holds token ids as float32 like every other kind (exact below
2**24, far above any vocabulary); the model casts them back to integers.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import ForgeDataError, ForgeValueError

TABULAR = "tabular"
IMAGE = "image"
TEXT = "text"
KINDS = (TABULAR, IMAGE, TEXT)
NPZ_SPLITS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """Records and labels, all float32: tabular ``(n, d)``, images ``(n, C, H, W)``, or text
    ``(n, L)`` token ids."""

    X: np.ndarray
    y: np.ndarray
    n_classes: int
    name: str
    kind: str
    feature_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        X = np.ascontiguousarray(self.X, dtype=np.float32)
        y = np.ascontiguousarray(self.y, dtype=np.int64).reshape(-1)
        if self.kind not in KINDS:
            raise ForgeValueError(f"data kind {self.kind!r} is not known", fix=f"use one of: {', '.join(KINDS)}")
        want_ndim = 4 if self.kind == IMAGE else 2
        if X.ndim != want_ndim:
            raise ForgeDataError(
                f"{self.kind} data {self.name!r} has shape {X.shape}; expected {want_ndim} dimensions",
                fix="give (n, features) tables, (n, C, H, W) images or (n, L) token ids",
                code="data.shape",
            )
        if len(X) != len(y):
            raise ForgeDataError(
                f"data {self.name!r} has {len(X)} records but {len(y)} labels",
                fix="give one label per record",
                code="data.shape",
            )
        if not np.all(np.isfinite(X)):
            raise ForgeDataError(
                f"data {self.name!r} holds NaN or infinite values", fix="clean or impute them first", code="data.not_finite"
            )
        if self.kind == TEXT and X.size and (X.min() < 0 or X.max() >= 2**24 or not np.array_equal(X, np.round(X))):
            raise ForgeDataError(
                f"text data {self.name!r} holds values that are not token ids",
                fix="give non-negative integer token ids",
                code="data.tokens",
            )
        if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
            raise ForgeDataError(
                f"labels of {self.name!r} run from {y.min()} to {y.max()}, outside 0..{self.n_classes - 1}",
                fix="encode the labels as integers 0..C-1",
                code="data.labels",
            )
        X.setflags(write=False)
        y.setflags(write=False)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "feature_names", tuple(self.feature_names))

    def __len__(self) -> int:
        return len(self.y)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one record: ``(d,)`` or ``(C, H, W)``."""
        return tuple(self.X.shape[1:])

    def subset(self, index_or_mask, name: str | None = None) -> Dataset:
        idx = np.asarray(index_or_mask)
        return Dataset(self.X[idx], self.y[idx], self.n_classes, name or self.name, self.kind, self.feature_names)

    def concat(self, other: Dataset, name: str | None = None) -> Dataset:
        """This data followed by ``other`` (same kind and record shape)."""
        if other.kind != self.kind or other.shape != self.shape:
            raise ForgeDataError(
                f"cannot join {other.name!r} {other.shape} to {self.name!r} {self.shape}",
                fix="join records of the same kind and shape",
                code="data.shape",
            )
        return Dataset(
            np.concatenate([self.X, other.X]),
            np.concatenate([self.y, other.y]),
            max(self.n_classes, other.n_classes),
            name or self.name,
            self.kind,
            self.feature_names,
        )

    def digest(self) -> str:
        """sha256 over kind, shape, dtype and the bytes of X and y."""
        h = hashlib.sha256()
        h.update(f"{self.kind}|{self.X.shape}|{self.X.dtype}|{self.y.shape}|{self.y.dtype}|{self.n_classes}|".encode())
        h.update(self.X.tobytes())
        h.update(self.y.tobytes())
        return h.hexdigest()


def draw_membership(n: int, seed: int, include_prob: float = 0.5) -> np.ndarray:
    """Independent coin flips: ``mask[i]`` is True with probability ``include_prob``."""
    if not 0.0 < include_prob < 1.0:
        raise ForgeValueError(f"include_prob {include_prob} is outside (0, 1)", fix="use a probability such as 0.5")
    if n < 0:
        raise ForgeValueError(f"cannot draw membership for {n} records")
    return np.random.default_rng(seed).random(n) < include_prob


def seed_sha256(seed: int) -> str:
    """The commitment to a seed that forge.json records: sha256 of its decimal text."""
    return hashlib.sha256(str(int(seed)).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class SiteShard:
    """One simulated hospital: a candidate pool (training set by coin flips) and a test part."""

    site: str
    pool: Dataset
    test: Dataset
    membership_seed: int
    include_prob: float = 0.5

    def members(self) -> np.ndarray:
        return draw_membership(len(self.pool), self.membership_seed, self.include_prob)

    def train(self) -> Dataset:
        return self.pool.subset(self.members(), name=_rename(self.pool.name, "train"))

    def holdout(self) -> Dataset:
        return self.pool.subset(~self.members(), name=_rename(self.pool.name, "holdout"))

    def commitment(self) -> dict:
        """The ``data.membership`` record of forge.json for this site's training set."""
        return {"include_prob": self.include_prob, "pool_rows": len(self.pool), "seed_sha256": seed_sha256(self.membership_seed)}


def _rename(name: str, part: str) -> str:
    return name.rsplit("/", 1)[0] + "/" + part


@dataclass(frozen=True, eq=False)
class BundledSplits:
    public: Dataset
    sites: list[SiteShard]
    alpha: float
    seed: int
    mean: np.ndarray | None = None  # standardisation statistics (public split), tabular only
    std: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def site(self, name: str) -> SiteShard:
        for s in self.sites:
            if s.site == name:
                return s
        raise ForgeValueError(
            f"unknown bundled site {name!r}",
            fix=f"use one of: {', '.join(s.site for s in self.sites)}",
            code="data.unknown_site",
        )


def _dirichlet_shards(
    y: np.ndarray, n_sites: int, alpha: float, rng: np.random.Generator, min_rows: int, min_per_class: int
) -> list[np.ndarray]:
    classes = np.unique(y)
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(n_sites)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            p = rng.dirichlet(np.full(n_sites, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).round().astype(int)
            for s, chunk in enumerate(np.split(idx, cuts)):
                parts[s].extend(chunk.tolist())
        ok = all(len(part) >= min_rows and all(np.sum(y[part] == c) >= min_per_class for c in classes) for part in parts)
        if ok:
            return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
    raise ForgeValueError(
        f"could not split the data into {n_sites} sites with alpha={alpha} and at least {min_rows} rows each",
        fix="use fewer sites or a larger alpha",
        code="data.split",
    )


def _split(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    base_name: str,
    kind: str,
    feature_names,
    *,
    n_sites,
    alpha,
    seed,
    public_fraction,
    test_fraction,
    include_prob,
    min_rows,
    min_per_class,
):
    from sklearn.model_selection import train_test_split

    if not isinstance(n_sites, int) or n_sites < 1:
        raise ForgeValueError(f"n_sites {n_sites!r} must be a positive integer")
    if not alpha > 0:
        raise ForgeValueError(f"alpha {alpha!r} must be positive", fix="use e.g. 0.5 (skewed) or 100 (nearly IID)")
    for label, frac in (("public_fraction", public_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 1.0:
            raise ForgeValueError(f"{label} {frac!r} must be between 0 and 1")
    ss = np.random.SeedSequence(seed)
    split_seed, shard_seed, *site_seeds = ss.generate_state(2 + 2 * n_sites, dtype=np.uint32).tolist()
    all_idx = np.arange(len(y))
    pub_idx, rest_idx = train_test_split(all_idx, train_size=public_fraction, stratify=y, random_state=split_seed)
    pub_idx, rest_idx = np.sort(pub_idx), np.sort(rest_idx)
    if kind == TABULAR:
        mean = X[pub_idx].mean(axis=0)
        std = X[pub_idx].std(axis=0)
        std = np.where(std > 0, std, 1.0)
        Xs = ((X - mean) / std).astype(np.float32)
    else:
        mean = std = None
        Xs = X.astype(np.float32)
    public = Dataset(Xs[pub_idx], y[pub_idx], n_classes, f"{base_name}/public", kind, feature_names)
    rng = np.random.default_rng(shard_seed)
    shards = _dirichlet_shards(y[rest_idx], n_sites, alpha, rng, min_rows, min_per_class)
    sites = []
    for k, local in enumerate(shards):
        idx = rest_idx[local]
        name = f"site-{k + 1}"
        counts = np.bincount(y[idx])
        strat = y[idx] if counts[counts > 0].min() >= 2 else None
        pool_idx, test_idx = train_test_split(idx, test_size=test_fraction, stratify=strat, random_state=site_seeds[2 * k])
        pool_idx, test_idx = np.sort(pool_idx), np.sort(test_idx)
        sites.append(
            SiteShard(
                site=name,
                pool=Dataset(Xs[pool_idx], y[pool_idx], n_classes, f"{base_name}/{name}/pool", kind, feature_names),
                test=Dataset(Xs[test_idx], y[test_idx], n_classes, f"{base_name}/{name}/test", kind, feature_names),
                membership_seed=int(site_seeds[2 * k + 1]),
                include_prob=include_prob,
            )
        )
    info = {
        "source": base_name,
        "n_sites": n_sites,
        "alpha": alpha,
        "seed": seed,
        "public_fraction": public_fraction,
        "test_fraction": test_fraction,
        "include_prob": include_prob,
    }
    return BundledSplits(public, sites, alpha, seed, mean, std, info)


def split_dataset(
    ds: Dataset,
    *,
    n_sites: int,
    alpha: float = 0.5,
    seed: int = 0,
    name: str | None = None,
    public_fraction: float = 0.2,
    test_fraction: float = 0.25,
    include_prob: float = 0.5,
    min_rows: int = 20,
    min_per_class: int = 2,
) -> BundledSplits:
    """Cut any data set the way the bundled one is cut (see the module docstring): a public
    split, ``n_sites`` Dirichlet(alpha)-skewed shards, each with a fixed test part and a
    coin-flip candidate pool. Deterministic in its arguments."""
    return _split(
        ds.X,
        ds.y,
        ds.n_classes,
        name or ds.name,
        ds.kind,
        ds.feature_names,
        n_sites=n_sites,
        alpha=alpha,
        seed=seed,
        public_fraction=public_fraction,
        test_fraction=test_fraction,
        include_prob=include_prob,
        min_rows=min_rows,
        min_per_class=min_per_class,
    )


@functools.lru_cache(maxsize=8)
def bundled_splits(
    n_sites: int = 3,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    public_fraction: float = 0.2,
    test_fraction: float = 0.25,
    include_prob: float = 0.5,
) -> BundledSplits:
    """The breast-cancer data as a public split and ``n_sites`` skewed hospital shards
    (see the module docstring). Deterministic in its arguments; results are cached."""
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    names = tuple(str(n) for n in raw.feature_names)
    return _split(
        raw.data.astype(np.float64),
        raw.target.astype(np.int64),
        2,
        "breast-cancer",
        TABULAR,
        names,
        n_sites=n_sites,
        alpha=alpha,
        seed=seed,
        public_fraction=public_fraction,
        test_fraction=test_fraction,
        include_prob=include_prob,
        min_rows=80,
        min_per_class=8,
    )


@functools.lru_cache(maxsize=8)
def bundled_image_splits(
    n_sites: int = 3,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    public_fraction: float = 0.3,
    test_fraction: float = 0.25,
    include_prob: float = 0.5,
) -> BundledSplits:
    """scikit-learn's 8x8 digits, ``(n, 1, 8, 8)`` in [0, 1], split like :func:`bundled_splits`."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    X = (raw.images / 16.0)[:, None, :, :]
    return _split(
        X,
        raw.target.astype(np.int64),
        10,
        "digits",
        IMAGE,
        (),
        n_sites=n_sites,
        alpha=alpha,
        seed=seed,
        public_fraction=public_fraction,
        test_fraction=test_fraction,
        include_prob=include_prob,
        min_rows=150,
        min_per_class=2,
    )


BUNDLED_PREFIXES = {"bundled": bundled_splits, "bundled-digits": bundled_image_splits}
SITE_PARTS = ("train", "test", "holdout", "pool")


def is_bundled(spec: str) -> bool:
    return str(spec).split(":", 1)[0] in BUNDLED_PREFIXES and ":" in str(spec)


def resolve_bundled(spec: str) -> tuple[BundledSplits, SiteShard | None, str]:
    """Parse ``bundled:site-1[/part]`` or ``bundled:public`` into (splits, shard, part)."""
    prefix, _, rest = str(spec).partition(":")
    splits = BUNDLED_PREFIXES[prefix]()
    if rest == "public":
        return splits, None, "public"
    site, _, part = rest.partition("/")
    part = part or "train"
    if part not in SITE_PARTS:
        raise ForgeValueError(f"unknown part {part!r} in {spec!r}", fix=f"use one of: {', '.join(SITE_PARTS)}", code="data.unknown_part")
    try:
        shard = splits.site(site)
    except ForgeValueError as e:
        raise ForgeValueError(
            f"unknown bundled data {spec!r}",
            fix=f"use {prefix}:public or {prefix}:<site> with a site among {', '.join(s.site for s in splits.sites)}",
            code="data.unknown_site",
        ) from e
    return splits, shard, part


def _load_bundled(spec: str) -> Dataset:
    splits, shard, part = resolve_bundled(spec)
    if shard is None:
        return splits.public
    return {"train": shard.train, "test": lambda: shard.test, "holdout": shard.holdout, "pool": lambda: shard.pool}[part]()


def make_canaries(m: int, like: Dataset, seed: int) -> Dataset:
    """``m`` out-of-distribution records with uniformly random labels, shaped like ``like``.

    Tabular: each feature is ``+-U(4, 8)`` (random sign), i.e. 4 to 8 public-split standard
    deviations away from the mean, where real records almost never lie. Images: uniform
    noise pixels in [0, 1]. Text: every position a token drawn uniformly from the ids that occur
    in ``like`` (so valid for its tokenizer), a random word salad. Canaries are the standard probe for memorisation audits
    (Carlini et al. 2019, "The Secret Sharer"; Steinke, Nasr, Jagielski 2023).
    """
    if not isinstance(m, (int, np.integer)) or m < 0:
        raise ForgeValueError(f"canary count {m!r} must be a non-negative integer", fix="use e.g. --canaries 100")
    rng = np.random.default_rng(seed)
    shape = (int(m),) + like.shape
    if like.kind == TABULAR:
        X = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(4.0, 8.0, size=shape)
    elif like.kind == TEXT:
        vocab = np.unique(like.X) if len(like) else np.zeros(1)
        X = rng.choice(vocab, size=shape)
    else:
        X = rng.uniform(0.0, 1.0, size=shape)
    y = rng.integers(0, like.n_classes, size=int(m))
    return Dataset(X, y, like.n_classes, f"canaries/m={m}", like.kind, like.feature_names)


def __getattr__(name: str):
    """The file readers live in :mod:`.readers`; ``from forge_secure.plugins.data import
    load_data`` keeps working."""
    if name == "load_data":
        from .readers import load_data

        return load_data
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
