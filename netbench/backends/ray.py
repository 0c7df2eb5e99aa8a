"""The Ray backend: the local backend's workers, one CPU each, spread across a Ray cluster.

Ray is an optional extra (`pip install 'netbench[ray]'`) and this is the only module that
imports it. Each worker is a Ray actor that runs `netbench.worker.run_worker` unchanged and
returns the same `WorkerResult`; `runner.merge_workers` merges them as it merges local ones.

Actors rather than `ray.util.multiprocessing.Pool`: Pool's constructor waits for its actors
without a deadline (a cluster short of CPUs would hang the run), and a Pool task cannot be
asked to stop and hand back what it measured. A threaded actor (two threads) can: one thread
runs the worker, the other takes `stop` and `progress` calls, so Ctrl-C ends a cluster run
with its measurements, as it ends a local one.

All workers start together, as local ones do: each actor warms up, reports ready and waits;
once every actor is ready, the parent calls `on_start` (the /metrics scrape), sets one
wall-clock start time a short margin ahead and each worker sleeps until it, so closed-loop
slots and open-loop schedules line up across hosts (given synchronised clocks).

Without an address (and no RAY_ADDRESS) netbench starts a private Ray on this host bound to
127.0.0.1, and it binds to loopback to join a head on a loopback address: Ray resolves
`--node-ip-address 127.0.0.1` to the machine's external address on Linux, and only its
single-host mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the default on macOS) stays on loopback.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from netbench.backends.base import READY_DEADLINE_S, BackendRun, ProgressCallback, stopped_result
from netbench.errors import InputError
from netbench.phases import empty_records
from netbench.signals import stop_on_signals, stop_signal_name
from netbench.worker import WorkerResult, WorkerTask, run_worker

#: from the ready barrier to the common start: the start calls reach every actor within it
START_MARGIN_S = 0.1
#: Ray's switch to its single-host mode, where every process binds to 127.0.0.1
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: a worker that starts measuring later than this after the common start is reported
_START_SLIP_S = 0.05
#: for the cluster to place every actor and for each to import netbench
_PLACE_DEADLINE_S = 60.0
#: for stopped workers (Ctrl-C) to return what they measured before they are killed
_STOP_GRACE_S = 10.0
#: beyond a run's worst case (every request running into --timeout): a margin, not a wait
_RUN_GRACE_S = 60.0
_POLL_S = 0.25
#: (host, pid) of a worker whose actor never reported where it runs
_UNKNOWN_HOST = ("unknown", 0)
#: for the Ray head to accept a TCP connection
_CONNECT_DEADLINE_S = 5.0
_ACTOR_OPTIONS = {
    "num_cpus": 1,
    "scheduling_strategy": "SPREAD",
    "max_concurrency": 2,  # one thread runs the worker, the other answers stop/progress
    "max_restarts": 0,  # a restarted worker would measure its share twice
}


def _ray(loopback: bool) -> Any:
    """Ray itself (on loopback when asked), or one line (exit 2) saying how to install it."""
    if loopback:
        os.environ[LOOPBACK_ENV] = "0"  # read when Ray is imported, here and in its processes
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:  # imported already (a caller's own import): read once, so set it
            constants.ENABLE_RAY_CLUSTER = False
    try:
        import ray
    except ImportError:
        raise InputError("backend", "ray", "Ray is not installed (pip install 'netbench[ray]')") from None
    return ray


def on_loopback(address: str | None) -> bool:
    """A private Ray (no address) or a head on a loopback address."""
    if address in (None, "", "local"):
        return True
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(address: str | None) -> Any:
    """Join the cluster at `address` (None: RAY_ADDRESS, else a private Ray on 127.0.0.1;
    "auto": a Ray already running on this host), quietly.

    A sweep's runs share one connection; Ray is shut down when netbench exits, and only
    when netbench started it (a caller's own `ray.init` is left alone).
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray = _ray(on_loopback(address))
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(
                address=address or "local",
                log_to_driver=False,  # worker output would interleave with the report
                include_dashboard=False,
                configure_logging=True,
                logging_level=logging.ERROR,
            )
        except ConnectionError as error:
            raise InputError(
                "ray_address", address, f"{error}; a cluster started with token authentication "
                "(the default of `ray start` since Ray 2.59) needs RAY_AUTH_MODE=token here and its token "
                "(~/.ray/auth_token or RAY_AUTH_TOKEN)"
            ) from None
        _cluster_errors_to_stderr(ray)
        atexit.register(ray.shutdown)
    return ray


def _cluster_errors_to_stderr(ray: Any) -> None:
    """Ray's driver prints cluster errors (a raylet or worker died) on stdout, where they would
    corrupt --json; send them to stderr. The report itself names every worker lost.

    This patches a private Ray function (the error listener looks it up on each message); where
    a Ray version lacks it, nothing is changed."""
    driver = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(driver, "print_to_stdstream", None)
    if original is None:
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    driver.print_to_stdstream = to_stderr


def _check_reachable(address: str | None) -> None:
    """Fail fast on a head that does not answer: Ray itself retries for many minutes."""
    if address in (None, "", "auto", "local"):
        return  # a local instance: found or started by Ray, no network path involved
    assert address is not None
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise InputError("ray_address", address, "expected HOST:PORT of the Ray head (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((parts.hostname, port), timeout=_CONNECT_DEADLINE_S).close()
    except OSError as error:
        raise InputError(
            "ray_address", address, f"no Ray head answers there ({error.strerror or error}); start one with `ray start --head`"
        ) from None


class _ActorControl:
    """`WorkerControl` inside one actor: stop, progress and the start cross threads."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.started = threading.Event()
        self.completed = 0
        self.start_at_s = 0.0

    def should_stop(self) -> bool:
        return self.stopped.is_set()

    def report_progress(self, worker: int, completed: int) -> None:
        self.completed = completed

    def wait_for_start(self, worker: int) -> float:
        self.ready.set()
        while not self.started.wait(0.01) and not self.stopped.is_set():
            pass
        return self.start_at_s


class _WorkerActor:
    """Hosts one worker in a Ray worker process (made a Ray actor class by `RayBackend.run`)."""

    def __init__(self) -> None:
        # Created with the actor, so a stop that overtakes the run call is not lost.
        self.control = _ActorControl()

    def where(self) -> tuple[str, int]:
        return socket.gethostname(), os.getpid()

    def run(self, task: WorkerTask) -> WorkerResult:
        return run_worker(task, self.control)

    def is_ready(self) -> bool:
        """Warmed up, and waiting at the barrier."""
        return self.control.ready.is_set()

    def start(self, start_at_s: float) -> None:
        self.control.start_at_s = start_at_s
        self.control.started.set()

    def stop(self) -> None:
        self.control.stopped.set()

    def progress(self) -> int:
        return self.control.completed


class RayBackend:
    def __init__(self, address: str | None) -> None:
        self.address = address

    def cores(self) -> int | None:
        """The cluster's CPUs: the default worker count (one worker per CPU), at least 1."""
        return max(1, int(connect(self.address).cluster_resources().get("CPU", 0)))

    def run(
        self, tasks: list[WorkerTask], on_progress: ProgressCallback | None = None, on_start: Callable[[], None] | None = None
    ) -> BackendRun:
        """Run tasks as Ray actors.

        A worker that raises, dies with its node, or outlives every deadline comes back as a
        result with `error` set (and nothing measured), next to what the others measured; a
        Ctrl-C before the workers measured anything gives each an empty, interrupted result.
        """
        ray = connect(self.address)
        actor_class = ray.remote(_WorkerActor).options(**_ACTOR_OPTIONS)
        actors = [actor_class.remote() for _ in tasks]
        problems: list[str] = []
        start_at_s = 0.0
        try:
            with stop_on_signals(lambda: None) as received:
                where, failed = _place(ray, actors, tasks, received)
                if received:
                    stopped = [stopped_result(t, *_UNKNOWN_HOST) for t in tasks]
                    return BackendRun(stopped, problems, stop_signal_name(received))
                runs = {actors[t.index].run.remote(t): t for t in tasks if t.index not in failed}
                start_at_s = _start_when_ready(ray, runs, actors, received, on_progress, on_start, problems)
                results = _collect(ray, runs, actors, where, received, on_progress, start_at_s)
        finally:
            for actor in actors:
                ray.kill(actor)
        results.update(failed)
        problems += _late_starts(results.values(), start_at_s)
        return BackendRun([results[i] for i in sorted(results)], problems, stop_signal_name(received))


def _place(
    ray: Any, actors: list[Any], tasks: list[WorkerTask], received: list[int]
) -> tuple[dict[int, tuple[str, int]], dict[int, WorkerResult]]:
    """Wait (with a deadline) for every actor to be up; returns where each runs, and a
    failed result for each that could not start."""
    pings = {actor.where.remote(): i for i, actor in enumerate(actors)}
    pending = list(pings)
    deadline = time.monotonic() + _PLACE_DEADLINE_S
    while pending and not received and time.monotonic() < deadline:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
    where: dict[int, tuple[str, int]] = {}
    failed: dict[int, WorkerResult] = {}
    for ref, i in pings.items():
        if ref in pending:
            if received:
                continue
            cpus = ray.cluster_resources().get("CPU", 0)
            error = f"not placed within {_PLACE_DEADLINE_S:.0f} s (the cluster has {cpus:g} CPUs for {len(tasks)} workers)"
            failed[i] = _failed(tasks[i], _UNKNOWN_HOST, error)
            continue
        try:
            where[i] = ray.get(ref)
        except ray.exceptions.RayError as error:
            failed[i] = _failed(tasks[i], _UNKNOWN_HOST, f"could not start: {_describe(ray, error)}")
    return where, failed


def _start_when_ready(
    ray: Any,
    runs: dict[Any, WorkerTask],
    actors: list[Any],
    received: list[int],
    on_progress: ProgressCallback | None,
    on_start: Callable[[], None] | None,
    problems: list[str],
) -> float:
    """The ready barrier: wait until every running worker has warmed up (or ended, or the run
    was stopped), then start them all at one time; returns it (0.0 when nothing started)."""
    deadline = time.monotonic() + READY_DEADLINE_S
    running = [actors[t.index] for t in runs.values()]
    stop = not runs
    while not received and not stop:
        finished, _ = ray.wait(list(runs), num_returns=len(runs), timeout=0)
        waiting = [actors[runs[ref].index] for ref in runs if ref not in finished]
        try:
            if all(ray.get([actor.is_ready.remote() for actor in waiting], timeout=_POLL_S * 4)):
                break
        except (ray.exceptions.RayError, TimeoutError):
            pass  # a lost actor: its run call reports it
        if on_progress is not None:
            on_progress(_completed(ray, {}, running), 0)
        if time.monotonic() > deadline:
            problems.append(f"workers did not become ready within {READY_DEADLINE_S:.0f} s")
            stop = True  # as a signal would: what was measured is kept
        time.sleep(_POLL_S / 5)
    if received or stop:
        for actor in running:
            actor.stop.remote()
        return 0.0
    if on_start is not None:
        on_start()
    start_at_s = time.time() + START_MARGIN_S
    for actor in running:
        actor.start.remote(start_at_s)
    return start_at_s


def _collect(
    ray: Any,
    runs: dict[Any, WorkerTask],
    actors: list[Any],
    where: dict[int, tuple[str, int]],
    received: list[int],
    on_progress: ProgressCallback | None,
    start_at_s: float,
) -> dict[int, WorkerResult]:
    """Wait for the run calls, each with a deadline; Ctrl-C asks every worker to stop."""
    results: dict[int, WorkerResult] = {}
    deadline = time.monotonic() + START_MARGIN_S + max((_run_bound_s(t) for t in runs.values()), default=0.0)
    pending = list(runs)
    stopping = False
    total = 0 if any(t.spec.duration_s for t in runs.values()) else sum(t.count for t in runs.values())
    while pending and time.monotonic() < deadline:
        if received and not stopping:
            stopping = True
            deadline = min(deadline, time.monotonic() + _STOP_GRACE_S)
            for ref in pending:
                actors[runs[ref].index].stop.remote()
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=_POLL_S)
        for ref in ready:
            task = runs[ref]
            try:
                results[task.index] = ray.get(ref)
            except ray.exceptions.RayError as error:
                results[task.index] = _failed(task, where[task.index], _describe(ray, error))
        if on_progress is not None:
            on_progress(_completed(ray, results, [actors[runs[ref].index] for ref in pending]), total)
    for ref in pending:
        task = runs[ref]
        waited = "after it was stopped" if stopping else f"within {_run_bound_s(task):.0f} s, its worst case"
        results[task.index] = _failed(task, where[task.index], f"returned no result {waited}")
    return results
def _completed(ray: Any, results: dict[int, WorkerResult], running: list[Any]) -> int:
    """Requests finished so far: the results in hand plus what running workers report."""
    done = sum(r.counters.get("requests", 0) for r in results.values())
    try:
        return done + sum(ray.get([actor.progress.remote() for actor in running], timeout=_POLL_S))
    except (ray.exceptions.RayError, TimeoutError):
        return done  # progress is best effort; a lost worker is reported by its run call


def _run_bound_s(task: WorkerTask) -> float:
    """The longest a healthy worker can take: its schedule, then every request of a slot
    running into --timeout one after another."""
    spec = task.spec
    requests, span_s = task.count, 0.0
    if spec.open_loop:
        assert spec.rate is not None
        worker_rate = spec.rate / task.workers
        # Poisson gaps make the span of n requests random: three times the mean is ample.
        span_s = spec.duration_s or 3 * task.count / worker_rate
        if spec.duration_s:
            requests = math.ceil(2 * worker_rate * spec.duration_s) + 10
    elif spec.duration_s:
        # A closed loop for a duration: its span, then the requests in flight at its end.
        span_s, requests = spec.duration_s, task.slots
    rounds = math.ceil((task.warmup + requests) / max(task.slots, 1))
    return span_s + rounds * spec.timeout_s + _RUN_GRACE_S


def _failed(task: WorkerTask, where: tuple[str, int], error: str) -> WorkerResult:
    """The result of a worker that returned none: reported, with nothing measured."""
    host, pid = where
    return WorkerResult(task.index, host, pid, {}, {}, empty_records(0), error=error)


def _describe(ray: Any, error: Exception) -> str:
    """One line for a Ray failure: the worker's own exception, or what Ray lost."""
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause
        return f"raised {type(cause).__name__}: {cause}"
    if isinstance(error, ray.exceptions.RayActorError):
        return f"lost: its process or node died ({type(error).__name__})"
    first_line = str(error).partition("\n")[0]
    return f"{type(error).__name__}: {first_line}"


def _late_starts(results: Iterable[WorkerResult], start_at_s: float) -> list[str]:
    """Workers that missed the common start (the start call reached them late)."""
    if not start_at_s:
        return []
    return [
        f"worker {r.index} on {r.host} started {1000 * (r.started_at_s - start_at_s):.0f} ms after the common "
        f"start: the start call outlasted the {START_MARGIN_S * 1000:g} ms margin"
        for r in results
        if r.started_at_s and r.started_at_s - start_at_s > _START_SLIP_S
    ]
