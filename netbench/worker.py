"""One worker's whole job: pace its share of the run, perform it, record it, return it.

`run_worker` is the same function under every backend (local processes, Ray). What it
returns is plain picklable data: encoded histograms, counters and a bounded record array.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import monotonic_ns
from typing import Protocol

import numpy as np

from netbench.curl import MultiDriver, Transfer
from netbench.histograms import PhaseHistograms
from netbench.outcomes import Outcome
from netbench.pacing import ClosedLoop, OpenLoop, open_loop_schedule
from netbench.phases import EVENT_DTYPE, RECORD_DTYPE, Record, derive, empty_events, select
from netbench.slo import Slo, meets_gates, request_gates
from netbench.spec import RunSpec
from netbench.workloads import Request, RequestSource

# A bulk histogram update every this many records or token events: bounds memory, amortises numpy.
_FLUSH_RECORDS = 4096
_FLUSH_EVENTS = 262_144
#: token events kept beside the sampled records, per worker (20 bytes each): the sample's
#: records keep theirs while this lasts; every gap still reaches the histograms
_KEPT_EVENTS = 4_000_000
_CONTROL_PERIOD_NS = 20_000_000  # how often the loop looks at the stop flag and reports progress


@dataclass(frozen=True)
class WorkerTask:
    spec: RunSpec  # model already resolved
    #: every request of the run by its run-wide index: this worker sends index * workers + its index
    source: RequestSource
    index: int
    workers: int
    slots: int  # requests this worker keeps in flight
    count: int  # this worker's share of the run's n (ignored with --duration)
    warmup: int
    #: wall-clock time (time.time()) at which to start measuring, when no WorkerControl gives one
    start_at_s: float = 0.0


class WorkerControl(Protocol):
    """What a backend offers a running worker: a stop flag, progress, a start signal."""

    def should_stop(self) -> bool: ...

    def report_progress(self, worker: int, completed: int) -> None: ...

    def wait_for_start(self, worker: int) -> float:
        """Block until all workers are ready; return the wall-clock start time."""
        ...


@dataclass
class WorkerResult:
    index: int
    host: str
    pid: int
    histograms: dict[str, object]
    counters: dict[str, int]
    records: np.ndarray
    #: the kept records' token events, in record order (phases.EVENT_DTYPE)
    events: np.ndarray = field(default_factory=empty_events)
    #: wall-clock time of the first measured send, and the measured span
    started_at_s: float = 0.0
    elapsed_s: float = 0.0
    #: CPU time over the measured span (elapsed_s) alone
    cpu_s: float = 0.0
    #: the longest a measured request's input waited unread in the kernel (µs; 0: none late)
    input_lag_max_us: int = 0
    interrupted: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    #: why requests failed, one report line per kind (see MultiDriver.failure_notes)
    failure_notes: dict[str, str] = field(default_factory=dict)


class Recorder:
    """Turns finished requests into histogram counts, counters and a bounded record sample."""

    def __init__(self, worker: int, open_loop: bool, max_records: int, seed: int, gates: Sequence[Slo] = ()) -> None:
        self.worker = worker
        self.open_loop = open_loop
        #: the per-request gates goodput counts (slo.request_gates)
        self.gates = tuple(gates)
        self.histograms = PhaseHistograms()
        self.counters: Counter[str] = Counter()
        self.completed = 0
        self._batch: list[Record] = []
        self._batch_events: list[tuple[int, int, int]] = []
        self._kept = np.zeros(max_records, dtype=RECORD_DTYPE)
        self._kept_events: list[np.ndarray] = [empty_events()] * max_records
        self._kept_event_count = 0
        self._seen = 0
        self._rng = np.random.default_rng([seed, worker, 7])

    def on_done(self, transfer: Transfer, record: Record, events: list[tuple[int, int, int]], outcome: Outcome) -> None:
        if not transfer.measured:
            return
        self.completed += 1
        self._batch.append(record)
        self._batch_events += events
        if len(self._batch) >= _FLUSH_RECORDS or len(self._batch_events) >= _FLUSH_EVENTS:
            self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        records = np.array(self._batch, dtype=RECORD_DTYPE)
        events = np.array(self._batch_events, dtype=EVENT_DTYPE)
        self._batch.clear()
        self._batch_events.clear()
        ok, ok_events = select(records, events, records["error_class"] == Outcome.OK)
        derived = derive(ok, ok_events, open_loop=self.open_loop)
        self.histograms.record_phases(derived.values_us)
        self._count(records, ok, derived.clamped)
        uncertainty, server = derived.values_us["split_uncertainty"], derived.values_us["server"]
        # the split of these requests cannot be known: what is uncertain is as large as the server part
        self.counters["split_uncertain"] += int(np.count_nonzero((uncertainty > 0) & (uncertainty >= server)))
        if self.gates:
            # Goodput as vLLM counts it: the requests that met every gate, each on its own values.
            self.counters["good"] += int(np.count_nonzero(meets_gates(self.gates, derived.values_us, len(ok))))
        self._keep(records, events)

    def _count(self, records: np.ndarray, ok: np.ndarray, clamped: int) -> None:
        c = self.counters
        c["requests"] += len(records)
        for outcome, count in zip(*np.unique(records["error_class"], return_counts=True)):
            c[Outcome(int(outcome)).key] += int(count)
        answered = records["http_status"] > 0
        c["connections_new"] += int(np.count_nonzero(records["new_connection"]))
        c["connections_reused"] += int(np.count_nonzero(answered & ~records["new_connection"]))
        c["tokens"] += int(ok["tokens"].sum())
        c["events"] += int(ok["events"].sum())
        with_usage = ok["usage_completion_tokens"] >= 0
        c["streams_with_usage"] += int(np.count_nonzero(with_usage))
        # the server's usage total differs from what the stream's own counts add up to
        c["usage_mismatch"] += int(np.count_nonzero(with_usage & (ok["tokens"] != ok["event_tokens"])))
        c["clamped_marks"] += clamped
        _count_tokens(c, ok)
        for status, count in zip(*np.unique(records["http_status"][answered], return_counts=True)):
            c[f"status_{int(status)}"] += int(count)

    def _keep(self, records: np.ndarray, events: np.ndarray) -> None:
        """Reservoir sampling (algorithm R): a uniform sample of at most max_records requests,
        each with its token events while the events budget lasts."""
        capacity = len(self._kept)
        if capacity == 0:
            return
        offsets = np.concatenate(([0], np.cumsum(records["events_kept"])))
        positions = self._seen + np.arange(len(records))
        self._seen += len(records)
        slots = positions.copy()
        beyond = np.flatnonzero(positions >= capacity)
        if beyond.size:
            slots[beyond] = (self._rng.random(beyond.size) * (positions[beyond] + 1)).astype(np.int64)
        chosen = np.flatnonzero(slots < capacity)
        # Later records of a batch may replace earlier ones in the same slot: the last one wins.
        self._kept[slots[chosen]] = records[chosen]
        for index in chosen.tolist():
            slot = int(slots[index])
            if not len(self._kept_events[slot]) and offsets[index] == offsets[index + 1]:
                continue  # no events on either side: nothing to swap
            self._kept_event_count -= len(self._kept_events[slot])
            room = max(_KEPT_EVENTS - self._kept_event_count, 0)
            own = events[offsets[index] : offsets[index + 1]][:room]
            self._kept_events[slot] = own
            self._kept_event_count += len(own)
            self._kept["events_kept"][slot] = len(own)
        if self._seen > capacity:
            self.counters["records_sampled_out"] = self._seen - capacity

    def records(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled records and their events, in record order."""
        kept = min(self._seen, len(self._kept))
        events = np.concatenate(self._kept_events[:kept]) if kept else empty_events()
        return self._kept[:kept].copy(), events


def _count_tokens(c: Counter[str], ok: np.ndarray) -> None:
    """Prompt and output tokens of the successful requests: what the server counted (usage)
    against what each request asked for."""
    usage, requested = ok["usage_prompt_tokens"], ok["requested_prompt_tokens"]
    counted, sized = usage >= 0, requested >= 0
    c["prompt_tokens"] += int(usage[counted].sum())
    c["prompts_counted"] += int(np.count_nonzero(counted))
    c["requested_prompt_tokens"] += int(requested[sized].sum())
    c["prompts_sized"] += int(np.count_nonzero(sized))
    c["prompt_mismatch"] += int(np.count_nonzero(counted & sized & (usage != requested)))
    asked = ok["requested_output_tokens"]
    capped = asked >= 0
    c["requested_output_tokens"] += int(asked[capped].sum())
    c["outputs_capped"] += int(np.count_nonzero(capped))
    c["short_outputs"] += int(np.count_nonzero(capped & (ok["tokens"] < asked)))


def _drive(
    driver: MultiDriver,
    schedule: ClosedLoop | OpenLoop,
    on_done: Callable[[Transfer, Record, list, Outcome], None],
    origin_ns: int,
    measured: bool,
    tick: Callable[[], bool],
    next_request: Callable[[], Request],
) -> bool:
    """Run a schedule to completion; returns True when stopped early."""
    next_tick_ns = 0
    while True:
        now_ns = monotonic_ns()
        now_us = (now_ns - origin_ns) // 1000
        while driver.idle:
            intended_us = schedule.take(now_us)
            if intended_us is None:
                break
            # The actual start is when libcurl starts the transfer (the driver's next perform): a
            # burst of starts takes time, and it is lag.
            driver.start(intended_us, origin_ns, measured, next_request())
        wait_us = schedule.wait_us(now_us)
        if wait_us is None and driver.active == 0:
            return False
        blocked = wait_us == 0 and not driver.idle
        if blocked:
            # Due work but every slot busy: it waits for the in-flight cap, and keeps its intended time.
            schedule.mark_blocked(now_us)
        if now_ns >= next_tick_ns:
            next_tick_ns = now_ns + _CONTROL_PERIOD_NS
            if tick():
                driver.abort_all()
                return True
        # Sleep in select until the next due start (even with every slot busy, so that a start
        # that falls due meanwhile is booked as waiting for the cap), or until a transfer makes progress.
        timeout_s = 0.02 if wait_us is None or blocked else min(wait_us / 1e6, 0.02)
        driver.step(timeout_s, on_done)


def run_worker(task: WorkerTask, control: WorkerControl | None = None) -> WorkerResult:
    """Perform this worker's share of a run and return what it measured."""
    spec = task.spec
    recorder = Recorder(task.index, spec.open_loop, _records_share(spec, task), spec.seed, request_gates(spec.goodput))
    result = WorkerResult(task.index, socket.gethostname(), os.getpid(), {}, {}, recorder.records()[0])

    def tick() -> bool:
        if control is None:
            return False
        control.report_progress(task.index, recorder.completed)
        return control.should_stop()

    sent = itertools.count()

    def next_request() -> Request:
        # Warm-up and measured requests alike: each its own index, so its own prompt.
        return task.source.request(next(sent) * task.workers + task.index)

    driver = MultiDriver(spec, task.source.base, task.slots, task.index)
    try:
        if task.warmup and _drive(driver, ClosedLoop(task.warmup), recorder.on_done, monotonic_ns(), False, tick, next_request):
            result.interrupted = True
        else:
            start_at_s = control.wait_for_start(task.index) if control is not None else task.start_at_s
            time.sleep(max(start_at_s - time.time(), 0.0))
            schedule = _schedule(spec, task)
            result.started_at_s = time.time()
            origin_ns = monotonic_ns()
            cpu_start_s = time.process_time()
            result.interrupted = _drive(driver, schedule, recorder.on_done, origin_ns, True, tick, next_request)
            result.elapsed_s = (monotonic_ns() - origin_ns) / 1e9
            # over the same span as elapsed_s: closing the handles is no part of the run
            result.cpu_s = time.process_time() - cpu_start_s
            recorder.counters.update(schedule.counters())
    except Exception as error:  # a worker reports its failure with what it measured
        result.error = f"{type(error).__name__}: {error}"
    finally:
        result.failure_notes = dict(driver.failure_notes)
        recorder.counters.update(driver.tallies)
        if driver.late_input:
            recorder.counters["late_input"] += driver.late_input
        result.input_lag_max_us = driver.input_lag_max_us
        driver.close()
    recorder.flush()
    if control is not None:
        control.report_progress(task.index, recorder.completed)
    result.histograms = recorder.histograms.encode()
    result.counters = dict(recorder.counters)
    result.records, result.events = recorder.records()
    return result


def _schedule(spec: RunSpec, task: WorkerTask) -> ClosedLoop | OpenLoop:
    if not spec.open_loop:
        if spec.duration_s is not None:
            return ClosedLoop(None, until_us=round(spec.duration_s * 1e6))
        return ClosedLoop(task.count)
    assert spec.rate is not None
    intended_us = open_loop_schedule(
        spec.rate, spec.arrival, None if spec.duration_s else task.count, spec.duration_s,
        task.index, task.workers, spec.seed,
    )  # fmt: skip
    return OpenLoop(intended_us)


def _records_share(spec: RunSpec, task: WorkerTask) -> int:
    return -(-spec.max_records // task.workers) if spec.max_records else 0
