"""SIGINT and SIGTERM stop a run instead of killing it: what was measured is still reported.

Guards nest: a command guards its whole life (core.measure: probes, the run, the outputs), a
backend guards its workers inside it. A signal reaches every guard in force (each records it,
each `stop` is called), so the backend stops its workers and the command still writes what
they measured. `received_count` lets a blocking step that is no run (a probe, a /metrics
scrape) notice a signal that arrived while it waited, and give up within its poll period.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: the guards in force, outermost first: (signals received, stop)
_guards: list[tuple[list[int], Callable[[], None]]] = []
#: every stop signal a guard received in this process, in order
_received: list[int] = []


def _handler(signum: int, _frame: object) -> None:
    _received.append(signum)
    for received, stop in list(_guards):
        received.append(signum)
        stop()


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM call `stop` (no exception); yields the signals received.
    Outside the main thread no handler can be installed: signals keep their default action."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    guard = (received, stop)
    _guards.append(guard)
    previous = {s: signal.signal(s, _handler) for s in _STOP_SIGNALS}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        # by identity: two guards' lists may be equal
        del _guards[next(i for i, g in enumerate(_guards) if g is guard)]


def received_count() -> int:
    """How many stop signals a guard has received in this process so far."""
    return len(_received)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def stop_signal_name(received: list[int]) -> str | None:
    """The name of the first signal that stopped a run ('SIGINT', 'SIGTERM'), or None."""
    return signal_name(received[0]) if received else None


def signals_since(count: int) -> list[int]:
    """The stop signals received after `received_count()` returned `count`."""
    return _received[count:]
