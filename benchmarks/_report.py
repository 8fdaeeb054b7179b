"""Write one benchmark's figures into its own section of docs/benchmarks.md.

Each script owns the section between ``<!-- BEGIN name -->`` and ``<!-- END name -->``
and replaces only that; the write is atomic and locked, so scripts may run at once.
"""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path

from filelock import FileLock

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every figure here is written by a script in `benchmarks/`; rerun the command shown in a\n"
    "section to reproduce it. Ratios are measured against their baseline in the same run.\n"
)


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, title: str, command: str, body_markdown: str) -> None:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- BEGIN {name} -->\n## {title}\n\n"
        f"Reproduce: `{command}` ({machine()}; measured {stamp})\n\n"
        f"{body_markdown.rstrip()}\n<!-- END {name} -->\n"
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(DOC) + ".lock"):
        text = DOC.read_text() if DOC.exists() else HEADER
        begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            _, tail = rest.split(end, 1)
            text = head + block.rstrip("\n") + tail
        else:
            text = text.rstrip("\n") + "\n\n" + block
        tmp = DOC.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(DOC)
