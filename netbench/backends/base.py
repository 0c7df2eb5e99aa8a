"""What every backend shares: the `Backend` protocol, what a backend hands back, and the result
of a worker stopped before it measured anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from netbench.phases import empty_records
from netbench.worker import WorkerResult, WorkerTask

ProgressCallback = Callable[[int, int], None]  # (completed, total or 0 when unknown)
#: seconds the workers may take to start and warm up before the run is abandoned
READY_DEADLINE_S = 300.0


@dataclass
class BackendRun:
    """What a backend hands back: one result per worker that returned one (a worker stopped
    before it measured anything returns an empty, interrupted result), problems worth a note,
    and the signal that stopped the run."""

    results: list[WorkerResult]
    problems: list[str] = field(default_factory=list)
    stop_signal: str | None = None


def stopped_result(task: WorkerTask, host: str, pid: int) -> WorkerResult:
    """The result of a worker stopped (Ctrl-C, SIGTERM) before it measured anything."""
    return WorkerResult(task.index, host, pid, {}, {}, empty_records(0), interrupted=True)


class Backend(Protocol):
    def cores(self) -> int | None:
        """CPUs the default worker count is taken from; None: this host's."""
        ...

    def run(
        self, tasks: list[WorkerTask], on_progress: ProgressCallback | None, on_start: Callable[[], None] | None
    ) -> BackendRun: ...
