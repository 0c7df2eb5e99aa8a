"""The Ray backend against the built-in server: the same counts and latencies as the local
backend, one common start, failures reported next to what the others measured, Ctrl-C.

One local Ray instance (2 CPUs) serves the whole module; netbench joins it, as it would join
a cluster, and leaves it running (it shuts down only a Ray it started itself).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from rich.console import Console

from netbench import ray_backend
from netbench.histograms import PhaseHistograms
from netbench.phases import RECORD_DTYPE
from netbench.report.hosts import host_loads, print_hosts
from netbench.results import RunResult, WorkerInfo
from netbench.runner import merge_workers, plan, prepare, run
from netbench.spec import RunSpec, SpecError
from tests.cli import netbench

ray = pytest.importorskip("ray", reason="the Ray backend needs the ray extra (in the test extra)")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A private local Ray instance ("local": never a cluster already running on this machine)."""
    with mock.patch.dict(os.environ):  # ray.init exports its auth settings: keep them to this module
        ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=False)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def _tasks(spec: RunSpec):
    target = prepare(spec)
    return target, plan(target.spec, target.request, ray_backend.cluster_cpus(None))


def test_sweep_gives_the_local_backends_counts_and_comparable_latencies(ray_address, sim_url):
    for concurrency in (1, 4):
        spec = RunSpec(sim_url, mode="completions", concurrency=concurrency, n=60, max_tokens=8)
        local = run(spec)
        on_ray = run(spec.replace(backend="ray"))
        for result in (local, on_ray):
            assert (result.requests, result.ok) == (60, 60), result.notes
            assert result.counters["tokens"] == 60 * 8
            assert not result.interrupted
        # Ray's default worker count is the cluster's CPUs (2), capped at the requests in flight.
        assert len(on_ray.workers) == min(concurrency, 2)
        assert sum(w.requests for w in on_ray.workers) == 60
        # The server's timing model (5 ms prefill, 2 ms a token) dominates: both clients see it.
        for phase in ("ttft", "e2e"):
            local_p50, ray_p50 = local.stats(phase).p50_us, on_ray.stats(phase).p50_us
            assert abs(ray_p50 - local_p50) < 0.5 * local_p50, (concurrency, phase, local_p50, ray_p50)


def test_workers_start_together(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=20, max_tokens=4, backend="ray")
    _, tasks = _tasks(spec)
    called_at_s = time.time()
    results, problems, stop_signal = ray_backend.run_ray(tasks, None)
    assert not problems and stop_signal is None
    starts_s = [r.started_at_s for r in results]
    assert len(starts_s) == 2
    # each waited for the common start, set START_ALLOWANCE_S after every actor was up ...
    assert min(starts_s) >= called_at_s + ray_backend.START_ALLOWANCE_S
    # ... and sent its first request within a few ms of the other's
    assert max(starts_s) - min(starts_s) < 0.02, starts_s


def test_a_worker_that_raises_is_reported_with_the_others_results(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=20, max_tokens=4, backend="ray")
    target, tasks = _tasks(spec)
    # No request: building the worker's curl handles raises before run_worker's own try.
    broken = [tasks[0], dataclasses.replace(tasks[1], request=None)]
    results, problems, stop_signal = ray_backend.run_ray(broken, None)
    assert stop_signal is None
    assert [r.index for r in results] == [0, 1]
    assert results[0].error is None and results[0].counters["requests"] == tasks[0].count
    assert results[1].error.startswith("raised AttributeError"), results[1].error
    assert results[1].host and results[1].pid  # where it ran, from the actor
    merged = merge_workers(target.spec, results, time.time())
    assert merged.requests == tasks[0].count
    assert [w.error is not None for w in merged.workers] == [False, True]


def _actor_pids() -> list[int]:
    """PIDs of netbench's Ray worker processes (Ray names them after the actor class)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"_WorkerActor" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _kill_one_worker_once_measuring() -> None:
    deadline = time.monotonic() + 60
    while len(_actor_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(ray_backend.START_ALLOWANCE_S + 0.5)  # into the measured part
    os.kill(_actor_pids()[0], signal.SIGKILL)  # what a vanished node looks like to the parent


def test_a_lost_worker_is_reported_and_never_waited_for(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=400, max_tokens=4, backend="ray")
    _, tasks = _tasks(spec)
    killer = threading.Thread(target=_kill_one_worker_once_measuring)
    killer.start()
    results, problems, stop_signal = ray_backend.run_ray(tasks, None)
    killer.join()
    assert stop_signal is None
    lost = [r for r in results if r.error]
    kept = [r for r in results if not r.error]
    assert len(lost) == len(kept) == 1
    assert lost[0].error.startswith("lost: its process or node died"), lost[0].error
    assert kept[0].counters["requests"] == tasks[kept[0].index].count


def test_ctrl_c_stops_the_workers_and_keeps_what_they_measured(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=2000, max_tokens=4, backend="ray")
    _, tasks = _tasks(spec)
    timer = threading.Timer(ray_backend.START_ALLOWANCE_S + 3.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        results, problems, stop_signal = ray_backend.run_ray(tasks, None)
    finally:
        timer.cancel()
    assert stop_signal == "SIGINT"
    assert len(results) == 2
    for r in results:
        assert r.error is None and r.interrupted
        assert 0 < r.counters["requests"] < tasks[r.index].count


def test_cli_run_on_a_cluster_prints_the_host_table(ray_address, sim_url):
    result = netbench(
        "sweep", "--url", sim_url, "--mode", "completions", "--concurrency", "1,2", "--n", "10",
        "--max-tokens", "4", "--backend", "ray", "--ray-address", ray_address, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert result.stderr == ""  # Ray kept quiet
    runs = result.json()["runs"]
    assert [r["requests"] for r in runs] == [10, 10]
    hosts = [r["hosts"] for r in runs]
    assert [[h["workers"] for h in hs] for hs in hosts] == [[1], [2]]
    assert all(h["requests"] == 10 and h["client_bound"] is False for hs in hosts for h in hs)

    table = netbench(
        "run", "--url", sim_url, "--mode", "health", "--concurrency", "2", "--n", "10",
        "--backend", "ray", "--ray-address", ray_address,
    )  # fmt: skip
    assert table.code == 0, table.stderr
    assert "client hosts" in table.stdout and "client CPU %" in table.stdout


def test_without_ray_one_line_and_exit_2(refused_url):
    code = "import sys; sys.modules['ray'] = None; from netbench.cli import entry; entry()"
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", "--url", refused_url, "--backend", "ray", "--no-progress"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr == "netbench: error: --backend ray needs Ray: pip install 'netbench[ray]'\n"


def test_an_unreachable_head_fails_fast(refused_url):
    address = refused_url.removeprefix("http://")
    started = time.monotonic()
    with pytest.raises(SpecError, match="no Ray head answers there"):
        ray_backend._check_reachable(address)
    assert time.monotonic() - started < 10
    with pytest.raises(SpecError, match="expected HOST:PORT"):
        ray_backend._check_reachable("head-without-port")


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
    a, b, c = host_loads(result)
    assert (a.host, a.workers, a.requests) == ("a", 1, 100)
    assert (a.achieved_rps, a.cpu_percent) == pytest.approx((50.0, 10.0))
    assert not a.client_bound
    # b: 200 requests from 10.0 s to 12.5 s; CPU 2.0 s of 4.0 s; its busiest worker at 95 %
    assert (b.workers, b.requests) == (2, 200)
    assert (b.achieved_rps, b.cpu_percent, b.max_cpu_percent) == pytest.approx((80.0, 50.0, 95.0))
    assert b.client_bound
    assert (c.workers, c.failed_workers, c.requests, c.achieved_rps) == (1, 1, 0, 0.0)

    console = Console(width=120, record=True)
    print_hosts(result, console)
    rows = {line.split("│")[1].strip(): line for line in console.export_text().splitlines() if line.startswith("│")}
    assert "CLIENT-BOUND" in rows["b"] and "CLIENT-BOUND" not in rows["a"]
    assert "1 worker(s) failed" in rows["c"]


def test_the_host_table_is_left_out_of_a_local_single_host_run():
    result = _on_hosts(("a", 100, 10.0, 2.0, 0.2, None))
    result.spec = result.spec.replace(backend="local")
    console = Console(width=120, record=True)
    print_hosts(result, console)
    assert console.export_text() == ""
    result.spec = result.spec.replace(backend="ray")
    print_hosts(result, console)
    assert "client hosts" in console.export_text()
