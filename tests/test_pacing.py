"""Open-loop schedules: Poisson inter-arrival times pass a KS check, constant ones are exact,
seeds reproduce, shares add up, and the schedule books why a start was late."""

import numpy as np
import pytest

from netbench.pacing import LATE_START_US, ClosedLoop, OpenLoop, open_loop_schedule

#: Kolmogorov's asymptotic critical value at alpha = 0.001 is 1.95 / sqrt(n)
KS_CRITICAL = 1.95


def ks_exponential(gaps_s: np.ndarray, rate_per_s: float) -> float:
    """Kolmogorov-Smirnov statistic D of the gaps against the exponential CDF of `rate_per_s`."""
    x = np.sort(gaps_s)
    n = x.size
    cdf = 1.0 - np.exp(-rate_per_s * x)
    above = np.arange(1, n + 1) / n - cdf
    below = cdf - np.arange(0, n) / n
    return float(max(above.max(), below.max()))


def all_workers(rate: float, arrival: str, n: int | None, duration_s: float | None, workers: int, seed: int) -> np.ndarray:
    shares = [None] * workers if n is None else [n // workers + (i < n % workers) for i in range(workers)]
    times = [open_loop_schedule(rate, arrival, shares[i], duration_s, i, workers, seed) for i in range(workers)]
    return np.sort(np.concatenate(times))


@pytest.mark.parametrize(("workers", "n", "duration_s"), [(1, 5000, None), (4, 5000, None), (3, None, 50.0)])
def test_poisson_gaps_are_exponential_at_the_run_wide_rate(workers, n, duration_s):
    rate = 100.0
    times_us = all_workers(rate, "poisson", n, duration_s, workers, seed=7)
    gaps_s = np.diff(times_us, prepend=0) / 1e6  # the first arrival's wait from the start counts too
    d = ks_exponential(gaps_s, rate)
    assert d < KS_CRITICAL / np.sqrt(gaps_s.size), d


def test_the_ks_check_rejects_a_wrong_rate_and_constant_gaps():
    # The check above must be able to fail: the same data against 80/s, and a constant grid.
    gaps_s = np.diff(all_workers(100.0, "poisson", 5000, None, 1, seed=7)) / 1e6
    assert ks_exponential(gaps_s, 80.0) > KS_CRITICAL / np.sqrt(gaps_s.size)
    constant = np.diff(all_workers(100.0, "constant", 5000, None, 1, seed=7)) / 1e6
    assert ks_exponential(constant, 100.0) > KS_CRITICAL / np.sqrt(constant.size)


def test_poisson_duration_runs_cover_the_whole_duration_and_no_more():
    times_us = all_workers(200.0, "poisson", None, 20.0, 2, seed=1)
    assert times_us.max() < 20_000_000
    assert times_us.max() > 19_900_000  # not cut short: at 200/s the last gap is ~5 ms
    # the count is Poisson(4000): within 5 sigma
    assert abs(times_us.size - 4000) < 5 * np.sqrt(4000)


def test_constant_arrivals_are_the_run_wide_grid_dealt_round_robin():
    times_us = all_workers(50.0, "constant", 101, None, 4, seed=0)
    assert times_us.size == 101
    assert np.array_equal(times_us, np.arange(101) * 20_000)
    by_duration = all_workers(50.0, "constant", None, 2.0, 3, seed=0)
    assert np.array_equal(by_duration, np.arange(100) * 20_000)


def test_seeds_reproduce_and_differ():
    a = open_loop_schedule(100.0, "poisson", 100, None, 0, 2, seed=3)
    assert np.array_equal(a, open_loop_schedule(100.0, "poisson", 100, None, 0, 2, seed=3))
    assert not np.array_equal(a, open_loop_schedule(100.0, "poisson", 100, None, 0, 2, seed=4))
    # workers draw independent streams
    assert not np.array_equal(a, open_loop_schedule(100.0, "poisson", 100, None, 1, 2, seed=3))


def test_open_loop_takes_only_what_is_due_and_returns_the_intended_time():
    schedule = OpenLoop(np.array([100, 200, 300]))
    assert schedule.take(50) is None
    assert schedule.wait_us(50) == 50
    assert schedule.take(250) == 100
    assert schedule.take(250) == 200
    assert schedule.take(250) is None
    assert schedule.wait_us(250) == 50
    assert schedule.take(300) == 300
    assert schedule.wait_us(400) is None and schedule.take(400) is None


def test_open_loop_books_cap_waits_apart_from_client_lateness():
    late = LATE_START_US + 1
    schedule = OpenLoop(np.array([0, 1_000, 2_000, 100_000, 200_000]))
    assert schedule.take(0) == 0
    # every slot busy at 2_500: the requests due at 1_000 and 2_000 wait for the cap
    schedule.mark_blocked(2_500)
    assert schedule.take(50_000) == 1_000
    assert schedule.take(50_000) == 2_000
    # a free slot and still late: the client's own lag
    assert schedule.take(100_000 + late) == 100_000
    # on time (within the bound)
    assert schedule.take(200_000 + LATE_START_US) == 200_000
    assert schedule.counters() == {
        "sent": 5,
        "cap_delayed": 2,
        "late_starts": 1,
        "send_span_us": 200_000 + LATE_START_US,
        "schedule_span_us": 200_000,
        "open_loop_workers": 1,
    }


def test_closed_loop_is_always_due_and_books_nothing():
    schedule = ClosedLoop(2)
    schedule.mark_blocked(10)
    assert schedule.take(10) == 10 and schedule.take(20) == 20 and schedule.take(30) is None
    assert schedule.wait_us(30) is None
    assert schedule.counters() == {}
