"""The capacity search (netbench/capacity.py) against model servers whose knee is known: it
brackets the knee within its resolution, in few steps, within its bounds, and says why it
stopped."""

from __future__ import annotations

import numpy as np
import pytest

from netbench.capacity import Limit, Probe, Search, Step, StepKind, capacity_curve, search, steady_rate
from netbench.report.capacity_table import answer, capacity_lines
from netbench.summary import Run
from tests.synthetic_runs import make_run


SUMMARY = Run.of(make_run("completions", 1, [200_000] * 10, ttft_us=[20_000] * 10)).summary


class ModelServer:
    """Passes every rate up to `knee`; a closed loop of one completes `synchronous`/s and one
    at the cap `saturated`/s."""

    def __init__(self, knee: float, synchronous: float = 2.0, saturated: float | None = None, client_limit: float = 1e9):
        self.knee, self.synchronous, self.saturated, self.client_limit = knee, synchronous, saturated or knee, client_limit
        self.probes: list[Probe] = []

    def __call__(self, probe: Probe) -> Step:
        self.probes.append(probe)
        summary = SUMMARY
        if probe.kind is StepKind.SYNCHRONOUS:
            achieved, passed = self.synchronous, self.synchronous <= self.knee
        elif probe.kind is StepKind.THROUGHPUT:
            achieved, passed = self.saturated, False
        else:
            assert probe.rate_rps is not None
            achieved, passed = min(probe.rate_rps, self.saturated), probe.rate_rps <= self.knee
        reasons = (f"worker 0 used 97 % of a CPU at {probe.rate_rps:g}/s",) if (probe.rate_rps or 0) > self.client_limit else ()
        return Step(probe.kind, probe.rate_rps, probe.concurrency, achieved, 10, 0.0, 1, 2, 3, 4, None, (), passed,
                    client_bound=bool(reasons), client_bound_reasons=reasons, interrupted=False, summary=summary)  # fmt: skip


@pytest.mark.parametrize("knee", [3.3, 10.0, 17.7, 55.0])
def test_the_knee_is_bracketed_within_the_resolution(knee):
    server = ModelServer(knee, saturated=min(knee * 1.3, 40.0))
    found = search(server, Search(resolution=0.05, max_steps=20), ["ttft.p95<1s"])
    assert found.limit is Limit.RESOLVED
    assert found.rate_rps is not None and found.failed_rps is not None
    assert found.rate_rps <= knee < found.failed_rps
    assert found.failed_rps - found.rate_rps <= 0.05 * found.failed_rps
    assert [p.kind for p in server.probes[:2]] == [StepKind.SYNCHRONOUS, StepKind.THROUGHPUT]
    assert found.synchronous_rps == 2.0 and found.saturated_rps == min(knee * 1.3, 40.0)


def test_it_needs_far_fewer_steps_than_an_even_sweep():
    """guidellm's sweep resolves (max - min) / 8 with ten runs; a bisection resolves 5 % in fewer."""
    server = ModelServer(knee=37.0, synchronous=2.0, saturated=40.0)
    found = search(server, Search(resolution=0.05, max_steps=20), ["e2e.p99<2s"])
    rate_steps = sum(1 for p in server.probes if p.kind is StepKind.RATE)
    assert rate_steps <= 7 and found.failed_rps - found.rate_rps < (40.0 - 2.0) / 8


def test_a_throughput_run_that_understates_the_server_is_overtaken():
    server = ModelServer(knee=30.0, saturated=5.0)  # too few in flight to saturate it
    found = search(server, Search(resolution=0.1, max_steps=20), ["g"])
    assert found.rate_rps is not None and found.rate_rps <= 30.0 < found.failed_rps


def test_steps_and_time_bound_the_search():
    server = ModelServer(knee=1e6, saturated=10.0)  # every rate passes
    found = search(server, Search(max_steps=4), ["g"])
    assert found.limit is Limit.STEPS and found.failed_rps is None and "lower bound" in (found.note or "")
    assert sum(1 for p in server.probes if p.kind is StepKind.RATE) == 4
    slow = ModelServer(knee=1e6, saturated=10.0)  # each step takes 10 s of the clock
    timed = search(slow, Search(max_steps=50, max_time_s=45, step_s=10), ["g"], clock=lambda: 10.0 * len(slow.probes))
    assert timed.limit is Limit.TIME and len(timed.steps) == 4  # synchronous, throughput and two rates: 40 s


def test_no_rate_when_one_request_at_a_time_fails():
    server = ModelServer(knee=1.0, synchronous=2.0)
    found = search(server, Search(), ["ttft.p95<1ms"])
    assert found.limit is Limit.SYNCHRONOUS and found.rate_rps is None and len(server.probes) == 1
    assert answer(found).startswith("no rate meets ttft.p95<1ms")


def test_a_client_bound_step_ends_the_search_with_a_lower_bound():
    found = search(ModelServer(knee=100.0, saturated=50.0, client_limit=60.0), Search(), ["g"])
    # 50/s (the saturated throughput) passes, then 55/s, and 110/s is more than the client can offer
    assert found.limit is Limit.CLIENT and found.rate_rps == pytest.approx(55.0)
    assert found.note == "the client could not offer 110 requests/s (client-bound: worker 0 used 97 % of a CPU at 110/s): the answer is a lower bound"


def test_the_curve_and_the_words():
    found = search(ModelServer(knee=10.0, saturated=12.0), Search(resolution=0.1), ["ttft.p95<500ms", "error_rate<1%"])
    curve = capacity_curve(found)
    assert list(curve.offered_rps) == sorted(curve.offered_rps) and curve.offered_rps[0] == 2.0  # the synchronous step first
    assert [g.text for g in curve.gate_lines] == ["ttft.p95<500ms"] and curve.gate_lines[0].bound_ms == 500
    assert [key for key, _ in curve.latencies_ms] == ["ttft.p95"]
    text = answer(found)
    assert text.startswith(f"capacity: {found.rate_rps:.4g} requests/s meet ttft.p95<500ms and error_rate<1%")
    assert f"{found.failed_rps:.4g}/s did not" in text and "saturated throughput 12/s" in text
    assert len(capacity_lines(found.steps)) == len(found.steps)


def test_steady_rate_counts_the_steady_window_not_the_drain():
    """Ten completions a second for 4 s, then a drain of 20 more after the schedule's end."""
    run = make_run("completions", 8, [100_000] * 60, ttft_us=[10_000] * 60)
    ends_us = np.concatenate([np.arange(1, 41) * 100_000, 4_000_000 + np.arange(1, 21) * 10_000])
    run.records["start_us"] = ends_us - run.records["total_mark_us"]
    run.elapsed_s = 4.2
    assert steady_rate(Run.of(run), 4.0) == pytest.approx(10.0, rel=0.03)
    assert steady_rate(Run.of(run), None) == pytest.approx(60 / 4.2)
