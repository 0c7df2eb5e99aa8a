"""The progress bar on stderr for long runs (only when stderr is a terminal)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress_bar(stream: TextIO, enabled: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """Yields a (completed, total) callback, or None when no bar is shown."""
    if not enabled or not stream.isatty():
        yield None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=stream), transient=True) as progress:
        task = progress.add_task(label, total=None)

        def update(completed: int, total: int) -> None:
            progress.update(task, completed=completed, total=total or None)

        yield update
