"""The plaintext container of a sealed bundle: a directory's files in one byte stream.

Format ``forge-container/1`` (all integers big-endian)::

    magic   8 bytes  b"FGCONT\\x00\\x01"
    count   u32      number of files (1 .. 100000)
    count times:     u16 name length (1 .. 1024), name (UTF-8, '/'-separated relative path),
                     u64 file size
    the file bytes, in the order of the index, with nothing after the last one

Names are sorted, so a directory always gives the same bytes. Never tar, never pickle.
Writing refuses symlinks and special files; reading refuses absolute names, '.' or '..'
components, empty components, backslashes, control characters, duplicate names, a name
that is both a file and a directory, and any byte beyond the index's total. The reader is
incremental (``feed``), so the caller can stream authenticated chunks into it and the
memory used stays bounded.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..fileio import fsync_directory
from ._pipeline import EarlyWriteback
from .errors import fail

MAGIC = b"FGCONT\x00\x01"
MAX_FILES = 100_000
MAX_NAME = 1024
READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    path: Path | None = None  # source file when writing


def check_name(name: str) -> str:
    """Refuse any name that is not a plain relative path inside the output directory."""
    bad = (
        not name
        or name.startswith("/")
        or "\\" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or any(part in ("", ".", "..") for part in name.split("/"))
        or len(name.encode("utf-8")) > MAX_NAME
    )
    if bad:
        raise fail(
            "bundle.unsafe_path",
            f"the bundle holds an unsafe file name {name!r}",
            "do not use this bundle; ask the site to seal its plugin directory again",
        )
    return name


def scan_directory(root: str | os.PathLike) -> list[Entry]:
    """The files under ``root`` in container order; refuses symlinks and special files."""
    root = Path(root)
    entries: list[Entry] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in list(dirnames):
            full = Path(dirpath) / name
            if full.is_symlink():
                raise fail("bundle.symlink", f"{full} is a symbolic link", "replace it with the real directory before sealing")
        for name in sorted(filenames):
            full = Path(dirpath) / name
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise fail("bundle.symlink", f"{full} is a symbolic link", "replace it with the file itself before sealing")
            if not stat.S_ISREG(st.st_mode):
                raise fail("bundle.special_file", f"{full} is not a regular file", "remove it from the directory before sealing")
            rel = full.relative_to(root).as_posix()
            entries.append(Entry(check_name(rel), st.st_size, full))
    entries.sort(key=lambda e: e.name)
    if not entries:
        raise fail("bundle.empty", f"{root} holds no files", "give the plugin directory itself")
    if len(entries) > MAX_FILES:
        raise fail("bundle.too_many_files", f"{root} holds {len(entries)} files (at most {MAX_FILES})", "seal a plugin directory")
    return entries


def index_bytes(entries: list[Entry]) -> bytes:
    parts = [MAGIC, struct.pack(">I", len(entries))]
    for e in entries:
        raw = e.name.encode("utf-8")
        parts.append(struct.pack(">H", len(raw)) + raw + struct.pack(">Q", e.size))
    return b"".join(parts)


def container_size(entries: list[Entry]) -> int:
    return len(index_bytes(entries)) + sum(e.size for e in entries)


def iter_container(entries: list[Entry], block: int = READ_BLOCK) -> Iterator[bytes]:
    """Yield the container bytes; refuses a file that changed size while being read."""
    yield index_bytes(entries)
    for e in entries:
        assert e.path is not None
        seen = 0
        with open(e.path, "rb") as f:
            while True:
                data = f.read(min(block, e.size - seen + 1))
                if not data:
                    break
                seen += len(data)
                if seen > e.size:
                    break
                yield data
        if seen != e.size:
            raise fail(
                "bundle.source_changed",
                f"{e.path} changed size while it was being sealed",
                "wait until the plugin is fully written, then seal again",
            )


class ContainerReader:
    """Incremental parser that writes the files into ``out_dir`` as bytes arrive.

    With ``durable`` (the default) every file is fsynced when it is complete (write-back is
    started early, see :class:`~forge_secure.crypto._pipeline.EarlyWriteback`) and
    ``finish`` fsyncs every directory it created and ``out_dir`` itself, so once the caller
    renames ``out_dir`` into place (and syncs its parent) nothing opened can be lost.
    """

    def __init__(self, out_dir: str | os.PathLike, expected_size: int, *, durable: bool = True):
        self.out = Path(out_dir)
        self.expected = expected_size
        self.durable = durable
        self.received = 0
        self._buf = bytearray()
        self._entries: list[Entry] | None = None
        self._current: int = -1
        self._remaining = 0
        self._file: BinaryIO | None = None
        self._writeback: EarlyWriteback | None = None
        self._dirs: set[Path] = {self.out}

    def _bad(self, why: str):
        return fail(
            "bundle.container",
            f"the decrypted payload is not a valid container ({why})",
            "do not use this bundle; ask the site to seal its plugin directory again",
        )

    def _parse_index(self, buf) -> int | None:
        """Parse the index at the start of ``buf`` (bytes-like); the bytes it took, or None
        when ``buf`` does not hold all of it yet."""
        if len(buf) < 12:
            return None
        if bytes(buf[:8]) != MAGIC:
            raise self._bad("wrong magic")
        (count,) = struct.unpack(">I", buf[8:12])
        if not 1 <= count <= MAX_FILES:
            raise self._bad(f"{count} files")
        pos, entries, names = 12, [], set()
        for _ in range(count):
            if len(buf) < pos + 2:
                return None
            (n,) = struct.unpack(">H", buf[pos : pos + 2])
            if not 1 <= n <= MAX_NAME:
                raise self._bad("bad name length")
            if len(buf) < pos + 2 + n + 8:
                return None
            try:
                name = bytes(buf[pos + 2 : pos + 2 + n]).decode("utf-8")
            except UnicodeDecodeError:
                raise self._bad("a name is not UTF-8") from None
            (size,) = struct.unpack(">Q", buf[pos + 2 + n : pos + 10 + n])
            check_name(name)
            if name in names:
                raise fail(
                    "bundle.duplicate_name",
                    f"the bundle holds the file name {name!r} twice",
                    "do not use this bundle; ask the site to seal its plugin directory again",
                )
            names.add(name)
            entries.append(Entry(name, size))
            pos += 10 + n
        parents = {"/".join(e.name.split("/")[:i]) for e in entries for i in range(1, e.name.count("/") + 1)}
        clash = parents & names
        if clash:
            raise self._bad(f"{sorted(clash)[0]!r} is both a file and a directory")
        if pos + sum(e.size for e in entries) != self.expected:
            raise self._bad("the index does not add up to the payload size")
        self._entries = entries
        return pos

    def _close_file(self) -> None:
        f, self._file = self._file, None
        if f is None:
            return
        try:
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        finally:
            f.close()

    def _next_file(self) -> None:
        assert self._entries is not None
        if self._file:
            self._close_file()
        self._current += 1
        while self._current < len(self._entries):
            e = self._entries[self._current]
            target = self.out / e.name
            if target.parent not in self._dirs:
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._dirs.update(p for p in target.parents if p.is_relative_to(self.out))
            # O_EXCL + O_NOFOLLOW: never write through a link or over an earlier file
            # 0600: decrypted plugin data is never readable by others (the directories are 0700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
            self._file = os.fdopen(fd, "wb")
            self._writeback = EarlyWriteback(fd) if self.durable else None
            self._remaining = e.size
            if e.size:
                return
            self._close_file()
            self._current += 1

    def feed(self, data) -> None:
        self.received += len(data)
        if self.received > self.expected:
            raise self._bad("more bytes than the header states")
        view = memoryview(data)
        if self._entries is None:
            if not self._buf and (pos := self._parse_index(view)) is not None:
                view = view[pos:]  # the whole index in the first piece (the usual case): no copy
            else:  # an index longer than one piece: gather it
                self._buf += view
                pos = self._parse_index(self._buf)
                if pos is None:
                    return
                view, self._buf = memoryview(self._buf)[pos:], bytearray()
            self._next_file()
        while len(view):
            if self._file is None:
                raise self._bad("bytes after the last file")
            take = min(self._remaining, len(view))
            self._file.write(view[:take])
            if self._writeback is not None:
                self._writeback.wrote(take)
            self._remaining -= take
            view = view[take:]
            if self._remaining == 0:
                self._next_file()

    def finish(self) -> list[Entry]:
        """Check that the container is complete; with ``durable``, fsync the directories."""
        if self._entries is None or self._file is not None or self.received != self.expected:
            raise self._bad("it ends early")
        if self.durable:
            for d in sorted(self._dirs, key=lambda p: len(p.parts), reverse=True):
                fsync_directory(d)
        return self._entries

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
