"""Where a run's workers execute. A backend is one module here with one class satisfying
`Backend`: it runs `worker.run_worker` for each task (in processes of this host, on a Ray
cluster, ...), holds every worker at a ready barrier until all are warm, calls `on_start` once
then (the runner scrapes the server's /metrics there), and hands back what each worker returned.
A new backend is one file and one line in `backend_for`.
"""

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


def backend_for(name: str, ray_address: str | None = None) -> Backend:
    if name == "ray":
        from netbench.backends.ray import RayBackend  # Ray is an optional extra

        return RayBackend(ray_address)
    from netbench.backends.local import LocalBackend

    return LocalBackend()
