"""Start and stop workers, handle signals and progress, merge what they return into a `RunResult`."""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from queue import Empty

import numpy as np

from netbench.curl import curl_version, fetch
from netbench.histograms import PhaseHistograms
from netbench.load_check import load_notes
from netbench.pacing import split_evenly
from netbench.phases import empty_events, empty_records
from netbench.results import RunResult, WorkerInfo
from netbench.server_metrics import Scrape, difference, scrape
from netbench.spec import RunSpec
from netbench.worker import WorkerResult, WorkerTask, run_worker
from netbench.workloads import HEALTH_PATH, MODELS_PATH, Request, build_request

ProgressCallback = Callable[[int, int], None]  # (completed, total or 0 when unknown)

#: seconds a worker may take to start and warm up before the run is abandoned
_READY_DEADLINE_S = 300.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class Target:
    """A spec with its model resolved, the request to send, and what the probes found."""

    spec: RunSpec
    request: Request
    notes: tuple[str, ...]


def prepare(spec: RunSpec) -> Target:
    """Resolve what the run sends: the default model, /health's fallback. Failures here are
    not fatal: a target that refuses everything is reported by the run itself."""
    notes: list[str] = []
    path = None
    if spec.mode == "health":
        status, _, curl_error = fetch(spec, build_request(spec, HEALTH_PATH))
        if status == 404:
            path = MODELS_PATH
            notes.append("the server has no /health (HTTP 404): measuring GET /v1/models instead")
    if spec.streaming and not spec.model:
        status, body, curl_error = fetch(spec, build_request(spec.replace(mode="models")))
        model = _first_model_id(body) if status == 200 else None
        if model:
            spec = spec.replace(model=model)
        else:
            notes.append(f"could not list models (HTTP {status}, curl error {curl_error}); pass --model")
    return Target(spec, build_request(spec, path), tuple(notes))


def _first_model_id(body: bytes) -> str | None:
    try:
        models = json.loads(body)["data"]
        return str(models[0]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def plan(spec: RunSpec, request: Request, cores: int | None = None) -> list[WorkerTask]:
    """P = min(in-flight, cores) workers; in-flight slots, n and warm-up split exactly."""
    workers = spec.workers or max(1, min(spec.in_flight, cores or os.cpu_count() or 1))
    workers = min(workers, spec.in_flight)
    slots = split_evenly(spec.in_flight, workers)
    counts = split_evenly(spec.n, workers)
    warmups = split_evenly(spec.warmup, workers)
    return [WorkerTask(spec, request, i, workers, slots[i], counts[i], warmups[i]) for i in range(workers)]


def _cores(spec: RunSpec) -> int | None:
    """CPUs the default worker count is taken from: with Ray the cluster's (joining it
    here), else None, this host's."""
    if spec.backend != "ray":
        return None
    from netbench.ray_backend import cluster_cpus

    return cluster_cpus(spec.ray_address)


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


@contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[list[int]]:
    """SIGINT/SIGTERM stop the run instead of killing it; yields the signals received."""
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


def run_local(
    tasks: list[WorkerTask], on_progress: ProgressCallback | None, on_start: Callable[[], None] | None = None
) -> tuple[list[WorkerResult], list[str], str | None]:
    """Run tasks in spawned processes; `on_start` runs once every worker is warm, just before
    the measured part begins. Returns (results, problems, the signal that stopped the run)."""
    ctx = mp.get_context("spawn")
    control = _LocalControl(ctx, len(tasks))
    queue: mp.Queue = ctx.Queue()
    processes = [ctx.Process(target=_process_main, args=(t, control, queue), daemon=True) for t in tasks]
    total = sum(t.count for t in tasks) if not tasks[0].spec.duration_s else 0
    results: dict[int, WorkerResult] = {}
    problems: list[str] = []
    with _stop_on_signals(control.stop.set) as received:
        for process in processes:
            process.start()
        ready_deadline = time.monotonic() + _READY_DEADLINE_S
        exited_at: dict[int, float] = {}
        while any(_pending(i, results, exited_at) for i in range(len(processes))):
            try:
                result = queue.get(timeout=0.1)
                results[result.index] = result
            except Empty:
                pass
            if control.start_at.value == 0.0:
                alive_ready = all(control.ready[i] or not p.is_alive() for i, p in enumerate(processes))
                if alive_ready:
                    if on_start is not None:
                        on_start()
                    control.start_at.value = time.time() + 0.01
                elif time.monotonic() > ready_deadline:
                    problems.append(f"workers did not become ready within {_READY_DEADLINE_S:.0f} s")
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
            if i not in results:
                problems.append(f"worker {i} (pid {process.pid}) died with exit code {process.exitcode}")
    return [results[i] for i in sorted(results)], problems, stop_signal_name(received)


def _pending(index: int, results: dict[int, WorkerResult], exited_at: dict[int, float]) -> bool:
    """Still waiting for this worker? One that exited may have its result in the queue's
    pipe yet: it gets a second to deliver it."""
    if index in results:
        return False
    return index not in exited_at or time.monotonic() - exited_at[index] < 1.0


def run(spec: RunSpec, on_progress: ProgressCallback | None = None) -> RunResult:
    """Measure one run: probe the target, run the workers, merge their results."""
    target = prepare(spec)
    tasks = plan(target.spec, target.request, _cores(spec))
    started_at_s = time.time()
    # Server-side /metrics: scraped once the warm-up is over (local workers) and after the run,
    # so the difference holds the measured requests only. Ray's actors warm up inside the start
    # allowance with no ready barrier, so there the first scrape comes before the warm-up.
    before: list[Scrape] = []
    if spec.backend == "ray":
        from netbench.ray_backend import run_ray

        before.append(scrape(target.spec))
        worker_results, problems, stop_signal = run_ray(tasks, spec.ray_address, on_progress)
    else:
        worker_results, problems, stop_signal = run_local(tasks, on_progress, lambda: before.append(scrape(target.spec)))
    result = merge_workers(target.spec, worker_results, started_at_s)
    if before:
        warmup_included = spec.warmup if spec.backend == "ray" else 0
        result.server_metrics = difference(before[0], scrape(target.spec), warmup_included)
    result.interrupted = stop_signal is not None or any(w.interrupted for w in worker_results)
    result.notes = list(target.notes) + problems + [f"worker {w.index}: {w.error}" for w in worker_results if w.error]
    result.notes += failure_notes(result, worker_results)
    # A worker that died or raised took its share of the run with it: the run failed (exit 1).
    lost = len(tasks) - len(worker_results) + sum(1 for w in worker_results if w.error)
    if lost:
        result.counters["workers_failed"] = lost
    result.context = {"url": target.request.url, "method": target.request.method, "libcurl": curl_version()}
    if stop_signal is not None:
        result.context["stop_signal"] = stop_signal
        result.notes.append(f"stopped by {stop_signal}: the numbers cover the requests that finished before it")
    result.notes += client_bound_notes(result)
    return result


def merge_workers(spec: RunSpec, worker_results: list[WorkerResult], started_at_s: float) -> RunResult:
    histograms = PhaseHistograms()
    counters: Counter[str] = Counter()
    for w in worker_results:
        histograms.add_encoded(w.histograms)
        counters.update(w.counters)
    records = [w.records for w in worker_results if len(w.records)]
    events = [w.events for w in worker_results if len(w.records)]
    infos = [
        WorkerInfo(w.index, w.host, w.pid, w.counters.get("requests", 0), w.started_at_s, w.elapsed_s, w.cpu_s, w.error)
        for w in worker_results
    ]
    return RunResult(
        spec=spec,
        histograms=histograms,
        counters=counters,
        records=np.concatenate(records) if records else empty_records(0),
        events=np.concatenate(events) if events else empty_events(),
        workers=infos,
        started_at_s=min((w.started_at_s for w in worker_results if w.started_at_s), default=started_at_s),
        elapsed_s=max((w.elapsed_s for w in worker_results), default=0.0),
    )


def failure_notes(result: RunResult, worker_results: list[WorkerResult]) -> list[str]:
    """Why requests failed, in curl's words, and redirects that were measured, not followed."""
    kinds: dict[str, str] = {}
    for w in worker_results:
        for kind, note in w.failure_notes.items():
            kinds.setdefault(kind, note)
    notes = [kinds[kind] for kind in sorted(kinds)]
    redirects = {k: v for k, v in result.counters.items() if k.startswith("status_3")}
    if redirects and not result.spec.follow_redirects:
        statuses = ", ".join(f"HTTP {k[len('status_'):]} x{v}" for k, v in sorted(redirects.items()))
        notes.append(f"redirects answered and not followed ({statuses}): pass --follow-redirects to measure the target")
    return notes


def client_bound_notes(result: RunResult) -> list[str]:
    """Say so when the client (CPU, schedule lag) or the in-flight cap limited the run (see load_check)."""
    return load_notes(result)
