"""The local backend: one spawned process per worker on this host, controlled through shared
memory (a stop flag, progress counters, a ready barrier and one start time)."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import socket
import time
from collections.abc import Callable
from queue import Empty

from netbench.backends.base import READY_DEADLINE_S, BackendRun, ProgressCallback, stopped_result
from netbench.signals import stop_on_signals, stop_signal_name
from netbench.worker import WorkerResult, WorkerTask, run_worker

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
#: from the ready barrier to the common start: the workers see the start time within it
_START_MARGIN_S = 0.01
#: a worker that exited may have its result in the queue's pipe yet
_DELIVERY_GRACE_S = 1.0


class _LocalControl:
    """Shared-memory control of local worker processes (see worker.WorkerControl)."""

    def __init__(self, ctx: mp.context.SpawnContext, workers: int) -> None:
        self.stop = ctx.Event()
        self.progress = ctx.Array("q", workers, lock=False)
        self.ready = ctx.Array("b", workers, lock=False)
        self.start_at = ctx.Value("d", 0.0, lock=False)
        self.parent_pid = os.getpid()

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def report_progress(self, worker: int, completed: int) -> None:
        self.progress[worker] = completed

    def wait_for_start(self, worker: int) -> float:
        self.ready[worker] = 1
        while self.start_at.value == 0.0 and not self.stop.is_set():
            time.sleep(0.001)
        return self.start_at.value


def _process_main(task: WorkerTask, control: _LocalControl, results: mp.Queue) -> None:
    # Ctrl-C, and a SIGTERM sent to the process group, reach every worker: the parent alone
    # decides, through control.stop, so what the workers measured still comes back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(control.parent_pid)
    results.put(run_worker(task, control))


def _die_with_parent(parent_pid: int) -> None:
    """A worker ignores the stop signals, so it must not outlive its parent (a SIGKILLed
    netbench): on Linux the kernel kills it when the parent dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's stop flag is all there is
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class LocalBackend:
    def cores(self) -> int | None:
        return None

    def run(
        self, tasks: list[WorkerTask], on_progress: ProgressCallback | None, on_start: Callable[[], None] | None
    ) -> BackendRun:
        """Run tasks in spawned processes; `on_start` runs once every worker is warm, just before
        the measured part begins."""
        ctx = mp.get_context("spawn")
        control = _LocalControl(ctx, len(tasks))
        queue: mp.Queue = ctx.Queue()
        processes = [ctx.Process(target=_process_main, args=(t, control, queue), daemon=True) for t in tasks]
        total = sum(t.count for t in tasks) if not tasks[0].spec.duration_s else 0
        results: dict[int, WorkerResult] = {}
        problems: list[str] = []
        with stop_on_signals(control.stop.set) as received:
            for process in processes:
                process.start()
            ready_deadline = time.monotonic() + READY_DEADLINE_S
            exited_at: dict[int, float] = {}
            while any(_pending(i, results, exited_at) for i in range(len(processes))):
                try:
                    result = queue.get(timeout=0.1)
                    results[result.index] = result
                except Empty:
                    pass
                if control.start_at.value == 0.0 and not control.stop.is_set():
                    if all(control.ready[i] or not p.is_alive() for i, p in enumerate(processes)):
                        if on_start is not None:
                            on_start()
                        control.start_at.value = time.time() + _START_MARGIN_S
                    elif time.monotonic() > ready_deadline:
                        problems.append(f"workers did not become ready within {READY_DEADLINE_S:.0f} s")
                        control.stop.set()
                for i, process in enumerate(processes):
                    if i not in results and i not in exited_at and process.exitcode is not None:
                        exited_at[i] = time.monotonic()
                if on_progress is not None:
                    on_progress(sum(control.progress), total)
            for i, process in enumerate(processes):
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
                    process.join()
                if i in results:
                    continue
                if received:
                    # Stopped while it was still starting (a Ctrl-C to the whole process group
                    # can end a worker before it ignores the signal): it measured nothing.
                    results[i] = stopped_result(tasks[i], socket.gethostname(), process.pid or 0)
                else:
                    problems.append(f"worker {i} (pid {process.pid}) died with exit code {process.exitcode}")
        return BackendRun([results[i] for i in sorted(results)], problems, stop_signal_name(received))


def _pending(index: int, results: dict[int, WorkerResult], exited_at: dict[int, float]) -> bool:
    """Still waiting for this worker? One that exited gets a moment to deliver its result."""
    if index in results:
        return False
    return index not in exited_at or time.monotonic() - exited_at[index] < _DELIVERY_GRACE_S
