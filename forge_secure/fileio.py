"""Small, safe file primitives shared by every package: canonical JSON, atomic writes,
streamed hashing, and refusing to overwrite. Nothing here unpickles anything."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import ForgeDataError, ForgeFileError

CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact separators, UTF-8, no floats.

    Floats are refused because their text form is ambiguous; encode them as strings
    (e.g. ``repr(x)``) or as integers in a stated unit before signing.
    """

    def check(value: Any, where: str) -> None:
        if isinstance(value, float):
            raise ForgeDataError(
                f"canonical JSON holds no floats, found {value!r} at {where}",
                fix="encode the number as a string or an integer",
                code="json.float",
            )
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ForgeDataError(f"canonical JSON keys must be strings, found {k!r} at {where}")
                check(v, f"{where}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                check(v, f"{where}[{i}]")

    check(obj, "$")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Any]:
    """Open a temporary file beside ``path`` for binary writing; on success fsync it and
    rename it into place, on any exception delete it. Readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_directory(path: str | os.PathLike) -> None:
    """Make the entries of directory ``path`` durable (after creating or renaming something in
    it, the file's own fsync does not cover its name). A no-op where directories cannot be
    opened or synced (Windows, some network file systems)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except (PermissionError, IsADirectoryError):  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    with atomic_output(path, mode) as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, obj: Any, mode: int = 0o644) -> None:
    """Pretty, sorted JSON (floats allowed) written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it to ``path`` only when the
    block succeeds. Refuses an existing non-empty ``path`` unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ForgeFileError(f"{path} exists and is not a directory", fix="choose another --out", code="file.not_a_directory")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise ForgeFileError(
            f"{path} already exists and is not empty",
            fix="choose a new --out directory or remove the old one",
            code="file.exists",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_file(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON with errors that name the file and the fix (missing, directory, empty,
    not UTF-8, not JSON)."""
    path = Path(path)
    if not path.exists():
        raise ForgeFileError(f"{what} {path} does not exist", fix="check the path", code="file.missing")
    if path.is_dir():
        raise ForgeFileError(f"{what} {path} is a directory", fix="give the path of the file itself", code="file.is_directory")
    raw = path.read_bytes()
    if not raw.strip():
        raise ForgeDataError(f"{what} {path} is empty", fix="restore it from a good copy", code="file.empty")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ForgeDataError(
            f"{what} {path} is not valid JSON ({e.__class__.__name__}: {e})",
            fix="restore it from a good copy; it may be truncated or of the wrong type",
            code="file.not_json",
        ) from None
