"""Deterministic `RunResult`s built from per-request phase values, for analysis and report tests.

`make_run` writes libcurl-style cumulative marks from the durations a test chooses, then records
them the way a worker does (`phases.derive` into HDR histograms), so every renderer sees exactly
what a real run with those timings would give. `metrics_difference` builds a server-side
`/metrics` difference from observed values with prometheus_client itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter as PromCounter, Histogram, generate_latest

from netbench.histograms import PhaseHistograms
from netbench.outcomes import Outcome
from netbench.phases import derive, empty_records
from netbench.results import RunResult
from netbench.server_metrics import difference, parse
from netbench.spec import RunSpec

URL = "http://127.0.0.1:8000"
LIBCURL = "PycURL/7.49.0 libcurl/8.23.0 OpenSSL/3.6.5"
STARTED_AT_S = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC

# vLLM's bucket layouts (seconds), the part these tests need
TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5)
LATENCY_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0)


def _array(values: Sequence[float] | np.ndarray | float, n: int) -> np.ndarray:
    out = np.asarray(values, dtype=np.int64)
    return np.full(n, int(out), dtype=np.int64) if out.ndim == 0 else out


def make_run(
    mode: str,
    concurrency: int,
    e2e_us: Sequence[float] | np.ndarray,
    *,
    wait_us: Sequence[float] | np.ndarray | float = 150,
    ttft_us: Sequence[float] | np.ndarray | None = None,
    send_us: float = 5,
    rtt_us: float = 40,
    dns_us: float = 20,
    new_connections: int = 1,
    tokens: int = 16,
    keep_records: bool = True,
    server_metrics: dict[str, object] | None = None,
    notes: Sequence[str] = (),
    server_prompt_us: float | None = None,
) -> RunResult:
    """One closed-loop run with these per-request durations (µs). The first `new_connections`
    requests open a connection (connect = rtt), the rest reuse one (TCP_INFO rtt)."""
    e2e = _array(e2e_us, len(e2e_us))
    n = len(e2e)
    records = empty_records(n)
    new = np.arange(n) < new_connections
    wait = _array(wait_us, n)
    connect_mark = np.where(new, dns_us + rtt_us, 0)
    records["new_connection"] = new
    records["namelookup_mark_us"] = np.where(new, dns_us, 0)
    records["connect_mark_us"] = connect_mark
    records["appconnect_mark_us"] = 0
    records["pretransfer_mark_us"] = connect_mark + 10
    records["posttransfer_mark_us"] = records["pretransfer_mark_us"] + send_us
    records["starttransfer_mark_us"] = records["posttransfer_mark_us"] + wait
    records["total_mark_us"] = np.maximum(e2e, records["starttransfer_mark_us"])
    records["queue_mark_us"] = 3
    records["tcp_min_rtt_us"] = np.where(new, -1, rtt_us)
    records["http_status"] = 200
    records["error_class"] = int(Outcome.OK)
    streaming = mode in ("completions", "chat")
    if streaming:
        assert ttft_us is not None, "a stream needs TTFT values"
        ttft = _array(ttft_us, n)
        records["first_byte_mark_us"] = records["starttransfer_mark_us"]
        records["first_event_mark_us"] = records["starttransfer_mark_us"]
        records["first_token_mark_us"] = ttft
        records["last_token_mark_us"] = records["total_mark_us"] - 10
        records["done_mark_us"] = records["total_mark_us"] - 5
        records["tokens"] = tokens
        if server_prompt_us is not None:  # the server's own timings of each request (llama.cpp's)
            records["server_prompt_us"] = round(server_prompt_us)
            records["server_total_us"] = records["total_mark_us"] - 1000
            records["timing_source"] = 1
    histograms = PhaseHistograms()
    histograms.record_phases(derive(records).values_us)
    counters: Counter[str] = Counter(
        requests=n,
        ok=n,
        connections_new=int(new.sum()),
        connections_reused=int((~new).sum()),
        tokens=tokens * n if streaming else 0,
        status_200=n,
    )
    spec = RunSpec(url=URL, mode=mode, concurrency=concurrency, n=n, warmup=0,
                   model="sim-slm" if streaming else None)  # fmt: skip
    path = {"health": "/health", "models": "/v1/models", "completions": "/v1/completions", "chat": "/v1/chat/completions"}
    return RunResult(
        spec=spec,
        histograms=histograms,
        counters=counters,
        records=records if keep_records else empty_records(0),
        workers=[],
        started_at_s=STARTED_AT_S + concurrency,
        elapsed_s=float(e2e.sum()) / 1e6 / concurrency,
        notes=list(notes),
        context={"url": URL + path.get(mode, ""), "method": "GET", "libcurl": LIBCURL},
        server_metrics=server_metrics,
    )


def exposition(observations: dict[str, Sequence[float]], successes: int = 0, prefix: str = "vllm:") -> str:
    """Prometheus text of a registry with vLLM's histograms after these observations (seconds)."""
    registry = CollectorRegistry()
    labels = ("model_name", "engine")
    layouts = {
        "time_to_first_token_seconds": TTFT_BUCKETS_S,
        "e2e_request_latency_seconds": LATENCY_BUCKETS_S,
        "request_queue_time_seconds": LATENCY_BUCKETS_S,
    }
    for suffix, buckets in layouts.items():
        histogram = Histogram(prefix + suffix, "h", labels, registry=registry, buckets=buckets).labels("m", "0")
        for value in observations.get(suffix, ()):
            histogram.observe(value)
    success = PromCounter(prefix + "request_success", "c", (*labels, "finished_reason"), registry=registry)
    success.labels("m", "0", "length").inc(successes)
    return generate_latest(registry).decode()


def metrics_difference(ttft_s: Sequence[float], e2e_s: Sequence[float], queue_s: Sequence[float]) -> dict[str, object]:
    """The stored /metrics difference of a run whose requests the server timed like this."""
    before = parse(URL + "/metrics", exposition({}, 0))
    after = parse(URL + "/metrics", exposition({
        "time_to_first_token_seconds": ttft_s,
        "e2e_request_latency_seconds": e2e_s,
        "request_queue_time_seconds": queue_s,
    }, len(e2e_s)))  # fmt: skip
    return difference(before, after)


def sweep(
    seed: int = 7,
    n: int = 32,
    baseline_us: float = 300,
    ttft_us: float = 20_000,
    http_delay_us: float = 0,
    server_side: bool = True,
    keep_records: bool = True,
    modes: Sequence[str] = ("health", "completions"),
    levels: Sequence[int] = (1, 4, 8),
    rtt_us: float = 40,
) -> list[RunResult]:
    """A sweep like `make bench` makes: health and completions at concurrency 1, 4, 8, with
    latency growing with concurrency for completions and not for health. `rtt_us` is the
    path's round trip, in every request's wait (beyond the default 40 µs of loopback)."""
    extra_rtt = rtt_us - 40
    rng = np.random.default_rng(seed)
    runs = []
    for mode in modes:
        for c in levels:
            if mode == "health":
                wall = rng.normal(baseline_us + http_delay_us, baseline_us * 0.1, n).clip(50) + extra_rtt
                metrics = metrics_difference([], [], []) if server_side else None
                runs.append(make_run(mode, c, wall.round(), wait_us=(wall - 120).clip(10).round(), keep_records=keep_records,
                                     server_metrics=metrics, rtt_us=rtt_us))  # fmt: skip
                continue
            queue = 0 if c == 1 else ttft_us * (c - 1) * 0.25
            ttft = rng.normal(ttft_us + queue + http_delay_us, ttft_us * 0.05, n).clip(1000).round() + extra_rtt
            e2e = (ttft + rng.normal(180_000 * (1 + 0.05 * (c - 1)), 2000, n)).round()
            wait = np.full(n, 900 + http_delay_us + extra_rtt)
            metrics = None
            if server_side:
                # the server times from its handler: it sees neither the HTTP delay nor the network
                metrics = metrics_difference(
                    (ttft - http_delay_us) * 0.95 / 1e6, (e2e - http_delay_us - 1800) / 1e6, np.full(n, queue / 1e6)
                )
            runs.append(make_run(mode, c, e2e, wait_us=wait, ttft_us=ttft, keep_records=keep_records,
                                 server_metrics=metrics, rtt_us=rtt_us))  # fmt: skip
    return runs
