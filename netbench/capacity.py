"""`netbench capacity`: the highest request rate at which the server still meets the --slo gates,
found by an open-loop search with bounded steps and time, and the rate/latency curve on the way.

guidellm's sweep is the anchor: a synchronous run (one request at a time) and a throughput run
(every request at once) bound the rates, then it runs a fixed number of rates spaced evenly
between them, whatever the gates, so its answer is only as fine as (max - min) / (steps - 2).
This search starts the same way and then aims at the gates:

1. *synchronous*: a closed loop of one request for the step's duration. If even that fails a
   gate, no rate meets the gates.
2. *throughput*: a closed loop at the in-flight cap (`--max-concurrency`), for the step's
   duration: the server's saturated throughput, counted over the steady part of the step
   (completions from the first one to the end of the schedule, not the drain after it).
3. *rate* steps, open loop (latency from each request's intended send time, so a queue that
   grows shows as latency): first at the saturated throughput; while a rate passes and none
   above it failed, the next is `1 + 2 x resolution` times higher, then twice each time (the
   throughput run can understate a server whose batch is larger than the cap); once a rate
   failed, the midpoint of the highest passing and the lowest failing rate, until they lie
   within `resolution` (relative) of each other.

Each step costs its duration (plus the drain of what is in flight), so the search stops at
`max_steps` rate steps or when the next step would overrun `max_time_s`. A step passes when
every gate passes and the failed share is within --max-error-rate; a client-bound step (the
client, not the server, fell behind) ends the search, since above it the client cannot tell.
Above the server's capacity the queue, and so the latency from the intended send time, grows
with the step's length: a step must be long enough for that to cross the gate's bound.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from netbench.outcomes import Outcome
from netbench.serial import NOT_SERIALISED, OMIT_NONE, rounded
from netbench.slo import Slo, evaluate, parse_slo
from netbench.summary import Run, RunSummary

#: fewer completions than this in a step's steady window: its rate is the whole run's
_MIN_WINDOW_COMPLETIONS = 5


class StepKind(str, enum.Enum):
    SYNCHRONOUS = "synchronous"
    THROUGHPUT = "throughput"
    RATE = "rate"


class Limit(str, enum.Enum):
    """What ended the search."""

    RESOLVED = "resolved"  # the passing and failing rates lie within the resolution
    SYNCHRONOUS = "synchronous"  # one request at a time already fails a gate
    STEPS = "steps"  # --max-steps reached
    TIME = "time"  # --max-time reached
    CLIENT = "client"  # a step was client-bound
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Probe:
    """What one step runs: a closed loop at `concurrency`, or an open loop at `rate_rps`."""

    kind: StepKind
    rate_rps: float | None = None
    concurrency: int = 1


@dataclass(frozen=True)
class GateOutcome:
    gate: str
    value: float | None
    passed: bool


@dataclass(frozen=True)
class Step:
    kind: StepKind
    #: the open-loop rate asked for (None: a closed loop)
    offered_rps: float | None = field(metadata=rounded(3))
    concurrency: int
    #: completions per second over the steady part of the step
    achieved_rps: float = field(metadata=rounded(3))
    requests: int
    error_rate: float = field(metadata=rounded(6))
    #: p50 / p95 of ttft (streams) and e2e, µs
    ttft_p50_us: int | None
    ttft_p95_us: int | None
    e2e_p50_us: int | None
    e2e_p95_us: int | None
    goodput_share: float | None = field(metadata=rounded(6))
    gates: tuple[GateOutcome, ...]
    passed: bool
    client_bound: bool
    #: why the client, not the server, may have limited the step (the run summary's reasons)
    client_bound_reasons: tuple[str, ...]
    interrupted: bool = field(metadata=NOT_SERIALISED)
    summary: RunSummary = field(metadata=NOT_SERIALISED)


@dataclass(frozen=True)
class Search:
    """The bounds of a search."""

    resolution: float = 0.05
    max_steps: int = 12
    max_time_s: float = 600.0
    #: the throughput step's concurrency (the open-loop steps' in-flight cap)
    max_concurrency: int = 256
    #: each step's length, to foresee whether the next one fits in max_time_s
    step_s: float = 10.0


@dataclass(frozen=True)
class CapacityResult:
    #: the highest rate that met every gate (None: none did)
    rate_rps: float | None = field(metadata=rounded(3))
    #: the lowest rate above it that failed (None: none failed)
    failed_rps: float | None = field(metadata=rounded(3))
    synchronous_rps: float | None = field(metadata=rounded(3))
    saturated_rps: float | None = field(metadata=rounded(3))
    limit: Limit
    gates: tuple[str, ...]
    resolution: float
    steps: tuple[Step, ...]
    #: why the answer is bounded as it is, in words a report can print
    note: str | None = field(default=None, metadata=OMIT_NONE)


def steady_rate(run: Run, duration_s: float | None) -> float:
    """Completions per second from the first completion to the end of the schedule (the
    records are a uniform sample: their count is scaled to every successful request); the
    whole run's rate when the window holds too few."""
    result = run.result
    records = result.records[result.records["error_class"] == Outcome.OK]
    if duration_s and len(records) and result.ok:
        ends_us = records["start_us"] + records["total_mark_us"]
        first_us, end_us = int(ends_us.min()), round(duration_s * 1e6)
        inside = int(np.count_nonzero((ends_us > first_us) & (ends_us <= end_us)))
        if inside >= _MIN_WINDOW_COMPLETIONS and end_us > first_us:
            return inside * (result.ok / len(records)) / ((end_us - first_us) / 1e6)
    return result.ok / result.elapsed_s if result.elapsed_s > 0 else 0.0


def step_of(probe: Probe, run: Run, slos: Sequence[Slo], max_error_rate: float) -> Step:
    """A finished step, judged against the gates."""
    s = run.summary
    gates = tuple(GateOutcome(g.slo.text, g.value, g.passed) for g in evaluate(list(slos), [s]))
    ttft, e2e = s.phase("ttft"), s.phase("e2e")
    passed = s.ok > 0 and s.error_rate <= max_error_rate and all(g.passed for g in gates)
    return Step(
        kind=probe.kind,
        offered_rps=probe.rate_rps,
        concurrency=s.concurrency,
        achieved_rps=steady_rate(run, s.spec.duration_s),
        requests=s.requests,
        error_rate=s.error_rate,
        ttft_p50_us=None if ttft is None else ttft.p50_us,
        ttft_p95_us=None if ttft is None else ttft.p95_us,
        e2e_p50_us=None if e2e is None else e2e.p50_us,
        e2e_p95_us=None if e2e is None else e2e.p95_us,
        goodput_share=s.throughput.goodput_share,
        gates=gates,
        passed=passed,
        client_bound=s.client_bound,
        client_bound_reasons=s.client_bound_reasons,
        interrupted=s.interrupted,
        summary=s,
    )


def search(measure: Callable[[Probe], Step], bounds: Search, gates: Sequence[str], clock: Callable[[], float] = time.monotonic) -> CapacityResult:
    """Run the steps (module docstring) through `measure` and say what was found."""
    started_s = clock()
    steps: list[Step] = []

    def run(probe: Probe) -> Step:
        step = measure(probe)
        steps.append(step)
        return step

    def result(rate: float | None, failed: float | None, limit: Limit, note: str | None = None) -> CapacityResult:
        return CapacityResult(rate, failed, synchronous, saturated, limit, tuple(gates), bounds.resolution, tuple(steps), note)

    synchronous = saturated = None
    first = run(Probe(StepKind.SYNCHRONOUS, None, 1))
    synchronous = first.achieved_rps
    if first.interrupted:
        return result(None, None, Limit.INTERRUPTED)
    if not first.passed:
        return result(None, None, Limit.SYNCHRONOUS, "one request at a time already fails the gates: no rate meets them")
    saturating = run(Probe(StepKind.THROUGHPUT, None, bounds.max_concurrency))
    saturated = saturating.achieved_rps
    if saturating.interrupted:
        return result(synchronous, None, Limit.INTERRUPTED)
    low, high = synchronous, None
    rate = max(saturated, low * (1 + 2 * bounds.resolution))
    growth = 1 + 2 * bounds.resolution
    rate_steps = 0
    while True:
        unbounded = None if high is not None else "every rate tried met the gates: the answer is a lower bound"
        if rate_steps >= bounds.max_steps:
            return result(low, high, Limit.STEPS, unbounded)
        if clock() - started_s + bounds.step_s > bounds.max_time_s:
            return result(low, high, Limit.TIME, unbounded)
        step = run(Probe(StepKind.RATE, rate, bounds.max_concurrency))
        rate_steps += 1
        if step.interrupted:
            return result(low, high, Limit.INTERRUPTED)
        if step.client_bound:
            why = "; ".join(step.client_bound_reasons)
            return result(low, high, Limit.CLIENT, f"the client could not offer {rate:.4g} requests/s (client-bound: {why}): the answer is a lower bound")
        if step.passed:
            low = rate
        else:
            high = rate
        if high is not None and high - low <= bounds.resolution * high:
            return result(low, high, Limit.RESOLVED)
        if high is None:
            rate, growth = low * growth, 2.0
        else:
            rate = (low + high) / 2


@dataclass(frozen=True)
class GateLine:
    """A gate on a latency, as the plot draws it: the phase's statistic against its bound."""

    text: str
    phase: str
    statistic: str
    bound_ms: float


@dataclass(frozen=True)
class CapacityCurve:
    """What the capacity plot draws: the synchronous and rate steps by offered rate (ms, requests/s)."""

    offered_rps: tuple[float, ...]
    achieved_rps: tuple[float, ...]
    passed: tuple[bool, ...]
    #: (phase.statistic, its value in ms at each rate, None where missing) for each latency gate
    latencies_ms: tuple[tuple[str, tuple[float | None, ...]], ...]
    gate_lines: tuple[GateLine, ...]
    rate_rps: float | None
    saturated_rps: float | None


def _offered(step: Step) -> float:
    return step.achieved_rps if step.offered_rps is None else step.offered_rps


def capacity_curve(found: CapacityResult) -> CapacityCurve:
    # the rate steps, and the synchronous one at its own rate (a closed loop of one offers what it completes)
    steps = sorted((s for s in found.steps if s.kind is not StepKind.THROUGHPUT), key=_offered)
    lines = []
    for text in found.gates:
        gate = parse_slo(text)
        if gate.statistic is not None:
            lines.append(GateLine(text, gate.metric, gate.statistic, gate.bound / 1000))
    latencies = []
    for key in dict.fromkeys(f"{g.phase}.{g.statistic}" for g in lines):
        phase, statistic = key.split(".")
        values = []
        for s in steps:
            stats = s.summary.phase(phase)
            values.append(None if stats is None else getattr(stats, f"{statistic}_us") / 1000)
        latencies.append((key, tuple(values)))
    return CapacityCurve(
        offered_rps=tuple(_offered(s) for s in steps),
        achieved_rps=tuple(s.achieved_rps for s in steps),
        passed=tuple(s.passed for s in steps),
        latencies_ms=tuple(latencies),
        gate_lines=tuple(lines),
        rate_rps=found.rate_rps,
        saturated_rps=found.saturated_rps,
    )
