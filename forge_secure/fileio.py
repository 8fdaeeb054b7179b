"""Small, safe file primitives shared by every package: canonical JSON, atomic writes,
streamed hashing, and refusing to overwrite. Nothing here unpickles anything."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import rfc8785

from .errors import ForgeDataError, ForgeFileError

CHUNK = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes per RFC 8785 (JCS, via the ``rfc8785`` package): keys sorted by
    their UTF-16 code units, no whitespace, UTF-8, integers within +-(2**53 - 1), no floats.

    Floats are refused because their text form is easy to get wrong across languages;
    encode them as strings (e.g. ``repr(x)``) or as integers in a stated unit before
    signing. For the ASCII keys and safe integers forge-secure signs, the bytes equal
    ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, so every
    document signed before JCS was adopted keeps its signature.
    """

    def check(value: Any, where: str, depth: int) -> None:
        if depth > MAX_JSON_DEPTH:
            raise ForgeDataError(
                f"canonical JSON nests deeper than {MAX_JSON_DEPTH} levels at {where}", fix="flatten the document", code="json.depth"
            )
        if isinstance(value, float):
            raise ForgeDataError(
                f"canonical JSON holds no floats, found {value!r} at {where}",
                fix="encode the number as a string or an integer",
                code="json.float",
            )
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ForgeDataError(f"canonical JSON keys must be strings, found {k!r} at {where}", code="json.key")
                check(v, f"{where}.{k}", depth + 1)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                check(v, f"{where}[{i}]", depth + 1)

    check(obj, "$", 0)
    try:
        return rfc8785.dumps(obj)
    except rfc8785.CanonicalizationError as e:
        raise ForgeDataError(
            f"the document cannot be written as canonical JSON (RFC 8785): {e}",
            fix="keep integers within +-(2**53 - 1) and text valid Unicode",
            code="json.canonical",
        ) from None


# --------------------------------------------------------------------------- bounded JSON reading

MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 40
_STRINGS = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.S)  # an unterminated string runs to the end
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


def _depth(raw: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text ``raw`` (strings skipped), measured
    without recursion and without a Python loop over the text, so any length and depth is
    safe and fast to measure (a running sum of +1/-1 over the brackets)."""
    import numpy as np

    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = np.frombuffer(brackets.translate(_OPEN), dtype=np.int8).astype(np.int64)
    return int(np.cumsum(steps).max())


class JSONLimitError(ValueError):
    """Raised inside :func:`loads_bounded` when a value is out of its bounds."""


def loads_bounded(
    raw: bytes,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
    allow_floats: bool = True,
    allow_nonfinite: bool = False,
) -> Any:
    """Parse JSON text with every bound checked before use; total (never another exception).

    Refuses, with :class:`ValueError` (its message says which): bytes that are not UTF-8,
    text that is not JSON, nesting deeper than ``max_depth`` (checked before parsing, so a
    file of 60,000 ``[`` never reaches the recursive parser), integers of more than
    ``max_int_digits`` digits (checked on the text, before ``int()``), ``NaN``/``Infinity``,
    floats when ``allow_floats`` is false, and duplicate object keys. ``allow_nonfinite`` lets
    ``NaN``/``Infinity``/``-Infinity`` through (the toolkit's own result files, written with
    ``allow_nan``, hold them); signed documents never allow them.
    """
    if not isinstance(raw, (bytes, bytearray)):
        raise JSONLimitError(f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if _depth(raw) > max_depth:
        raise JSONLimitError(f"it nests deeper than {max_depth} levels")

    def parse_int(text: str) -> int:
        if len(text.lstrip("-")) > max_int_digits:
            raise JSONLimitError(f"it holds an integer of {len(text.lstrip('-'))} digits (at most {max_int_digits})")
        return int(text)

    def parse_float(text: str) -> float:
        if not allow_floats:
            raise JSONLimitError(f"it holds the number {text[:40]}, where only integers are allowed")
        if len(text) > 400:
            raise JSONLimitError("it holds a number of more than 400 characters")
        value = float(text)
        if not math.isfinite(value) and not allow_nonfinite:
            raise JSONLimitError(f"it holds the number {text[:40]}, which is out of range")
        return value

    def parse_constant(text: str) -> Any:
        if allow_nonfinite and allow_floats:
            return float(text)
        raise JSONLimitError(f"it holds {text}, which JSON does not allow")

    def pairs(items: list) -> dict:
        out: dict = {}
        for k, v in items:
            if k in out:
                raise JSONLimitError(f"it holds the key {k[:60]!r} twice in one object")
            out[k] = v
        return out

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise JSONLimitError("it is not UTF-8 text") from None
    try:
        return json.loads(text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant, object_pairs_hook=pairs)
    except JSONLimitError:
        raise
    except (json.JSONDecodeError, RecursionError, ValueError, OverflowError) as e:
        # RecursionError cannot happen after the depth check; kept so the function stays total
        raise JSONLimitError(f"it is not valid JSON ({e.__class__.__name__}: {str(e)[:120]})") from None


def read_bounded_bytes(path: str | os.PathLike, what: str, *, max_bytes: int, code_prefix: str = "file") -> bytes:
    """The bytes of a small file, refusing a missing path, a directory, a special file, an empty
    file or one larger than ``max_bytes`` (read at most ``max_bytes + 1`` bytes, so a file that
    grows while read, or a device, cannot exhaust memory)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ForgeFileError(f"{what} {path} does not exist", fix="check the path", code="file.missing") from None
    except OSError as e:
        raise ForgeFileError(
            f"{what} {path} cannot be read ({e.strerror})", fix="check the path and its permissions", code="file.unreadable"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise ForgeFileError(f"{what} {path} is a directory", fix="give the path of the file itself", code="file.is_directory")
    if not stat.S_ISREG(st.st_mode):
        raise ForgeFileError(f"{what} {path} is not a regular file", fix="give the path of the file itself", code="file.not_regular")
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise ForgeFileError(f"{what} {path} cannot be read ({e.strerror})", fix="check its permissions", code="file.unreadable") from None
    if not raw:
        raise ForgeDataError(f"{what} {path} is empty", fix="restore it from a good copy", code="file.empty")
    if len(raw) > max_bytes:
        raise ForgeDataError(
            f"{what} {path} is larger than {max_bytes} bytes", fix=f"give the {what} itself", code=f"{code_prefix}.too_large"
        )
    return raw


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, streamed in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PARTIAL_PREFIX = ".forge-partial."  # every temporary file or directory of an atomic write starts with this
FRESH_PREFIX = ".forge-new."  # a temporary output in the instant before it is locked (never swept)


def _try_lock(fd: int) -> bool:
    """A non-blocking exclusive flock on ``fd``: True when taken (no live process holds it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): partial outputs are left alone
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def sweep_partials(directory: str | os.PathLike) -> list[Path]:
    """Remove the partial outputs (``.forge-partial.*``) that a killed process left in
    ``directory``; returns what was removed. Each partial output is flock-ed by the process
    writing it for as long as it lives, so one still being written is never touched (the
    kernel drops the lock when its process dies, even by ``kill -9``)."""
    directory = Path(directory)
    removed: list[Path] = []
    try:
        candidates = [p for p in directory.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
    except OSError:
        return removed
    for p in candidates:
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            if not _try_lock(fd):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
            removed.append(p)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: int = 0o644) -> Iterator[Any]:
    """Open a temporary file beside ``path`` for binary writing; on success fsync it and
    rename it into place, on any exception delete it. Readers never see a partial file.

    The temporary file is named ``.forge-partial.<name>.<random>.part`` and flock-ed while it is
    written; partial files that a killed process left beside ``path`` are removed first
    (:func:`sweep_partials`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(path.parent)
    # created under a name no sweeper touches, locked, then renamed to its partial name: a
    # concurrent sweep can never see it unlocked (a file created with the partial name would be)
    fd, fresh = tempfile.mkstemp(prefix=f"{FRESH_PREFIX}{path.name}.", suffix=".part", dir=path.parent)
    _try_lock(fd)
    tmp = str(path.parent / (PARTIAL_PREFIX + Path(fresh).name[len(FRESH_PREFIX) :]))
    os.rename(fresh, tmp)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # renamed while still locked, so a sweeper never removes it half-way
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
    block succeeds. Refuses an existing non-empty ``path`` unless ``overwrite``.

    The sibling is named ``.forge-partial.<name>.<random>.part``, has mode 0700 (decrypted data
    written there is never readable by others) and is flock-ed while it is built; partial
    directories that a killed process left beside ``path`` are removed first
    (:func:`sweep_partials`)."""
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
    tmp, lock_fd = _new_partial_directory(path.parent, path.name)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock_fd)


def _new_partial_directory(parent: Path, name: str) -> tuple[Path, int]:
    """Sweep ``parent``, then make ``parent/.forge-partial.<name>.<random>.part`` (mode 0700)
    and flock it; returns the directory and the descriptor holding the lock."""
    sweep_partials(parent)
    fresh = Path(tempfile.mkdtemp(prefix=f"{FRESH_PREFIX}{name}.", suffix=".part", dir=parent))  # mode 0700
    lock_fd = os.open(fresh, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    _try_lock(lock_fd)  # locked before it gets the name a sweeper looks for (see atomic_output)
    tmp = parent / (PARTIAL_PREFIX + fresh.name[len(FRESH_PREFIX) :])
    os.rename(fresh, tmp)
    return tmp, lock_fd


SCRATCH = "partial"  # forge_home()/partial: private scratch space for decrypted data (see scratch_directory)


def scratch_root() -> Path:
    """``forge_home()/partial`` (mode 0700): where commands put decrypted data that is no
    output of theirs (the opened bundles a merge reads). Swept by every command that makes a
    scratch directory and by every ``open``."""
    from .home import forge_home

    root = forge_home() / SCRATCH
    root.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)
    return root


@contextlib.contextmanager
def scratch_directory(name: str = "scratch", parent: str | os.PathLike | None = None) -> Iterator[Path]:
    """A private scratch directory for decrypted data, removed when the block ends.

    It follows the partial-output convention: it is named ``.forge-partial.<name>.<random>.part``,
    has mode 0700, lies in ``parent`` (default :func:`scratch_root`) and is flock-ed while in
    use, so one that a killed process (even ``kill -9``) left behind is removed by the next
    :func:`sweep_partials` of ``parent``, which runs first here and in every atomic write there."""
    parent = Path(parent) if parent is not None else scratch_root()
    parent.mkdir(parents=True, exist_ok=True)
    tmp, lock_fd = _new_partial_directory(parent, name)
    try:
        yield tmp
    finally:
        try:
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            os.close(lock_fd)


def read_json_file(
    path: str | os.PathLike,
    what: str = "JSON file",
    *,
    max_bytes: int = 64 << 20,
    max_depth: int = MAX_JSON_DEPTH,
    max_int_digits: int = MAX_INT_DIGITS,
) -> Any:
    """Read outside JSON with every bound checked before use (size, nesting depth, integer
    digits, no NaN/Infinity, no duplicate keys); errors name the file and the fix (missing,
    directory, empty, too large, not UTF-8, not JSON, out of bounds). Every reader of a JSON
    file that someone else wrote (policies, evidence, results, rosters, keys) goes through
    this function or :func:`loads_bounded`."""
    raw = read_bounded_bytes(path, what, max_bytes=max_bytes)
    if not raw.strip():
        raise ForgeDataError(f"{what} {path} is empty", fix="restore it from a good copy", code="file.empty")
    try:
        return loads_bounded(raw, max_depth=max_depth, max_int_digits=max_int_digits, allow_nonfinite=True)
    except ValueError as e:
        raise ForgeDataError(
            f"{what} {path} is not valid JSON ({e})",
            fix="restore it from a good copy; it may be truncated or of the wrong type",
            code="file.not_json",
        ) from None
