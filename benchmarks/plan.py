"""How much each benchmark of the suite sends: the full run (`make perf`) and the smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    rounds: int  # each comparison is repeated, clients interleaved, and the median kept
    wrk_duration_s: float
    netbench_get_n: int
    pycurl_get_n: int
    aiohttp_get_n: int
    httpx_get_n: int
    lag_requests_per_stream: int
    lag_max_tokens: int
    scale_small_n: int
    scale_large_n: int
    streams: int
    stream_max_tokens: int


#: sized so that each client runs a few seconds per figure on a 2-core machine
FULL = Plan(
    rounds=3,
    wrk_duration_s=3.0,
    netbench_get_n=100_000,
    pycurl_get_n=30_000,
    aiohttp_get_n=4_000,
    httpx_get_n=2_000,
    lag_requests_per_stream=8,
    lag_max_tokens=64,
    scale_small_n=10_000,
    scale_large_n=1_000_000,
    streams=256,
    stream_max_tokens=32,
)

#: every code path of FULL with tiny counts: the smoke test, so that the suite cannot rot
SMOKE = Plan(
    rounds=1,
    wrk_duration_s=1.0,
    netbench_get_n=200,
    pycurl_get_n=100,
    aiohttp_get_n=50,
    httpx_get_n=50,
    lag_requests_per_stream=1,
    lag_max_tokens=4,
    scale_small_n=100,
    scale_large_n=1_000,
    streams=8,
    stream_max_tokens=4,
)

PLANS = {"full": FULL, "smoke": SMOKE}
