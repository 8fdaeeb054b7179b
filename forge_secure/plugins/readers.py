"""Reading user data files and bundled specs into a :class:`~.data.Dataset`: the one place that
reads a data file (``bundled:...``, CSV, MedMNIST-layout ``.npz``, text ``.npz``; formats in
:mod:`.data`'s docstring)."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from ..errors import ForgeDataError, ForgeFileError, ForgeValueError
from .data import IMAGE, NPZ_SPLITS, TABULAR, TEXT, Dataset, _load_bundled, is_bundled


def load_data(spec: str, *, label_column: str | None = None) -> Dataset:
    """A data set from ``bundled:...``, a CSV file or a MedMNIST-layout ``.npz`` (see the
    module docstring). Every problem is a :class:`ForgeDataError` / :class:`ForgeFileError`
    naming the file and the fix."""
    spec = str(spec)
    if is_bundled(spec):
        return _load_bundled(spec)
    path_text, split = spec, "train"
    if ".npz:" in spec:
        path_text, _, split = spec.rpartition(":")
    path = Path(path_text)
    if not path.exists():
        raise ForgeFileError(
            f"data file {path} does not exist",
            fix="give a CSV file, a .npz file, or bundled:site-1 (bundled sites: site-1..site-3)",
            code="data.missing",
        )
    if path.is_dir():
        raise ForgeFileError(f"data path {path} is a directory", fix="give the CSV or .npz file itself", code="data.is_directory")
    if path.stat().st_size == 0:
        raise ForgeDataError(f"data file {path} is empty", fix="give a CSV with a header row and records, or a .npz", code="data.empty")
    if path.suffix.lower() == ".npz":
        return _load_npz(path, split)
    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        return _load_csv(path, label_column or "label")
    raise ForgeDataError(
        f"data file {path} has the unsupported type {path.suffix or '(no suffix)'!r}",
        fix="give a .csv file with a label column or a .npz in the MedMNIST layout",
        code="data.type",
    )


def _load_csv(path: Path, label_column: str) -> Dataset:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ForgeDataError(
            f"data file {path} is not a UTF-8 text CSV", fix="give a CSV file (comma-separated text)", code="data.not_csv"
        ) from None
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = [r for r in csv.reader(text.splitlines(), delimiter=delimiter) if any(cell.strip() for cell in r)]
    if not rows:
        raise ForgeDataError(f"data file {path} has no rows", fix="give a CSV with a header row and records", code="data.empty")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    if label_column not in header:
        raise ForgeDataError(
            f"CSV {path} has no label column {label_column!r} (columns: {', '.join(header[:12])}{', ...' if len(header) > 12 else ''})",
            fix="name the label column with --label-column",
            code="data.no_label_column",
        )
    if not body:
        raise ForgeDataError(f"CSV {path} has a header but no records", fix="add records", code="data.empty")
    for i, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise ForgeDataError(
                f"CSV {path} line {i} has {len(r)} fields, the header has {len(header)}",
                fix="make every row as long as the header (the file may be truncated)",
                code="data.ragged",
            )
    li = header.index(label_column)
    features = [h for j, h in enumerate(header) if j != li]
    if not features:
        raise ForgeDataError(
            f"CSV {path} has no feature columns besides {label_column!r}", fix="add the feature columns", code="data.shape"
        )
    cols = np.array(body, dtype=object)
    X = np.empty((len(body), len(features)), dtype=np.float64)
    k = 0
    for j, h in enumerate(header):
        if j == li:
            continue
        try:
            X[:, k] = cols[:, j].astype(np.float64)
        except ValueError:
            bad = next(v for v in cols[:, j] if not _is_float(v))
            raise ForgeDataError(
                f"CSV {path} column {h!r} is not numeric (value {bad!r})",
                fix="encode it as numbers or drop the column; only numeric features are supported",
                code="data.non_numeric",
            ) from None
        k += 1
    try:
        yf = cols[:, li].astype(np.float64)
    except ValueError:
        raise ForgeDataError(
            f"CSV {path} label column {label_column!r} is not numeric",
            fix="encode the labels as integers 0..C-1",
            code="data.labels",
        ) from None
    if not np.all(yf == np.round(yf)) or yf.min() < 0:
        raise ForgeDataError(
            f"CSV {path} labels are not non-negative integers", fix="encode the labels as integers 0..C-1", code="data.labels"
        )
    y = yf.astype(np.int64)
    return Dataset(X, y, max(2, int(y.max()) + 1), str(path), TABULAR, tuple(features))


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _load_npz(path: Path, split: str) -> Dataset:
    if split not in NPZ_SPLITS:
        raise ForgeValueError(f"unknown split {split!r} for {path}", fix=f"use one of: {', '.join(NPZ_SPLITS)}", code="data.unknown_part")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if f"{split}_input_ids" in keys:
                return _npz_text(path, split, z, keys)
            need = {f"{split}_images", f"{split}_labels"}
            if not need <= keys:
                raise ForgeDataError(
                    f"{path} lacks {', '.join(sorted(need - keys))} (it has: {', '.join(sorted(keys)) or 'nothing'})",
                    fix="use the MedMNIST layout: train_images, train_labels, val_*, test_*",
                    code="data.npz_keys",
                )
            images = z[f"{split}_images"]
            labels = z[f"{split}_labels"]
            all_labels = [z[f"{s}_labels"] for s in NPZ_SPLITS if f"{s}_labels" in keys]
    except ForgeDataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise ForgeDataError(
            f"{path} is not a readable .npz file ({e.__class__.__name__}: {e})",
            fix="restore it from a good copy; it may be truncated, corrupted, or hold pickled objects",
            code="data.npz_corrupt",
        ) from None
    if images.ndim == 3:
        images = images[:, None, :, :]
    elif images.ndim == 4:
        images = np.transpose(images, (0, 3, 1, 2))
    else:
        raise ForgeDataError(
            f"{path} {split}_images has shape {images.shape}", fix="store (n, H, W) or (n, H, W, C) images", code="data.shape"
        )
    if images.dtype == np.uint8:
        X = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating) and images.size and images.min() >= 0 and images.max() <= 1:
        X = images.astype(np.float32)
    else:
        raise ForgeDataError(
            f"{path} {split}_images has dtype {images.dtype}", fix="store uint8 images (or floats in [0, 1])", code="data.dtype"
        )
    labels = labels.reshape(len(labels), -1) if labels.ndim > 1 else labels
    if labels.ndim > 1:
        if labels.shape[1] != 1:
            raise ForgeDataError(
                f"{path} {split}_labels has shape {labels.shape}", fix="store one integer label per image", code="data.shape"
            )
        labels = labels[:, 0]
    if not np.issubdtype(labels.dtype, np.integer):
        raise ForgeDataError(f"{path} {split}_labels has dtype {labels.dtype}", fix="store integer labels 0..C-1", code="data.labels")
    n_classes = max(2, max(int(lab.max()) + 1 for lab in all_labels if lab.size))
    return Dataset(X, labels.astype(np.int64), n_classes, f"{path}:{split}", IMAGE)


def _npz_text(path: Path, split: str, z, keys: set) -> Dataset:
    """The text layout of a .npz: ``{split}_input_ids`` (n, L) integers and ``{split}_labels``."""
    if f"{split}_labels" not in keys:
        raise ForgeDataError(f"{path} lacks {split}_labels", fix="store one integer label per record", code="data.npz_keys")
    ids, labels = z[f"{split}_input_ids"], z[f"{split}_labels"].reshape(-1)
    all_labels = [z[f"{s}_labels"] for s in NPZ_SPLITS if f"{s}_labels" in keys]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ForgeDataError(
            f"{path} {split}_input_ids has shape {ids.shape} and dtype {ids.dtype}",
            fix="store (n, L) integer token ids",
            code="data.tokens",
        )
    if not np.issubdtype(labels.dtype, np.integer) or any(not np.issubdtype(lab.dtype, np.integer) for lab in all_labels):
        raise ForgeDataError(f"{path} {split}_labels has dtype {labels.dtype}", fix="store integer labels 0..C-1", code="data.labels")
    n_classes = max(2, max(int(lab.max()) + 1 for lab in all_labels if lab.size))
    return Dataset(ids, labels.astype(np.int64), n_classes, f"{path}:{split}", TEXT)
