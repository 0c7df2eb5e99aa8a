"""The local backend against the built-in server, on the points every backend must hold to
(backends/base.py): one start for all after a ready barrier, `on_start` once there, and a
Ctrl-C before any worker measured anything is a defined outcome, not a crash. (The Ray backend
is held to the same in test_ray_backend.py.)"""

from __future__ import annotations

import os
import signal
import time

import pytest

from netbench.backends.local import LocalBackend
from netbench.core import CommandResult, ExitStatus, exit_status
from netbench.runner import plan, prepare, run
from netbench.spec import RunSpec
from netbench.summary import summarize

pytestmark = pytest.mark.integration


def _tasks(spec: RunSpec):
    target = prepare(spec)
    return plan(target.spec, target.source, cores=2)


def test_every_worker_starts_after_the_barrier_where_on_start_runs_once(sim_url):
    tasks = _tasks(RunSpec(sim_url, mode="completions", concurrency=2, n=20, max_tokens=4, warmup=6))
    started: list[float] = []
    done = LocalBackend().run(tasks, None, lambda: started.append(time.time()))
    assert done.stop_signal is None and not done.problems
    assert len(started) == 1 and len(done.results) == 2
    assert started[0] <= min(r.started_at_s for r in done.results)
    assert sum(r.counters["requests"] for r in done.results) == 20  # the warm-up is not counted


def test_ctrl_c_before_any_worker_measured_is_an_interrupted_empty_run(sim_url):
    spec = RunSpec(sim_url, mode="completions", concurrency=2, n=200, max_tokens=4, warmup=50)
    sent: list[int] = []

    def on_progress(completed: int, _total: int) -> None:
        if not sent:  # the first report: the workers are still starting
            sent.append(completed)
            os.kill(os.getpid(), signal.SIGINT)

    result = run(spec, on_progress)
    summary = summarize(result)
    assert sent == [0]
    assert (summary.interrupted, summary.stop_signal, summary.requests, summary.n) == (True, "SIGINT", 0, 0)
    assert summary.median_wall_s is None and summary.workers_failed == 0
    assert result.server_metrics is None  # the run never started: nothing to scrape
    assert "stopped by SIGINT: the numbers cover the requests that finished before it" in summary.notes
    outcome = CommandResult(summary.stop_signal, summary.interrupted, failed=summary.ok == 0)
    assert exit_status(outcome) is ExitStatus.INTERRUPTED
