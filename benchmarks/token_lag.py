"""Benchmark 2: how late each client sees a token the server has sent (one monotonic clock).

`netbench serve --stamp-events` puts `time.monotonic_ns()` into every token chunk as it
writes it; netbench's `token_lag` phase, the vLLM-style aiohttp reader
(`benchmarks.peers.aiohttp_stream`) and a bare pycurl reader that only stores chunks with
their arrival time (the floor) all subtract it from their own monotonic clock when they see
the event. Same server, same requests, one process per client, concurrency 1 and 8.
"""

from __future__ import annotations

from typing import Any

from benchmarks.clients import run_netbench, run_peer
from benchmarks.overhead import summarize
from benchmarks.plan import Plan
from netbench.sim.config import DEFAULT_MODEL_NAME

LEVELS = (1, 8)
CLIENTS = ("netbench", "pycurl", "aiohttp")
#: the server's timing model: a token every 5 ms, no slowdown when streams share a step
SERVER_ARGS = ("--stamp-events", "--step-ms", "5", "--prefill-token-ms", "0", "--decode-token-ms", "0", "--ignore-eos")


def _lag(figures: dict[str, Any]) -> dict[str, float]:
    return {"p50_us": figures["p50_us"], "p99_us": figures["p99_us"], "count": figures["count"]}


def token_lag(sim_url: str, plan: Plan) -> dict[str, dict[str, Any]]:
    """{"c1": {"netbench": lag figures, "aiohttp": ...}, "c8": ...}; the server runs SERVER_ARGS."""
    rounds: dict[int, dict[str, list[dict[str, float]]]] = {c: {name: [] for name in CLIENTS} for c in LEVELS}
    for _ in range(plan.rounds):
        for concurrency in LEVELS:
            n = concurrency * plan.lag_requests_per_stream
            netbench = run_netbench(
                "--mode", "completions", "--url", sim_url, "--model", DEFAULT_MODEL_NAME,
                "--concurrency", str(concurrency), "--workers", "1", "--n", str(n),
                "--max-tokens", str(plan.lag_max_tokens), "--max-records", "0",
            ).report  # fmt: skip
            rounds[concurrency]["netbench"].append(_lag(netbench["phases"]["token_lag"]))
            for name in CLIENTS[1:]:
                peer = run_peer(
                    f"{name}-stream", sim_url, concurrency, n, model=DEFAULT_MODEL_NAME, max_tokens=plan.lag_max_tokens
                ).report
                rounds[concurrency][name].append(_lag(peer["token_lag"]))
    return {f"c{c}": {client: summarize(r) for client, r in rounds[c].items()} for c in LEVELS}
