"""Where the terminal renderers write: a rich Console on a command's stream."""

from __future__ import annotations

from typing import TextIO

from rich.console import Console


def console(stream: TextIO, width: int | None = None, color: bool = True) -> Console:
    """A console on `stream` (a file: `width` columns, no colour codes)."""
    return Console(file=stream, width=width, no_color=None if color else True)  # None: rich reads NO_COLOR
