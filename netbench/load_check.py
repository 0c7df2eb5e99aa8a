"""Did the run offer the load it was asked for, and was the client the bottleneck?

Pure judgements over what a run recorded (its spec, counters and workers; fresh, loaded from a
run file, or merged), made once by the run summary (`summary.summarize`) for every output:

- achieved vs requested rate of an open-loop run (`OfferedLoad`);
- the in-flight cap: requests that fell due while every slot was busy waited for it. That is
  the server not keeping up with the rate at that many requests in flight, not the client;
- client-bound, from the client's measured lateness: more than 1 % of a worker's requests had
  response bytes waiting unread in the kernel for over `pacing.LATE_INPUT_US` (10 ms, the
  kernel's own clock: curl.MultiDriver); the stamped server's `token_lag` p99 above it (its
  events reached netbench late: `netbench serve --stamp-events`); schedule lag p99 above
  `pacing.LATE_START_US` (10 ms) on the requests that had a free slot; or a worker busy more
  than 90 % of a CPU over a measured span of at least a second (a shorter span, an idle or
  instant worker, says nothing of its CPU);
- the per-host view (`HostLoad`): one overloaded host in a spread-out run (the Ray backend).
  A host is flagged client-bound as its workers are: each worker drives its requests from one
  CPU, so one starved worker delays its own requests whatever the others do; the flag follows
  the host's busiest worker, not its mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from netbench.histograms import PhaseStats
from netbench.pacing import LATE_INPUT_US, LATE_START_US
from netbench.results import WorkerInfo
from netbench.serial import rounded
from netbench.spec import RunSpec

CPU_BOUND_PERCENT = 90.0
#: a worker's CPU share is judged over at least this measured span: over a few ms the ratio of
#: two tiny times is noise ("13769 % of a CPU" on a worker that sent one request)
MIN_CPU_SPAN_S = 1.0
#: more late starts than this share of the requests that had a free slot: lag p99 > LATE_START_US
LATE_SHARE = 0.01


@dataclass(frozen=True)
class OfferedLoad:
    """An open-loop run's rate as requested and as sent, and what held starts back."""

    requested_rps: float
    #: the seeded schedule's own rate: a Poisson schedule's differs from the requested one by chance
    scheduled_rps: float | None = field(metadata=rounded(2))
    #: requests started per second over the span of sending (None when too short to tell)
    sent_rps: float | None = field(metadata=rounded(2))
    arrival: str
    sent: int
    #: the in-flight cap (--max-concurrency; default max(256, --concurrency))
    max_in_flight: int
    #: requests that fell due while every in-flight slot was busy
    cap_delayed: int
    #: requests with a free slot that still started more than LATE_START_US late
    late_starts: int
    late_start_bound_us: int = LATE_START_US


def offered_load(spec: RunSpec, counters: Mapping[str, int]) -> OfferedLoad | None:
    """None for closed-loop runs."""
    if not spec.open_loop or spec.rate is None:
        return None
    sent = counters.get("sent", 0)
    schedules = counters.get("open_loop_workers", 0)

    def rate_over(span_counter: str) -> float | None:
        # Each worker sends over its own span; the counters hold their sum, merged runs included.
        mean_span_s = counters.get(span_counter, 0) / schedules / 1e6 if schedules else 0.0
        return sent / mean_span_s if mean_span_s >= 1e-3 else None

    return OfferedLoad(
        requested_rps=spec.rate,
        scheduled_rps=rate_over("schedule_span_us"),
        sent_rps=rate_over("send_span_us"),
        arrival=spec.arrival,
        sent=sent,
        max_in_flight=spec.in_flight,
        cap_delayed=counters.get("cap_delayed", 0),
        late_starts=counters.get("late_starts", 0),
    )


def cpu_bound(worker: WorkerInfo) -> bool:
    return worker.elapsed_s >= MIN_CPU_SPAN_S and worker.cpu_percent > CPU_BOUND_PERCENT


def input_late(worker: WorkerInfo) -> bool:
    """More than LATE_SHARE of the worker's requests had their input wait unread over LATE_INPUT_US."""
    return worker.late_input > LATE_SHARE * max(worker.requests, 1)


def client_bound_reasons(workers: Sequence[WorkerInfo], load: OfferedLoad | None, token_lag: PhaseStats | None = None) -> list[str]:
    """Why the client, not the server, may have limited the run; empty when it did not.
    `token_lag`: the stamped server's events' lag, when it stamps them."""
    reasons = []
    for w in workers:
        if input_late(w):
            reasons.append(
                f"worker {w.index} on {w.host} read input late: {w.late_input} of {w.requests} requests had response "
                f"bytes waiting unread over {LATE_INPUT_US / 1000:g} ms (up to {w.input_lag_max_us / 1000:.0f} ms)"
            )
        if cpu_bound(w):
            reasons.append(f"worker {w.index} on {w.host} used {w.cpu_percent:.0f} % of a CPU (above {CPU_BOUND_PERCENT:.0f} %)")
    if token_lag is not None and token_lag.p99_us > LATE_INPUT_US:
        reasons.append(
            f"token arrival lag p99 {token_lag.p99_us / 1000:.1f} ms (above {LATE_INPUT_US / 1000:g} ms): "
            "the stamped server's events reached netbench late"
        )
    if load is not None:
        on_time_candidates = load.sent - load.cap_delayed
        if on_time_candidates and load.late_starts > LATE_SHARE * on_time_candidates:
            reasons.append(
                f"schedule lag p99 above {LATE_START_US / 1000:g} ms: {load.late_starts} of "
                f"{on_time_candidates} requests that had a free slot started late"
            )
    return reasons


def load_notes(load: OfferedLoad | None, client_bound: Sequence[str]) -> list[str]:
    """The notes every output carries about the load actually offered."""
    notes = [f"client-bound: {reason}; latencies include client delays" for reason in client_bound]
    if load is not None and load.cap_delayed:
        sent = f"{load.sent_rps:.1f}/s" if load.sent_rps is not None else "fewer"
        notes.append(
            f"in-flight cap reached: {load.cap_delayed} of {load.sent} requests waited for one of the "
            f"{load.max_in_flight} slots (--max-concurrency): the server did not keep up with "
            f"{load.requested_rps:g}/s; {sent} were sent, and the wait is in ttfb/ttft/e2e (from the intended send time)"
        )
    return notes


@dataclass(frozen=True)
class HostLoad:
    host: str
    workers: int
    #: workers that returned an error instead of (or with part of) their share
    failed_workers: int
    requests: int
    #: the host's requests over its own span (first start to last finish of its workers)
    achieved_rps: float = field(metadata=rounded(2))
    #: CPU time over measured time, over the host's workers that measured for MIN_CPU_SPAN_S or
    #: longer (100 = each worker one busy CPU; 0 when none did)
    cpu_percent: float = field(metadata=rounded(1))
    #: the busiest of those workers'
    max_cpu_percent: float = field(metadata=rounded(1))
    #: a worker of the host read its input late or was busy beyond CPU_BOUND_PERCENT
    client_bound: bool


def host_loads(workers: Sequence[WorkerInfo]) -> list[HostLoad]:
    """One entry per host, in the order the hosts first appear among the workers."""
    by_host: dict[str, list[WorkerInfo]] = {}
    for w in workers:
        by_host.setdefault(w.host, []).append(w)
    loads = []
    for host, mine in by_host.items():
        measured = [w for w in mine if w.elapsed_s > 0]
        requests = sum(w.requests for w in mine)
        first_s = min((w.started_at_s for w in measured), default=0.0)
        span_s = max((w.started_at_s + w.elapsed_s - first_s for w in measured), default=0.0)
        long_enough = [w for w in measured if w.elapsed_s >= MIN_CPU_SPAN_S]
        elapsed_s = sum(w.elapsed_s for w in long_enough)
        loads.append(
            HostLoad(
                host=host,
                workers=len(mine),
                failed_workers=sum(1 for w in mine if w.error),
                requests=requests,
                achieved_rps=requests / span_s if span_s > 0 else 0.0,
                cpu_percent=100.0 * sum(w.cpu_s for w in long_enough) / elapsed_s if elapsed_s > 0 else 0.0,
                max_cpu_percent=max((w.cpu_percent for w in long_enough), default=0.0),
                client_bound=any(cpu_bound(w) or input_late(w) for w in mine),
            )
        )
    return loads
