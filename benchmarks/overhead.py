"""Benchmark 1: what each client adds to a request to a null server (nginx, loopback, keep-alive).

At concurrency 1 and 4, one thread or process each: wrk (`-t1 -cC`), a bare pycurl CurlMulti
loop, netbench (`--workers 1`), an aiohttp loop and an httpx loop. Rounds interleave the clients, so a burst of load from
elsewhere on the machine hits all of them alike; each figure is the median over rounds.
"""

from __future__ import annotations

from typing import Any

from benchmarks.clients import run_netbench, run_peer
from benchmarks.peers import run_wrk
from benchmarks.plan import Plan
from benchmarks.stats import median

LEVELS = (1, 4)
CLIENTS = ("wrk", "pycurl", "netbench", "aiohttp", "httpx")


def _sample(p50_us: float, p99_us: float, requests_per_s: float) -> dict[str, float]:
    return {"p50_us": p50_us, "p99_us": p99_us, "requests_per_s": requests_per_s}


def _one_round(url: str, concurrency: int, plan: Plan) -> dict[str, dict[str, float]]:
    wrk = run_wrk(url, concurrency, plan.wrk_duration_s)
    netbench = run_netbench(
        "--mode", "get", "--url", url, "--concurrency", str(concurrency), "--workers", "1",
        "--n", str(plan.netbench_get_n), "--max-records", "0",
    ).report  # fmt: skip
    e2e = netbench["phases"]["e2e"]
    samples = {
        "wrk": _sample(wrk.latency.p50_us, wrk.latency.p99_us, wrk.requests_per_s),
        "netbench": _sample(e2e["p50_us"], e2e["p99_us"], netbench["achieved_rps"]),
    }
    for name, n in (("pycurl", plan.pycurl_get_n), ("aiohttp", plan.aiohttp_get_n), ("httpx", plan.httpx_get_n)):
        peer = run_peer(f"{name}-get", url, concurrency, n).report
        samples[name] = _sample(peer["latency"]["p50_us"], peer["latency"]["p99_us"], peer["requests_per_s"])
    return samples


def summarize(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """The median of every figure over the rounds, and the rounds themselves."""
    return {key: median([r[key] for r in rounds]) for key in rounds[0]} | {"rounds": rounds}


def null_server_overhead(url: str, plan: Plan) -> dict[str, dict[str, Any]]:
    """{"c1": {client: figures}, "c4": ...}; `url` returns a few bytes (nginx's /null)."""
    rounds: dict[int, list[dict[str, dict[str, float]]]] = {c: [] for c in LEVELS}
    for _ in range(plan.rounds):
        for concurrency in LEVELS:
            rounds[concurrency].append(_one_round(url, concurrency, plan))
    return {
        f"c{c}": {client: summarize([r[client] for r in rounds[c]]) for client in CLIENTS} for c in LEVELS
    }
