"""The Ray backend against the built-in server: the same counts and latencies as the local
backend, one common start after a ready barrier, failures reported next to what the others
measured, Ctrl-C at any time.

One local Ray instance (2 CPUs), bound to 127.0.0.1, serves the whole module; netbench joins it,
as it would join a cluster, and leaves it running (it shuts down only a Ray it started itself).
The tests wait on what the workers report (readiness, progress), never on a fixed allowance.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from netbench.backends import ray as ray_backend
from netbench.core import ExitStatus, exit_status
from netbench.runner import merge_workers, plan, prepare, run
from netbench.spec import RunSpec, SpecError
from netbench.summary import Run, summarize
from tests.cli import netbench
from tests.host_noise import remeasured, within

# Ray's single-host mode binds every Ray process to 127.0.0.1 (read when Ray is imported; the
# netbench processes the tests start inherit it, as netbench itself sets it for loopback heads).
os.environ[ray_backend.LOOPBACK_ENV] = "0"
ray = pytest.importorskip("ray", reason="the Ray backend needs the ray extra (in the test extra)")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A private local Ray instance ("local": never a cluster already running on this machine)."""
    with mock.patch.dict(os.environ):  # ray.init exports its auth settings: keep them to this module
        ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=False)
        try:
            address = ray.get_runtime_context().gcs_address
            assert address.startswith("127.0.0.1:"), address  # no test traffic on the external address
            assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
            yield address
        finally:
            ray.shutdown()


BACKEND = ray_backend.RayBackend(None)  # joins the module's instance (already initialised)


def _tasks(spec: RunSpec):
    target = prepare(spec)
    return target, plan(target.spec, target.source, BACKEND.cores())


def _when_measuring(action) -> object:
    """A progress callback that calls `action` once, as soon as a worker measured a request."""
    done = threading.Event()

    def on_progress(completed: int, _total: int) -> None:
        if completed > 0 and not done.is_set():
            done.set()
            action()

    return on_progress


def test_sweep_gives_the_local_backends_counts_and_comparable_latencies(ray_address, sim_url):
    for concurrency in (1, 4):
        spec = RunSpec(sim_url, mode="completions", concurrency=concurrency, n=60, max_tokens=8)
        local = Run.of(run(spec))
        on_ray = Run.of(run(spec.replace(backend="ray")))
        for result in (local.result, on_ray.result):
            assert (result.requests, result.ok) == (60, 60), result.notes
            assert result.counters["tokens"] == 60 * 8
            assert not result.interrupted
        # Ray's default worker count is the cluster's CPUs (2), capped at the requests in flight.
        assert len(on_ray.result.workers) == min(concurrency, 2)
        assert sum(w.requests for w in on_ray.result.workers) == 60
        # Both scrape /metrics once the warm-up is over: the server counted the measured requests.
        for result in (local.result, on_ray.result):
            assert result.server_metrics["histograms"]["e2e"]["count"] == 60
        # The server's timing model (a 2 ms step plus 0.2 ms a prompt token to the first token,
        # 2 ms a token after it) dominates: both clients see it, within a factor of 2 (on 2 shared
        # cores Ray's own daemons compete with its workers).
        for phase, floor_us in (("ttft", 3_000), ("e2e", 3_000 + 7 * 2_000)):
            local_p50, ray_p50 = local.summary.phase(phase).p50_us, on_ray.summary.phase(phase).p50_us
            assert min(local_p50, ray_p50) >= floor_us, (concurrency, phase, local_p50, ray_p50)
            assert abs(ray_p50 - local_p50) < local_p50, (concurrency, phase, local_p50, ray_p50)


def test_workers_start_together_once_every_one_is_warm(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=20, max_tokens=4, warmup=4, backend="ray")
    _, tasks = _tasks(spec)
    started: list[float] = []
    done = BACKEND.run(tasks, None, lambda: started.append(time.time()))
    assert not done.problems and done.stop_signal is None
    starts_s = [r.started_at_s for r in done.results]
    assert len(starts_s) == 2 and len(started) == 1
    # on_start ran once, at the barrier (both warm), before either sent a measured request ...
    assert started[0] <= min(starts_s)
    # ... and both sent their first measured request within a few ms of each other
    assert max(starts_s) - min(starts_s) < 0.02, starts_s


def test_a_worker_that_raises_is_reported_with_the_others_results(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=20, max_tokens=4, backend="ray")
    target, tasks = _tasks(spec)
    # No request source: building the worker's curl handles raises before run_worker's own try.
    broken = [tasks[0], dataclasses.replace(tasks[1], source=None)]
    done = BACKEND.run(broken, None, None)
    results = done.results
    assert done.stop_signal is None
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


def test_a_lost_worker_is_reported_and_never_waited_for(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=400, max_tokens=4, backend="ray")
    _, tasks = _tasks(spec)
    # SIGKILL one actor once the workers measure: what a vanished node looks like to the parent
    done = BACKEND.run(tasks, _when_measuring(lambda: os.kill(_actor_pids()[0], signal.SIGKILL)), None)
    results = done.results
    assert done.stop_signal is None
    lost = [r for r in results if r.error]
    kept = [r for r in results if not r.error]
    assert len(lost) == len(kept) == 1
    assert lost[0].error.startswith("lost: its process or node died"), lost[0].error
    assert kept[0].counters["requests"] == tasks[kept[0].index].count


def test_ctrl_c_stops_the_workers_and_keeps_what_they_measured(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=2000, max_tokens=4, backend="ray")
    _, tasks = _tasks(spec)
    done = BACKEND.run(tasks, _when_measuring(lambda: os.kill(os.getpid(), signal.SIGINT)), None)
    assert done.stop_signal == "SIGINT"
    assert len(done.results) == 2
    assert sum(r.counters.get("requests", 0) for r in done.results) > 0
    for r in done.results:
        assert r.error is None and r.interrupted
        assert r.counters.get("requests", 0) < tasks[r.index].count


def test_ctrl_c_before_any_worker_measured_is_an_interrupted_empty_run(ray_address, sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=200, max_tokens=4, warmup=50, backend="ray")
    _, tasks = _tasks(spec)
    interrupted = threading.Event()

    def on_progress(completed: int, _total: int) -> None:
        # the first report comes from the ready barrier: the workers are placed, none has started measuring
        if not interrupted.is_set():
            interrupted.set()
            os.kill(os.getpid(), signal.SIGINT)

    done = BACKEND.run(tasks, on_progress, lambda: pytest.fail("the run must not start after a Ctrl-C"))
    assert done.stop_signal == "SIGINT"
    assert [r.index for r in done.results] == [0, 1]
    assert all(r.error is None and r.interrupted and r.counters.get("requests", 0) == 0 for r in done.results)
    merged = merge_workers(tasks[0].spec, done.results, time.time())
    merged.interrupted, merged.context["stop_signal"] = True, done.stop_signal
    summary = summarize(merged)
    assert (summary.requests, summary.n, summary.median_wall_s, summary.interrupted) == (0, 0, None, True)
    assert exit_status(core_result(summary)) is ExitStatus.INTERRUPTED


def core_result(summary):
    from netbench.core import CommandResult

    return CommandResult(stop_signal=summary.stop_signal, interrupted=summary.interrupted, failed=summary.ok == 0)


@remeasured
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
    assert all(h["requests"] == 10 for hs in hosts for h in hs)
    within(all(h["client_bound"] is False for hs in hosts for h in hs), hosts)  # a busy host can be late for real

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
    assert proc.stderr == "netbench: error: --backend 'ray': Ray is not installed (pip install 'netbench[ray]')\n"


def test_an_unreachable_head_fails_fast(refused_url):
    address = refused_url.removeprefix("http://")
    started = time.monotonic()
    with pytest.raises(SpecError, match="no Ray head answers there"):
        ray_backend._check_reachable(address)
    assert time.monotonic() - started < 10
    with pytest.raises(SpecError, match="expected HOST:PORT"):
        ray_backend._check_reachable("head-without-port")
