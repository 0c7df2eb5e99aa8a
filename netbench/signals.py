"""SIGINT and SIGTERM stop a run instead of killing it: what was measured is still reported."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM call `stop` (no exception); yields the signals received."""
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stop_signal_name(received: list[int]) -> str | None:
    """The name of the first signal that stopped a run ('SIGINT', 'SIGTERM'), or None."""
    return signal.Signals(received[0]).name if received else None
