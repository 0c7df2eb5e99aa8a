"""Did the run offer the load it was asked for, and was the client the bottleneck?

Pure judgements over a `RunResult` (fresh, loaded from a run file, or merged), shared by the
runner (which turns them into notes, so every output carries them), the JSON summary and
`netbench merge` (which recomputes them for the merged run):

- achieved vs requested rate of an open-loop run;
- the in-flight cap: requests that fell due while every slot was busy waited for it. That is
  the server not keeping up with the rate at that many requests in flight, not the client;
- client-bound: a worker used more than 90 % of a CPU, or schedule lag p99 was above
  `pacing.LATE_START_US` (10 ms) on the requests that had a free slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from netbench.pacing import LATE_START_US
from netbench.results import RunResult

CPU_BOUND_PERCENT = 90.0
#: more late starts than this share of the requests that had a free slot: lag p99 > LATE_START_US
LATE_SHARE = 0.01
CLIENT_BOUND_PREFIX = "client-bound: "
CAP_PREFIX = "in-flight cap reached: "


@dataclass(frozen=True)
class OfferedLoad:
    """An open-loop run's rate as requested and as sent, and what held starts back."""

    requested_rps: float
    arrival: str
    #: the seeded schedule's own rate: a Poisson schedule's differs from the requested one by chance
    scheduled_rps: float | None
    #: requests started per second over the span of sending (None when too short to tell)
    sent_rps: float | None
    sent: int
    max_in_flight: int
    #: requests that fell due while every in-flight slot was busy
    cap_delayed: int
    #: requests with a free slot that still started more than LATE_START_US late
    late_starts: int

    def as_dict(self) -> dict[str, object]:
        return {
            "requested_rps": self.requested_rps,
            "scheduled_rps": None if self.scheduled_rps is None else round(self.scheduled_rps, 2),
            "sent_rps": None if self.sent_rps is None else round(self.sent_rps, 2),
            "arrival": self.arrival,
            "sent": self.sent,
            "max_in_flight": self.max_in_flight,
            "cap_delayed": self.cap_delayed,
            "late_starts": self.late_starts,
            "late_start_bound_us": LATE_START_US,
        }


def offered_load(result: RunResult) -> OfferedLoad | None:
    """None for closed-loop runs."""
    spec = result.spec
    if not spec.open_loop or spec.rate is None:
        return None
    counters = result.counters
    sent = counters.get("sent", 0)
    schedules = counters.get("open_loop_workers", 0)

    def rate_over(span_counter: str) -> float | None:
        # Each worker sends over its own span; the counters hold their sum, merged runs included.
        mean_span_s = counters.get(span_counter, 0) / schedules / 1e6 if schedules else 0.0
        return sent / mean_span_s if mean_span_s >= 1e-3 else None

    return OfferedLoad(
        requested_rps=spec.rate,
        arrival=spec.arrival,
        scheduled_rps=rate_over("schedule_span_us"),
        sent_rps=rate_over("send_span_us"),
        sent=sent,
        max_in_flight=spec.in_flight,
        cap_delayed=counters.get("cap_delayed", 0),
        late_starts=counters.get("late_starts", 0),
    )


def client_bound_reasons(result: RunResult) -> list[str]:
    """Why the client, not the server, may have limited the run; empty when it did not."""
    reasons = [
        f"worker {w.index} on {w.host} used {w.cpu_percent:.0f} % of a CPU (above {CPU_BOUND_PERCENT:.0f} %)"
        for w in result.workers
        if w.cpu_percent > CPU_BOUND_PERCENT
    ]
    load = offered_load(result)
    if load is not None:
        on_time_candidates = load.sent - load.cap_delayed
        if on_time_candidates and load.late_starts > LATE_SHARE * on_time_candidates:
            reasons.append(
                f"schedule lag p99 above {LATE_START_US / 1000:g} ms: {load.late_starts} of "
                f"{on_time_candidates} requests that had a free slot started late"
            )
    return reasons


def load_notes(result: RunResult) -> list[str]:
    """The notes every output carries about the load actually offered."""
    notes = [f"{CLIENT_BOUND_PREFIX}{reason}; latencies include client delays" for reason in client_bound_reasons(result)]
    load = offered_load(result)
    if load is not None and load.cap_delayed:
        sent = f"{load.sent_rps:.1f}/s" if load.sent_rps is not None else "fewer"
        notes.append(
            f"{CAP_PREFIX}{load.cap_delayed} of {load.sent} requests waited for one of the "
            f"{load.max_in_flight} slots (--max-concurrency): the server did not keep up with "
            f"{load.requested_rps:g}/s; {sent} were sent, and the wait is in ttfb/ttft/e2e (from the intended send time)"
        )
    return notes


def is_load_note(note: str) -> bool:
    """A note `load_notes` wrote (merge drops these and recomputes them)."""
    return note.startswith((CLIENT_BOUND_PREFIX, CAP_PREFIX))
