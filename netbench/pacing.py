"""When requests start: closed-loop slots and open-loop schedules of intended send times."""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

#: a request that had a free slot and started later than this after its intended time was
#: held up by the client; more than 1 % of them (schedule lag p99 above it) flags the run
#: client-bound. Fixed, not a share of the inter-arrival period: at high rates 10 % of the
#: period is below the ~0.3 ms an idle vCPU takes to wake, and would flag every run.
LATE_START_US = 10_000
#: response bytes that waited longer than this in the kernel before netbench read them were
#: held up by the client (curl.MultiDriver measures it); more than 1 % of a worker's requests
#: held up so flags the run client-bound, as late starts do
LATE_INPUT_US = 10_000


class ClosedLoop:
    """N requests (or, with `until_us`, as many as start before then), each started as soon as
    a slot is free; intended start == actual start."""

    def __init__(self, count: int | None, until_us: int | None = None) -> None:
        self.remaining = count
        self.until_us = until_us

    def _open(self, now_us: int) -> bool:
        return self.remaining != 0 and (self.until_us is None or now_us < self.until_us)

    def take(self, now_us: int) -> int | None:
        if not self._open(now_us):
            return None
        if self.remaining is not None:
            self.remaining -= 1
        return now_us

    def wait_us(self, now_us: int) -> int | None:
        """How long until the next start is due; None when nothing is left to start."""
        return 0 if self._open(now_us) else None

    def mark_blocked(self, now_us: int) -> None:
        """Closed loop starts only when a slot is free: nothing to book."""

    def counters(self) -> dict[str, int]:
        return {}


class OpenLoop:
    """Requests due at fixed intended times (µs from the schedule's start), whether or not
    the server kept up: latency is then measured from the intended time.

    It also keeps the books on why requests started late. A request that fell due while
    every in-flight slot was busy waited for the cap (`--max-concurrency`): the server did
    not keep up with the rate at that many requests in flight. A request that had a free
    slot and still started more than `LATE_START_US` after its time waited for the client
    itself: its event loop or CPU fell behind.
    """

    def __init__(self, intended_us: np.ndarray) -> None:
        self.intended_us = intended_us.astype(np.int64).tolist()
        self.next_index = 0
        #: requests with an index below this fell due while every slot was busy
        self.blocked_until_index = 0
        self.cap_delayed = 0
        self.late_starts = 0
        self.last_start_us = 0
        self.last_intended_us = 0

    @property
    def remaining(self) -> int:
        return len(self.intended_us) - self.next_index

    def take(self, now_us: int) -> int | None:
        if self.next_index >= len(self.intended_us):
            return None
        intended = self.intended_us[self.next_index]
        if intended > now_us:
            return None
        if self.next_index < self.blocked_until_index:
            self.cap_delayed += 1
        elif now_us - intended > LATE_START_US:
            self.late_starts += 1
        self.next_index += 1
        self.last_start_us = now_us
        self.last_intended_us = intended
        return intended

    def wait_us(self, now_us: int) -> int | None:
        if self.next_index >= len(self.intended_us):
            return None
        return max(self.intended_us[self.next_index] - now_us, 0)

    def mark_blocked(self, now_us: int) -> None:
        """Every slot is busy at `now_us`: whatever is due by now waits for the cap."""
        self.blocked_until_index = max(self.blocked_until_index, bisect_right(self.intended_us, now_us))

    def counters(self) -> dict[str, int]:
        """What the run's counters add up across workers (and across merged runs)."""
        return {
            "sent": self.next_index,
            "cap_delayed": self.cap_delayed,
            "late_starts": self.late_starts,
            # summed over workers; divided by open_loop_workers they are the mean spans
            "send_span_us": self.last_start_us,
            "schedule_span_us": self.last_intended_us,
            "open_loop_workers": 1,
        }


def open_loop_schedule(
    rate_per_s: float,
    arrival: str,
    share: int | None,
    duration_s: float | None,
    worker: int,
    workers: int,
    seed: int,
) -> np.ndarray:
    """This worker's intended send times (µs) of a run-wide process at `rate_per_s`.

    Poisson: each of the P workers runs an independent Poisson process at rate R/P; their
    superposition is exactly a Poisson process at R. Constant: the run-wide grid of period
    1/R, dealt round-robin to the workers. `share` is this worker's part of the run's n
    (None: run for `duration_s`).
    """
    horizon_s = duration_s if duration_s is not None else float("inf")
    if arrival == "constant":
        period_s = 1.0 / rate_per_s
        first_s = worker * period_s
        steps = share if share is not None else max(int(np.ceil((horizon_s - first_s) / (period_s * workers))), 0)
        times_s = first_s + np.arange(steps) * period_s * workers
    else:
        rng = np.random.default_rng([seed, worker])
        worker_rate = rate_per_s / workers
        if share is not None:
            times_s = np.cumsum(rng.exponential(1.0 / worker_rate, size=share))
        else:
            expected = int(horizon_s * worker_rate)
            gaps = rng.exponential(1.0 / worker_rate, size=expected + 10 * int(np.sqrt(expected) + 10))
            times_s = np.cumsum(gaps)
    if duration_s is not None:
        times_s = times_s[times_s < duration_s]
    return np.round(times_s * 1e6).astype(np.int64)


def split_evenly(total: int, parts: int) -> list[int]:
    """total split into `parts` integers that differ by at most one and sum to total."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
