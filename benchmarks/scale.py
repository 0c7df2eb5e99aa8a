"""Benchmark 3: what netbench itself costs at scale: peak memory and CPU of its process tree.

Plain GETs to nginx (n small and n large, histograms plus the default bounded sample of
per-request records), and many concurrent streams against the built-in server.
"""

from __future__ import annotations

from typing import Any

from benchmarks.clients import ClientRun, run_netbench
from benchmarks.plan import Plan
from netbench.sim.config import DEFAULT_MODEL_NAME

GET_CONCURRENCY = 4  # two worker processes on a 2-core machine (netbench's default P = min(C, cores))


def _cost(run: ClientRun, requests: int) -> dict[str, Any]:
    tree = run.tree
    return {
        "n": requests,
        "peak_rss_mib": tree.peak_rss_kib / 1024,
        "peak_sampled_rss_mib": tree.peak_sampled_rss_kib / 1024,
        "processes": tree.processes,
        "cpu_s": tree.cpu_s,
        "wall_s": tree.wall_s,
        "cpu_us_per_request": tree.cpu_s / requests * 1e6,
        "requests_per_s": run.report["achieved_rps"],
    }


def scale(nginx_get_url: str, sim_url: str, plan: Plan) -> dict[str, dict[str, Any]]:
    """{"get_small": cost, "get_large": cost, "streams": cost}; every run in a fresh process tree."""
    figures: dict[str, dict[str, Any]] = {}
    for name, n in (("get_small", plan.scale_small_n), ("get_large", plan.scale_large_n)):
        run = run_netbench("--mode", "get", "--url", nginx_get_url, "--concurrency", str(GET_CONCURRENCY), "--n", str(n))
        figures[name] = _cost(run, n)
    n_streams = 2 * plan.streams
    run = run_netbench(
        "--mode", "completions", "--url", sim_url, "--model", DEFAULT_MODEL_NAME,
        "--concurrency", str(plan.streams), "--n", str(n_streams), "--max-tokens", str(plan.stream_max_tokens),
    )  # fmt: skip
    figures["streams"] = _cost(run, n_streams) | {"concurrency": plan.streams, "max_tokens": plan.stream_max_tokens}
    return figures
