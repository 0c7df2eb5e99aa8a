"""The per-host view of a run (what a Ray run spreads over hosts), and where the Ray backend
binds: no Ray needed here."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from rich.console import Console

from netbench.backends import ray as ray_backend
from netbench.histograms import PhaseHistograms
from netbench.load_check import host_loads
from netbench.phases import RECORD_DTYPE
from netbench.report.hosts import print_hosts
from netbench.results import RunResult, WorkerInfo
from netbench.spec import RunSpec
from netbench.summary import summarize


def _on_hosts(*workers: tuple[str, int, float, float, float, str | None]) -> RunResult:
    infos = [
        WorkerInfo(i, host, 100 + i, requests, started_at_s, elapsed_s, cpu_s, error)
        for i, (host, requests, started_at_s, elapsed_s, cpu_s, error) in enumerate(workers)
    ]
    spec = RunSpec("http://127.0.0.1:8000", concurrency=4, backend="ray")
    return RunResult(spec, PhaseHistograms(), Counter(), np.zeros(0, dtype=RECORD_DTYPE), infos, 10.0, 2.5)


def test_host_loads_sum_per_host_and_flag_a_starved_worker():
    result = _on_hosts(
        ("a", 100, 10.0, 2.0, 0.2, None),
        ("b", 150, 10.0, 2.0, 1.9, None),  # 95 % of a CPU
        ("b", 50, 10.5, 2.0, 0.1, None),
        ("c", 0, 0.0, 0.0, 0.0, "lost: its process or node died (ActorDiedError)"),
    )
    a, b, c = host_loads(result.workers)
    assert (a.host, a.workers, a.requests) == ("a", 1, 100)
    assert (a.achieved_rps, a.cpu_percent) == pytest.approx((50.0, 10.0))
    assert not a.client_bound
    # b: 200 requests from 10.0 s to 12.5 s; CPU 2.0 s of 4.0 s; its busiest worker at 95 %
    assert (b.workers, b.requests) == (2, 200)
    assert (b.achieved_rps, b.cpu_percent, b.max_cpu_percent) == pytest.approx((80.0, 50.0, 95.0))
    assert b.client_bound
    assert (c.workers, c.failed_workers, c.requests, c.achieved_rps) == (1, 1, 0, 0.0)

    console = Console(width=120, record=True)
    print_hosts(summarize(result), console)
    rows = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if line.startswith("│")}
    assert "CLIENT-BOUND" in rows["b"] and "CLIENT-BOUND" not in rows["a"]
    assert "1 worker(s) failed" in rows["c"]


def test_the_host_table_is_left_out_of_a_local_single_host_run():
    result = _on_hosts(("a", 100, 10.0, 2.0, 0.2, None))
    result.spec = result.spec.replace(backend="local")
    console = Console(width=120, record=True)
    print_hosts(summarize(result), console)
    assert console.export_text() == ""
    result.spec = result.spec.replace(backend="ray")
    print_hosts(summarize(result), console)
    assert "client hosts" in console.export_text()


def test_a_private_ray_and_a_loopback_head_are_joined_on_loopback():
    assert ray_backend.on_loopback(None) and ray_backend.on_loopback("127.0.0.1:6379")
    assert ray_backend.on_loopback("localhost:6379") and ray_backend.on_loopback("[::1]:6379")
    assert not ray_backend.on_loopback("10.0.0.5:6379") and not ray_backend.on_loopback("auto")
