"""Progress display for long work, on rich.

Library code reports progress through :func:`task`; it shows a rich progress bar on
stderr only when the CLI enabled it (``enable(True)``) and never in ``--json`` mode, so
library users and tests see nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_enabled = False


def enable(on: bool) -> None:
    global _enabled
    _enabled = on


def enabled() -> bool:
    return _enabled


def _ignore(n: int = 1) -> None:
    pass


@contextlib.contextmanager
def task(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """``with task("training", total=steps) as advance: advance(1)``."""
    if not _enabled:
        yield _ignore
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        handle = bar.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(handle, n)

        yield advance
