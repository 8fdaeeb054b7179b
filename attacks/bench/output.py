"""The bench's output directory rule: write a fresh directory, or replace a previous bench
output (recognised by its ``bench.json`` marker), never anything else."""

from __future__ import annotations

from pathlib import Path

from forge_secure.errors import ForgeFileError

MARKER = "bench.json"


def check_out(out: str | Path) -> bool:
    """Refuse an ``out`` that is a file or a non-empty directory not written by forge bench;
    return True when it is a previous bench output that may be replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ForgeFileError(f"--out {out} exists and is not a directory", fix="choose a new --out directory", code="bench.out_exists")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ForgeFileError(
                f"--out {out} is a non-empty directory that forge bench did not write",
                fix="choose a new --out directory (a previous bench output is replaced)",
                code="bench.out_exists",
            )
        return True
    return False
