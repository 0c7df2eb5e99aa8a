"""The server's own Prometheus metrics, with vLLM's names, labels and bucket layouts.

Each app gets its own `CollectorRegistry` (never the process-global one), so several servers
can live in one process. Labels are vLLM v1's: `model_name` and `engine` (always "0").
Time to first token and end-to-end latency are measured by the HTTP handler, from the request's
arrival at the handler to the first token / the last event; queue, prefill and decode times
are the engine's. Token counts are exact: `prompt_tokens_total` adds a request's whole prompt
(cached part included) when its first token exists, `generation_tokens_total` every generated
token (EOS and stop-string tokens too), and the `request_prompt_tokens` /
`request_generation_tokens` histograms one sample per finished request. Inter-token latency
is one sample per generated token after the first, whatever `--stream-interval` groups into
an event; `time_per_output_token_seconds` is the same samples under vLLM v1's deprecated
name. `iteration_tokens_total` has one sample per engine step, `prefix_cache_queries` /
`prefix_cache_hits` count prompt tokens looked up / found at admission.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from netbench.sim.config import SimConfig
from netbench.sim.engine import Engine, SimRequest

# vLLM's bucket boundaries (vllm/v1/metrics/loggers.py), in seconds.
TTFT_BUCKETS_S = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_GAP_BUCKETS_S = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS_S = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
    40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip

ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

FINISH_REASONS = ("stop", "length", "abort")
ENGINE_INDEX = "0"


def buckets_1_2_5(max_value: int) -> tuple[int, ...]:
    """vLLM's `build_1_2_5_buckets`: 1, 2, 5, 10, 20, 50, ... up to `max_value`."""
    buckets: list[int] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > max_value:
                return tuple(buckets)
            buckets.append(mantissa * scale)
        scale *= 10


class SimMetrics:
    """All metric families of one server, bound to its model name; the engine's `EngineStats`."""

    def __init__(self, config: SimConfig) -> None:
        self.registry = CollectorRegistry()
        labels = ("model_name", "engine")
        values = (config.model_name, ENGINE_INDEX)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=self.registry).labels(*values)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, registry=self.registry, buckets=buckets).labels(*values)

        self._running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self._waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_cache_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")
        token_buckets = buckets_1_2_5(config.max_model_len)
        self.request_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets
        )
        self.iteration_tokens = histogram(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", ITERATION_TOKENS_BUCKETS
        )
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*labels, "finished_reason"),
            registry=self.registry,
        )
        # Created up front, as vLLM does, so every reason is exported from the first scrape.
        self.request_success = {reason: success.labels(*values, reason) for reason in FINISH_REASONS}
        self.ttft_s = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS_S
        )
        self.tpot_s = histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds."
            "DEPRECATED: Use vllm:inter_token_latency_seconds instead.",
            TOKEN_GAP_BUCKETS_S,
        )
        self.itl_s = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", TOKEN_GAP_BUCKETS_S
        )
        self.e2e_s = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.queue_s = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.prefill_s = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.decode_s = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        )
        self.inference_s = histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS_S,
        )

    def watch(self, engine: Engine) -> None:
        """Read the engine's queue lengths at scrape time, so the gauges are exact between steps."""
        self._running.set_function(lambda: engine.num_running)
        self._waiting.set_function(lambda: engine.num_waiting)

    def on_step(self, scheduled_tokens: int) -> None:
        self.iteration_tokens.observe(scheduled_tokens)

    def on_prefix_lookup(self, query_tokens: int, hit_tokens: int) -> None:
        self.prefix_cache_queries.inc(query_tokens)
        self.prefix_cache_hits.inc(hit_tokens)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class RequestRecorder:
    """Times one request as its HTTP handler writes it, and records it in `SimMetrics`."""

    def __init__(self, metrics: SimMetrics, arrival_s: float, prompt_tokens: int) -> None:
        self._metrics = metrics
        self._arrival_s = arrival_s
        self._prompt_tokens = prompt_tokens
        self._last_token_s: float | None = None

    def token(self) -> None:
        """The engine generated a token (it is about to be written, or collected)."""
        now_s = time.monotonic()
        if self._last_token_s is None:
            self._metrics.ttft_s.observe(now_s - self._arrival_s)
            self._metrics.prompt_tokens.inc(self._prompt_tokens)
        else:
            gap_s = now_s - self._last_token_s
            self._metrics.itl_s.observe(gap_s)
            self._metrics.tpot_s.observe(gap_s)
        self._metrics.generation_tokens.inc()
        self._last_token_s = now_s

    def finish(self, request: SimRequest, finish_reason: str) -> None:
        """The last event is about to be written: record the request's latencies and lengths."""
        assert request.admitted_s is not None and request.first_token_s is not None
        assert request.finished_s is not None
        metrics = self._metrics
        metrics.request_prompt_tokens.observe(request.prompt_tokens)
        metrics.request_generation_tokens.observe(request.generated)
        metrics.e2e_s.observe(time.monotonic() - self._arrival_s)
        metrics.queue_s.observe(request.queue_s)
        metrics.prefill_s.observe(request.first_token_s - request.admitted_s)
        metrics.decode_s.observe(request.finished_s - request.first_token_s)
        metrics.inference_s.observe(request.finished_s - request.admitted_s)
        metrics.request_success[finish_reason].inc()

    def abort(self) -> None:
        """The client went away before the end."""
        self._metrics.request_success["abort"].inc()
